"""The reliability harnesses: hostile files, mutants, writers killed mid-write, readers racing writers.

Four ways of attacking every format of :func:`sciz.formats.list_formats`, each case run in a capped
process (address space :data:`MEMORY_LIMIT`, a timeout) and classified into one of
:data:`OUTCOMES`; only ``correct`` and ``clean error`` are acceptable:

- :func:`hostile_cases`: a bounded corpus of hostile inputs per format (FIFOs, device symlinks,
  path traversal, symlinked chunks, HDF5 external storage/links/virtual datasets, huge declared
  sizes, zip bombs, malformed metadata), each with the outcomes it may have;
- :func:`mutant_cases`: bit flips and truncations of a file sciz wrote (or one file of a tree);
- :func:`kill_writers`: a writer replacing a complete file is SIGKILLed at a random moment; the
  target must read back as the old or the new version, and the next write must leave no debris;
- :func:`race_writers`: two writers replace a file over and over while a reader reads it; every
  read must give one complete version, no writer may fail.

:func:`run_read_cases` runs hostile and mutant cases in forked children of worker interpreters
(:mod:`sciz.testing._reliability_child`); :func:`table` prints the outcome counts per format.
``tests/reliability`` runs a bounded slice in CI, ``benchmarks/reliability.py`` the full set.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._writer import write_as
from .fresh import sciz_root

__all__ = [
    "MEMORY_LIMIT",
    "OUTCOMES",
    "Case",
    "Result",
    "base_files",
    "failures",
    "hostile_cases",
    "hostile_writes",
    "kill_writers",
    "mutant_cases",
    "race_writers",
    "run_read_cases",
    "table",
    "writable_formats",
]

#: Every way a case can end; only the first two are acceptable.
OUTCOMES = (
    "correct",
    "clean error",
    "raw error",
    "crash",
    "hang",
    "memory blow-up",
    "silent garbage",
    "failed read",
    "undetected change",
    "lost",
    "debris",
)
ACCEPTABLE = frozenset({"correct", "clean error"})
#: Address-space limit of every case (bytes), as the issue asks: a bomb must fail cleanly under it.
MEMORY_LIMIT = 3 * 1024**3
#: Peak resident memory above which a case counts as a memory blow-up whatever it returned.
PEAK_LIMIT_MB = 1024
#: Seconds a read case may take before it counts as a hang.
CASE_TIMEOUT = 20.0
#: Formats whose files carry checksums over their whole payload; a mutant of another format may
#: legitimately read back as other values (``undetected change``), which is reported but not a defect.
CHECKSUMMED = frozenset({"scz", "npz", "afm-npz", "zspy-zip"})


@dataclass
class Case:
    """One read case: a file (or a base file and a mutation) and the outcomes it may have."""

    format: str
    kind: str
    name: str
    path: Path
    #: The array a correct read returns (None: the only acceptable outcome is a clean error).
    expected: Path | None = None
    mutation: str | None = None
    seed: int = 0

    @property
    def id(self) -> str:
        return f"{self.format}-{self.kind}-{self.name}-{self.seed}".replace("/", "_").replace(" ", "_")


@dataclass
class Result:
    """How one case ended."""

    format: str
    kind: str
    name: str
    outcome: str
    detail: str = ""
    peak_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def acceptable(self) -> bool:
        if self.outcome == "undetected change":
            return self.format not in CHECKSUMMED
        return self.outcome in ACCEPTABLE


# ----- base files: what sciz writes for each format -----------------------------------------------


def writable_formats(names: Iterable[str] | None = None) -> list[str]:
    """The formats sciz writes (through the registry, or for AFM bundles through ``sciz.afm``)."""
    from .. import formats

    chosen = list(names) if names is not None else [f.name for f in formats.list_formats()]
    return [n for n in chosen if formats.get_format(n).can_write or n in ("afm-npz", "afm-h5")]


def sample_data(name: str, size: int = 0, seed: int = 0) -> np.ndarray:
    """A float32 array format ``name`` holds exactly: ``(frames, rows, cols)`` or a 2-D map for TMD/STL.

    ``size`` scales it (0: tiny, for corpora; larger for writes that take measurable time).
    """
    rng = np.random.default_rng(seed)
    rows = 8 + 56 * size
    if name == "tmd":
        return rng.standard_normal((rows * 4, rows * 4)).astype(np.float32)
    if name == "stl":
        return rng.standard_normal((max(4, rows * rows * 4), 3, 3)).astype(np.float32)
    return rng.standard_normal((3 + size * 13, rows, rows + 1)).astype(np.float32)


def base_files(
    folder: Path, names: Iterable[str] | None = None, samples: Mapping[str, Path] | None = None
) -> dict[str, tuple[Path, Path]]:
    """One small file per format in ``folder``: ``{format: (file, expected .npy of sciz.load's data)}``.

    Formats sciz writes get a file it writes; read-only formats (vendor AFM files) need a real file
    in ``samples`` (``{format: path}``), copied in, and are left out without one.
    """
    from .. import formats

    folder.mkdir(parents=True, exist_ok=True)
    chosen = list(names) if names is not None else [f.name for f in formats.list_formats()]
    samples = samples or {}
    writable = set(writable_formats(chosen))
    out = {}
    for name in chosen:
        plugin = formats.get_format(name)
        if name not in writable and name not in samples:
            continue
        path = folder / name / f"base{plugin.extensions[0]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if name in writable:
            written = write_as(name, path, sample_data(name))
        else:
            written = Path(shutil.copyfile(samples[name], path))
        expected = folder / name / "expected.npy"
        np.save(expected, np.asarray(formats.load(written).data), allow_pickle=False)
        out[name] = (written, expected)
    return out


# ----- the hostile corpus -------------------------------------------------------------------------
#: Hostile cases whose data is intact, so reading it correctly is as good as refusing it.
MAY_READ = frozenset({"3000 nested groups", "group cycle"})


#: A file whose bytes must never come back from a read of another file.
def _secret(folder: Path) -> Path:
    secret = folder / "secret.bin"
    if not secret.exists():
        secret.write_bytes(np.arange(4096, dtype=np.float32).tobytes())
    return secret


def _copy_base(base: Path, target: Path) -> Path:
    if base.is_dir():
        shutil.copytree(base, target, symlinks=True)
    else:
        shutil.copy2(base, target)
    return target


def _generic_builders(name: str, base: Path) -> dict[str, Callable[[Path], Path]]:
    """Hostile inputs that apply to every format: empty, FIFO, /dev/zero, truncated, garbage with the magic."""
    ext = base.name[len("base") :]
    builders: dict[str, Callable[[Path], Path]] = {}

    def fifo(d: Path) -> Path:
        os.mkfifo(d / f"x{ext}")
        return d / f"x{ext}"

    def dev_zero(d: Path) -> Path:
        (d / f"x{ext}").symlink_to("/dev/zero")
        return d / f"x{ext}"

    builders["fifo"] = fifo
    builders["symlink to /dev/zero"] = dev_zero
    if base.is_dir():
        builders["empty directory"] = lambda d: _mkdir(d / f"x{ext}")
        builders["fifo metadata"] = lambda d: _replace_with(_copy_base(base, d / f"x{ext}"), ".zgroup", "fifo")
    else:
        raw = base.read_bytes()
        builders["empty file"] = lambda d: _write(d / f"x{ext}", b"")
        builders["header only"] = lambda d: _write(d / f"x{ext}", raw[:16])
        builders["first half"] = lambda d: _write(d / f"x{ext}", raw[: len(raw) // 2])
        builders["magic then garbage"] = lambda d: _write(d / f"x{ext}", raw[:8] + random.Random(1).randbytes(4096))
    return builders


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _replace_with(root: Path, relative: str, how: str, secret: Path | None = None) -> Path:
    """Replace ``root/relative`` by a FIFO, a symlink to ``secret`` or to /dev/zero."""
    victim = root / relative
    victim.unlink()
    if how == "fifo":
        os.mkfifo(victim)
    elif how == "dev-zero":
        victim.symlink_to("/dev/zero")
    else:
        victim.symlink_to(secret or "/etc/passwd")
    return root


def _npy_header(descr: str, shape: str, version: int = 1, length: int | None = None) -> bytes:
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", length if length is not None else len(text)) + text
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", length if length is not None else len(text)) + text


def _zip_member(name: str, payload_or_stream: bytes, *, size: int, crc: int, method: int = 8, flags: int = 0) -> bytes:
    """A one-member ZIP archive with the given (possibly lying) uncompressed size, CRC and method."""
    encoded = name.encode()
    local = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0x21, crc, len(payload_or_stream), size, len(encoded), 0
    )
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50,
        20,
        20,
        flags,
        method,
        0,
        0x21,
        crc,
        len(payload_or_stream),
        size,
        len(encoded),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    body = local + encoded + payload_or_stream
    directory = central + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(directory), len(body), 0)
    return body + directory + end


@functools.cache
def _deflated_zeros(total: int) -> bytes:
    """A raw deflate stream of ``total`` zero bytes (about 1/1000 of its size; built once per process)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    block = bytes(1 << 24)
    parts = [compressor.compress(block[: min(len(block), total - done)]) for done in range(0, total, len(block))]
    return b"".join(parts) + compressor.flush()


def _zip_builders(base: Path, member: str) -> dict[str, Callable[[Path], Path]]:
    """Hostile ZIP archives (NPZ, zspy zip): bombs, lying sizes, unknown methods, encryption, pickles."""
    ext = base.name[len("base") :]

    def bomb(d: Path) -> Path:  # declares 1 GiB honestly: a reader must not inflate it beyond what it may hold
        header = _npy_header("<f4", "(268435456,)")
        stream = zlib.compressobj(9, zlib.DEFLATED, -15)
        payload = stream.compress(header) + _deflated_zeros(1 << 30)[:-2]
        size = len(header) + (1 << 30)
        return _write(d / f"x{ext}", _zip_member(member, payload, size=size, crc=0))

    def lying(d: Path) -> Path:  # declares 64 elements, inflates to 1 GiB
        header = _npy_header("<f4", "(64,)")
        payload = zlib.compress(header + bytes(256), 9)[2:-4]
        bomb_tail = _deflated_zeros(1 << 30)
        return _write(d / f"x{ext}", _zip_member(member, payload + bomb_tail, size=len(header) + 256, crc=0))

    def huge_shape(d: Path) -> Path:  # 16 GiB declared in a tiny member
        data = _npy_header("<f8", "(2147483648,)") + bytes(64)
        return _write(d / f"x{ext}", _zip_member(member, data, size=len(data), crc=zlib.crc32(data), method=0))

    def method99(d: Path) -> Path:
        data = _npy_header("<f4", "(4,)") + bytes(16)
        return _write(d / f"x{ext}", _zip_member(member, data, size=len(data), crc=zlib.crc32(data), method=99))

    def encrypted(d: Path) -> Path:
        data = _npy_header("<f4", "(4,)") + bytes(16)
        return _write(d / f"x{ext}", _zip_member(member, data, size=len(data), crc=zlib.crc32(data), method=0, flags=1))

    def pickled(d: Path) -> Path:
        data = _npy_header("|O", "(1,)") + b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x01x\x94."
        return _write(d / f"x{ext}", _zip_member(member, data, size=len(data), crc=zlib.crc32(data), method=0))

    def traversal(d: Path) -> Path:
        data = _npy_header("<f4", "(4,)") + bytes(16)
        return _write(d / f"x{ext}", _zip_member("../../" + member, data, size=len(data), crc=zlib.crc32(data)))

    return {
        "zip bomb 1 GiB": bomb,
        "zip bomb lying size": lying,
        "declared 16 GiB": huge_shape,
        "unknown zip method": method99,
        "encrypted member": encrypted,
        "pickled object member": pickled,
        "traversal member name": traversal,
    }


def _npy_builders() -> dict[str, Callable[[Path], Path]]:
    return {
        "declared 8 TB": lambda d: _write(d / "x.npy", _npy_header("<f8", "(1000000, 1000000)") + bytes(64)),
        "v2 header length 0xFFFFFFF0": lambda d: _write(
            d / "x.npy", _npy_header("<f4", "(4,)", version=2, length=0xFFFFFFF0) + bytes(16)
        ),
        "object dtype": lambda d: _write(d / "x.npy", _npy_header("|O", "(1,)") + b"\x80\x04N."),
        "negative shape": lambda d: _write(d / "x.npy", _npy_header("<f4", "(-1, 4)") + bytes(16)),
        "shape beyond payload": lambda d: _write(d / "x.npy", _npy_header("<f4", "(100, 100)") + bytes(16)),
    }


def _patched(base: Path, name: str, patches: Callable[[bytearray], None]) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        data = bytearray(base.read_bytes())
        patches(data)
        return _write(d / name, bytes(data))

    return build


def _binary_builders(fmt: str, base: Path, data: np.ndarray) -> dict[str, Callable[[Path], Path]]:
    """Huge declared sizes in TMD, STL and TIFF headers (patched into a file sciz wrote)."""
    if fmt not in ("tmd", "stl", "ome-tiff"):
        return {}
    raw = base.read_bytes()
    ext = base.name[len("base") :]
    if fmt == "tmd":
        rows, cols = data.shape
        at = raw.find(struct.pack("<II", cols, rows))

        def tmd(buffer: bytearray) -> None:
            buffer[at : at + 8] = struct.pack("<II", 100000, 100000)

        return {"declared 100000x100000": _patched(base, f"x{ext}", tmd)} if at > 0 else {}
    if fmt == "stl":

        def stl(buffer: bytearray) -> None:
            buffer[80:84] = struct.pack("<I", 0xFFFFFFFF)

        return {"declared 4e9 triangles": _patched(base, f"x{ext}", stl)}
    if fmt == "ome-tiff":
        import tifffile

        with tifffile.TiffFile(base) as tif:
            tags = tif.pages.first.tags
            offsets = {tag: tags[tag].valueoffset for tag in ("ImageWidth", "ImageLength") if tag in tags}
            types = {tag: tags[tag].dtype for tag in offsets}

        def tiff(buffer: bytearray) -> None:
            for tag, offset in offsets.items():
                fmt_char = "<H" if int(types[tag]) == 3 else "<I"
                buffer[offset : offset + struct.calcsize(fmt_char)] = struct.pack(fmt_char, 65535)

        return {"IFD 65535x65535": _patched(base, f"x{ext}", tiff)}
    return {}


def _classic_netcdf(dims: list[tuple[str, int]], numrecs: int = 0, begin: int = 0, payload: bytes = b"") -> bytes:
    """A CDF-1 file: the dimensions ``dims`` (length 0: the record dimension), one float variable
    ``v`` on all of them starting at ``begin`` (0: right after the header), then ``payload``."""

    def name(text: str) -> bytes:
        raw = text.encode()
        return struct.pack(">i", len(raw)) + raw + b"\0" * (-len(raw) % 4)

    head = b"CDF\x01" + struct.pack(">i", numrecs)
    head += struct.pack(">ii", 0x0A, len(dims)) + b"".join(name(n) + struct.pack(">i", size) for n, size in dims)
    head += b"\0" * 8  # no global attributes
    head += struct.pack(">ii", 0x0B, 1) + name("v") + struct.pack(">i", len(dims))
    head += b"".join(struct.pack(">i", i) for i in range(len(dims)))
    head += b"\0" * 8 + struct.pack(">i", 5)  # no variable attributes; NC_FLOAT
    vsize = min(0x7FFFFFFF, 4 * math.prod(size for _, size in dims if size))
    head += struct.pack(">i", vsize)
    start = begin or len(head) + 4
    return head + struct.pack(">i", start) + payload


def _netcdf_builders() -> dict[str, Callable[[Path], Path]]:
    """Classic netCDF headers that declare far more data than the file holds, or point past its end."""
    small = np.arange(16, dtype=">f4").tobytes()
    return {
        "declared 65535x65535 floats": lambda d: _write(
            d / "x.nc", _classic_netcdf([("y", 65535), ("x", 65535)], payload=small)
        ),
        "2^31-1 records": lambda d: _write(
            d / "x.nc", _classic_netcdf([("t", 0), ("x", 4)], numrecs=0x7FFFFFFF, payload=small)
        ),
        "data offset past the end": lambda d: _write(
            d / "x.nc", _classic_netcdf([("x", 4)], begin=0x7FFFFF00, payload=small)
        ),
        "negative dimension": lambda d: _write(d / "x.nc", _classic_netcdf([("x", -4)], payload=small)),
    }


def _hdf5_builders(base: Path, secret: Path, data: np.ndarray) -> dict[str, Callable[[Path], Path]]:
    """HDF5 files whose main dataset reads outside the file, declares a huge size, or whose tree is deep/cyclic."""

    def main_dataset(handle: Any) -> str:
        found: list[str] = []

        def visit(name: str, node: Any) -> None:
            if hasattr(node, "shape") and tuple(node.shape) == data.shape[-len(node.shape) :] and node.size > 16:
                found.append(name)

        handle.visititems(visit)
        if not found:
            raise RuntimeError(f"{base}: no dataset of shape {data.shape}")
        return max(found, key=lambda n: handle[n].size)

    def edit(change: Callable[[Any, str, Any], None]) -> Callable[[Path], Path]:
        def build(d: Path) -> Path:
            import h5py

            target = _copy_base(base, d / f"x{base.suffix}")
            with h5py.File(target, "r+") as handle:
                name = main_dataset(handle)
                old = handle[name]
                shape, dtype = old.shape, old.dtype
                attrs = dict(old.attrs)
                del handle[name]
                change(handle, name, (shape, dtype))
                if name in handle:
                    for key, value in attrs.items():
                        handle[name].attrs[key] = value
            return target

        return build

    def external(handle: Any, name: str, info: Any) -> None:
        shape, dtype = info
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        handle.create_dataset(name, shape=shape, dtype=dtype, external=[(str(secret), 0, nbytes)])

    def external_link(handle: Any, name: str, info: Any) -> None:
        import h5py

        other = secret.with_suffix(".h5")
        with h5py.File(other, "a") as f:
            if "data" not in f:
                f["data"] = np.arange(np.prod(info[0]), dtype=info[1]).reshape(info[0])
        handle[name] = h5py.ExternalLink(str(other), "/data")

    def virtual(handle: Any, name: str, info: Any) -> None:
        import h5py

        shape, dtype = info
        other = secret.with_suffix(".vds.h5")
        with h5py.File(other, "a") as f:
            if "data" not in f:
                f["data"] = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[...] = h5py.VirtualSource(str(other), "data", shape=shape)
        handle.create_virtual_dataset(name, layout)

    def huge(handle: Any, name: str, info: Any) -> None:
        shape, dtype = info
        big = tuple([1 << 16] * (len(shape) - 1) + [1 << 16])
        handle.create_dataset(name, shape=big, dtype=dtype, chunks=tuple(min(64, s) for s in big))

    def deep(d: Path) -> Path:
        import h5py

        target = _copy_base(base, d / f"x{base.suffix}")
        with h5py.File(target, "r+") as handle:
            parent = handle[main_dataset(handle)].parent
            group = parent.require_group("deep")
            for level in range(3000):
                group = group.create_group(f"g{level}")
        return target

    def cyclic(d: Path) -> Path:
        import h5py

        target = _copy_base(base, d / f"x{base.suffix}")
        with h5py.File(target, "r+") as handle:
            parent = handle[main_dataset(handle)].parent
            loop = parent.require_group("loop")
            loop["back"] = parent  # a hard link to an ancestor: the tree is a cycle
        return target

    return {
        "external raw storage": edit(external),
        "external link": edit(external_link),
        "virtual dataset": edit(virtual),
        "declared 16 GiB chunked": edit(huge),
        "3000 nested groups": deep,
        "group cycle": cyclic,
    }


def _zarr_builders(base: Path, secret: Path) -> dict[str, Callable[[Path], Path]]:
    """zspy directory stores whose array metadata or chunks are hostile (zarr v2 metadata)."""
    arrays = sorted(base.rglob(".zarray"), key=lambda p: -len(json.loads(p.read_text())["shape"]))
    if not arrays:
        return {}
    relative = arrays[0].parent.relative_to(base)
    chunks = sorted(p for p in arrays[0].parent.rglob("*") if p.is_file() and not p.name.startswith("."))
    first_chunk = chunks[0].relative_to(arrays[0].parent).as_posix() if chunks else "0"

    def meta(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], Path]:
        def build(d: Path) -> Path:
            target = _copy_base(base, d / "x.zspy")
            path = target / relative / ".zarray"
            document = json.loads(path.read_text())
            change(document)
            path.write_text(json.dumps(document))
            return target

        return build

    def chunk(how: str) -> Callable[[Path], Path]:
        return lambda d: _replace_with(_copy_base(base, d / "x.zspy"), f"{relative}/{first_chunk}", how, secret)

    def attrs_link(d: Path) -> Path:
        target = _copy_base(base, d / "x.zspy")
        victim = target / relative / ".zattrs"
        victim.unlink(missing_ok=True)
        victim.symlink_to(secret)
        return target

    return {
        "dimension_separator /../": meta(lambda m: m.update(dimension_separator="/../")),
        "chunks [0,0,0]": meta(lambda m: m.update(chunks=[0] * len(m["chunks"]))),
        "chunks [-1,...]": meta(lambda m: m.update(chunks=[-1, *m["chunks"][1:]])),
        "dtype <f8 over f4 chunks": meta(lambda m: m.update(dtype="<f8")),
        "shape 1e6 per axis": meta(lambda m: m.update(shape=[1000000] * len(m["shape"]))),
        "fill_value 'abc'": meta(lambda m: m.update(fill_value="abc")),
        "unknown compressor": meta(lambda m: m.update(compressor={"id": "no-such-codec"})),
        "chunk symlink to another file": chunk("secret"),
        "chunk FIFO": chunk("fifo"),
        "chunk symlink to /dev/zero": chunk("dev-zero"),
        ".zattrs symlink": attrs_link,
    }


def _zipped_zarr_builders(folder: Path, secret: Path) -> dict[str, Callable[[Path], Path]]:
    """The zspy directory cases whose tree a zip can hold (no links or FIFOs), zipped as zspy-zip files."""
    import zipfile

    tree = folder / "base.zspy"
    if not tree.exists():
        write_as("zspy", tree, sample_data("zspy"))
    builders: dict[str, Callable[[Path], Path]] = {}
    for label, build in _zarr_builders(tree, secret).items():
        if "symlink" in label or "FIFO" in label:
            continue

        def zipped(d: Path, build: Callable[[Path], Path] = build) -> Path:
            root = build(d)
            target = d / "x-zip.zspy"
            with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
                for path in sorted(root.rglob("*")):
                    if path.is_file():
                        archive.write(path, path.relative_to(root).as_posix())
            shutil.rmtree(root)
            return target

        builders[label] = zipped
    return builders


def hostile_cases(
    folder: Path,
    names: Iterable[str] | None = None,
    *,
    skip: Mapping[str, Collection[str]] | None = None,
    samples: Mapping[str, Path] | None = None,
) -> list[Case]:
    """Build the hostile corpus in ``folder`` (formats ``names``, default all; without the case names
    ``skip`` lists per format; read-only formats from ``samples``, see :func:`base_files`). Each case
    must end in a clean error (or, for :data:`MAY_READ` cases, the intact data)."""
    skip = skip or {}
    bases = base_files(folder / "bases", names, samples)
    secret = _secret(folder)
    cases = []
    for name, (base, expected) in bases.items():
        data = np.load(expected)
        builders = _generic_builders(name, base)
        if name in ("npz", "afm-npz"):
            builders.update(_zip_builders(base, "data.npy" if name == "npz" else "height_trace.npy"))
        elif name == "zspy-zip":
            builders.update(_zipped_zarr_builders(folder / "bases" / "zspy-tree", secret))
        elif name == "npy":
            builders.update(_npy_builders())
        elif name in ("hspy", "afm-h5"):
            builders.update(_hdf5_builders(base, secret, data))
        elif name == "zspy":
            builders.update(_zarr_builders(base, secret))
        elif name == "netcdf":
            builders.update(_netcdf_builders())
        builders.update(_binary_builders(name, base, data))
        for label, build in builders.items():
            if label in skip.get(name, ()):
                continue
            where = folder / "hostile" / name / label.replace(" ", "_").replace("/", "_")
            where.mkdir(parents=True)
            cases.append(Case(name, "hostile", label, build(where), expected if label in MAY_READ else None))
    return cases


def mutant_cases(
    folder: Path,
    per_format: int,
    names: Iterable[str] | None = None,
    seed: int = 0,
    samples: Mapping[str, Path] | None = None,
) -> list[Case]:
    """``per_format`` mutants of each format's base file: half bit flips, half truncations (made in the child)."""
    bases = base_files(folder / "bases", names, samples)
    cases = []
    for name, (base, expected) in bases.items():
        for i in range(per_format):
            mutation = "truncate" if i % 2 else "flip"
            cases.append(Case(name, "mutant", mutation, base, expected, mutation, seed * 100000 + i))
    return cases


# ----- running read cases -------------------------------------------------------------------------
def run_read_cases(
    cases: list[Case], workdir: Path, *, workers: int = 2, timeout: float = CASE_TIMEOUT, limit: int = MEMORY_LIMIT
) -> list[Result]:
    """Run every case in a capped forked child of ``workers`` fresh interpreters; return one Result per case."""
    script = (Path(__file__).with_name("_reliability_child.py")).read_text(encoding="utf-8")
    shares = [cases[i::workers] for i in range(workers)]

    def run_share(index: int) -> dict[str, Any]:
        out = workdir / f"worker-{index}"
        out.mkdir(parents=True, exist_ok=True)
        manifest = {
            "root": str(sciz_root()),
            "out": str(out),
            "results": str(out / "results.json"),
            "limit": limit,
            "timeout": timeout,
            "cases": [
                {
                    "id": case.id,
                    "path": str(case.path),
                    "expected": str(case.expected) if case.expected else None,
                    "mutation": case.mutation,
                    "seed": case.seed,
                }
                for case in shares[index]
            ],
        }
        (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-I", "-c", script, str(out / "manifest.json")],
            capture_output=True,
            text=True,
            check=False,
            cwd=out,
        )
        if done.returncode != 0:
            raise RuntimeError(f"reliability worker {index} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        results: dict[str, Any] = json.loads((out / "results.json").read_text(encoding="utf-8"))
        return results

    with ThreadPoolExecutor(workers) as pool:
        reports: dict[str, Any] = {}
        for share in pool.map(run_share, range(workers)):
            reports.update(share)
    results = []
    for case in cases:
        report = reports[case.id]
        outcome = report["outcome"]
        peak = report.get("peak_mb")
        if peak is not None and peak > PEAK_LIMIT_MB and outcome in ACCEPTABLE:
            outcome, report["detail"] = "memory blow-up", f"peak {peak} MB ({report['detail']})"
        results.append(Result(case.format, case.kind, case.name, outcome, report.get("detail", ""), peak))
    return results


# ----- writers killed and raced -------------------------------------------------------------------
_WRITER = textwrap.dedent(
    """
    import importlib.util
    import os
    import shutil
    import sys
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    spec = importlib.util.spec_from_file_location("sciz_reliability_writer", sys.argv[7])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    name, target, value, repeats = sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    data = np.load(sys.argv[6])
    warm = target.parent.parent / f"warm-up-{os.getpid()}" / target.name
    module.write_as(name, warm, data)  # imports every library the write needs before the clock starts
    shutil.rmtree(warm.parent)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(0)  # the harness gave up (closed the pipe): write nothing
    for i in range(repeats):
        module.write_as(name, target, data + np.float32(value if i % 2 == 0 else -value))
    print("done", flush=True)
    """
)


def _identify(path: Path, versions: dict[str, np.ndarray]) -> str:
    """Which version ``path`` holds through ``sciz.load``: a key of ``versions``, or an outcome."""
    from .. import formats
    from ..errors import SciZError

    try:
        data = np.asarray(formats.load(path).data)
    except SciZError as exc:
        return f"clean error: {exc}"
    except Exception as exc:
        return f"raw error: {type(exc).__name__}: {exc}"
    for key, version in versions.items():
        if data.shape == version.shape and data.tobytes() == version.tobytes():
            return key
    return "mixed"


def _expected_read(name: str, data: np.ndarray, folder: Path) -> np.ndarray:
    """What ``sciz.load`` gives for ``data`` written as ``name`` (AFM bundles store float64 heights)."""
    from .. import formats

    probe = folder / f"probe{formats.get_format(name).extensions[0]}"
    write_as(name, probe, data)
    loaded = np.asarray(formats.load(probe).data)
    if probe.is_dir():
        shutil.rmtree(probe)
    else:
        probe.unlink()
    return loaded


def _start_writer(name: str, target: Path, data_file: Path, value: float, repeats: int) -> subprocess.Popen[str]:
    """Start a writer process; it imports what it needs, then waits for a line on stdin (see :func:`_ready`)."""
    script = Path(__file__).with_name("_writer.py")
    arguments = [str(sciz_root()), name, str(target), str(value), str(repeats), str(data_file), str(script)]
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready(process: subprocess.Popen[str], name: str) -> subprocess.Popen[str]:
    """Wait until ``process`` has started; then tell it to write."""
    assert process.stdout is not None and process.stdin is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError(f"writer for {name} did not start: {process.communicate()[1][-2000:]}")
    process.stdin.write("go\n")
    process.stdin.flush()
    return process


def kill_writers(name: str, folder: Path, kills: int, *, size: int = 2, seed: int = 0) -> list[Result]:
    """SIGKILL a writer that replaces a complete ``name`` target over and over, ``kills`` times, at random moments.

    Each time: the target (through ``sciz.load``, which finishes an interrupted directory swap) must
    be one complete version; the next complete write must leave nothing beside it.
    """
    from .. import formats

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"target{formats.get_format(name).extensions[0]}"
    base = sample_data(name, size=size, seed=seed)
    data_file = folder / "data.npy"
    np.save(data_file, base)
    versions = {key: _expected_read(name, base + np.float32(v), folder) for key, v in (("+", 1.0), ("-", -1.0))}
    versions["old"] = _expected_read(name, base, folder)
    write_as(name, target, base)
    start = time.monotonic()
    write_as(name, target, base)
    duration = time.monotonic() - start
    results = []
    for _ in range(kills):
        writer = _ready(_start_writer(name, target, data_file, 1.0, 1 << 30), name)
        # The writer replaces the target again and again: a moment a few writes in falls anywhere in one.
        time.sleep(rng.uniform(duration, 4 * duration) + 0.02)
        writer.kill()
        writer.communicate()
        present = target.exists()
        seen = _identify(target, versions)
        outcome = "correct" if seen in versions else "lost" if "rror" in seen else "silent garbage"
        detail = seen if outcome != "correct" else ""
        try:
            write_as(name, target, base)
        except Exception as exc:
            outcome, detail = "raw error", f"the next write failed: {type(exc).__name__}: {exc}"
        else:
            left = sorted(p.name for p in folder.iterdir() if p.name not in {target.name, "data.npy"})
            if left and outcome == "correct":
                outcome, detail = "debris", f"left after the next write: {left}"
        results.append(Result(name, "kill", "SIGKILL during write", outcome, detail, extra={"present": present}))
    return results


def race_writers(name: str, folder: Path, repeats: int, *, seed: int = 0) -> list[Result]:
    """Two writers replace a ``name`` target ``repeats`` times each while this process reads it in a loop.

    Every read must be one complete version (an error reading it is a ``failed read``); no writer
    may fail; nothing may be left beside the target.
    """
    from .. import formats

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"target{formats.get_format(name).extensions[0]}"
    base = sample_data(name, size=1, seed=seed)
    data_file = folder / "data.npy"
    np.save(data_file, base)
    versions = {
        f"{sign}{value}": _expected_read(name, base + np.float32(sign * value), folder)
        for value in (1.0, 2.0)
        for sign in (1, -1)
    }
    versions["base"] = _expected_read(name, base, folder)
    write_as(name, target, base)
    started = [_start_writer(name, target, data_file, value, repeats) for value in (1.0, 2.0)]
    writers = [_ready(writer, name) for writer in started]
    reads: Counter[tuple[str, str]] = Counter()
    while any(w.poll() is None for w in writers):
        seen = _identify(target, versions)
        if seen in versions:
            reads["correct", ""] += 1
        elif seen == "mixed":
            reads["silent garbage", "a mixture of versions"] += 1
        else:  # an error reading a complete file that is being replaced: a reader must hold one version
            reads["raw error" if seen.startswith("raw") else "failed read", seen[:300]] += 1
    results = []
    for index, writer in enumerate(writers):
        _, stderr = writer.communicate()
        if writer.returncode != 0:
            last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {writer.returncode}"
            kind = "clean error" if "sciz.errors" in stderr else "raw error"
            results.append(Result(name, "race", f"writer {index}", "raw error", f"{kind}: {last}"))
        else:
            results.append(Result(name, "race", f"writer {index}", "correct"))
    for (outcome, detail), count in reads.items():
        results.extend(Result(name, "race", "read while replaced", outcome, detail) for _ in range(count))
    left = sorted(p.name for p in folder.iterdir() if p.name not in {target.name, "data.npy"})
    if left:
        results.append(Result(name, "race", "leftovers", "debris", f"left: {left}"))
    return results


#: Metadata keys and a title that once escaped the target or were lost (issue 9).
HOSTILE_KEYS = ("..", ".", ".zattrs", ".zarray", "", "a/../../b", "../../outside", "normal")


def hostile_writes(name: str, folder: Path) -> list[Result]:
    """Write datasets whose metadata keys and title are path tricks; nothing may appear outside the target.

    A format that can hold the metadata (:meth:`~sciz.formats.Format.problems` finds nothing) must
    give every key and the title back exactly; one that cannot must refuse with a clean error.
    """
    from .. import formats
    from ..errors import SciZError
    from ..model import Dataset

    plugin = formats.get_format(name)
    results = []
    for label, metadata, title in (
        ("hostile metadata keys", {key: index for index, key in enumerate(HOSTILE_KEYS)}, "plain"),
        ("hostile title", {"note": 1}, "../.."),
    ):
        where = folder / label.replace(" ", "_")
        target = where / "out" / f"target{plugin.extensions[0]}"
        target.parent.mkdir(parents=True)
        dataset = Dataset(sample_data(name), metadata=metadata, name=title)
        try:
            formats.save(dataset, target, format=name)  # as users save: what the format cannot hold is refused
        except SciZError as exc:
            outcome, detail = "clean error", str(exc)[:200]
        except Exception as exc:
            outcome, detail = "raw error", f"{type(exc).__name__}: {exc}"[:200]
        else:
            outcome, detail = _check_hostile_write(plugin, dataset, target)
        outside = sorted(p.relative_to(where).as_posix() for p in where.rglob("*") if not _inside(p, target))
        if outside:
            outcome, detail = "debris", f"written outside the target: {outside[:6]}"
        results.append(Result(name, "write", label, outcome, detail))
    return results


def _inside(path: Path, target: Path) -> bool:
    return path == target.parent or path == target or target in path.parents


def _check_hostile_write(plugin: Any, dataset: Any, target: Path) -> tuple[str, str]:
    from .. import formats
    from ..errors import SciZError

    try:
        back = formats.load(target)
    except SciZError as exc:
        return "silent garbage", f"written but unreadable: {exc}"[:200]
    lost = [key for key, value in dataset.metadata.items() if back.metadata.get(key) != value]
    if lost or back.name != dataset.name:
        return "silent garbage", f"lost or changed: keys {lost}, title {back.name!r}"
    return "correct", ""


# ----- reporting ----------------------------------------------------------------------------------
def table(results: Iterable[Result]) -> str:
    """Outcome counts per format (rows) and outcome (columns), then per format and kind of case."""
    results = list(results)
    names = sorted({r.format for r in results})
    columns = [o for o in OUTCOMES if any(r.outcome == o for r in results)] or ["correct"]
    lines = []
    header = f"{'format':<10} {'kind':<8} {'cases':>6} " + " ".join(f"{c:>{max(len(c), 6)}}" for c in columns)
    lines.append(header)
    lines.append("-" * len(header))
    for name in names:
        for kind in sorted({r.kind for r in results if r.format == name}):
            rows = [r for r in results if r.format == name and r.kind == kind]
            counts = Counter(r.outcome for r in rows)
            cells = " ".join(f"{counts.get(c, 0):>{max(len(c), 6)}}" for c in columns)
            lines.append(f"{name:<10} {kind:<8} {len(rows):>6} {cells}")
    totals = Counter(r.outcome for r in results)
    cells = " ".join(f"{totals.get(c, 0):>{max(len(c), 6)}}" for c in columns)
    lines.append(f"{'all':<10} {'':<8} {len(results):>6} {cells}")
    return "\n".join(lines)


def failures(results: Iterable[Result]) -> list[Result]:
    """The results that are not acceptable (see :attr:`Result.acceptable`)."""
    return [r for r in results if not r.acceptable]


def scratch_folder(prefix: str = "sciz-reliability-") -> Path:
    """A new temporary folder for a run (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=prefix))
