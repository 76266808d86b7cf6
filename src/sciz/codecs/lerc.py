"""LERC: limited-error raster compression of integer and floating-point arrays.

Engine: imagecodecs' lerc 4.0.0. Its stream is self-describing, but it turns NaN into -3.4e38 (even
when lossless) and overshoots its error bound by float rounding (1.000047e-3 for 1e-3). sciz
masks NaN/Inf and fill values and tightens the tolerance it asks for, so the promised bound holds.
LERC codes a validity mask itself (it was made for rasters with no-data pixels): masked elements
cost it nothing, so chunks with any are given to it with their mask (SST field, 31% land, 0.01 K:
ratio 5.5, against 4.3 with the best fill and no mask). Decoding checks
the LERC2 header (extents, data type, blob size) against the sciz header first.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from ..errors import LercError, argument_error
from .abc import Codec
from .driver import check_tolerance, engine, precision_fallback, tightened_tolerance

__all__ = ["LercCodec"]


def _engine_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    # LERC codes (rows, columns[, values per pixel]) as the raw engine does, and drops a trailing
    # length-1 axis: leave out length-1 axes, make 1-D one row, fold axes beyond three into rows.
    dims = [n for n in shape if n != 1] or [1]
    if len(dims) == 1:
        return (1, dims[0])
    if len(dims) <= 3:
        return tuple(dims)
    return (math.prod(dims[:-2]), *dims[-2:])


def _decode_lerc(payload: memoryview, target: np.ndarray, params: dict[str, Any]) -> None:
    imagecodecs = engine()

    shape = _engine_shape(target.shape)
    result = imagecodecs.lerc_decode(payload, out=target.reshape(shape))
    if result.shape != shape or result.dtype != target.dtype:
        raise ValueError(f"lerc payload holds {result.shape} {result.dtype}, expected {shape} {target.dtype}")


#: LERC2's data type codes (Lerc2::DataType) as numpy dtype strings.
_LERC_TYPES = ("i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8")


def _lerc_header(payload: memoryview, offset: int) -> tuple[tuple[int, int, int], str, int, int]:
    """(rows, columns, depth), dtype string, valid pixels and blob size of the LERC2 blob at ``offset``.

    Layout (Lerc2::ReadHeader): "Lerc2 ", version i32 (2-6), a checksum u32 from version 3, rows
    and columns i32, values per pixel i32 from version 4, valid pixels, micro block size and blob
    size i32, from version 6 two more fields (i32 and 4 flag bytes), then the data type i32.
    """
    raw = bytes(payload[offset : offset + 64])
    if len(raw) < 10 or raw[:6] != b"Lerc2 ":
        raise ValueError(f"the payload does not hold a LERC2 header at byte {offset} ({raw[:6]!r})")
    (version,) = struct.unpack_from("<i", raw, 6)
    if not 2 <= version <= 6:
        raise ValueError(f"its LERC2 header has version {version}; LERC 4 reads versions 2 to 6")
    position = 10 + (4 if version >= 3 else 0)
    names = ["rows", "columns", *(["depth"] if version >= 4 else []), "valid", "block", "size"]
    if len(raw) < position + 4 * len(names) + (8 if version >= 6 else 0) + 4:
        raise ValueError(f"a {len(payload)}-byte payload cannot hold a LERC2 header at byte {offset}")
    fields = dict(zip(names, struct.unpack_from(f"<{len(names)}i", raw, position), strict=True))
    position += 4 * len(names) + (8 if version >= 6 else 0)
    (type_code,) = struct.unpack_from("<i", raw, position)
    code = _LERC_TYPES[type_code] if 0 <= type_code < len(_LERC_TYPES) else f"type {type_code}"
    extents = (fields["rows"], fields["columns"], fields.get("depth", 1))
    return extents, code, fields["valid"], fields["size"]


def _check_lerc(payload: memoryview, shape: tuple[int, ...], dtype: np.dtype, params: dict[str, Any]) -> None:
    """Compare the LERC2 blob header(s) with the sciz chunk.

    A chunk is one blob of (rows, columns[, values per pixel]), or, for 3-D chunks with masked
    elements, one 2-D blob per band (LERC's planar layout), back to back.
    """
    expected = _engine_shape(shape)
    (rows, columns, depth), code, valid, size = _lerc_header(payload, 0)
    planar = len(expected) == 3 and depth == 1 and (rows, columns) == expected[1:]
    blobs = expected[0] if planar else 1
    engine_shape = (blobs, rows, columns) if planar else (rows, columns) if depth == 1 else (rows, columns, depth)
    if engine_shape != expected or code != dtype.str[1:]:
        raise ValueError(
            f"its LERC2 header holds a {engine_shape} {code} array, the sciz header a {expected} {dtype} chunk"
        )
    offset = 0
    for band in range(blobs):
        if band:
            extents, code, valid, size = _lerc_header(payload, offset)
            if extents != (rows, columns, 1) or code != dtype.str[1:]:
                raise ValueError(f"its LERC2 band {band} holds a {extents[:2]} {code} array, not {(rows, columns)}")
        if size <= 0 or offset + size > len(payload) or not 0 <= valid <= rows * columns:
            raise ValueError(
                f"its LERC2 header declares a {size}-byte blob with {valid} valid pixels at byte {offset}; "
                f"the payload has {len(payload)} bytes for {rows * columns} pixels per band"
            )
        offset += size
    if offset != len(payload):
        raise ValueError(f"its LERC2 blobs hold {offset} bytes, the payload {len(payload)}")


def _encode_lerc(shaped: np.ndarray, level: float, version: int, **options: Any) -> bytearray:
    """LERC's blob of ``shaped``, coded once.

    Given no buffer, imagecodecs first asks LERC for the exact blob size, a full extra analysis
    pass (30% of the encode time on a 256 MB float32 field); given one, LERC checks its size before
    writing. So the blob is written into a buffer of :func:`_lerc_bound` bytes (untouched pages cost
    nothing), and into one of the exact size should a LERC version ever need more.
    """
    imagecodecs = engine()

    buffer = np.empty(_lerc_bound(shaped.shape, shaped.dtype.itemsize, bool(options.get("planar"))), np.uint8)
    try:
        return bytearray(imagecodecs.lerc_encode(shaped, level, version=version, out=buffer, **options))
    except imagecodecs.LercError as exc:
        if "BufferTooSmall" not in str(exc):
            raise
    return imagecodecs.lerc_encode(shaped, level, version=version, out=bytearray, **options)


def _lerc_bound(shape: tuple[int, ...], itemsize: int, planar: bool) -> int:
    """The most bytes LERC writes for ``shape`` (as imagecodecs lays it out into bands, rows,
    columns and values per pixel): it stores the values raw when coding them would not be
    smaller, so per band at most a header (90 bytes), the mask's run-length code, the value
    ranges, two flag bytes and the raw values."""
    bands = shape[0] if planar else 1
    rows, columns = shape[-2:] if planar or len(shape) == 2 else shape[:2]
    depth = 1 if planar or len(shape) == 2 else shape[2]
    mask = (rows * columns + 7) // 8
    per_band = 256 + mask + mask // 1024 + 2 * depth * itemsize + rows * columns * depth * itemsize
    return bands * per_band


class LercCodec(Codec):
    """LERC with ``tolerance`` (maximum absolute error; 0.0, the default, is lossless) and ``version`` (2, 3, 4);
    ``fill_value`` marks missing data (kept exactly, never coded)."""

    name = "lerc"
    decode_chunk = staticmethod(_decode_lerc)
    fill_method = "pyramid"  # the best fill for LERC, should a container fill for it; streams do not
    engine_skips_masked = True  # measured: the same blob whatever the masked elements hold
    check_payload = staticmethod(_check_lerc)

    def __init__(self, *, tolerance: float | None = None, version: int | None = None, fill_value: float | None = None):
        super().__init__(fill_value=fill_value)
        self._tolerance = 0.0 if tolerance is None else check_tolerance(tolerance, LercError)
        if version is not None and (isinstance(version, bool) or version not in (2, 3, 4)):
            raise argument_error("version", version, "must be 2, 3 or 4 (LERC2 codec versions)", cls=LercError)
        self.version = 4 if version is None else int(version)

    def params(self) -> dict[str, Any]:
        return {"tolerance": self._tolerance, "version": self.version}

    @property
    def tolerance(self) -> float:
        return self._tolerance

    def encode_chunk(self, chunk: np.ndarray, low: float, high: float) -> tuple[int, bytes | bytearray, bool]:
        shaped = chunk.reshape(_engine_shape(chunk.shape))
        level, verify = self._level(chunk.dtype, low, high)
        return self.method, _encode_lerc(shaped, level, self.version), verify

    def encode_masked_chunk(
        self, chunk: np.ndarray, valid: np.ndarray, low: float, high: float
    ) -> tuple[int, bytes | bytearray, bool]:
        shape = _engine_shape(chunk.shape)
        level, verify = self._level(chunk.dtype, low, high)
        # A mask per element needs LERC's band layout for 3-D (bands, rows, columns); its pixel
        # layout would take one mask for all values of a pixel. The decoder reads either layout.
        payload = _encode_lerc(
            chunk.reshape(shape), level, self.version, masks=valid.reshape(shape), planar=len(shape) == 3
        )
        return self.method, payload, verify

    def _level(self, dtype: np.dtype, low: float, high: float) -> tuple[float, bool]:
        """The maxZErr to ask the engine for so that :attr:`tolerance` holds after rounding to ``dtype``,
        and whether the driver must verify the result element by element."""
        tolerance = self._tolerance
        if dtype.kind in "iu":
            # Below one unit only exact integers keep the bound (maxZErr 0.5 is lossless). From one
            # unit up the engine keeps floor(tolerance) on integers (measured: u1-i4, 720 arrays,
            # never over); it dequantises in double and rounds, so every element is still checked.
            return (0.5, False) if tolerance < 1 else (float(math.floor(tolerance)), True)
        if tolerance == 0:
            return 0.0, False
        engine_level = tightened_tolerance(tolerance, low, high, dtype)
        if engine_level is None:
            raise precision_fallback(tolerance, low, high, dtype)
        return engine_level, False
