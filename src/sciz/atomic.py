"""Atomic writing of files and directory trees: a crash never leaves a half-written file behind.

Every writer in sciz writes into a temporary sibling (same directory, so the final rename stays on
one file system), flushes and fsyncs it, then renames it over the target. Readers therefore see
either the old complete file or the new complete file, never a mixture.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_directory", "atomic_file", "fsync_directory", "prepare_target"]


def prepare_target(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as an absolute :class:`Path`, creating its parent directories."""
    target = Path(os.fspath(path)).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.absolute()


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry to disk so a rename inside it survives a power cut (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary_sibling(target: Path, *, directory: bool) -> Path:
    prefix = f".{target.name}."
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary sibling of ``path`` for binary writing; on success it replaces ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Example
    -------
    >>> with atomic_file("out.bin") as fh:  # doctest: +SKIP
    ...     fh.write(b"data")
    """
    target = prepare_target(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write file {target}: a directory is in the way")
    temporary = _temporary_sibling(target, directory=False)
    try:
        with temporary.open("wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        temporary.chmod(_default_file_mode())
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it takes the place of ``path``.

    An existing directory (or file) at ``path`` is first moved aside and removed only after the new
    tree is in place, so at every instant either the old or the new tree exists complete.
    """
    target = prepare_target(path)
    temporary = _temporary_sibling(target, directory=True)
    try:
        yield temporary
        _fsync_tree(temporary)
        temporary.chmod(_default_directory_mode())
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    backup: Path | None = None
    if target.exists() or target.is_symlink():
        backup = _temporary_sibling(target, directory=True)
        backup.rmdir()
        target.replace(backup)
    try:
        temporary.replace(target)
    except BaseException:
        if backup is not None:
            backup.replace(target)
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    fsync_directory(target.parent)
    if backup is not None:
        if backup.is_dir() and not backup.is_symlink():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            backup.unlink(missing_ok=True)


def _fsync_tree(root: Path) -> None:
    for directory, _subdirs, files in os.walk(root):
        for name in files:
            fd = os.open(Path(directory) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(Path(directory))


@functools.cache
def _umask() -> int:
    # Reading the umask means setting it; do it once, not on every write from many threads.
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_file_mode() -> int:
    # mkstemp creates 0600 files; give the file the mode a plain open() would have.
    return 0o666 & ~_umask()


def _default_directory_mode() -> int:
    return 0o777 & ~_umask()
