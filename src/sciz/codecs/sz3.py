"""SZ3: prediction-based error-bounded compression of floating-point fields.

Engine: imagecodecs' sz3 3.3.2. Its absolute mode keeps the bound in the data's own precision and
keeps NaN/Inf, but its stream carries neither shape nor dtype, and decoding with a wrong shape or
dtype, or decoding damaged bytes, kills the process. The sciz stream records both and checks every
byte before the engine sees it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import Sz3Error
from .abc import Codec
from .driver import check_tolerance, engine, lossless_chunk

__all__ = ["Sz3Codec"]


def _engine_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    # The engine takes 1-5 dimensions; length-1 axes only cost it.
    dims = [n for n in shape if n != 1] or [1]
    if len(dims) > 5:
        dims = [int(np.prod(dims[:-4])), *dims[-4:]]
    return tuple(dims)


def _decode_sz3(payload: memoryview, target: np.ndarray, params: dict[str, Any]) -> None:
    imagecodecs = engine()

    shape = _engine_shape(target.shape)
    imagecodecs.sz3_decode(payload, shape, target.dtype, out=target.reshape(shape))


class Sz3Codec(Codec):
    """SZ3 in absolute-error mode: every element within ``tolerance``; ``tolerance=0`` stores exactly.
    ``fill_value`` marks missing data (kept exactly, never coded)."""

    name = "sz3"
    decode_chunk = staticmethod(_decode_sz3)

    def __init__(self, *, tolerance: float | None = None, fill_value: float | None = None):
        super().__init__(fill_value=fill_value)
        if tolerance is None:
            raise Sz3Error("tolerance= (the absolute error bound) is required for sz3")
        self._tolerance = check_tolerance(tolerance, Sz3Error)

    def params(self) -> dict[str, Any]:
        return {"tolerance": self._tolerance}

    @property
    def tolerance(self) -> float:
        return self._tolerance

    def encode_chunk(self, chunk: np.ndarray, low: float, high: float) -> tuple[int, bytes | bytearray, bool]:
        imagecodecs = engine()

        if self._tolerance == 0 or chunk.size < 8:
            return (*lossless_chunk(chunk), False)
        shaped = chunk.reshape(_engine_shape(chunk.shape))
        return self.method, imagecodecs.sz3_encode(shaped, abs=self._tolerance, out=bytearray), False

    def hdf5_filter(self, array: Any) -> dict[str, Any] | None:
        import hdf5plugin

        if self._tolerance == 0:
            raise Sz3Error("tolerance=0 is lossless: use a lossless HDF5 filter (gzip, zstd, blosc2)")
        return dict(hdf5plugin.SZ3(absolute=self._tolerance))
