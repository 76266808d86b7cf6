"""SPERR: wavelet compression of 2-D and 3-D floating-point fields, by bit rate, PSNR or point-wise error.

Engine: imagecodecs' sperr 0.8.4. It crashes the process on NaN/Inf and on 3-D arrays whose first
axis has length 1, and its point-wise error overshoots by float rounding (1.000047e-3 for 1e-3).
sciz masks NaN/Inf, folds any shape into a layout the engine accepts (so 1-D and 4-D work too),
and asks the engine for a tolerance tightened by the rounding so the promised bound holds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import SperrError, argument_error
from .abc import Codec
from .driver import LosslessFallback, check_tolerance, engine, lossless_chunk, precision_fallback, tightened_tolerance

__all__ = ["SperrCodec"]

#: The seed's mode names and the engine's.
_ENGINE_MODES = {"rate": "bpp", "psnr": "psnr", "pwe": "pwe"}
#: Chunks smaller than this are stored losslessly: the engine gains nothing and small shapes are fragile.
_MIN_ELEMENTS = 64


def _engine_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A 2-D or 3-D shape with the same element order, without the length-1 axes the engine mishandles."""
    dims = [n for n in shape if n != 1] or [1]
    if len(dims) == 1:
        return (1, dims[0])
    if len(dims) > 3:
        dims = [math.prod(dims[:-2]), *dims[-2:]]
    return tuple(dims)


def _decode_sperr(payload: memoryview, target: np.ndarray, params: dict[str, Any]) -> None:
    imagecodecs = engine()

    shape = _engine_shape(target.shape)
    # Straight into the caller's array (the engine checks it against the payload's header).
    result = imagecodecs.sperr_decode(payload, out=target.reshape(shape), numthreads=1)
    if result.shape != shape or result.dtype != target.dtype:
        raise ValueError(f"sperr payload holds {result.shape} {result.dtype}, expected {shape} {target.dtype}")


class SperrCodec(Codec):
    """SPERR with ``mode`` ('rate' bits per value, 'psnr' dB, 'pwe' point-wise error) and ``quality``,
    or simply ``tolerance`` (the same as ``mode='pwe', quality=tolerance``). ``fill_value`` marks missing
    data (kept exactly, never coded)."""

    name = "sperr"
    decode_chunk = staticmethod(_decode_sperr)

    def __init__(
        self,
        *,
        mode: str | None = None,
        quality: float | None = None,
        tolerance: float | None = None,
        fill_value: float | None = None,
    ):
        super().__init__(fill_value=fill_value)
        if tolerance is not None:
            if quality is not None or mode not in (None, "pwe"):
                raise SperrError(
                    f"give either tolerance, or mode and quality (got tolerance={tolerance!r}, mode={mode!r}, "
                    f"quality={quality!r})"
                )
            mode, quality = "pwe", check_tolerance(tolerance, SperrError)
        if mode is None or quality is None:
            raise SperrError("give tolerance=, or mode= ('rate', 'psnr' or 'pwe') together with quality=")
        if mode == "bpp":
            mode = "rate"
        if mode not in _ENGINE_MODES:
            raise argument_error("mode", mode, "must be 'rate', 'psnr' or 'pwe'", cls=SperrError)
        if isinstance(quality, bool) or not isinstance(quality, int | float | np.number) or not math.isfinite(quality):
            raise argument_error("quality", quality, "must be a finite number", cls=SperrError)
        quality = float(quality)
        if mode == "rate" and not 0 < quality < 64:
            raise argument_error(
                "quality", quality, "for mode='rate' must be bits per value in (0, 64)", cls=SperrError
            )
        if mode == "psnr" and quality <= 0:
            raise argument_error("quality", quality, "for mode='psnr' must be a positive dB value", cls=SperrError)
        if mode == "pwe" and quality <= 0:
            raise argument_error(
                "quality",
                quality,
                "for mode='pwe' must be > 0 (use a lossless codec for exact data)",
                cls=SperrError,
            )
        self.mode = mode
        self.quality = quality

    def params(self) -> dict[str, Any]:
        return {"mode": self.mode, "quality": self.quality}

    @property
    def tolerance(self) -> float | None:
        return self.quality if self.mode == "pwe" else None

    def encode_chunk(self, chunk: np.ndarray, low: float, high: float) -> tuple[int, bytes | bytearray, bool]:
        imagecodecs = engine()

        if chunk.size < _MIN_ELEMENTS:
            return (*lossless_chunk(chunk), False)
        level = self.quality
        if self.mode == "pwe":
            if low == high:
                return (*lossless_chunk(chunk), False)
            engine_level = tightened_tolerance(self.quality, low, high, chunk.dtype)
            if engine_level is None:
                raise precision_fallback(self.quality, low, high, chunk.dtype)
            # The engine returns garbage for tolerances near the subnormal range (review: 1e-320 in float64).
            if engine_level < float(np.finfo(chunk.dtype).tiny) * 2.0**60:
                raise LosslessFallback(f"tolerance {self.quality:g} is too close to the {chunk.dtype} subnormal range")
            level = engine_level
        shaped = chunk.reshape(_engine_shape(chunk.shape))
        return (
            self.method,
            imagecodecs.sperr_encode(shaped, level, _ENGINE_MODES[self.mode], numthreads=1, out=bytearray),
            False,
        )

    def hdf5_filter(self, array: Any) -> dict[str, Any] | None:
        import hdf5plugin

        values = np.asarray(array)
        if self.mode == "rate":
            return dict(hdf5plugin.Sperr(rate=self.quality))
        if self.mode == "psnr":
            return dict(hdf5plugin.Sperr(peak_signal_to_noise_ratio=self.quality))
        low, high = float(np.min(values)), float(np.max(values))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise SperrError("the SPERR HDF5 filter cannot hold NaN/Inf; use sz3, which keeps them")
        engine_level = tightened_tolerance(self.quality, low, high, values.dtype)
        if engine_level is None:
            raise SperrError(
                f"tolerance {self.quality:g} is below the float precision of values up to {max(abs(low), abs(high)):g}"
            )
        return dict(hdf5plugin.Sperr(absolute=engine_level))
