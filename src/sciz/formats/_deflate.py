"""Deflate blocks that concatenate into one stream: zlib with primed sync flushes, or libdeflate joined exactly.

A ZIP member must be a single deflate stream, but it is fastest to compress it in independent blocks
on several cores. Two ways to make such blocks concatenable:

- zlib: each block is primed with the previous 32 KiB (``zdict``) and ends with a sync flush (an empty
  stored block), which leaves the stream open and byte-aligned (what pigz does);
- libdeflate (via imagecodecs), 2-4 times faster than zlib at the same size, but it always closes its
  stream: its last deflate block carries the "final" bit and ends mid-byte. zlib's own inflate, asked
  to stop at block boundaries (``Z_BLOCK``), tells where that last block starts and exactly how many
  bits the stream uses; clearing the final bit and appending an empty stored block there gives an open,
  byte-aligned stream again. The scan inflates the block, so it also verifies it: a block is only used
  if it decodes to exactly its input. (This is the method of zlib's ``examples/gzjoin.c``.)

Where zlib's library cannot be loaded through ctypes, only the zlib way is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import threading
import zlib
from typing import Any

__all__ = ["FINAL_BLOCK", "libdeflate_available", "libdeflate_block", "zlib_block"]

#: An empty final fixed-Huffman block: closes a stream made of open blocks.
FINAL_BLOCK = b"\x03\x00"
#: An empty stored block after byte alignment: LEN 0, NLEN 0xFFFF.
_EMPTY_STORED = b"\x00\x00\xff\xff"
_Z_OK, _Z_STREAM_END, _Z_BUF_ERROR, _Z_BLOCK = 0, 1, -5, 5
_SCRATCH_BYTES = 1 << 20


def zlib_block(block: Any, primer: Any, level: int, strategy: int) -> bytes:
    """Deflate ``block`` with zlib, primed with ``primer`` (the data just before it), left open."""
    if primer is not None and len(primer):
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 8, strategy, zdict=primer)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 8, strategy)
    return compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)


class _ZStream(ctypes.Structure):
    # zlib.h's z_stream; uLong is C long (4 bytes on Windows, 8 on LP64), as ctypes.c_ulong.
    _fields_ = (
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    )


@functools.cache
def _libz() -> Any:
    # The usual names first: find_library runs a subprocess, so it is only the last resort.
    candidates: list[Any] = ["zlib1.dll", "zlib.dll"] if sys.platform == "win32" else ["libz.so.1", "libz.dylib"]
    candidates.append(lambda: ctypes.util.find_library("z"))
    for candidate in candidates:
        name = candidate() if callable(candidate) else candidate
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.zlibVersion.restype = ctypes.c_char_p
            lib.inflateInit2_.argtypes = (ctypes.POINTER(_ZStream), ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
            lib.inflateInit2_.restype = ctypes.c_int
            lib.inflate.argtypes = (ctypes.POINTER(_ZStream), ctypes.c_int)
            lib.inflate.restype = ctypes.c_int
            lib.inflateEnd.argtypes = (ctypes.POINTER(_ZStream),)
            lib.inflateEnd.restype = ctypes.c_int
            if not lib.zlibVersion().startswith(b"1."):
                continue
            return lib
        except (OSError, AttributeError):
            continue
    return None


@functools.cache
def libdeflate_available() -> bool:
    """Whether blocks can be compressed with libdeflate and joined (imagecodecs and zlib via ctypes)."""
    try:
        import imagecodecs
    except ImportError:  # pragma: no cover - imagecodecs is a core dependency
        return False
    if not imagecodecs.DEFLATE.available or _libz() is None:
        return False
    # Self-test on data that spans several deflate blocks: the joined stream must inflate exactly.
    data = bytes(range(256)) * 64 + b"sciz" * 20000 + bytes(reversed(range(256))) * 512
    blocks = [libdeflate_block(memoryview(data)[i : i + 40000], 6) for i in range(0, len(data), 40000)]
    if any(block is None for block in blocks):
        return False
    try:
        return zlib.decompress(b"".join(blocks) + FINAL_BLOCK, -15) == data  # type: ignore[arg-type]
    except zlib.error:
        return False


_scratch = threading.local()


def _open_stream(compressed: bytearray, expected: int) -> bytearray | None:
    """Rewrite a closed raw deflate stream as an open, byte-aligned one, or None if it does not check out."""
    lib = _libz()
    scratch = getattr(_scratch, "buffer", None)
    if scratch is None:
        scratch = _scratch.buffer = ctypes.create_string_buffer(_SCRATCH_BYTES)
    source = (ctypes.c_char * len(compressed)).from_buffer(compressed)
    stream = _ZStream()
    if lib.inflateInit2_(ctypes.byref(stream), -15, lib.zlibVersion(), ctypes.sizeof(_ZStream)) != _Z_OK:
        return None
    try:
        stream.next_in = ctypes.addressof(source)
        stream.avail_in = len(compressed)
        header = 0  # bit position of the current block's header; the first block starts at bit 0
        while True:
            stream.next_out = ctypes.addressof(scratch)
            stream.avail_out = _SCRATCH_BYTES
            result = lib.inflate(ctypes.byref(stream), _Z_BLOCK)
            if result not in (_Z_OK, _Z_STREAM_END, _Z_BUF_ERROR):
                return None
            if stream.data_type & 128:  # a block just ended
                if stream.data_type & 64:  # ... and it was the last one: its end is the stream's end
                    break
                header = stream.total_in * 8 - (stream.data_type & 7)  # the next header starts here
            elif result == _Z_STREAM_END:
                break
            elif result == _Z_BUF_ERROR and stream.avail_in == 0:
                return None  # truncated
        unused = stream.data_type & 7
        if stream.total_in != len(compressed) or stream.total_out != expected:
            return None
    finally:
        lib.inflateEnd(ctypes.byref(stream))
        del source
    if not compressed[header >> 3] & (1 << (header & 7)):
        return None  # the block zlib called last has no final bit: not the stream we think it is
    compressed[header >> 3] &= ~(1 << (header & 7)) & 0xFF
    if unused:
        compressed[-1] &= (1 << (8 - unused)) - 1  # padding bits must be zero: they become a header
    # The stored block's 3 header bits fit in the padding if at least 3 bits are left; else one more byte.
    compressed += _EMPTY_STORED if unused >= 3 else b"\x00" + _EMPTY_STORED
    return compressed


def libdeflate_block(block: Any, level: int) -> bytearray | None:
    """Deflate ``block`` with libdeflate and leave the stream open; None if the join check fails."""
    import imagecodecs

    view: Any = memoryview(block).cast("B")
    compressed = bytearray(imagecodecs.deflate_encode(view, level, raw=True))
    return _open_stream(compressed, len(view))
