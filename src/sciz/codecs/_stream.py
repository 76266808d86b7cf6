"""The sciz codec stream: a small checked header around one or more engine payloads.

The engines' own streams do not all carry shape and dtype, and every engine crashes or returns
garbage on some damaged input. A sciz stream therefore records everything needed to decode
(codec, dtype, shape, parameters, chunk layout) and a CRC-32 of the header and of each chunk,
so damage is detected before an engine ever sees the bytes. A forger can reseal the checksums:
the codecs then check their engine's own header against this one (``Codec.check_payload``), and
engines no check makes safe decode in a child process (:mod:`sciz.codecs._isolate`).

Layout (little-endian)::

    0   4   magic b"\\x89SZC"
    4   1   stream format version (2, or 3 for chunks split along another axis than the first;
            versions 1 and 2 are still read, and written wherever they can say the layout)
    5   1   codec number (CODEC_NUMBERS)
    6   1   dtype number (DTYPES)
    7   1   flags (bit 0: the caller's array was big-endian)
    8   1   ndim
    9   1   version 3: the axis of the chunked view the chunks split (versions 1-2: zero, axis 0)
    10  2   reserved, zero
    12  4   length P of the parameters JSON
    16  8*ndim  shape
    ..  P   parameters JSON (UTF-8)
    ..  8   rows per chunk along the split axis
    ..  4   number of chunks
    ..  32*n  per chunk: method u8, fallback reason u8, 2 reserved, CRC-32 u32 of the chunk body,
              engine bytes u64, patch count u64, mask bytes u64  (version 1: 24 bytes, no reason
              and no mask)
    ..  4   CRC-32 of everything above
    then per chunk: engine bytes, mask section, patch indices (u64 each), patch values (dtype each)

A *mask section* records which elements were not coded by the engine (NaN, +-Inf and the codec's
``fill_value``) and restores them exactly, compactly (1.2 kB for the 31% land of the 2.9 MB SST
field, where version 1 spent 8 bytes of index per element)::

    0   1   coding: 1 = zstd of [the mask, np.packbits little bit order, in the chunk's C order]
            followed, when the table holds more than one value, by a u8 table index per masked element
    1   1   reserved, zero
    2   2   table count K (1-256): the distinct bit patterns of the masked elements
    4   4   reserved, zero
    8   8   masked count M
    16  K*itemsize  the table (dtype)
    ..  the zstd frame

A stream of an engine that decodes in a child process (SZ3) ends its parameters with
``"mac":"<64 hex digits>"``: an HMAC-SHA256 under this user's key of the whole stream, with those
digits as zeros and without the header CRC (:mod:`sciz.codecs._trust`). A valid one lets the
stream decode in-process; readers that know no tags ignore the parameter.

A *patch* stores an element exactly: an element an engine would otherwise return outside the
promised bound, and the rare masked value the table does not hold. A *fallback reason* says why a
lossy codec stored a chunk exactly (:class:`Fallback`); ``sciz info`` reports it.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import struct
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

import numpy as np

from .._util import crc32
from ..errors import ArgumentError, CodecError
from . import _trust
from .registry import spec, spec_for_method

__all__ = [
    "DTYPES",
    "MAGIC",
    "Chunk",
    "Fallback",
    "StreamHeader",
    "crc32",
    "describe_stream",
    "is_own",
    "is_sciz_stream",
    "pack_mask",
    "pack_stream",
    "parse_stream",
    "plan_chunks",
    "stored_codecs",
    "unpack_mask",
]

MAGIC = b"\x89SZC"
VERSION = 2
#: The version of streams whose chunks split another axis than the first (older readers refuse it).
VERSION_SPLIT = 3
DTYPES = ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8")
MAX_NDIM = 32
MAX_PARAMS = 65536
MAX_EXTENT = 1 << 48
_FIXED = struct.Struct("<4sBBBBBB2sI")
_CHUNK = struct.Struct("<BB2sIQQQ")
_CHUNK_V1 = struct.Struct("<B3sIQQ")
_MASK = struct.Struct("<BBHIQ")
#: Mask coding 1: zstd (long repeats such as a land mask over many time steps cost almost nothing;
#: measured on the SST land mask, 91,800 packed bytes: zstd 1,190, deflate 1,733, run lengths 1,612).
_MASK_ZSTD = 1
_MASK_LEVEL = 3  # level 19 saves 13% of a 1 kB mask but takes 26 s on a 16 MB one
#: The most distinct masked values a table holds (a u8 index each); rarer ones become patches.
MAX_TABLE = 256
#: The largest chunk: engines allocate work buffers the size of what they code, so peak memory
#: stays near input + a few chunks whatever the array's size.
CHUNK_BYTES = 512 * 1024 * 1024
#: The parameter holding a stream's tag (:mod:`sciz.codecs._trust`).
_TAG_KEY = "mac"
#: The smallest chunk worth its own engine call when splitting for threads.
MIN_CHUNK_BYTES = 8 * 1024 * 1024


class Fallback(IntEnum):
    """Why a chunk of a lossy codec was stored exactly (the chunk table's reason byte)."""

    NONE = 0  #: coded by the codec's engine, or exact by design (lossless asked for, tiny or constant chunk)
    ENGINE_REFUSED = 1  #: the engine raised an error on the chunk
    BOUND_MISSES = 2  #: the engine missed the bound on too many elements to patch them
    PRECISION = 3  #: the tolerance is below the data's float precision (or next to the type's overflow)

    @property
    def description(self) -> str:
        return _FALLBACK_TEXT[self]


_FALLBACK_TEXT = {
    Fallback.NONE: "none",
    Fallback.ENGINE_REFUSED: "the engine refused the data",
    Fallback.BOUND_MISSES: "the engine missed the bound on too many elements",
    Fallback.PRECISION: "the tolerance is below the data's float precision",
}


@dataclass
class Chunk:
    """One chunk of a stream: rows ``start:stop`` of the split axis, encoded by ``method``.

    ``mask`` is the chunk's mask section (:func:`pack_mask`, empty when every element went through
    the engine) and ``masked`` the number of elements it restores; ``fallback`` says why a lossy
    codec stored the chunk exactly.
    """

    method: int
    payload: bytes | bytearray | memoryview
    patch_index: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    patch_values: np.ndarray | None = None
    crc: int = 0
    mask: bytes | memoryview = b""
    masked: int = 0
    fallback: int = Fallback.NONE


@dataclass
class StreamHeader:
    codec: str
    dtype: np.dtype
    shape: tuple[int, ...]
    params: dict[str, Any]
    rows: int
    big_endian: bool = False
    chunks: list[Chunk] = field(default_factory=list)
    version: int = VERSION
    #: The axis of :attr:`chunked_shape` the chunks split (see :func:`plan_chunks`).
    axis: int = 0
    #: The stream's tag (``params["mac"]``, see :mod:`sciz.codecs._trust`) and where its hex digits
    #: and the header's CRC start; None for an untagged stream.
    tag: tuple[bytes, int, int] | None = None
    #: Whether the tag is valid under this user's key, once :func:`is_own` has checked it (the chunks
    #: are views of the bytes it hashed, so the answer holds for this header's decode).
    own: bool | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def chunked_shape(self) -> tuple[int, ...]:
        return chunked_shape(self.shape)

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        """Rows of the chunked view's split axis held by chunk ``index``."""
        start = index * self.rows
        return start, min(self.chunked_shape[self.axis], start + self.rows)

    def chunk_region(self, index: int) -> tuple[slice, ...]:
        """Chunk ``index`` as an index into the chunked view."""
        start, stop = self.chunk_bounds(index)
        return (*(slice(None),) * self.axis, slice(start, stop))

    def chunk_shape(self, index: int) -> tuple[int, ...]:
        start, stop = self.chunk_bounds(index)
        dims = list(self.chunked_shape)
        dims[self.axis] = stop - start
        return tuple(dims)


def chunked_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The view of an array that chunks split: leading length-1 axes dropped
    (a (1, N) array is cut along N, not left whole), 0-d as one element."""
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    return tuple(dims) or (1,)


def plan_chunks(
    shape: tuple[int, ...], itemsize: int, *, align: int = 4, threads: int = 1, longest: bool = False
) -> tuple[int, int]:
    """``(axis, rows)``: the chunked view's axis the chunks cut and how many of its rows each holds.

    One chunk per thread, within the chunk limits. Fewer, larger chunks compress better (each
    engine call restarts its prediction and tables: measured on a smooth 256 MB field, sz3 gives
    ratio 109 in 32 MB chunks and 397 whole), so a single thread codes up to ``CHUNK_BYTES`` at
    once and ``threads`` share the work evenly. Chunks cut the first axis (contiguous, no copy)
    unless ``longest``: codecs that predict along every axis keep more of their ratio when the
    longest axis is cut (measured on the (64, 1024, 1024) benchmark field in two halves: sz3 keeps
    0.71 of its ratio cut along the 64 frames and 0.95 along 1024 rows, sperr 0.64 and 0.84; on the
    CCSM field (110, 64, 128) sperr keeps 0.70 and 0.97; zfp and lerc keep 1.00 either way). Rows
    are a multiple of ``align`` where possible (zfp codes 4^d blocks; a cut elsewhere costs ratio).
    """
    shape = chunked_shape(shape)
    total = math.prod(shape) * itemsize
    chunk_bytes = min(CHUNK_BYTES, max(MIN_CHUNK_BYTES, math.ceil(total / max(1, threads))))
    count = max(1, math.ceil(total / chunk_bytes))
    axis = shape.index(max(shape)) if longest and count > 1 else 0
    extent = shape[axis]
    rows = max(1, math.ceil(extent / count))
    if rows % align:
        # Up to whole blocks: zfp pads a chunk of 2 rows to 4 (measured: (4, 1024, 1024) on two
        # threads fell from ratio 3.64 to 2.55 in chunks of 2 rows).
        rows += align - rows % align
    rows = max(1, min(rows, extent))
    return (axis, rows) if rows < extent else (0, shape[0])


def codec_error(name: str, default: type[CodecError]) -> type[CodecError]:
    """The seed's error class of codec ``name`` (ZfpError for "zfp"...), from the codec table."""
    try:
        return spec(name).error
    except ArgumentError:
        return default


def is_sciz_stream(data: Any) -> bool:
    try:
        return bytes(memoryview(data)[:4]) == MAGIC
    except TypeError:
        return False


def pack_stream(header: StreamHeader, *, in_place: bool = False, key: bytes | None = None) -> bytearray:
    """Serialise a header and its chunks into one self-describing stream.

    ``key``: tag the stream with this user's key (:mod:`sciz.codecs._trust`), the last parameter
    ``"mac"``, so that its decode may skip the child process. Readers that know no tags ignore it.

    ``in_place=True`` builds the stream inside the first chunk's payload when that is a bytearray
    (the driver's own engine output, which it hands over): the header is moved in front of it and
    the other sections appended, so the largest section is not copied into a fresh buffer (the
    copy and its page faults took 0.1 s of szip's 1.4 s on a 256 MB float32 field).
    """
    settings = {k: v for k, v in header.params.items() if k != _TAG_KEY}
    if key is not None:
        settings[_TAG_KEY] = "0" * _trust.TAG_HEX  # a placeholder the tag replaces once all is written
    params = json.dumps(settings, separators=(",", ":"), allow_nan=False).encode()
    flags = 1 if header.big_endian else 0
    parts: list[bytes | bytearray | memoryview] = [
        _FIXED.pack(
            MAGIC,
            VERSION_SPLIT if header.axis else VERSION,
            spec(header.codec).method,
            DTYPES.index(header.dtype.str[1:]),
            flags,
            len(header.shape),
            header.axis,
            b"\0\0",
            len(params),
        ),
        struct.pack(f"<{len(header.shape)}Q", *header.shape),
        params,
        struct.pack("<QI", header.rows, len(header.chunks)),
    ]
    bodies: list[bytes | bytearray | memoryview] = []
    for chunk in header.chunks:
        patches = b""
        if chunk.patch_index.size:
            assert chunk.patch_values is not None
            patches = chunk.patch_index.astype("<u8").tobytes() + np.ascontiguousarray(chunk.patch_values).tobytes()
        crc = crc32(chunk.payload)
        for section in (chunk.mask, patches):
            if len(section):
                crc = crc32(section, crc)
        parts.append(
            _CHUNK.pack(
                chunk.method,
                chunk.fallback,
                b"\0\0",
                crc,
                len(chunk.payload),
                chunk.patch_index.size,
                len(chunk.mask),
            )
        )
        bodies.extend(section for section in (chunk.payload, chunk.mask, patches) if len(section))
    head = b"".join(parts)
    head += struct.pack("<I", crc32(head))
    first = header.chunks[0].payload if header.chunks else None
    if in_place and isinstance(first, bytearray) and first:
        first[:0] = head  # a memmove within memory already touched
        for body in bodies[1:]:
            first += body
        stream = first
    else:
        stream = bytearray().join([head, *bodies])
    if key is not None:
        digits = _tag_digits(_FIXED.size + 8 * len(header.shape) + len(params))
        header_end = len(head) - 4
        with memoryview(stream) as view:
            value = _trust.tag(key, _tagged_pieces(view, digits, header_end))
        stream[digits : digits + _trust.TAG_HEX] = value.hex().encode()
        stream[header_end : header_end + 4] = struct.pack("<I", crc32(memoryview(stream)[:header_end]))
    return stream


def _tag_digits(params_end: int) -> int:
    """Where the tag's hex digits start: the parameters end with them and ``"}``."""
    return params_end - 2 - _trust.TAG_HEX


def _tagged_pieces(view: memoryview, digits: int, header_end: int) -> list[Any]:
    """What a tag covers: the whole stream with the tag's digits as zeros and without the header CRC."""
    return [view[:digits], b"0" * _trust.TAG_HEX, view[digits + _trust.TAG_HEX : header_end], view[header_end + 4 :]]


def is_own(data: Any, header: StreamHeader) -> bool:
    """Whether ``data`` (parsed as ``header``) carries a valid tag under this user's key; hashed once
    per header (``sciz info`` and the decode of a ``.scz`` file share one, and hashed it twice)."""
    if header.own is None:
        header.own = _tag_valid(data, header)
    return header.own


def _tag_valid(data: Any, header: StreamHeader) -> bool:
    if header.tag is None:
        return False
    key = _trust.signing_key()
    if key is None:
        return False
    value, digits, header_end = header.tag
    with memoryview(data).cast("B") as view:
        return hmac.compare_digest(value, _trust.tag(key, _tagged_pieces(view, digits, header_end)))


def _memory_limit() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def parse_stream(data: Any, error: type[CodecError], expected: str | None = None) -> StreamHeader:
    """Parse and check a sciz stream; every inconsistency raises ``error`` (or the stream codec's error).

    The header CRC is checked before any field is trusted, the declared size is checked against the
    chunk table, the buffer length and this machine's memory, and each chunk's CRC is checked here,
    so engines only ever see the exact bytes an encoder produced.
    """
    try:
        view = memoryview(data).cast("B")
    except TypeError:
        raise error(f"expected a bytes-like stream, got {type(data).__name__}") from None

    def fail(message: str) -> CodecError:
        return error(message)

    if len(view) < _FIXED.size or bytes(view[:4]) != MAGIC:
        raise fail("not a sciz stream (no sciz header); decode engine-native streams with imagecodecs")
    _magic, version, codec_number, dtype_number, flags, ndim, axis, _reserved, params_len = _FIXED.unpack_from(view)
    if version not in (1, VERSION, VERSION_SPLIT):
        raise fail(f"stream format version {version} is not supported (this sciz reads versions 1 to {VERSION_SPLIT})")
    entry = _CHUNK_V1 if version == 1 else _CHUNK
    if ndim > MAX_NDIM or params_len > MAX_PARAMS:
        raise fail(f"header declares ndim={ndim}, {params_len} parameter bytes: impossible values")
    offset = _FIXED.size
    table_start = offset + 8 * ndim + params_len
    if len(view) < table_start + 12:
        raise fail(f"stream truncated: {len(view)} bytes, header alone needs {table_start + 12}")
    rows, n_chunks = struct.unpack_from("<QI", view, table_start)
    header_end = table_start + 12 + entry.size * n_chunks
    if len(view) < header_end + 4:
        raise fail(f"stream truncated: {len(view)} bytes, header declares {header_end + 4}")
    (stored_crc,) = struct.unpack_from("<I", view, header_end)
    if crc32(view[:header_end]) != stored_crc:
        raise fail("header checksum mismatch: the stream is damaged")
    row = spec_for_method(codec_number)
    codec = None if row is None else row.name
    if codec is None or dtype_number >= len(DTYPES):
        raise fail(f"unknown codec number {codec_number} or dtype number {dtype_number}")
    if expected is not None and codec != expected:
        raise error(f"this is a sciz {codec} stream, not {expected}: decode it with {codec}_decode")
    if expected is None:
        error = codec_error(codec, error)  # from here on, the stream's own codec speaks
    shape = struct.unpack_from(f"<{ndim}Q", view, offset)
    try:
        params = json.loads(bytes(view[offset + 8 * ndim : table_start]).decode())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise fail(f"parameters are not valid JSON ({exc})") from None
    if not isinstance(params, dict):
        raise fail("parameters are not a JSON object")
    tag = _read_tag(params, bytes(view[offset + 8 * ndim : table_start]), table_start, header_end)
    if any(n > MAX_EXTENT for n in shape):
        raise fail(f"header declares shape {shape}: an axis longer than {MAX_EXTENT} is impossible")
    dtype = np.dtype("<" + DTYPES[dtype_number]) if DTYPES[dtype_number][1] != "1" else np.dtype(DTYPES[dtype_number])
    header = StreamHeader(codec, dtype, tuple(int(n) for n in shape), params, int(rows), bool(flags & 1))
    header.version = version
    header.tag = tag
    if version == VERSION_SPLIT:  # older versions had zero here: chunks cut axis 0
        if not 0 < axis < len(header.chunked_shape):
            raise fail(f"header splits axis {axis} of a {len(header.chunked_shape)}-d chunked view: impossible")
        header.axis = axis
    nbytes = header.size * dtype.itemsize
    limit = _memory_limit()
    if nbytes > limit:
        raise fail(f"stream declares {nbytes} decoded bytes, more than this machine's {limit} bytes of memory")
    view_shape = header.chunked_shape
    expected_chunks = 0 if header.size == 0 else math.ceil(view_shape[header.axis] / rows) if rows else -1
    if n_chunks != expected_chunks:
        raise fail(
            f"chunk table lists {n_chunks} chunks, shape {header.shape} with {rows} rows needs {expected_chunks}"
        )
    position = header_end + 4
    row_size = math.prod(view_shape) // max(1, view_shape[header.axis])
    for index in range(n_chunks):
        fields = entry.unpack_from(view, table_start + 12 + entry.size * index)
        if version == 1:
            (method, _r, crc, engine_bytes, patch_count), reason, mask_bytes = fields, Fallback.NONE, 0
        else:
            method, reason, _r, crc, engine_bytes, patch_count, mask_bytes = fields
        start, stop = header.chunk_bounds(index)
        elements = (stop - start) * row_size
        if patch_count > elements:
            raise fail(f"chunk {index} lists {patch_count} patches for {elements} elements")
        patch_bytes = patch_count * (8 + dtype.itemsize)
        end = position + engine_bytes + mask_bytes + patch_bytes
        if end > len(view):
            raise fail(f"stream truncated in chunk {index}: needs {end} bytes, has {len(view)}")
        body = view[position:end]
        if crc32(body) != crc:
            raise fail(f"chunk {index} checksum mismatch: the stream is damaged")
        chunk = Chunk(method, body[:engine_bytes], crc=crc, fallback=reason)
        if mask_bytes:
            chunk.mask = body[engine_bytes : engine_bytes + mask_bytes]
            chunk.masked = _check_mask_header(chunk.mask, elements - patch_count, dtype, fail, index)
        if patch_count:
            offset = engine_bytes + mask_bytes
            indices = np.frombuffer(body, dtype="<u8", count=patch_count, offset=offset)
            if int(indices.max()) >= elements:
                raise fail(f"chunk {index} has a patch index outside the chunk")
            chunk.patch_index = indices
            chunk.patch_values = np.frombuffer(body, dtype=dtype, count=patch_count, offset=offset + 8 * patch_count)
        header.chunks.append(chunk)
        position = end
    if position != len(view):
        raise fail(f"{len(view) - position} unexpected bytes after the last chunk")
    return header


def _read_tag(params: dict[str, Any], raw: bytes, params_end: int, header_end: int) -> tuple[bytes, int, int] | None:
    """Take the tag out of ``params``: ``(tag, offset of its digits, header end)`` when it is one
    sciz wrote (the last parameter, 64 hex digits), else None (a forged or malformed tag is no tag)."""
    value = params.pop(_TAG_KEY, None)
    if not isinstance(value, str) or len(value) != _trust.TAG_HEX:
        return None
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        return None
    if not raw.endswith(b'"' + _TAG_KEY.encode() + b'":"' + value.encode() + b'"}'):
        return None
    return digest, _tag_digits(params_end), header_end


def _bits(dtype: np.dtype) -> np.dtype:
    """The unsigned integer type of ``dtype``'s size: masked values are kept as bit patterns (NaN payloads too)."""
    return np.dtype(f"u{dtype.itemsize}")


def pack_mask(values: np.ndarray, invalid: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The mask section restoring the ``invalid`` elements of the flat ``values`` exactly.

    The distinct bit patterns of the invalid elements form a table (a land mask of NaN or of one
    fill value is one entry, and then no per-element index is stored). Beyond :data:`MAX_TABLE`
    patterns the most frequent are kept; returns the section and the flat positions of the invalid
    elements it leaves out, which the caller stores as patches.
    """
    import imagecodecs

    bits = values.view(_bits(values.dtype))[invalid]
    leftover = np.empty(0, np.intp)
    if bits.size and np.all(bits == bits[0]):  # the common case, without sorting
        table, index = bits[:1], None
    else:
        table, inverse, counts = np.unique(bits, return_inverse=True, return_counts=True)
        if table.size > MAX_TABLE:
            keep = np.sort(np.argsort(-counts, kind="stable")[:MAX_TABLE])
            remap = np.full(table.size, -1, np.intp)
            remap[keep] = np.arange(keep.size)
            inverse = remap[inverse]
            positions = np.flatnonzero(invalid)
            leftover, invalid = positions[inverse < 0], invalid.copy()
            invalid[leftover] = False
            table, inverse = table[keep], inverse[inverse >= 0]
        index = inverse.astype(np.uint8)
    blob = np.packbits(invalid, bitorder="little").tobytes()
    if index is not None:
        blob += index.tobytes()
    head = _MASK.pack(_MASK_ZSTD, 0, table.size, 0, int(invalid.sum()))
    return head + table.tobytes() + bytes(imagecodecs.zstd_encode(blob, level=_MASK_LEVEL)), leftover


def _check_mask_header(section: memoryview, limit: int, dtype: np.dtype, fail: Any, index: int) -> int:
    """Check a mask section's fixed fields; return the number of elements it restores (at most ``limit``)."""
    if len(section) <= _MASK.size:
        raise fail(f"chunk {index} has a mask section of {len(section)} bytes: too short")
    coding, reserved, table, _zero, masked = _MASK.unpack_from(section)
    if coding != _MASK_ZSTD or reserved:
        raise fail(f"chunk {index} uses mask coding {coding}, unknown to this sciz")
    if not 1 <= table <= MAX_TABLE or not 1 <= masked <= limit:
        raise fail(
            f"chunk {index} declares {masked} masked elements (at most {limit}) and {table} masked values "
            f"(1 to {MAX_TABLE}): impossible values"
        )
    if len(section) <= _MASK.size + table * dtype.itemsize:
        raise fail(f"chunk {index} has a mask section of {len(section)} bytes, too short for its {table} values")
    return int(masked)


def unpack_mask(
    chunk: Chunk, size: int, dtype: np.dtype, error: type[CodecError], where: str
) -> tuple[np.ndarray, np.ndarray]:
    """The flat boolean mask of ``chunk`` (``size`` elements) and its masked elements' values as bit patterns.

    The section's fixed fields were checked by :func:`parse_stream`; here the zstd frame is decoded
    into a buffer of exactly the size the fields imply, so a forged frame cannot allocate more, and
    its content is checked against them (mask count, padding bits, table indices).
    """
    import imagecodecs

    section = chunk.mask
    _coding, _reserved, table_count, _zero, masked = _MASK.unpack_from(section)
    table_bytes = table_count * dtype.itemsize
    table = np.frombuffer(section, dtype=_bits(dtype), count=table_count, offset=_MASK.size)
    packed = (size + 7) // 8
    expected = packed + (masked if table_count > 1 else 0)
    buffer = bytearray(expected)
    try:
        zstd_decode: Any = imagecodecs.zstd_decode  # its stubs reject memoryviews, which it takes
        decoded = len(zstd_decode(section[_MASK.size + table_bytes :], out=buffer))
    except Exception as exc:  # a damaged or oversized frame
        raise error(f"{where}: the mask section cannot be decoded: {type(exc).__name__}: {exc}") from None
    if decoded != expected:
        raise error(f"{where}: the mask section holds {decoded} bytes, its header implies {expected}")
    raw = np.frombuffer(buffer, np.uint8)
    mask = np.unpackbits(raw[:packed], count=packed * 8, bitorder="little").view(bool)
    if mask[size:].any() or int(np.count_nonzero(mask)) != masked:
        raise error(f"{where}: the mask does not hold the {masked} elements its header declares")
    if table_count == 1:
        return mask[:size], np.broadcast_to(table, (masked,))
    index = raw[packed:]
    if int(index.max()) >= table_count:
        raise error(f"{where}: a masked element refers to value {int(index.max())} of a table of {table_count}")
    return mask[:size], table[index]


def describe_stream(
    data: Any, error: type[CodecError] = CodecError, *, header: StreamHeader | None = None
) -> dict[str, Any]:
    """What a sciz stream holds and how it was stored, without decoding it (for ``sciz info``).

    Keys: ``codec``, ``format_version``, ``params``, ``dtype`` (as stored, with byte order),
    ``shape``, ``chunks``, ``split_axis`` (the array axis the chunks cut), ``rows_per_chunk`` (along
    it), ``lossless_chunks`` (chunks not coded by the codec's
    own engine), ``fallbacks`` (``{reason: chunks}`` for chunks a lossy codec had to store exactly),
    ``patched_elements``, ``masked_elements`` (NaN/Inf/fill values kept apart from the engine),
    ``stored_bytes``, ``decoded_bytes``, ``ratio``, and ``tagged`` / ``own`` (the stream carries a
    tag / one valid under this user's key, :mod:`sciz.codecs._trust`). Damaged streams raise ``error``. ``header``:
    ``data`` already parsed, so its checksums are not computed again.
    """
    if header is None:
        header = parse_stream(data, error)
    method = spec(header.codec).method
    fallbacks: dict[str, int] = {}
    for chunk in header.chunks:
        if chunk.fallback != Fallback.NONE:
            try:
                reason = Fallback(chunk.fallback).description
            except ValueError:  # written by a newer sciz: decoding does not depend on it
                reason = f"reason code {chunk.fallback}"
            fallbacks[reason] = fallbacks.get(reason, 0) + 1
    stored = len(memoryview(data).cast("B"))
    decoded = header.size * header.dtype.itemsize
    return {
        "codec": header.codec,
        "format_version": header.version,
        "params": header.params,
        "dtype": (header.dtype.newbyteorder(">") if header.big_endian else header.dtype).str,
        "shape": list(header.shape),
        "chunks": len(header.chunks),
        "split_axis": header.axis + len(header.shape) - len(header.chunked_shape) if header.shape else 0,
        "rows_per_chunk": header.rows,
        "lossless_chunks": sum(chunk.method != method for chunk in header.chunks),
        "fallbacks": fallbacks,
        "patched_elements": sum(int(chunk.patch_index.size) for chunk in header.chunks),
        "masked_elements": sum(chunk.masked for chunk in header.chunks),
        "stored_bytes": stored,
        "decoded_bytes": decoded,
        "tagged": header.tag is not None,
        "own": is_own(data, header),
        "ratio": decoded / stored if stored else 0.0,
    }


def stored_codecs(streams: Any) -> dict[str, Any] | None:
    """What a container's chunks hold when its config names no single codec (``auto`` chooses per
    chunk): the codec and parameters of the most chunks, and every choice with its chunk count.

    ``streams`` yields each chunk's bytes (a sciz stream, or one behind numcodecs' 4-byte CRC32).
    Returns ``{"codec": {"id": ..., **params}, "chunks": {"sperr mode=pwe quality=0.001": 3, ...}}``,
    or None when no chunk is a readable sciz stream.
    """
    tally: dict[str, int] = {}
    configs: dict[str, dict[str, Any]] = {}
    for data in streams:
        view = memoryview(data).cast("B")
        if bytes(view[4:8]) == MAGIC and bytes(view[:4]) != MAGIC:
            view = view[4:]  # numcodecs' CRC32 puts its checksum first
        try:
            header = parse_stream(view, CodecError)
        except CodecError:
            continue
        params = {k: v for k, v in header.params.items() if k != "order"}
        label = " ".join([header.codec, *(f"{k}={v}" for k, v in params.items())])
        tally[label] = tally.get(label, 0) + 1
        configs.setdefault(label, {"id": header.codec, **params})
    if not tally:
        return None
    return {"codec": configs[max(tally, key=tally.__getitem__)], "chunks": tally}


def without_order(header: StreamHeader) -> StreamHeader:
    """``header`` without its axis order: the stream as the engine coded it (the caller transposes)."""
    params = {k: v for k, v in header.params.items() if k != "order"}
    return replace(header, params=params)


def peek_codec(data: Any) -> str | None:
    """The codec of a complete, undamaged sciz stream, else None."""
    try:
        return parse_stream(data, CodecError).codec
    except CodecError:
        return None
