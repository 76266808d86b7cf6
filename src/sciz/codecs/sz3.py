"""SZ3: prediction-based error-bounded compression of floating-point fields.

Engine: imagecodecs' sz3 3.3.2. Its absolute mode keeps the bound in the data's own precision and
keeps NaN/Inf, but its stream carries neither shape nor dtype, and decoding with a wrong shape or
dtype, or decoding damaged bytes, kills the process (its C++ exceptions end in std::terminate). The
sciz stream records both and checks every byte before the engine sees it; the SZ3 config block is
checked against the sciz header, and since a forged body still aborts the engine, the default
decode runs sz3 payloads in a child process.
"""

from __future__ import annotations

import math
import struct
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


def _engine_bound(tolerance: float, dtype: np.dtype) -> float:
    """The bound to give the engine so that its own check, done in the data's precision, keeps ``tolerance``.

    SZ3 accepts a quantised value when ``|decoded - original|`` computed in the data's type is at
    most the bound; that difference is rounded, so the real error can pass the bound by half an
    ulp of it (found by hypothesis: 0.50000001 for 0.5 on float32 values of 1e-8). Asking for the
    bound less a few ulps of itself closes that gap at no measurable cost in ratio.
    """
    return tolerance * (1.0 - 8.0 * float(np.finfo(dtype).eps))


#: The SZ3 data format the engine reads (3.3.0: it refuses, by aborting, any other).
_SZ3_MAGIC, _SZ3_DATA_VERSION = 0xF342F310, (3 << 24) | (3 << 16)
_SZ3_ALGORITHMS = 7  # ALGO_LORENZO_REG ... ALGO_BIOMDXTC
_SZ3_BOUND_VALUES = (1, 1, 1, 1, 2, 2)  # doubles stored per error-bound mode (EB_ABS ... EB_ABS_OR_REL)


def _check_sz3(payload: memoryview, shape: tuple[int, ...], dtype: np.dtype, params: dict[str, Any]) -> None:
    """Compare the SZ3 config block that opens the payload with the sciz chunk.

    Layout (SZ3 Config::load, data format 3.3.0): config size u8, magic u32, data version u32,
    ndim u8, bits per extent u8, the extents bit-packed slowest first, element count u64,
    algorithm u8, error-bound mode u8, the bound(s) as doubles, then flags (bit 3: OpenMP layout).
    The engine trusts these: extents larger than the chunk overrun its buffer (measured SIGSEGV).
    """
    raw = bytes(payload[:256])
    if len(raw) < 11:
        raise ValueError(f"a {len(raw)}-byte payload cannot hold an SZ3 header")
    config_size = raw[0]
    magic, version = struct.unpack_from("<II", raw, 1)
    if magic != _SZ3_MAGIC or version != _SZ3_DATA_VERSION:
        raise ValueError(f"its SZ3 header has magic {magic:#x}, data version {version:#x}: not an SZ3 3.3.0 stream")
    ndim, width = raw[9], raw[10]
    if not 1 <= ndim <= 4 or not 1 <= width <= 64:
        raise ValueError(f"its SZ3 header declares {ndim} dimensions of {width} bits: impossible values")
    packed_bytes = (ndim * width + 7) // 8
    end = 11 + packed_bytes + 8 + 2
    if config_size < end - 1 or len(raw) < end or len(payload) <= config_size:
        raise ValueError(f"its SZ3 header is truncated ({len(payload)} bytes, config of {config_size})")
    packed = int.from_bytes(raw[11 : 11 + packed_bytes], "little")
    dims = tuple((packed >> (width * i)) & ((1 << width) - 1) for i in range(ndim))
    (count,) = struct.unpack_from("<Q", raw, 11 + packed_bytes)
    algorithm, bound_mode = raw[end - 2], raw[end - 1]
    expected = _engine_shape(shape)
    if len(expected) == 5:  # the engine folds a fifth axis into the first
        expected = (expected[0] * expected[1], *expected[2:])
    if dims != expected or count != math.prod(expected):
        raise ValueError(
            f"its SZ3 header holds a {dims} array of {count} values, the sciz header a {expected} {dtype} chunk"
        )
    if algorithm >= _SZ3_ALGORITHMS or bound_mode >= len(_SZ3_BOUND_VALUES):
        raise ValueError(f"its SZ3 header names algorithm {algorithm} and error-bound mode {bound_mode}: unknown")
    flags_at = end + 8 * _SZ3_BOUND_VALUES[bound_mode]
    if flags_at < config_size + 1 and flags_at < len(raw) and raw[flags_at] & 0x08:
        raise ValueError("its SZ3 header asks for the OpenMP layout, which sciz never writes")


class Sz3Codec(Codec):
    """SZ3 in absolute-error mode: every element within ``tolerance``; ``tolerance=0`` stores exactly.
    ``fill_value`` marks missing data (kept exactly, never coded)."""

    name = "sz3"
    decode_chunk = staticmethod(_decode_sz3)
    check_payload = staticmethod(_check_sz3)
    split_longest = True  # two chunks along the frames of the benchmark field kept 0.71 of sz3's ratio, 0.64 of sperr's
    isolate = True  # SZ3 aborts the process on a forged body that no header check can see

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
        bound = _engine_bound(self._tolerance, chunk.dtype)
        return self.method, imagecodecs.sz3_encode(shaped, abs=bound, out=bytearray), False

    def hdf5_filter(self, array: Any) -> dict[str, Any] | None:
        import hdf5plugin

        if self._tolerance == 0:
            raise Sz3Error("tolerance=0 is lossless: use a lossless HDF5 filter (gzip, zstd, blosc2)")
        shape = np.shape(array)
        if len(shape) > 1 and shape[0] == 1 and sum(n > 1 for n in shape) <= 1:
            # H5Z-SZ3 sizes such chunks from their first axis ((1, 64) as 1 value): every chunk then
            # fails to compress and HDF5 stores it uncompressed (found by a trial user).
            raise Sz3Error(
                f"the SZ3 HDF5 filter cannot code an array of shape {shape} (it stores it uncompressed): "
                "use zfp, or save as .zspy"
            )
        if np.isnan(np.asarray(array)).any():
            # Measured: the filter writes NaN back as about -2.1e6, and takes 30-45 s per chunk doing it.
            raise Sz3Error("the SZ3 HDF5 filter cannot hold NaN; save as .zspy, whose sciz streams keep them exactly")
        return dict(hdf5plugin.SZ3(absolute=_engine_bound(self._tolerance, np.dtype(array.dtype))))
