"""Deflate for ZIP members: engines, the per-member setting planner, bounded inflate.

Engines (maintained PyPI packages, no ctypes):

- ``isal`` (Intel ISA-L, module :mod:`isal.isal_zlib`, levels 1-3): by far the fastest; on noisy
  floats its size equals zlib level 6, on smoother integer data it is a few percent larger;
- ``zlib-ng`` (module :mod:`zlib_ng.zlib_ng`, levels 1-9): zlib's format at 2-3 times zlib's speed,
  size close to zlib's at levels 3-7;
- ``libdeflate`` (through imagecodecs, a core dependency): a whole member as one call, no blocks;
  smaller than zlib level 6 and fast, but single-threaded, so only for members up to
  :data:`WHOLE_LIMIT`.

isal and zlib-ng compress a member in independent blocks on several threads: each block is primed
with the 32 KiB before it (``zdict``) and ends with a sync flush (an empty stored block), which
leaves the stream open and byte-aligned, so the blocks concatenate into one deflate stream (what
pigz does); :data:`FINAL_BLOCK` closes it.

:func:`choose_plan` compresses a few windows of a member with numpy's setting (stdlib zlib level 6,
the size to keep) and with the candidates in order of cost, and takes the first that stays within
:data:`SIZE_TOLERANCE` of it (*stored* when deflate cannot shrink the data).

:class:`Inflater` inflates with a hard bound on the output, so a member cannot produce more than it
declares (zip bombs), and checks the CRC-32 and the exact size at the end.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._util import crc32

__all__ = [
    "FINAL_BLOCK",
    "MAX_RATIO",
    "SIZE_TOLERANCE",
    "STORED",
    "DeflatePlan",
    "InflateError",
    "Inflater",
    "choose_plan",
    "compress_block",
    "compress_whole",
    "deflated_size",
    "plan_for_level",
]

#: An empty final fixed-Huffman block: closes a stream made of open blocks.
FINAL_BLOCK = b"\x03\x00"
#: Deflate's largest possible expansion ratio (258 bytes per 2-bit code, rounded up): a member
#: declaring more than this many bytes per compressed byte is lying.
MAX_RATIO = 1032
#: A member is stored uncompressed when zlib level 6 keeps more than this fraction of the sample.
STORE_RATIO = 0.985
#: A setting is used when it loses at most this fraction against zlib level 6 on the sample; the
#: files' target is 2 %, the rest is left for the sampling error (measured within 0.2 %).
SIZE_TOLERANCE = 0.015
#: libdeflate compresses a member in one call (its output whole in memory, one thread); a
#: member above this size is always compressed in blocks.
WHOLE_LIMIT = 192 * 1024 * 1024
#: Relative CPU work per byte (measured on AFM videos and fields; fixed numbers keep the choice,
#: and so the file bytes, deterministic). libdeflate's grows with the threads it leaves idle.
_COST = {
    ("isal", 1): 1.0,
    ("isal", 2): 1.2,
    ("libdeflate", 4): 3.5,
    ("libdeflate", 6): 4.0,
    ("zlib-ng", 3): 5.0,
    ("zlib-ng", 7): 6.0,
}
#: The most one decompress call may produce: the engines allocate their output buffer up to the limit
#: they are given, so a whole member's limit cost a second copy of it (a 1.3 kB bzip2 member declaring
#: 1.5 GB was a MemoryError under a 3 GB address-space limit although its array fitted).
OUTPUT_PIECE = 16 * 1024 * 1024
_LAST_RESORT = ("zlib-ng", 9)  # about zlib level 6's size everywhere; slower than the others


@dataclass(frozen=True)
class DeflatePlan:
    """How one member is compressed: ``engine`` ``"stored"``, ``"isal"``, ``"zlib-ng"`` or
    ``"libdeflate"`` (a whole member in one call) and its ``level``."""

    engine: str
    level: int = 0
    #: Expected compressed/raw ratio (from the sample); sizes libdeflate's output buffer.
    ratio: float = field(default=1.0, compare=False)

    @property
    def stored(self) -> bool:
        return self.engine == "stored"

    @property
    def whole(self) -> bool:
        """Whether the member is compressed in one call (no parallel blocks)."""
        return self.engine == "libdeflate"

    @property
    def label(self) -> str:
        return "stored" if self.stored else f"{self.engine}-{self.level}"


STORED = DeflatePlan("stored")


def plan_for_level(level: int) -> DeflatePlan:
    """An explicit zlib level: 0 stores, 1-9 deflate with zlib-ng at that level."""
    return STORED if level == 0 else DeflatePlan("zlib-ng", level)


def _module(engine: str) -> Any:
    if engine == "isal":
        from isal import isal_zlib

        return isal_zlib
    from zlib_ng import zlib_ng

    return zlib_ng


def compress_block(block: Any, primer: Any, plan: DeflatePlan) -> bytes:
    """Deflate ``block`` primed with ``primer`` (the data just before it, or None), left open."""
    module = _module(plan.engine)
    if primer is not None and len(primer):
        compressor = module.compressobj(plan.level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=primer)
    else:
        compressor = module.compressobj(plan.level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    return bytes(compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH))


def compress_whole(data: Any, level: int, capacity: int) -> memoryview | None:
    """A complete raw deflate stream of ``data`` made by libdeflate (the GIL is released), in a
    buffer of ``capacity`` bytes; None when it does not fit."""
    import imagecodecs

    encode: Any = imagecodecs.deflate_encode  # accepts any buffer; its stubs say bytes only
    try:
        return memoryview(encode(data, level=level, raw=True, out=bytearray(capacity)))
    except imagecodecs.DeflateError:
        return None


def deflated_size(samples: Sequence[Any], plan: DeflatePlan | None) -> int:
    """Compressed size of ``samples`` with ``plan``; ``None`` is the reference (stdlib zlib 6, numpy's)."""
    total = 0
    for sample in samples:
        if plan is not None and plan.whole:
            view = memoryview(sample).cast("B")
            out = compress_whole(view, plan.level, len(view) + len(view) // 8 + 4096)
            total += len(out) if out is not None else len(view)
            continue
        module = zlib if plan is None else _module(plan.engine)
        compressor = module.compressobj(6 if plan is None else plan.level, zlib.DEFLATED, -15)
        total += len(compressor.compress(sample)) + len(compressor.flush())
    return total


def choose_plan(samples: Sequence[Any], size: int, threads: int, *, whole: bool = True) -> DeflatePlan:
    """The cheapest setting that keeps zlib level 6's size on ``samples`` of a ``size``-byte member.

    Candidates are tried in order of their work per byte (libdeflate's grows with ``threads``, as it
    runs on one thread only, and only members up to :data:`WHOLE_LIMIT` in one buffer, ``whole``, may
    use it). Data that deflate cannot shrink is stored; when no candidate is close enough, zlib-ng
    level 9.
    """
    length = sum(len(memoryview(s).cast("B")) for s in samples)
    if length < 4096:
        return DeflatePlan("zlib-ng", 6)
    reference = deflated_size(samples, None)
    if reference >= STORE_RATIO * length:
        return STORED
    # libdeflate leaves the other threads idle: its work counts as if it took half of each of them
    # too (a middle between CPU time, which favours it, and wall time on idle cores, which does not).
    idle = 1.0 + (max(1, threads) - 1) / 2
    costs = {key: cost * (idle if key[0] == "libdeflate" else 1.0) for key, cost in _COST.items()}
    for engine, level in sorted(costs, key=costs.__getitem__):
        if engine == "libdeflate" and (size > WHOLE_LIMIT or not whole):
            continue
        compressed = deflated_size(samples, DeflatePlan(engine, level))
        if compressed <= reference * (1.0 + SIZE_TOLERANCE):
            return DeflatePlan(engine, level, compressed / length)
    return DeflatePlan(*_LAST_RESORT)


class InflateError(ValueError):
    """The deflate data is damaged, longer or shorter than declared, or fails its CRC."""


class Inflater:
    """Inflate one raw deflate (or ``bzip2``) stream of exactly ``size`` bytes with CRC-32 ``crc``.

    ``source`` returns the next piece of compressed data (``b""`` at its end). Output is produced
    only into the caller's buffers and never beyond ``size`` in all, so a zip bomb cannot allocate
    more than it declares; :meth:`finish` checks the stream ends exactly there with the right CRC.
    """

    def __init__(self, source: Callable[[], bytes], size: int, crc: int, *, bzip2: bool = False) -> None:
        if bzip2:  # ZIP method 12, which other tools may write
            import bz2

            self._inflater: Any = bz2.BZ2Decompressor()
            self._error: Any = OSError
        else:
            from isal import isal_zlib

            self._inflater = isal_zlib.decompressobj(-15)
            self._error = isal_zlib.error
        self._bzip2 = bzip2
        self._source = source
        self._tail = b""
        self.remaining = size
        self._crc = crc
        self._value = 0

    def _inflate(self, limit: int) -> bytes:
        # bzip2 keeps unused input itself and asks for more only when it needs it.
        hungry = self._inflater.needs_input if self._bzip2 else not self._tail
        data = self._source() if hungry else self._tail
        try:
            out = self._inflater.decompress(data, limit)
        except (self._error, ValueError, EOFError) as exc:
            raise InflateError(f"damaged compressed data ({exc})") from None
        if not self._bzip2:
            self._tail = bytes(self._inflater.unconsumed_tail)
        if not out and not data and not self._inflater.eof:
            raise InflateError("the compressed stream is truncated")
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` (a writable bytes-like object) as far as the member goes; bytes written."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self.remaining and not self._inflater.eof:
            out = self._inflate(min(len(view) - filled, self.remaining, OUTPUT_PIECE))
            view[filled : filled + len(out)] = out
            filled += len(out)
            self.remaining -= len(out)
            self._value = crc32(out, self._value)
        return filled

    def finish(self) -> None:
        """Check the stream is complete, of the declared size, with the declared CRC."""
        if self.remaining:
            raise InflateError(f"the data ends {self.remaining} bytes short of the declared size")
        while not self._inflater.eof:
            if self._inflate(1):
                raise InflateError("more data than the declared size (a zip bomb or a damaged file)")
        if self._value != self._crc:
            raise InflateError(f"CRC-32 mismatch (stored {self._crc:08x}, data {self._value:08x})")
