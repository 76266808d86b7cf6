"""ZFP: compressed floating-point (and 32/64-bit integer) arrays in rate, precision or tolerance mode.

Engine: imagecodecs' zfp 1.0.1. Its fixed-accuracy mode keeps the tolerance only while a 4^d block's
dynamic range fits its precision: next to 1e20 fill values it loses the small ones entirely
(measured: error 305 for tolerance 1e-3 on the real SST field). sciz checks the range per chunk and
verifies and patches whenever the engine could miss; NaN/Inf are masked (zfp makes NaN 8.0).
Decoding checks zfp's header (type, extents, mode) against the sciz header and pads a payload with
zeros up to the most the decoder can read: it reads without bounds (a truncated payload segfaulted).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ZfpError, argument_error
from .abc import Codec
from .driver import check_tolerance, engine, fill_hint, is_int, is_real, precision_fallback, tightened_tolerance

__all__ = ["ZfpCodec"]

# zfp converts a block to integers relative to its largest exponent: 30 (float32) / 62 (float64)
# bit planes. Below max|x| * 2**-BITS the tolerance is no longer honoured; keep a wide margin.
_SAFE_RANGE_BITS = {"f4": 20, "f8": 48}
# Near the bottom of the exponent range zfp misses too (review: error 1e6 x tolerance at 1e-36 in
# float32, at 1e-300 in float64; fine from 1e-28 and 1e-280): verify below these tolerances.
_SAFE_TOLERANCE = {"f4": 2.0**-80, "f8": 2.0**-900}
#: One thread per engine call (the driver runs chunks in parallel); the payload in a new bytearray.
_INTO: dict[str, Any] = {"numthreads": 1, "out": bytearray}


#: zfp's scalar types by the 2-bit code of its header (zfp_type - 1) and its stream's first bytes.
_ZFP_TYPES = ("i4", "i8", "f4", "f8")
_ZFP_MAGIC = b"zfp\x05"  # "zfp" and codec version 5 (zfp 1.0)
_HEADER_MAX_BITS = 148
_MIN_EXP = -1074


def _read_header(payload: memoryview) -> tuple[str, tuple[int, ...], int, int, int, int]:
    """(dtype, shape slowest axis first, minbits, maxbits, maxprec, minexp) from a zfp header (zfp.c's layout).

    The bit stream is little-endian 64-bit words filled from the low bit: 32 bits of magic, 52 of
    field metadata (2 type, 2 dimensionality, 48 of sizes - 1), then a 12-bit mode or a 64-bit one.
    """
    if len(payload) < 16 or bytes(payload[:4]) != _ZFP_MAGIC:
        raise ValueError(f"the payload does not start with a zfp 1.0 header ({bytes(payload[:4])!r})")
    bits = int.from_bytes(bytes(payload[:24]).ljust(24, b"\0"), "little")
    meta = (bits >> 32) & ((1 << 52) - 1)
    dtype = _ZFP_TYPES[meta & 3]
    dims = ((meta >> 2) & 3) + 1
    width = {1: 48, 2: 24, 3: 16, 4: 12}[dims]
    sizes = [((meta >> (4 + width * i)) & ((1 << width) - 1)) + 1 for i in range(dims)]
    if dims == 1:
        sizes = [((meta >> 4) & 0xFFFFFFFF) + 1]  # zfp reads 32 of the 48 bits
    mode = (bits >> 84) & 0xFFF
    if mode < 2048:  # fixed rate
        minbits = maxbits = mode + 1
        maxprec, minexp = 64, _MIN_EXP
    elif mode < 2048 + 128:  # fixed precision
        minbits, maxbits, maxprec, minexp = 1, 16658, mode + 1 - 2048, _MIN_EXP
    elif mode == 2048 + 128:  # reversible
        minbits, maxbits, maxprec, minexp = 1, 16658, 64, _MIN_EXP - 1
    elif mode <= 4094:  # fixed accuracy
        minbits, maxbits, maxprec, minexp = 1, 16658, 64, mode + _MIN_EXP - (2048 + 128 + 1)
    else:  # 64-bit expert mode
        long_mode = mode + (((bits >> 96) & ((1 << 52) - 1)) << 12)
        minbits = ((long_mode >> 12) & 0x7FFF) + 1
        maxbits = ((long_mode >> 27) & 0x7FFF) + 1
        maxprec = ((long_mode >> 42) & 0x7F) + 1
        minexp = ((long_mode >> 49) & 0x7FFF) - 16495
    if minbits > maxbits or not 0 < maxprec <= 64:
        raise ValueError(f"the zfp header holds an impossible mode (bits {minbits}-{maxbits}, precision {maxprec})")
    return dtype, tuple(reversed(sizes)), minbits, maxbits, maxprec, minexp


def _check_zfp(payload: memoryview, shape: tuple[int, ...], dtype: np.dtype, params: dict[str, Any]) -> None:
    code, engine_shape, *_ = _read_header(payload)
    expected = _engine_shape(shape)
    if engine_shape != expected or code != dtype.str[1:]:
        raise ValueError(
            f"its zfp header holds a {engine_shape} {np.dtype(code)} array, the sciz header a {expected} {dtype} chunk"
        )


def _maximum_size(payload: memoryview) -> int:
    """zfp_stream_maximum_size for the payload's header: no block can make the decoder read further."""
    code, shape, minbits, maxbits, maxprec, minexp = _read_header(payload)
    reversible = minexp < _MIN_EXP
    values = 4 ** len(shape)
    blocks = math.prod((n + 3) // 4 for n in shape)
    extra = {"i4": (0, 5), "i8": (0, 6), "f4": (9, 15), "f8": (12, 19)}[code][reversible]
    block_bits = extra + values - 1 + values * min(maxprec, np.dtype(code).itemsize * 8)
    block_bits = max(min(block_bits, maxbits), minbits)
    return ((_HEADER_MAX_BITS + blocks * block_bits + 63) // 64) * 8


def _decode_zfp(payload: memoryview, target: np.ndarray, params: dict[str, Any]) -> None:
    imagecodecs = engine()

    shape = _engine_shape(target.shape)
    # zfp reads its bit stream without bounds: a truncated payload would be read past its end
    # (measured: SIGSEGV). Pad it with zeros up to the most any block could read, plus a word.
    size = _maximum_size(payload) + 8
    if len(payload) < size:
        padded = np.zeros(size, np.uint8)
        padded[: len(payload)] = np.frombuffer(payload, np.uint8)
        payload = padded.data
    # Decode straight into the caller's array; the engine checks it against the payload's header.
    result = imagecodecs.zfp_decode(payload, out=target.reshape(shape))
    if result.shape != shape or result.dtype != target.dtype:
        raise ValueError(f"zfp payload holds {result.shape} {result.dtype}, expected {shape} {target.dtype}")


def _engine_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    # zfp codes 4^d blocks: a length-1 axis would be padded to 4 (measured: 2x larger on the real
    # (1, 17, 96, 192) ECHAM5 field), so drop such axes; fold leading axes beyond zfp's four.
    dims = [n for n in shape if n != 1] or [1]
    if len(dims) > 4:
        dims = [int(np.prod(dims[:-3])), *dims[-3:]]
    return tuple(dims)


class ZfpCodec(Codec):
    """ZFP with exactly one of ``rate`` (bits per value), ``precision`` (bit planes) or ``tolerance``.

    ``tolerance=0`` selects zfp's reversible (lossless) mode. ``fill_value`` marks missing data
    (kept exactly, never coded). ``accuracy`` (with ``tolerance`` only) is the tolerance handed to the
    engine instead of ``tolerance``: zfp's real error is typically 4-8x below the tolerance it is
    given, so a larger accuracy often still keeps ``tolerance`` almost everywhere; the driver checks
    every element and stores the misses exactly, so ``tolerance`` holds whatever ``accuracy`` is.
    :func:`sciz.codecs.choose` tries it.
    """

    name = "zfp"
    decode_chunk = staticmethod(_decode_zfp)
    check_payload = staticmethod(_check_zfp)
    align = 4  # zfp codes blocks of 4 values per axis: cut chunks on block edges
    fill_method = "pyramid"  # flat 4^d blocks of missing data cost nothing (SST: 4.2 against 3.4 linear)

    def __init__(
        self,
        *,
        rate: float | None = None,
        precision: int | None = None,
        tolerance: float | None = None,
        accuracy: float | None = None,
        fill_value: float | None = None,
    ):
        super().__init__(fill_value=fill_value)
        given = [k for k, v in (("rate", rate), ("precision", precision), ("tolerance", tolerance)) if v is not None]
        if len(given) != 1:
            raise ZfpError(f"give exactly one of rate, precision or tolerance (got {', '.join(given) or 'none'})")
        self._rate = self._precision = self._tolerance = None
        if rate is not None:
            if not is_real(rate) or not 0 < float(rate) <= 64:
                raise argument_error("rate", rate, "must be a number of bits per value in (0, 64]", cls=ZfpError)
            self._rate = float(rate)
        if precision is not None:
            if not is_int(precision) or not 1 <= precision <= 64:
                raise argument_error("precision", precision, "must be an int from 1 to 64", cls=ZfpError)
            self._precision = int(precision)
        if tolerance is not None:
            self._tolerance = check_tolerance(tolerance, ZfpError)
        self._accuracy = None
        if accuracy is not None:
            if not self._tolerance:
                raise argument_error("accuracy", accuracy, "goes with a positive tolerance=", cls=ZfpError)
            self._accuracy = check_tolerance(accuracy, ZfpError, "accuracy")
            if not self._accuracy > 0:
                raise argument_error("accuracy", accuracy, "must be a positive tolerance for the engine", cls=ZfpError)

    def params(self) -> dict[str, Any]:
        if self._rate is not None:
            return {"rate": self._rate}
        if self._precision is not None:
            return {"precision": self._precision}
        if self._accuracy is not None:
            return {"tolerance": self._tolerance, "accuracy": self._accuracy}
        return {"tolerance": self._tolerance}

    @property
    def tolerance(self) -> float | None:
        return self._tolerance

    def check_array(self, data: Any) -> np.ndarray:
        # One error naming the dtype and what zfp takes in this mode (a trial user met the generic
        # dtype list, which offers int32 to a tolerance that int32 cannot have).
        dtype = getattr(data, "dtype", None)
        kind = np.dtype(dtype).kind if dtype is not None else ""
        if self._tolerance and kind and kind in "iub":
            raise ZfpError(
                f"data: zfp with a tolerance codes float32/float64 data only, got {np.dtype(dtype)}; "
                "integers take rate=, precision= or tolerance=0 (lossless), for int32 and int64 only "
                "(other integer types: lerc, pcodec or szip)"
            )
        return super().check_array(data)

    def encode_chunk(self, chunk: np.ndarray, low: float, high: float) -> tuple[int, bytes | bytearray, bool]:
        imagecodecs = engine()

        engine_array = chunk.reshape(_engine_shape(chunk.shape))
        # out=bytearray: the engine's buffer becomes the stream's (no copy of the payload).
        if self._rate is not None:
            return self.method, imagecodecs.zfp_encode(engine_array, self._rate, mode="r", **_INTO), False
        if self._precision is not None:
            return self.method, imagecodecs.zfp_encode(engine_array, self._precision, mode="p", **_INTO), False
        tolerance = self._tolerance
        assert tolerance is not None
        if tolerance == 0:
            return self.method, imagecodecs.zfp_encode(engine_array, **_INTO), False
        if self._accuracy is not None:  # the engine gets the accuracy; the driver checks the tolerance
            payload = imagecodecs.zfp_encode(engine_array, self._accuracy, mode="a", **_INTO)
            return self.method, payload, True
        engine_tolerance = tightened_tolerance(tolerance, low, high, chunk.dtype)
        if engine_tolerance is None:
            raise precision_fallback(tolerance, low, high, chunk.dtype)
        magnitude = max(abs(low), abs(high))
        code = chunk.dtype.str[1:]
        risky = magnitude > tolerance * 2.0 ** _SAFE_RANGE_BITS[code] or tolerance < _SAFE_TOLERANCE[code]
        if math.floor(math.log2(engine_tolerance)) < math.floor(math.log2(tolerance)):
            # zfp codes down to the bit plane floor(log2(tolerance)): tightening a power of two such as
            # 0.5 would cost a whole plane (12-15 % of the ratio). Its real error stays far below the
            # tolerance; the driver checks every element and stores any miss exactly.
            engine_tolerance, risky = tolerance, True
        payload = imagecodecs.zfp_encode(engine_array, engine_tolerance, mode="a", **_INTO)
        return self.method, payload, risky

    def hdf5_filter(self, array: Any) -> dict[str, Any] | None:
        import hdf5plugin

        if self._tolerance == 0:
            return dict(hdf5plugin.Zfp(reversible=True))
        if self._accuracy is not None:
            raise ZfpError("accuracy= needs sciz's per-element check, which an HDF5 filter cannot make: use .zspy")
        values = np.asarray(array)
        low, high = float(np.min(values)), float(np.max(values))
        if not (np.isfinite(low) and np.isfinite(high)):
            # Every lossy mode: NaN/Inf come back as +-2 or 8 and spoil their block's other values.
            raise ZfpError("the zfp HDF5 filter mangles NaN/Inf; save as .zspy, whose sciz streams keep them exactly")
        if self._tolerance is None:
            if self._rate is not None:
                return dict(hdf5plugin.Zfp(rate=self._rate))
            return dict(hdf5plugin.Zfp(precision=self._precision or 0))
        engine_level = tightened_tolerance(self._tolerance, low, high, values.dtype)
        if (
            engine_level is None
            or max(abs(low), abs(high)) > self._tolerance * 2.0 ** _SAFE_RANGE_BITS[values.dtype.str[1:]]
            or self._tolerance < _SAFE_TOLERANCE[values.dtype.str[1:]]
        ):
            raise ZfpError(
                "the zfp HDF5 filter cannot keep this tolerance for this value range "
                f"({low:g}..{high:g}){fill_hint(low, high)}; or use sz3, whose engine keeps absolute bounds"
            )
        return dict(hdf5plugin.Zfp(accuracy=engine_level))
