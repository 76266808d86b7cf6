"""NumPy ``.npy`` files: one array, read without pickle (optionally memory-mapped), written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..atomic import atomic_file
from ..errors import FormatError, argument_error
from ..model import Dataset, StoredArray, as_array
from ._base import Format, single_array_problems

__all__ = ["NpyFormat", "read_npy", "write_npy"]


def _mmap_mode(mmap: Any) -> Literal["r", "r+", "c"] | None:
    if mmap is False or mmap is None:
        return None
    if mmap is True:
        return "r"
    if mmap == "r" or mmap == "r+" or mmap == "c":
        return mmap
    raise argument_error("mmap", mmap, "must be False, True (read-only) or one of 'r', 'r+', 'c'")


def _header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and header length of an .npy file, checked before reading any data."""
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle, max_header_size=1 << 20)
            elif version in ((2, 0), (3, 0)):
                # 3.0 differs from 2.0 only in allowing UTF-8 field names, which the 2.0 parser reads.
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle, max_header_size=1 << 20)
            else:
                raise FormatError(f"{path}: unsupported .npy format version {version}")
            return shape, fortran, dtype, handle.tell()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except FormatError:
        raise
    except (ValueError, EOFError, SyntaxError, OSError) as exc:
        raise FormatError(f"{path}: not a readable .npy file ({exc})") from None


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
    shape, _fortran, dtype, offset = _header(source)
    if dtype.hasobject:
        raise FormatError(
            f"{source}: holds an object array ({dtype}) stored with pickle; sciz never unpickles (it could "
            "run code). Re-save it with numeric or string dtypes"
        )
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = source.stat().st_size
    if actual != expected:
        problem = "truncated" if actual < expected else "oversized"
        raise FormatError(
            f"{source}: {problem}: a {dtype} array of shape {shape} needs {expected} bytes, the file has {actual}"
        )
    try:
        return np.load(source, mmap_mode=mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
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
        dataset = Dataset(data, name=path.stem)
        dataset.storage = {"data": StoredArray(codec="none", stored_bytes=int(data.nbytes))}
        return dataset

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        if options:
            name = sorted(options)[0]
            raise argument_error(f"option {name}", options[name], "writing npy files takes no options")
        return write_npy(path, dataset.data)

    def problems(self, dataset: Dataset) -> list[str]:
        return single_array_problems(dataset, ".npy")
