"""A ZIP writer for members that are already compressed (raw deflate) or stored.

The AFM NPZ bundle compresses whole members with libdeflate, several members at once on the
thread pool (libdeflate is 2-5x faster than zlib at the same size, but cannot split one stream
over threads the way :mod:`sciz.formats._zipwriter` does with zlib). This module only lays the
finished members out as a standard ZIP archive (ZIP64 records where sizes or offsets need them),
which :mod:`zipfile` and :func:`numpy.load` read. Times are fixed (1980-01-01) so the same bundle
gives the same bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["DEFLATED", "STORED", "ZipMember", "write_directory", "write_member"]

STORED = 0
DEFLATED = 8
#: Sizes, offsets and counts beyond these need ZIP64 records (tests lower them to exercise that path).
ZIP64_LIMIT = 0xFFFFFFFF - 1
COUNT_LIMIT = 0xFFFF - 1

_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_DOS_TIME = 0
_UNIX_FILE = 0o100644 << 16


@dataclass
class ZipMember:
    """One finished member: its payload and what the directory records about it."""

    name: str
    method: int
    crc: int
    size: int
    payload: bytes | bytearray | memoryview
    offset: int = 0
    #: Filled by :func:`write_member`; the payload may be dropped after that.
    compressed_size: int = 0


def _encoded_name(name: str) -> tuple[bytes, int]:
    encoded = name.encode("utf-8")
    return encoded, 0 if encoded.isascii() else 0x800  # bit 11: UTF-8 name


def write_member(handle: BinaryIO, member: ZipMember, *, zip64_limit: int = ZIP64_LIMIT) -> None:
    """Write ``member`` (local header and payload) at the handle's position and note its offset."""
    member.offset = handle.tell()
    compressed = member.compressed_size = len(memoryview(member.payload))
    name, flags = _encoded_name(member.name)
    zip64 = member.size > zip64_limit or compressed > zip64_limit
    extra = struct.pack("<2H2Q", 1, 16, member.size, compressed) if zip64 else b""
    handle.write(
        _LOCAL.pack(
            b"PK\x03\x04",
            45 if zip64 else 20,
            flags,
            member.method,
            _DOS_TIME,
            _DOS_DATE,
            member.crc,
            0xFFFFFFFF if zip64 else compressed,
            0xFFFFFFFF if zip64 else member.size,
            len(name),
            len(extra),
        )
    )
    handle.write(name)
    handle.write(extra)
    handle.write(member.payload)


def write_directory(
    handle: BinaryIO, members: list[ZipMember], *, zip64_limit: int = ZIP64_LIMIT, count_limit: int = COUNT_LIMIT
) -> None:
    """Write the central directory and end records for ``members`` (already written in order)."""
    start = handle.tell()
    for member in members:
        compressed = member.compressed_size
        name, flags = _encoded_name(member.name)
        fields = []
        size_field, compressed_field, offset_field = member.size, compressed, member.offset
        if member.size > zip64_limit or compressed > zip64_limit:
            fields += [member.size, compressed]
            size_field = compressed_field = 0xFFFFFFFF
        if member.offset > zip64_limit:
            fields.append(member.offset)
            offset_field = 0xFFFFFFFF
        extra = struct.pack(f"<2H{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        version = 45 if fields else 20
        handle.write(
            _CENTRAL.pack(
                b"PK\x01\x02",
                (3 << 8) | version,  # made by: UNIX
                version,
                flags,
                member.method,
                _DOS_TIME,
                _DOS_DATE,
                member.crc,
                compressed_field,
                size_field,
                len(name),
                len(extra),
                0,
                0,
                0,
                _UNIX_FILE,
                offset_field,
            )
        )
        handle.write(name)
        handle.write(extra)
    end = handle.tell()
    count, size = len(members), end - start
    if count > count_limit or size > zip64_limit or start > zip64_limit:
        handle.write(_END64.pack(b"PK\x06\x06", _END64.size - 12, 45, 45, 0, 0, count, count, size, start))
        handle.write(_LOCATOR64.pack(b"PK\x06\x07", 0, end, 1))
        handle.write(
            _END.pack(
                b"PK\x05\x06",
                0,
                0,
                min(count, 0xFFFF),
                min(count, 0xFFFF),
                min(size, 0xFFFFFFFF),
                min(start, 0xFFFFFFFF),
                0,
            )
        )
    else:
        handle.write(_END.pack(b"PK\x05\x06", 0, 0, count, count, size, start, 0))
