"""SPERR: wavelet compression of 2-D and 3-D floating-point fields, by bit rate, PSNR or point-wise error.

Engine: imagecodecs' sperr 0.8.4. It crashes the process on NaN/Inf and on 3-D arrays whose first
axis has length 1, and its point-wise error overshoots by float rounding (1.000047e-3 for 1e-3).
sciz masks NaN/Inf, folds any shape into a layout the engine accepts (so 1-D and 4-D work too),
and asks the engine for a tolerance tightened by the rounding so the promised bound holds. Decoding
checks SPERR's header (extents, type, chunk lengths, each chunk's declared SPECK length) against the
sciz header: the engine aborts the process on forged ones.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from ..errors import SperrError, argument_error
from .abc import Codec
from .driver import (
    LosslessFallback,
    check_tolerance,
    engine,
    fill_hint,
    lossless_chunk,
    precision_fallback,
    tightened_tolerance,
)

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


#: From this many values along one axis the engine no longer keeps its point-wise bound.
_LONG_AXIS = 1 << 16
#: Bytes a chunk's decoder may read past a short chunk (its 17-byte conditioner and 9-byte SPECK
#: headers are read before their length is checked): payloads are padded with zeros by this much.
_OVERREAD = 64


def _read_header(payload: memoryview) -> tuple[bool, tuple[int, ...], int]:
    """(is_float, shape slowest axis first, header length) from a SPERR 0.8 header.

    Layout (SPERR3D_Stream_Tools / sperr_comp_2d): version u8 (0), flags u8 (bit 6 3-D, bit 5
    float32, bit 4 several chunks), extents u32 (x, y[, z]); 3-D streams then hold chunk extents
    u16 x3 (several chunks only) and one u32 length per chunk, which must add up to the payload.
    """
    raw = bytes(payload[:20])
    if len(raw) < 10 or raw[0] != 0:
        raise ValueError(f"the payload does not start with a SPERR 0.8 header ({raw[:2].hex()})")
    flags = raw[1]
    is_3d, is_float, chunked = bool(flags & 0x40), bool(flags & 0x20), bool(flags & 0x10)
    if not is_3d:
        x, y = struct.unpack_from("<II", raw, 2)
        _check_chunk(payload[10:], 0, x * y)
        return is_float, (y, x), 10
    header = 20 if chunked else 14
    if len(raw) < header:
        raise ValueError(f"a {len(payload)}-byte payload cannot hold a SPERR 3-D header")
    x, y, z = struct.unpack_from("<III", raw, 2)
    chunk = struct.unpack_from("<HHH", raw, 14) if chunked else (x, y, z)
    if 0 in (x, y, z) or 0 in chunk:
        raise ValueError(f"its SPERR header declares extents {(x, y, z)} in chunks of {chunk}")
    # sperr::chunk_volume: a remainder longer than half a chunk makes one more chunk, and every axis has one.
    count = math.prod(max(1, n // c + (n % c > c // 2)) for n, c in zip((x, y, z), chunk, strict=True))
    if header + 4 * count > len(payload):
        raise ValueError(f"its SPERR header lists {count} chunks, more than a {len(payload)}-byte payload holds")
    lengths = np.frombuffer(payload, "<u4", count=count, offset=header)
    if header + 4 * count + int(lengths.sum(dtype=np.uint64)) != len(payload):
        raise ValueError(f"its SPERR header's chunk lengths do not add up to the {len(payload)}-byte payload")
    start = header + 4 * count
    for index, length in enumerate(lengths.tolist()):
        _check_chunk(payload[start : start + length], index, x * y * z)
        start += length
    return is_float, (z, y, x), header


def _check_chunk(chunk: memoryview, index: int, values: int) -> None:
    """A SPERR chunk: a 17-byte conditioner (bit 0 of its first byte: constant, nothing follows), then a
    SPECK stream headed by its bit-plane count u8 and its length in bits u64, then outliers.

    The engine reserves the declared length first, and it decodes a chunk even after refusing its
    layout (measured: either aborts the process). The declared length may exceed the chunk (the
    rate mode cuts streams short) but not what ``values`` values can need: 64 bit planes and the
    set-partitioning tests cost at most a few bits per value and plane, bounded here by 256.
    """
    if len(chunk) < 17 or (chunk[0] & 1 and len(chunk) != 17):
        raise ValueError(f"SPERR chunk {index} has {len(chunk)} bytes: not a constant chunk (17) nor a coded one")
    if chunk[0] & 1:
        return
    if len(chunk) < 26:
        raise ValueError(f"SPERR chunk {index} is too short ({len(chunk)} bytes) for its SPECK header")
    planes = chunk[17]
    (bits,) = struct.unpack_from("<Q", chunk, 18)
    if planes > 64 or bits > 256 * values + 65536:
        raise ValueError(
            f"SPERR chunk {index} declares {planes} bit planes in {bits} bits: impossible for {values} values"
        )


def _check_sperr(payload: memoryview, shape: tuple[int, ...], dtype: np.dtype, params: dict[str, Any]) -> None:
    is_float, engine_shape, _ = _read_header(payload)
    expected = _engine_shape(shape)
    if engine_shape != expected or is_float != (dtype.itemsize == 4):
        raise ValueError(
            f"its SPERR header holds a {engine_shape} {'float32' if is_float else 'float64'} array, "
            f"the sciz header a {expected} {dtype} chunk"
        )


def _decode_sperr(payload: memoryview, target: np.ndarray, params: dict[str, Any]) -> None:
    imagecodecs = engine()

    shape = _engine_shape(target.shape)
    padded = np.zeros(len(payload) + _OVERREAD, np.uint8)
    padded[: len(payload)] = np.frombuffer(payload, np.uint8)
    # The engine is told the true length; the zeros only absorb its reads past a short chunk.
    source = padded.data[: len(payload)]
    # Straight into the caller's array (the engine checks it against the payload's header).
    result = imagecodecs.sperr_decode(source, out=target.reshape(shape), numthreads=1)
    if result.shape != shape or result.dtype != target.dtype:
        raise ValueError(f"sperr payload holds {result.shape} {result.dtype}, expected {shape} {target.dtype}")


class SperrCodec(Codec):
    """SPERR with ``mode`` ('rate' bits per value, 'psnr' dB, 'pwe' point-wise error) and ``quality``,
    or simply ``tolerance`` (the same as ``mode='pwe', quality=tolerance``). ``fill_value`` marks missing
    data (kept exactly, never coded)."""

    name = "sperr"
    decode_chunk = staticmethod(_decode_sperr)
    check_payload = staticmethod(_check_sperr)
    split_longest = True  # two chunks along the frames of the benchmark field kept 0.71 of sz3's ratio, 0.64 of sperr's

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
            # The engine misses the bound by 1e2-1e4x once an axis it sees has 65536 values or more
            # (found by attack: (65536, 2, 2), (300, 300, 4, 4) folded to (90000, 4, 4)): the driver
            # then decodes and checks every element, patching or storing the chunk exactly.
            max(shaped.shape) >= _LONG_AXIS,
        )

    def hdf5_filter(self, array: Any) -> dict[str, Any] | None:
        import hdf5plugin

        values = np.asarray(array)
        if not 2 <= sum(n > 1 for n in values.shape) <= 3:
            # Found by a trial user: h5py's write then fails with "filter returned failure".
            raise SperrError(
                f"the SPERR HDF5 filter codes 2-D and 3-D chunks, not an array of shape {values.shape}: "
                "use zfp or sz3, or save as .zspy"
            )
        low, high = float(np.min(values)), float(np.max(values))
        if not (np.isfinite(low) and np.isfinite(high)):
            # In every mode: the engine inside the filter crashes the process on NaN/Inf.
            raise SperrError(
                "the SPERR HDF5 filter cannot hold NaN/Inf; save as .zspy, whose sciz streams keep them exactly"
            )
        if self.mode == "rate":
            return dict(hdf5plugin.Sperr(rate=self.quality, swap=True))
        if self.mode == "psnr":
            return dict(hdf5plugin.Sperr(peak_signal_to_noise_ratio=self.quality, swap=True))
        engine_level = tightened_tolerance(self.quality, low, high, values.dtype)
        if engine_level is None:
            raise SperrError(
                f"tolerance {self.quality:g} is below the float precision of values up to {max(abs(low), abs(high)):g}"
                + fill_hint(low, high)
            )
        # swap: H5Z-SPERR hands SPERR the chunk's extents slowest axis first as if it were the fastest,
        # unless told to swap them (the flag is stored with the filter: older files still decode).
        # Measured, CCSM 110x64x128 at 1e-3 of its range: 5.76x without, 15.3x with (the ratio of
        # SPERR's own stream); nc4uvt's T 20.9x. The bound holds either way.
        return dict(hdf5plugin.Sperr(absolute=engine_level, swap=True))
