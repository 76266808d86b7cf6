"""The one ZIP writer and the one ZIP reader (NPZ files and AFM bundles).

Writing (:class:`ZipStreamWriter`): members are deflated in parallel blocks straight into the file.
``numpy.savez_compressed`` deflates each member as one zlib stream at level 6 on one core, through
16 MiB copies of the array. This writer instead

- splits each member into blocks and deflates them on several threads into one valid deflate
  stream, with the setting :func:`sciz.formats._deflate.choose_plan` picks per member;
- reads the array through views of its own memory (no whole-array copies) and keeps only a few
  blocks in flight, so memory stays bounded whatever the member size;
- writes ZIP64 records when sizes or offsets need them, like :mod:`zipfile`.

The result is an ordinary ZIP archive that :func:`numpy.load` and :mod:`zipfile` read.

Reading (:class:`ZipReader`): one open handle for the whole read (a file replaced meanwhile is not
mixed in), the directory checked before anything is inflated (names, duplicates, methods,
encryption, every declared size against the file's size, deflate's maximum ratio and this
machine's memory), and members inflated with a bound on their output, CRC-checked, from several
threads at once (``os.pread``). Every problem is a :class:`~sciz.errors.FormatError` naming the
file and the member.
"""

from __future__ import annotations

import os
import posixpath
import struct
import threading
import time
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .._util import crc32, usable_cores
from ..errors import FormatError, argument_error
from ._deflate import (
    FINAL_BLOCK,
    MAX_RATIO,
    DeflatePlan,
    InflateError,
    Inflater,
    compress_block,
    compress_whole,
)
from ._guard import check_declared_size

__all__ = [
    "MemberInfo",
    "MemberStream",
    "ZipMember",
    "ZipReader",
    "ZipStreamWriter",
    "block_size_for",
    "iterate_blocks",
    "zip_name_problem",
]

#: Sizes and offsets above this get ZIP64 records (the threshold :mod:`zipfile` uses).
ZIP64_LIMIT = (1 << 31) - 1
#: Entry counts above this need a ZIP64 end record.
ZIP_FILECOUNT_LIMIT = 0xFFFF
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
_DEFLATED = 8

Buffer = Any  # bytes, bytearray, memoryview or a contiguous numpy array


def _deflate_block(block: Buffer, primer: Buffer | None, plan: DeflatePlan) -> bytes:
    return compress_block(block, primer, plan)


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
        method = _DEFLATED if not plan.stored else 0
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
        elif plan.whole:
            crc, written, compressed = self._write_whole(blocks, plan)
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
            crc = crc32(view, crc)
            self._handle.write(view)
            written += len(view)
        return crc, written, written

    def _write_whole(self, blocks: Iterable[Buffer], plan: DeflatePlan) -> tuple[int, int, int]:
        # Small leading pieces (the .npy header) go into stored deflate blocks, the data (the last
        # piece, usually the whole array) into one libdeflate call: together one valid stream.
        views = [memoryview(block).cast("B") for block in blocks]
        data = views.pop() if views else memoryview(b"")
        crc = written = compressed = 0
        for view in views:
            for start in range(0, len(view), 0xFFFF):
                piece = view[start : start + 0xFFFF]
                self._handle.write(struct.pack("<BHH", 0, len(piece), len(piece) ^ 0xFFFF))
                self._handle.write(piece)
                crc, written, compressed = crc32(piece, crc), written + len(piece), compressed + 5 + len(piece)
        capacity = int(len(data) * min(1.0, plan.ratio * 1.1)) + 4096
        out = compress_whole(data, plan.level, capacity)
        if out is None:  # larger than the sample promised: blocks at a level that keeps the size
            more = self._write_deflated(iterate_blocks(data, MAX_BLOCK), DeflatePlan("zlib-ng", 9))
            return crc32(data, crc), written + more[1], compressed + more[2]
        self._handle.write(out)
        return crc32(data, crc), written + len(data), compressed + len(out)

    def _write_deflated(self, blocks: Iterable[Buffer], plan: DeflatePlan) -> tuple[int, int, int]:
        crc = written = compressed = 0
        handle = self._handle
        primer: memoryview | None = None
        if self._threads == 1:
            for block in blocks:
                view = memoryview(block).cast("B")
                crc = crc32(view, crc)
                written += len(view)
                out = _deflate_block(view, primer, plan)
                handle.write(out)
                compressed += len(out)
                primer = view[-WINDOW:]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="sciz-deflate")
            pending: deque[Future[bytes]] = deque()
            for block in blocks:
                view = memoryview(block).cast("B")
                pending.append(self._pool.submit(_deflate_block, view, primer, plan))
                # The CRC runs here while the pool deflates.
                crc = crc32(view, crc)
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
        """Write a small member from bytes (zlib-ng level 6 unless ``plan`` says otherwise)."""
        return self.write_member(name, [data], len(data), plan or DeflatePlan("zlib-ng", 6))

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
        method = 0 if info.plan.stored else _DEFLATED
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


# ----------------------------------------------------------------------------------------------- reading

#: Compressed data is read in pieces of this size while inflating.
_READ_PIECE = 1 << 20
#: Flag bits of encrypted members (traditional and strong encryption).
_FLAG_ENCRYPTED = 0x1 | 0x40
_BZIP2 = 12
_METHODS = (0, _DEFLATED, _BZIP2)


@dataclass(frozen=True)
class ZipMember:
    """One checked entry of a ZIP directory."""

    name: str
    method: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int

    @property
    def stored(self) -> bool:
        return self.method == 0

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


def zip_name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe member name (absolute, ``..``, backslashes...), or None."""
    if not name:
        return "an empty name"
    if name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return "an absolute or Windows path"
    if any(part in ("..", ".") for part in name.rstrip("/").split("/")):
        return "a '.' or '..' path component"
    if posixpath.normpath(name.rstrip("/")) != name.rstrip("/"):
        return "an irregular path"
    return None


class ZipReader:
    """A ZIP archive opened once for reading, its directory checked before anything is inflated.

    Parameters
    ----------
    path
        The archive. It stays open (one consistent version) until :meth:`close` or the ``with`` block
        ends.

    Raises
    ------
    FormatError
        For anything but a regular, readable ZIP file whose members are all stored or deflated,
        unencrypted, uniquely and safely named, and whose declared sizes fit the file.
    """

    def __init__(self, path: str | os.PathLike[str], *, last_duplicate_wins: bool = False) -> None:
        self.path = Path(os.fspath(path))
        # zarr 2's zip stores append a rewritten key as a second entry: the last one is the value.
        self._last_duplicate_wins = last_duplicate_wins
        try:
            self._handle: BinaryIO = self.path.open("rb")
        except FileNotFoundError:
            raise FileNotFoundError(f"no such file: {self.path}") from None
        except OSError as exc:
            raise FormatError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        self._lock = threading.Lock()
        try:
            status = os.fstat(self._handle.fileno())
            import stat

            if not stat.S_ISREG(status.st_mode):
                raise FormatError(f"{self.path}: not a regular file")
            self.file_size = status.st_size
            self.members = self._directory()
        except BaseException:
            self._handle.close()
            raise

    def __enter__(self) -> ZipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._handle.close()

    def _error(self, member: str, problem: str) -> FormatError:
        return FormatError(f"{self.path}: member {member!r}: {problem}")

    def _directory(self) -> dict[str, ZipMember]:
        try:
            with zipfile.ZipFile(self._handle) as archive:
                infos = archive.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error, UnicodeError) as exc:
            raise FormatError(f"{self.path}: not a readable NPZ (ZIP) file ({exc})") from None
        members: dict[str, ZipMember] = {}
        for info in infos:
            member = ZipMember(
                info.filename, info.compress_type, info.CRC, info.compress_size, info.file_size, info.header_offset
            )
            self._check(member, info.flag_bits)
            if member.name in members and not self._last_duplicate_wins:
                raise self._error(member.name, "appears twice in the archive")
            members[member.name] = member
        self._check_overlaps(list(members.values()))
        return members

    def _check_overlaps(self, members: list[ZipMember]) -> None:
        """Refuse members whose data overlap: each member's ratio is bounded, but members sharing one
        deflate kernel (each quoting the next one's header) are not (a 586 kB NPZ of 12 such members
        inflated to 7.1 GB resident)."""
        previous: tuple[int, str] | None = None
        for member in sorted(members, key=lambda m: m.header_offset):
            if previous is not None and member.header_offset < previous[0]:
                raise self._error(
                    member.name, f"lies inside the data of member {previous[1]!r} (overlapping members: a zip bomb)"
                )
            # Its local header must name it too: a name damaged in the central directory would make
            # the member look missing (a Zarr reader then returns fill values).
            previous = (self._local_start(member) + member.compressed_size, member.name)

    def _check(self, member: ZipMember, flags: int) -> None:
        name = member.name
        problem = zip_name_problem(name)
        if problem is not None:
            raise self._error(name, f"has {problem}; member names must be relative paths inside the archive")
        if flags & _FLAG_ENCRYPTED:
            raise self._error(name, "is encrypted; sciz reads only unencrypted archives")
        if member.method not in _METHODS:
            raise self._error(
                name,
                f"uses ZIP compression method {member.method}; only 0 (stored), 8 (deflate) and 12 (bzip2) are read",
            )
        end = member.header_offset + _LOCAL_HEADER.size + member.compressed_size
        if member.header_offset < 0 or end > self.file_size:
            raise self._error(
                name,
                f"declares {member.compressed_size} bytes at offset {member.header_offset}, beyond the "
                f"file's {self.file_size} bytes (truncated or damaged)",
            )
        if member.stored and member.size != member.compressed_size:
            raise self._error(name, f"is stored but declares {member.size} bytes in {member.compressed_size}")
        if member.method == _DEFLATED and member.size > member.compressed_size * MAX_RATIO + 64:
            raise self._error(
                name,
                f"declares {member.size} bytes from {member.compressed_size} compressed bytes, more than "
                f"deflate can expand ({MAX_RATIO}:1)",
            )

    def _pread(self, offset: int, size: int) -> bytes:
        if hasattr(os, "pread"):
            # Independent reads from several threads without sharing a file position.
            return os.pread(self._handle.fileno(), size, offset)
        with self._lock:  # pragma: no cover - Windows
            self._handle.seek(offset)
            return self._handle.read(size)

    def open(self, member: ZipMember) -> MemberStream:
        """A stream of the member's uncompressed bytes (bounded, CRC-checked by its ``finish``)."""
        return MemberStream(self, member, self._local_start(member))

    def _local_start(self, member: ZipMember) -> int:
        """Where the member's data starts, after checking its local header against the directory."""
        local = self._pread(member.header_offset, _LOCAL_HEADER.size)
        if len(local) != _LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
            raise self._error(member.name, "bad local header (the file is damaged)")
        name_length, extra_length = _LOCAL_HEADER.unpack(local)[-2:]
        start = member.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        if start + member.compressed_size > self.file_size:
            raise self._error(member.name, "its data runs past the end of the file (truncated)")
        local_name = self._pread(member.header_offset + _LOCAL_HEADER.size, name_length)
        if local_name.decode("utf-8", "replace") != member.name and local_name.decode("cp437") != member.name:
            raise self._error(member.name, "the local header names another member (the file is damaged)")
        return start

    def read(self, member: ZipMember) -> bytes:
        """The whole member (its declared size checked against the memory available first)."""
        check_declared_size(member.size, f"{self.path}: member {member.name!r}")
        out = bytearray(member.size)
        with self.open(member) as stream:
            stream.readinto(out)
        return bytes(out)


class MemberStream:
    """The uncompressed bytes of one member, read in order; never more than the member declares."""

    def __init__(self, reader: ZipReader, member: ZipMember, start: int) -> None:
        self.member = member
        self._reader = reader
        self._position = start
        self._end = start + member.compressed_size
        self._inflater = (
            None
            if member.stored
            else Inflater(self._next_piece, member.size, member.crc, bzip2=member.method == _BZIP2)
        )
        self._remaining = member.size
        self._crc = 0

    def __enter__(self) -> MemberStream:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.finish()

    @property
    def remaining(self) -> int:
        """Bytes of the member not yet read."""
        return self._remaining

    def _next_piece(self) -> bytes:
        size = min(_READ_PIECE, self._end - self._position)
        piece = self._reader._pread(self._position, size) if size > 0 else b""
        self._position += len(piece)
        return piece

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` as far as the member goes; the number of bytes written."""
        view = memoryview(buffer).cast("B")
        try:
            if self._inflater is not None:
                count = self._inflater.readinto(view)
            else:
                count = 0
                while count < len(view) and self._remaining - count > 0:
                    piece = self._reader._pread(self._position, min(len(view) - count, self._remaining - count))
                    if not piece:
                        raise InflateError("the data is truncated")
                    view[count : count + len(piece)] = piece
                    self._crc = crc32(piece, self._crc)
                    self._position += len(piece)
                    count += len(piece)
        except InflateError as exc:
            raise self._reader._error(self.member.name, str(exc)) from None
        self._remaining -= count
        return count

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that remain for a negative size)."""
        size = self._remaining if size < 0 else min(size, self._remaining)
        out = bytearray(size)
        count = self.readinto(out)
        return bytes(out[:count])

    def readline(self, limit: int = 1 << 16) -> bytes:
        """One line of at most ``limit`` bytes (for text pickle opcodes)."""
        out = bytearray()
        while len(out) < limit:
            byte = self.read(1)
            out += byte
            if not byte or byte == b"\n":
                break
        return bytes(out)

    def finish(self) -> None:
        """Check the member ended where it says, with its CRC-32."""
        try:
            if self._remaining:
                raise InflateError(f"{self._remaining} bytes of the member were never read")
            if self._inflater is not None:
                self._inflater.finish()
            elif self._crc != self.member.crc:
                raise InflateError(f"CRC-32 mismatch (stored {self.member.crc:08x}, data {self._crc:08x})")
        except InflateError as exc:
            raise self._reader._error(self.member.name, str(exc)) from None
