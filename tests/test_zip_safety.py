"""Hostile NPZ/NPY files: each is read in a fresh, capped subprocess and must end in a clean FormatError.

The child runs under a 3 GB address-space limit (``RLIMIT_AS``) and a timeout, so an unbounded
allocation shows up as a MemoryError or a kill instead of a pass. Files that sciz writes with each of
its deflate engines are read by numpy in a fresh process.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from zlib_ng import zlib_ng

from sciz.formats._deflate import DeflatePlan
from sciz.formats._zip import ZipStreamWriter

MIB = 1 << 20
ADDRESS_LIMIT = 3 * 1024**3

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from sciz.errors import FormatError
    from sciz.heightmap import load_from_npz
    from sciz.formats.npy import read_npy
    from sciz.afm.bundles_npz import load_npz_bundle
    readers = {{"npz": load_from_npz, "npy": read_npy, "bundle": load_npz_bundle}}
    results = {{}}
    for name in sys.argv[2:]:
        try:
            readers[name](sys.argv[1])
            results[name] = ["ok", ""]
        except FormatError as exc:
            results[name] = ["FormatError", str(exc)]
        except BaseException as exc:
            results[name] = [type(exc).__name__, str(exc)[:300]]
    # VmHWM starts afresh at exec (ru_maxrss would include the forking pytest worker's memory).
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    print(json.dumps({{"results": results, "peak": peak}}))
    """
).format(limit=ADDRESS_LIMIT)


def read_in_child(path: Path, *readers: str) -> tuple[dict[str, list[str]], int]:
    """Outcome per reader (error class and message) and the child's peak resident bytes."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), *readers], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["results"], report["peak"]


def assert_clean_errors(path: Path, *readers: str, match: str, member: str | None = None) -> None:
    results, peak = read_in_child(path, *readers)
    for reader, (kind, message) in results.items():
        assert kind == "FormatError", (reader, kind, message)
        assert path.name in message and match in message, (reader, message)
        if member is not None:
            assert repr(member) in message, (reader, message)
    assert peak < 1024 * MIB


# ------------------------------------------------------------------------------------------- builders


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def raw_zip(members: list[dict]) -> bytes:
    """A ZIP whose every field is given (ZIP64 sizes everywhere, so anything can be declared)."""
    out = bytearray()
    central = bytearray()
    for m in members:
        name = m["name"].encode()
        extra = struct.pack("<2H2Q", 1, 16, m["size"], len(m["data"]))
        offset = len(out)
        local = struct.pack(
            "<4s2B4HL2L2H", b"PK\x03\x04", 45, 0, m.get("flags", 0), m.get("method", 8), 0, 33, m["crc"],
            0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra),
        )  # fmt: skip
        out += local + name + extra + m["data"]
        central += struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", 45, 3, 45, 0, m.get("flags", 0), m.get("method", 8), 0, 33,
            m["crc"], 0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0o100644 << 16, offset,
        ) + name + extra  # fmt: skip
    start = len(out)
    out += central
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), start, 0)
    return bytes(out)


def zeros_stream(mib: int, prefix: bytes) -> tuple[bytes, int]:
    """A raw deflate stream of ``prefix`` + ``mib`` MiB of zeros built from one repeated block, and its CRC."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = head.compress(prefix + bytes(MIB)) + head.flush(zlib.Z_SYNC_FLUSH)
    repeat = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=bytes(32768))
    block = repeat.compress(bytes(MIB)) + repeat.flush(zlib.Z_SYNC_FLUSH)
    crc = zlib.crc32(prefix + bytes(MIB))
    zeros_crc = zlib.crc32(bytes(MIB))
    for _ in range(mib - 1):
        crc = zlib_ng.crc32_combine(crc, zeros_crc, MIB)
    return first + block * (mib - 1) + b"\x03\x00", crc


# ------------------------------------------------------------------------------------------- hostile


@pytest.fixture(scope="module")
def bomb_parts() -> tuple[bytes, bytes, int]:
    mib = 10 * 1024  # 10 GiB of zeros in about 10 MB
    header = npy_header("|u1", (mib * MIB,))
    data, crc = zeros_stream(mib, header)
    return header, data, crc


def test_zip_bomb_declaring_its_size_is_refused_before_allocating(tmp_path: Path, bomb_parts) -> None:
    header, data, crc = bomb_parts
    assert len(data) < 12 * MIB
    path = tmp_path / "bomb.npz"
    path.write_bytes(raw_zip([{"name": "data.npy", "crc": crc, "size": len(header) + 10 * 1024 * MIB, "data": data}]))
    assert_clean_errors(path, "npz", "bundle", match="can allocate", member="data.npy")


def test_zip_bomb_declaring_a_small_size_is_cut_at_it(tmp_path: Path, bomb_parts) -> None:
    header, data, _crc = bomb_parts
    small = npy_header("|u1", (MIB - len(header),))
    patched = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = patched.compress(small[: len(header)]) + patched.flush(zlib.Z_SYNC_FLUSH)
    assert len(small) == len(header)  # same header length, so the lie is consistent
    path = tmp_path / "liar.npz"
    fake = {"name": "data.npy", "crc": 0, "size": MIB, "data": body + data[len(body) :]}
    path.write_bytes(raw_zip([fake]))
    results, peak = read_in_child(path, "npz", "bundle")
    for kind, message in results.values():
        assert kind == "FormatError" and "liar.npz" in message and "'data.npy'" in message
    assert peak < 1024 * MIB


def test_npy_header_declaring_four_gigabytes_is_refused_without_reading_it(tmp_path: Path) -> None:
    head = b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{'descr': '<f4'"
    path = tmp_path / "huge_header.npy"
    path.write_bytes(head)
    assert_clean_errors(path, "npy", match="header declares")
    member = tmp_path / "huge_header.npz"
    member.write_bytes(
        raw_zip([{"name": "data.npy", "method": 0, "crc": zlib.crc32(head), "size": len(head), "data": head}])
    )
    assert_clean_errors(member, "npz", "bundle", match="header declares", member="data.npy")


def test_pickle_opcode_flood_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    header = npy_header("|O", ())
    opcodes = b"\x80\x02" + b"N" * 150_000_000  # 150 M NONE opcodes, never a STOP
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(header + opcodes) + compressor.flush()
    assert len(data) < 200_000
    path = tmp_path / "flood.npz"
    member = {"name": "channel.npy", "crc": zlib.crc32(header + opcodes), "size": len(header) + len(opcodes)}
    path.write_bytes(raw_zip([{**member, "data": data}]))
    results, peak = read_in_child(path, "bundle")
    kind, message = results["bundle"]
    assert kind == "FormatError" and "longer than" in message and "'channel.npy'" in message
    assert peak < 400 * MIB  # the whole member would be 150 MB, its parsed opcodes gigabytes


def _valid_member(name: str = "data.npy") -> dict:
    payload = npy_header("<f8", (4,)) + np.arange(4.0).tobytes()
    return {"name": name, "method": 0, "crc": zlib.crc32(payload), "size": len(payload), "data": payload}


@pytest.mark.parametrize(
    ("case", "members", "match"),
    [
        ("method", [{**_valid_member(), "method": 99}], "compression method 99"),
        ("lzma", [{**_valid_member(), "method": 14}], "compression method 14"),
        ("encrypted", [{**_valid_member(), "flags": 1}], "encrypted"),
        ("crc", [{**_valid_member(), "crc": 1234}], "CRC-32 mismatch"),
        ("duplicate", [_valid_member(), _valid_member()], "appears twice"),
        ("parent", [_valid_member("../../etc/data.npy")], "'..'"),
        ("absolute", [_valid_member("/etc/data.npy")], "absolute"),
        ("oversized", [{**_valid_member(), "size": 10_000, "data": _valid_member()["data"]}], "stored but declares"),
    ],
)
def test_damaged_and_hostile_archives_are_clean_errors_naming_the_member(
    tmp_path: Path, case: str, members: list[dict], match: str
) -> None:
    path = tmp_path / f"{case}.npz"
    path.write_bytes(raw_zip(members))
    assert_clean_errors(path, "npz", "bundle", match=match, member=members[0]["name"])


def test_truncated_archives_are_clean_errors(tmp_path: Path) -> None:
    whole = raw_zip([_valid_member()])
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole[: len(whole) // 2])
    assert_clean_errors(cut, "npz", "bundle", match="not a readable NPZ")
    # The directory survives but declares data past the end of the file.
    short = tmp_path / "short.npz"
    member = _valid_member()
    blob = bytearray(raw_zip([{**member, "data": member["data"]}]))
    central = blob.index(b"PK\x01\x02")
    extra_at = central + 46 + len(member["name"]) + 4
    blob[extra_at + 8 : extra_at + 16] = struct.pack("<Q", 1 << 30)  # the compressed size
    short.write_bytes(bytes(blob))
    assert_clean_errors(short, "npz", "bundle", match="beyond the file", member="data.npy")


# ------------------------------------------------------------------------------------------- interop


def test_every_engine_writes_members_numpy_reads_in_a_fresh_process(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    arrays = {
        "isal": (np.sin(np.arange(300_000) / 90.0) + rng.normal(0, 0.01, 300_000)).astype(np.float32),
        "zlibng": np.tile(np.arange(5000, dtype=np.int16), 60),
        "libdeflate": rng.normal(0, 1, (64, 64)).astype(np.float64),
        "stored": rng.integers(0, 255, 70_000, dtype=np.uint8),
    }
    plans = {
        "isal": DeflatePlan("isal", 2),
        "zlibng": DeflatePlan("zlib-ng", 7),
        "libdeflate": DeflatePlan("libdeflate", 6, 0.9),
        "stored": DeflatePlan("stored"),
    }
    path = tmp_path / "engines.npz"
    with path.open("wb") as handle, ZipStreamWriter(handle, threads=2) as archive:
        for key, array in arrays.items():
            header = npy_header(np.lib.format.dtype_to_descr(array.dtype), array.shape)
            view = memoryview(array.reshape(-1).view(np.uint8))
            blocks = [header, *(view[i : i + 100_000] for i in range(0, len(view), 100_000))]
            archive.write_member(f"{key}.npy", blocks, len(header) + array.nbytes, plans[key])
    for key, array in arrays.items():
        np.save(tmp_path / f"{key}.npy", array)
    check = (
        "import sys, numpy as np\n"
        "with np.load(sys.argv[1], allow_pickle=False) as z:\n"
        "    for key in z.files:\n"
        "        assert np.array_equal(z[key], np.load(sys.argv[2] + '/' + key + '.npy')), key\n"
        "    print(sorted(z.files))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check, str(path), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # numpy alone, no sciz
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(sorted(arrays))


@pytest.mark.parametrize("bzip2", [False, True])
def test_inflating_a_member_asks_the_engine_for_bounded_pieces(bzip2: bool) -> None:
    """The engines allocate an output buffer as large as the limit they are given: a whole member's
    limit doubled the memory of every large member (a 1.3 kB bzip2 member of a 1.5 GB array was a
    MemoryError under a 3 GB address-space limit although the array fitted)."""
    import bz2

    from sciz.formats._deflate import OUTPUT_PIECE, Inflater

    data = bytes(3 * OUTPUT_PIECE + 5)
    if bzip2:
        packed = bz2.compress(data)
    else:
        engine = zlib.compressobj(1, zlib.DEFLATED, -15)
        packed = engine.compress(data) + engine.flush()
    pieces = iter([packed])
    inflater = Inflater(lambda: next(pieces, b""), len(data), zlib.crc32(data), bzip2=bzip2)
    real = inflater._inflater
    limits: list[int] = []

    class Spy:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def decompress(self, chunk: bytes, limit: int) -> bytes:
            limits.append(limit)
            out: bytes = real.decompress(chunk, limit)
            return out

    inflater._inflater = Spy()
    out = bytearray(len(data))
    assert inflater.readinto(out) == len(data)
    inflater.finish()
    assert out == data
    assert limits and max(limits) <= OUTPUT_PIECE


def _overlapping_npz(count: int, kernel: int) -> bytes:
    """An NPZ whose members share one deflate kernel: member i's stream quotes (as stored blocks) its
    own .npy header, then the local header of member i+1 and member i+1's stream, and so on."""

    def npy_header(length: int) -> bytes:
        text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({length},), }}"
        text += " " * (128 - 10 - len(text) - 1) + "\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()

    def local(name: str, crc: int, csize: int, usize: int) -> bytes:
        return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, csize, usize, len(name), 0) + name.encode()

    def stored(length: int) -> bytes:
        return struct.pack("<BHH", 0, length, length ^ 0xFFFF)

    engine = zlib.compressobj(9, zlib.DEFLATED, -15)
    shared = engine.compress(bytes(kernel)) + engine.flush()
    names = [f"arr_{i}.npy" for i in range(count)]
    heads, locals_, csize, usize, crc = [b""] * count, [b""] * count, [0] * count, [0] * count, [0] * count
    prefix = [b""] * count
    for i in range(count - 1, -1, -1):
        heads[i] = npy_header(len(prefix[i]) + kernel)
        usize[i] = len(heads[i]) + len(prefix[i]) + kernel
        crc[i] = zlib.crc32(bytes(kernel), zlib.crc32(heads[i] + prefix[i]))
        csize[i] = 5 + len(heads[i]) + (len(shared) if i == count - 1 else 5 + len(locals_[i + 1]) + csize[i + 1])
        locals_[i] = local(names[i], crc[i], csize[i], usize[i])
        if i:
            prefix[i - 1] = locals_[i] + heads[i] + prefix[i]
    body, offsets = b"", []
    for i in range(count):
        offsets.append(len(body))
        body += locals_[i] + stored(len(heads[i])) + heads[i] + (stored(len(locals_[i + 1])) if i < count - 1 else b"")
    body += shared
    directory = b"".join(
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            8,
            0,
            0,
            crc[i],
            csize[i],
            usize[i],
            len(names[i]),
            0,
            0,
            0,
            0,
            0,
            offsets[i],
        )
        + names[i].encode()
        for i in range(count)
    )
    return body + directory + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(directory), len(body), 0)


def test_members_sharing_one_deflate_kernel_are_refused(tmp_path: Path) -> None:
    # Each member's ratio stays under deflate's maximum, but together they are not bounded: a 586 kB
    # file of 12 such members read as 7.1 GB resident (40 members: 24 GB).
    from sciz.errors import FormatError
    from sciz.formats.npz import read_npz

    path = tmp_path / "overlap.npz"
    path.write_bytes(_overlapping_npz(3, 100_000))
    with np.load(path) as archive:  # a valid archive: numpy reads every member
        assert [archive[k].size for k in sorted(archive.files)] == [100_334, 100_167, 100_000]
    with pytest.raises(FormatError, match=r"'arr_1\.npy': lies inside the data of member 'arr_0\.npy'"):
        read_npz(path)
