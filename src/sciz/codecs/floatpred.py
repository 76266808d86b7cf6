"""Floating-point predictor: a lossless transform (TIFF predictor 3) that makes smooth floats compress better.

Engine: imagecodecs' floatpred, which only works along the last two axes with distances 1, 2, 4 on
native-order arrays. sciz accepts any axis (moving it last), keeps byte order, and checks arguments.
It is a transform, not a format: the output is an array of the same shape and dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import FloatpredError, argument_error
from .driver import engine, is_int

__all__ = ["FloatpredCodec", "floatpred_decode", "floatpred_encode"]

_DISTANCES = (1, 2, 4)


def _prepare(data: Any, axis: Any, dist: Any, what: str) -> tuple[np.ndarray, int]:
    if not isinstance(data, np.ndarray):
        raise argument_error("data", data, f"floatpred {what} takes a numpy array", cls=FloatpredError)
    if data.dtype.str[1:] not in ("f2", "f4", "f8"):
        raise FloatpredError(f"data: dtype {data.dtype} is not supported; floatpred takes float16/32/64")
    if data.ndim == 0:
        raise FloatpredError("data: a 0-d array has no axis to predict along")
    if not is_int(axis) or not -data.ndim <= axis < data.ndim:
        raise argument_error("axis", axis, f"must be an int axis of the {data.ndim}-d data", cls=FloatpredError)
    if not is_int(dist) or dist not in _DISTANCES:
        raise argument_error("dist", dist, "must be 1, 2 or 4", cls=FloatpredError)
    axis = int(axis) % data.ndim
    if data.shape[axis] % dist:
        # The engine interleaves `dist` samples per step (TIFF samples per pixel).
        raise FloatpredError(f"dist={dist}: the length {data.shape[axis]} of axis {axis} must be a multiple of dist")
    return data, axis


def _apply(function_name: str, data: Any, axis: Any, dist: Any, out: Any) -> np.ndarray:
    imagecodecs = engine()

    array, axis = _prepare(data, axis, dist, function_name.split("_")[1])
    native = np.ascontiguousarray(np.moveaxis(array, axis, -1), dtype=array.dtype.newbyteorder("="))
    if native.size:
        native = getattr(imagecodecs, function_name)(native, axis=-1, dist=int(dist))
    result = np.moveaxis(native, -1, axis).astype(array.dtype, copy=False)
    if out is None:
        return np.ascontiguousarray(result)
    if not isinstance(out, np.ndarray) or out.shape != array.shape or out.dtype != array.dtype:
        raise argument_error(
            "out", out, f"must be an array of shape {array.shape} and dtype {array.dtype}", cls=FloatpredError
        )
    if not out.flags.writeable:
        raise FloatpredError("out: must be writable")
    out[...] = result
    return out


def floatpred_encode(data: Any, *, axis: int = -1, dist: int = 1, out: Any = None) -> np.ndarray:
    """Return floating-point predictor encoded data (same shape and dtype as ``data``)."""
    return _apply("floatpred_encode", data, axis, dist, out)


def floatpred_decode(data: Any, *, axis: int = -1, dist: int = 1, out: Any = None) -> np.ndarray:
    """Return floating-point predictor decoded data: exactly the array that was encoded."""
    return _apply("floatpred_decode", data, axis, dist, out)


class FloatpredCodec:
    """Registry wrapper: a lossless array-to-array filter with ``axis`` and ``dist``."""

    name = "floatpred"
    codec_id = "sciz_floatpred"
    lossless = True
    tolerance = 0.0

    def __init__(self, *, axis: int = -1, dist: int = 1):
        if not is_int(axis):
            raise argument_error("axis", axis, "must be an int", cls=FloatpredError)
        if not is_int(dist) or dist not in _DISTANCES:
            raise argument_error("dist", dist, "must be 1, 2 or 4", cls=FloatpredError)
        self.axis, self.dist = int(axis), int(dist)

    def params(self) -> dict[str, Any]:
        return {"axis": self.axis, "dist": self.dist}

    def get_config(self) -> dict[str, Any]:
        return {"id": self.name, **self.params()}

    def encode(self, data: Any, *, out: Any = None, numthreads: int | None = None) -> np.ndarray:
        return floatpred_encode(data, axis=self.axis, dist=self.dist, out=out)

    def decode(self, data: Any, *, out: Any = None, numthreads: int | None = None) -> np.ndarray:
        return floatpred_decode(data, axis=self.axis, dist=self.dist, out=out)

    def hdf5_filter(self, array: Any) -> None:
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FloatpredCodec) and other.params() == self.params()

    def __hash__(self) -> int:
        return hash((self.axis, self.dist))

    def __repr__(self) -> str:
        return f"FloatpredCodec(axis={self.axis}, dist={self.dist})"
