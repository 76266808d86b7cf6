"""Streaming ZIP writer for NPZ files: members are deflated in parallel blocks straight into the file.

``numpy.savez_compressed`` deflates each member as one zlib stream at level 6 on one core, through
16 MiB copies of the array. This writer instead

- splits each member into blocks and deflates them on several threads; the blocks join into one
  valid deflate stream (:mod:`sciz.formats._deflate`: libdeflate blocks joined exactly, or zlib
  blocks primed with the previous 32 KiB and sync-flushed, as pigz does);
- picks the setting per member from a small sample: the fastest of libdeflate 1, 4, 6 (or zlib
  run-length, 1, 3, 4) that stays within 0.5 % of zlib level 6's size, or *stored* when deflate
  cannot shrink the data;
- reads the array through views of its own memory (no whole-array copies) and keeps only a few
  blocks in flight, so memory stays bounded whatever the member size;
- writes ZIP64 records when sizes or offsets need them, like :mod:`zipfile`.

The result is an ordinary ZIP archive that :func:`numpy.load` and :mod:`zipfile` read.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from .._util import usable_cores
from ..errors import argument_error
from ._deflate import FINAL_BLOCK, libdeflate_available, libdeflate_block, zlib_block

__all__ = [
    "STORED",
    "DeflatePlan",
    "MemberInfo",
    "ZipStreamWriter",
    "block_size_for",
    "choose_plan",
    "fast_plans",
    "iterate_blocks",
    "plan_for_level",
]

#: Sizes and offsets above this get ZIP64 records (the threshold :mod:`zipfile` uses).
ZIP64_LIMIT = (1 << 31) - 1
#: Entry counts above this need a ZIP64 end record.
ZIP_FILECOUNT_LIMIT = 0xFFFF
#: A member is stored uncompressed when deflate keeps more than this fraction of the sample.
STORE_RATIO = 0.985
#: A faster zlib setting is used when it loses at most this fraction against level 6 on the sample.
SIZE_TOLERANCE = 0.005
#: Below this deflate ratio on the sample, zlib (primed blocks) is used rather than libdeflate.
REDUNDANT_RATIO = 0.4
#: Deflate window: each block is primed with this much of the data before it.
WINDOW = 32 * 1024
#: Blocks of one member: large enough that the per-block cost vanishes, small enough to bound memory.
MIN_BLOCK = 256 * 1024
MAX_BLOCK = 2 * 1024 * 1024

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")
_END_RECORD = struct.Struct("<4s4H2LH")
_END_RECORD64 = struct.Struct("<4sQ2H2L4Q")
_END_LOCATOR64 = struct.Struct("<4sLQL")
_VERSION_DEFLATE = 20
_VERSION_ZIP64 = 45
_FLAG_UTF8 = 0x800
_UINT32_MAX = 0xFFFFFFFF

Buffer = Any  # bytes, bytearray, memoryview or a contiguous numpy array


def _crc32_function() -> Callable[[Buffer, int], int]:
    try:
        import imagecodecs

        if imagecodecs.DEFLATE.available:
            # libdeflate's CRC is several times faster than zlib's and gives the same values.
            return lambda data, value: int(imagecodecs.deflate_crc32(data, value))
    except ImportError:  # pragma: no cover - imagecodecs is a core dependency
        pass
    return lambda data, value: zlib.crc32(data, value)


@dataclass(frozen=True)
class DeflatePlan:
    """How one member is compressed: ``level`` 0 means stored; else an engine, a level and a strategy.

    ``engine`` is ``"libdeflate"`` (faster, same or smaller size; joined exactly, see
    :mod:`sciz.formats._deflate`) or ``"zlib"`` (``strategy`` applies to zlib only).
    """

    level: int
    strategy: int = zlib.Z_DEFAULT_STRATEGY
    engine: str = "zlib"

    @property
    def stored(self) -> bool:
        return self.level == 0

    @property
    def label(self) -> str:
        if self.stored:
            return "stored"
        names = {zlib.Z_RLE: "rle", zlib.Z_HUFFMAN_ONLY: "huffman", zlib.Z_FILTERED: "filtered"}
        suffix = f"-{names[self.strategy]}" if self.strategy in names else ""
        return f"{self.engine}-{self.level}{suffix}"


STORED = DeflatePlan(0)
#: numpy.savez_compressed's setting (zipfile's default): the size to keep.
_LEVEL6 = DeflatePlan(6)
#: Faster settings tried in order; the first within SIZE_TOLERANCE of zlib level 6 wins.
_LIBDEFLATE_PLANS = tuple(DeflatePlan(level, engine="libdeflate") for level in (1, 4, 6))
#: Without libdeflate: zlib's run-length, level 1 and 3 (3 can beat 4 on smooth integers), 4 (lazy).
_ZLIB_PLANS = (DeflatePlan(1, zlib.Z_RLE), DeflatePlan(1), DeflatePlan(3), DeflatePlan(4))


def fast_plans() -> tuple[DeflatePlan, ...]:
    """The candidate settings, fastest first, for the engines available here."""
    return _LIBDEFLATE_PLANS if libdeflate_available() else _ZLIB_PLANS


def plan_for_level(level: int) -> DeflatePlan:
    """An explicit level: 0 stores, 1-9 deflate (libdeflate when available, else zlib)."""
    if level == 0:
        return STORED
    return DeflatePlan(level, engine="libdeflate") if libdeflate_available() else DeflatePlan(level)


def _deflated_size(buffers: Iterable[Buffer], plan: DeflatePlan) -> int:
    total = 0
    for buffer in buffers:
        if plan.engine == "libdeflate":
            import imagecodecs

            total += len(imagecodecs.deflate_encode(buffer, plan.level, raw=True))
            continue
        compressor = zlib.compressobj(plan.level, zlib.DEFLATED, -15, 8, plan.strategy)
        total += len(compressor.compress(buffer)) + len(compressor.flush())
    return total


def choose_plan(samples: list[Buffer]) -> DeflatePlan:
    """Pick the fastest deflate setting that keeps zlib level 6's size on ``samples`` (or stored)."""
    length = sum(len(memoryview(s).cast("B")) for s in samples)
    if length < 4096:
        return plan_for_level(6)
    reference = _deflated_size(samples, _LEVEL6)
    if reference >= STORE_RATIO * length:
        return STORED
    # Highly compressible data (masks, constant regions, repeats) deflates fast with zlib anyway, and
    # zlib's blocks are primed with the data before them, which libdeflate's cannot be.
    candidates = fast_plans() if reference >= REDUNDANT_RATIO * length else _ZLIB_PLANS
    for plan in candidates:
        if _deflated_size(samples, plan) <= reference * (1.0 + SIZE_TOLERANCE):
            return plan
    return plan_for_level(6) if candidates is not _ZLIB_PLANS else _LEVEL6


def _deflate_block(block: Buffer, primer: Buffer | None, plan: DeflatePlan) -> bytes | bytearray:
    """One block of a member's stream, left open (byte-aligned, not final)."""
    if plan.engine == "libdeflate":
        joined = libdeflate_block(block, plan.level)
        if joined is not None:
            return joined
        plan = _LEVEL6  # the join check failed (never seen): zlib is always right
    return zlib_block(block, primer, plan.level, plan.strategy)


@dataclass
class MemberInfo:
    """What was written for one member (also what the central directory needs)."""

    name: str
    plan: DeflatePlan
    offset: int
    crc: int = 0
    compressed_size: int = 0
    file_size: int = 0
    dos_time: int = 0
    dos_date: int = 0
    zip64_local: bool = False


def _dos_time_date() -> tuple[int, int]:
    now = time.localtime()
    year = max(now.tm_year, 1980)
    return (now.tm_hour << 11) | (now.tm_min << 5) | (now.tm_sec // 2), ((year - 1980) << 9) | (
        now.tm_mon << 5
    ) | now.tm_mday


def block_size_for(size: int, threads: int) -> int:
    """Block size for a member of ``size`` bytes: a few blocks per thread, within the bounds."""
    return int(min(MAX_BLOCK, max(MIN_BLOCK, size // (4 * max(1, threads)) or 1)))


class ZipStreamWriter:
    """Write a ZIP archive member by member into an open, seekable binary file.

    Parameters
    ----------
    handle
        A file opened for binary writing, positioned at 0 (e.g. from :func:`sciz.atomic.atomic_file`).
    threads
        Threads that deflate blocks in parallel; ``None`` uses every core this process may use.
    force_zip64
        Write ZIP64 records for every member (for tests and for readers that expect them).
    """

    def __init__(self, handle: BinaryIO, *, threads: int | None = None, force_zip64: bool = False) -> None:
        if threads is None:
            threads = usable_cores()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise argument_error("threads", threads, "must be a positive int or None (all cores)")
        self._handle = handle
        self._threads = threads
        self._force_zip64 = force_zip64
        self._members: list[MemberInfo] = []
        self._names: set[str] = set()
        self._crc32 = _crc32_function()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def members(self) -> list[MemberInfo]:
        return list(self._members)

    def __enter__(self) -> ZipStreamWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._shutdown()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def write_member(
        self,
        name: str,
        blocks: Iterable[Buffer],
        size: int,
        plan: DeflatePlan,
    ) -> MemberInfo:
        """Write one member whose content is the concatenation of ``blocks`` (``size`` bytes in all).

        Blocks are buffers (bytes, memoryviews or contiguous numpy arrays); each must stay unchanged
        until the next one is requested. Returns what was written.
        """
        if self._closed:
            raise ValueError("the archive is already closed")
        if name in self._names:
            raise argument_error("name", name, "each member name may appear only once")
        self._names.add(name)
        encoded = name.encode("utf-8")
        flags = 0 if encoded.isascii() else _FLAG_UTF8
        handle = self._handle
        offset = handle.tell()
        dos_time, dos_date = _dos_time_date()
        # Deflate may grow incompressible data a little; leave room before deciding on ZIP64.
        zip64 = self._force_zip64 or size + size // 64 + 1024 > ZIP64_LIMIT
        info = MemberInfo(name, plan, offset, dos_time=dos_time, dos_date=dos_date, zip64_local=zip64)
        extra = struct.pack("<2H2Q", 1, 16, 0, 0) if zip64 else b""
        method = zlib.DEFLATED if not plan.stored else 0
        version = _VERSION_ZIP64 if zip64 else _VERSION_DEFLATE
        handle.write(
            _LOCAL_HEADER.pack(
                b"PK\x03\x04",
                version,
                0,
                flags,
                method,
                dos_time,
                dos_date,
                0,
                _UINT32_MAX if zip64 else 0,
                _UINT32_MAX if zip64 else 0,
                len(encoded),
                len(extra),
            )
        )
        handle.write(encoded)
        handle.write(extra)
        if plan.stored:
            crc, written, compressed = self._write_stored(blocks)
        else:
            crc, written, compressed = self._write_deflated(blocks, plan)
        if written != size:
            raise ValueError(f"member {name!r}: {written} bytes were produced but {size} were announced")
        info.crc, info.file_size, info.compressed_size = crc, written, compressed
        end = handle.tell()
        if zip64:
            handle.seek(offset + 14)
            handle.write(struct.pack("<L", crc))
            handle.seek(offset + _LOCAL_HEADER.size + len(encoded) + 4)
            handle.write(struct.pack("<2Q", written, compressed))
        else:
            if compressed > ZIP64_LIMIT:  # only if deflate grew the data beyond the margin above
                raise ValueError(f"member {name!r} grew beyond the ZIP limit; write it with force_zip64")
            handle.seek(offset + 14)
            handle.write(struct.pack("<3L", crc, compressed, written))
        handle.seek(end)
        self._members.append(info)
        return info

    def _write_stored(self, blocks: Iterable[Buffer]) -> tuple[int, int, int]:
        crc = written = 0
        for block in blocks:
            view = memoryview(block).cast("B")
            crc = self._crc32(view, crc)
            self._handle.write(view)
            written += len(view)
        return crc, written, written

    def _write_deflated(self, blocks: Iterable[Buffer], plan: DeflatePlan) -> tuple[int, int, int]:
        crc = written = compressed = 0
        handle = self._handle
        primer: memoryview | None = None
        if self._threads == 1:
            for block in blocks:
                view = memoryview(block).cast("B")
                crc = self._crc32(view, crc)
                written += len(view)
                out = _deflate_block(view, primer, plan)
                handle.write(out)
                compressed += len(out)
                primer = view[-WINDOW:]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="sciz-deflate")
            pending: deque[Future[bytes | bytearray]] = deque()
            for block in blocks:
                view = memoryview(block).cast("B")
                pending.append(self._pool.submit(_deflate_block, view, primer, plan))
                # The CRC runs here while the pool deflates.
                crc = self._crc32(view, crc)
                written += len(view)
                primer = view[-WINDOW:]
                while len(pending) > self._threads:
                    out = pending.popleft().result()
                    handle.write(out)
                    compressed += len(out)
            while pending:
                out = pending.popleft().result()
                handle.write(out)
                compressed += len(out)
        handle.write(FINAL_BLOCK)
        return crc, written, compressed + len(FINAL_BLOCK)

    def write_bytes(self, name: str, data: bytes, plan: DeflatePlan | None = None) -> MemberInfo:
        """Write a small member from bytes (level 6 unless ``plan`` says otherwise)."""
        return self.write_member(name, [data], len(data), plan or _LEVEL6)

    def close(self) -> None:
        """Write the central directory and the end records; the archive is complete afterwards."""
        if self._closed:
            return
        self._shutdown()
        self._closed = True
        handle = self._handle
        start = handle.tell()
        for info in self._members:
            handle.write(self._central_entry(info))
        end = handle.tell()
        count, size = len(self._members), end - start
        if count > ZIP_FILECOUNT_LIMIT or start > ZIP64_LIMIT or size > ZIP64_LIMIT or self._force_zip64:
            handle.write(
                _END_RECORD64.pack(
                    b"PK\x06\x06",
                    _END_RECORD64.size - 12,
                    _VERSION_ZIP64,
                    _VERSION_ZIP64,
                    0,
                    0,
                    count,
                    count,
                    size,
                    start,
                )
            )
            handle.write(_END_LOCATOR64.pack(b"PK\x06\x07", 0, end, 1))
            count16 = min(count, ZIP_FILECOUNT_LIMIT)
            handle.write(
                _END_RECORD.pack(
                    b"PK\x05\x06", 0, 0, count16, count16, min(size, _UINT32_MAX), min(start, _UINT32_MAX), 0
                )
            )
        else:
            handle.write(_END_RECORD.pack(b"PK\x05\x06", 0, 0, count, count, size, start, 0))
        handle.flush()

    def _central_entry(self, info: MemberInfo) -> bytes:
        encoded = info.name.encode("utf-8")
        flags = 0 if encoded.isascii() else _FLAG_UTF8
        fields: list[int] = []
        file_size, compressed, offset = info.file_size, info.compressed_size, info.offset
        if info.zip64_local or file_size > ZIP64_LIMIT:
            fields.append(file_size)
            file_size = _UINT32_MAX
        if info.zip64_local or compressed > ZIP64_LIMIT:
            fields.append(compressed)
            compressed = _UINT32_MAX
        if offset > ZIP64_LIMIT:
            fields.append(offset)
            offset = _UINT32_MAX
        extra = struct.pack(f"<2H{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        version = _VERSION_ZIP64 if fields else _VERSION_DEFLATE
        method = 0 if info.plan.stored else zlib.DEFLATED
        header = _CENTRAL_HEADER.pack(
            b"PK\x01\x02",
            version,
            3,
            version,
            0,
            flags,
            method,
            info.dos_time,
            info.dos_date,
            info.crc,
            compressed,
            file_size,
            len(encoded),
            len(extra),
            0,
            0,
            0,
            0o100644 << 16,
            offset,
        )
        return header + encoded + extra


def iterate_blocks(data: Buffer, block: int) -> Iterator[memoryview]:
    """Views of ``data`` in consecutive pieces of ``block`` bytes (no copies)."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), block):
        yield view[start : start + block]
