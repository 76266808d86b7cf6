"""NumPy ``.npy`` files: one array, read without pickle (optionally memory-mapped), written atomically."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..atomic import atomic_file
from ..errors import FormatError, argument_error
from ..model import Dataset, StoredArray, as_array
from ._base import Format, single_array_problems

__all__ = ["MAX_HEADER_BYTES", "NPY_MAGIC", "NpyFormat", "header_length", "parse_header", "read_npy", "write_npy"]


def _mmap_mode(mmap: Any) -> Literal["r", "r+", "c"] | None:
    if mmap is False or mmap is None:
        return None
    if mmap is True:
        return "r"
    if mmap == "r" or mmap == "r+" or mmap == "c":
        return mmap
    raise argument_error("mmap", mmap, "must be False, True (read-only) or one of 'r', 'r+', 'c'")


#: The .npy magic and the largest header sciz reads (numpy writes a few hundred bytes; huge
#: structured dtypes need more).
NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 1 << 20
_PREFIX = 12  # magic (6), version (2) and up to 4 bytes of header length


def header_length(prefix: bytes, where: str, available: int) -> int:
    """Bytes of magic + header from the first bytes of an .npy stream, checked before reading them.

    ``available`` is how many bytes the file or member holds; a header longer than that, or than
    :data:`MAX_HEADER_BYTES`, is refused before anything is read or allocated.
    """
    if len(prefix) < 10 or prefix[:6] != NPY_MAGIC:
        raise FormatError(f"{where}: not a readable .npy file (no .npy magic)")
    major, minor = prefix[6], prefix[7]
    if (major, minor) == (1, 0):
        total = 10 + int.from_bytes(prefix[8:10], "little")
    elif (major, minor) in ((2, 0), (3, 0)) and len(prefix) >= 12:
        total = 12 + int.from_bytes(prefix[8:12], "little")
    else:
        raise FormatError(f"{where}: unsupported .npy format version {major}.{minor} (1.0, 2.0 and 3.0 are read)")
    if total > MAX_HEADER_BYTES or total > available:
        raise FormatError(
            f"{where}: the .npy header declares {total} bytes; the data holds {available} and at most "
            f"{MAX_HEADER_BYTES} are read"
        )
    return total


def parse_header(header: bytes, where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and data size in bytes of a complete .npy header (magic included)."""
    stream = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(stream)
        # 3.0 differs from 2.0 only in allowing UTF-8 field names, which the 2.0 parser reads.
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(stream, max_header_size=MAX_HEADER_BYTES)
    except Exception as exc:  # numpy's parser of a hostile header raises anything (TokenError, RecursionError...)
        raise FormatError(f"{where}: not a readable .npy header ({type(exc).__name__}: {exc})") from None
    if any(n < 0 for n in shape):
        raise FormatError(f"{where}: negative dimension in shape {shape}")
    return shape, fortran, dtype, math.prod(shape) * dtype.itemsize


def _header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and header length of an .npy file, checked before reading any data."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(_PREFIX)
            total = header_length(prefix, str(path), size)
            header = prefix[:total] + handle.read(max(0, total - len(prefix)))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except OSError as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{path}: not a readable .npy file ({exc})") from None
    shape, fortran, dtype, _nbytes = parse_header(header, str(path))
    return shape, fortran, dtype, total


def read_npy(path: str | os.PathLike[str], *, mmap: bool | str = False) -> np.ndarray:
    """Read an ``.npy`` file without pickle.

    Parameters
    ----------
    path
        The file.
    mmap
        ``True`` (or ``'r'``) maps the file read-only instead of reading it, so a big array costs no
        memory until used; ``'r+'`` maps it writable, ``'c'`` copy-on-write.

    Raises
    ------
    FormatError
        For object arrays (they would need pickle), truncated or oversized files.
    """
    source = Path(os.fspath(path))
    mode = _mmap_mode(mmap)
    shape, fortran, dtype, offset = _header(source)
    if dtype.hasobject:
        raise FormatError(
            f"{source}: holds an object array ({dtype}) stored with pickle; sciz never unpickles (it could "
            "run code). Re-save it with numeric or string dtypes"
        )
    expected = offset + math.prod(shape) * dtype.itemsize
    actual = source.stat().st_size
    if actual != expected:
        problem = "truncated" if actual < expected else "oversized"
        raise FormatError(
            f"{source}: {problem}: a {dtype} array of shape {shape} needs {expected} bytes, the file has {actual}"
        )
    try:
        if mode is not None:
            return np.load(source, mmap_mode=mode, allow_pickle=False, max_header_size=MAX_HEADER_BYTES)
        from ._guard import check_declared_size

        check_declared_size(expected - offset, str(source))
        out = np.empty(shape[::-1] if fortran else shape, dtype=dtype)  # C order; transposed for Fortran
        with source.open("rb") as handle:
            handle.seek(offset)
            if out.nbytes and handle.readinto(out.reshape(-1).view(np.uint8).data) != out.nbytes:
                raise FormatError(f"{source}: truncated while reading")
        return out.T if fortran else out
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{source}: not a readable .npy file ({exc})") from None


def write_npy(path: str | os.PathLike[str], array: Any) -> Path:
    """Write one array (numpy or lazy) to ``path`` atomically, creating parent directories."""
    data = np.asarray(as_array(array, "array"))
    with atomic_file(path) as handle:
        np.lib.format.write_array(handle, data, allow_pickle=False)
    return Path(os.fspath(path))


class NpyFormat(Format):
    """NumPy ``.npy``: a single array; no axes, layers, masks or metadata.

    Read options: ``mmap`` (False, True, 'r', 'r+', 'c'). Write options: none.
    """

    name = "npy"
    description = "NumPy .npy array (one array, no metadata)"
    extensions = (".npy",)
    magic = (b"\x93NUMPY",)

    def read(self, path: Path, **options: Any) -> Dataset:
        unknown = sorted(set(options) - {"mmap"})
        if unknown:
            raise argument_error(f"option {unknown[0]}", options[unknown[0]], "reading npy files takes: mmap")
        data = read_npy(path, mmap=options.get("mmap", False))
        dataset = Dataset(data)  # a .npy file holds no title
        dataset.storage = {"data": StoredArray(codec="none", stored_bytes=int(data.nbytes))}
        return dataset

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        if options:
            name = sorted(options)[0]
            raise argument_error(f"option {name}", options[name], "writing npy files takes no options")
        return write_npy(path, dataset.data)

    def problems(self, dataset: Dataset) -> list[str]:
        return single_array_problems(dataset, ".npy")
