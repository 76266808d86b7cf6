"""The stores a zspy tree lives in, behind four operations (get, set, list, delete), confined to the store.

zarr-python 3 stores are used as they are (any ``zarr.abc.store.Store``, through its public async API
on one background event loop). Two adapters are sciz's own because zarr cannot do what they do:

- :class:`DirectoryKV`: a directory store that never leaves its root. Every key is opened component by
  component with ``O_NOFOLLOW`` relative to the directory above it, so a symlink anywhere inside the
  store (to a file, a directory or ``/dev/zero``), a FIFO or a device is refused with an error naming
  the entry instead of being followed, blocked on or read forever. zarr's ``LocalStore`` follows them.
- :class:`ZipKV`: a read-only zip store whose duplicate entries (zarr 2 appends rewritten keys)
  resolve to the last one; zips are written by packing a finished directory.

Keys are checked on every access: an empty, ``.`` or ``..`` component, a backslash or a NUL is a
:class:`~sciz.errors.FormatError`. Node names a store cannot hold (``..``, ``.zattrs``, ``""``...) are
escaped by :func:`store_name` and restored exactly by :func:`tree_name`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
import zipfile
from collections.abc import Coroutine, Iterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from ..errors import FormatError, argument_error

__all__ = [
    "DirectoryKV",
    "KVStore",
    "MappingKV",
    "ZarrStoreKV",
    "ZipKV",
    "check_key",
    "join_key",
    "kv_for",
    "store_name",
    "store_path",
    "tree_name",
]

#: First character of an escaped node name; a real name starting with it is escaped too (injective).
_ESCAPE = "~"
_RESERVED_NAMES = frozenset({"zarr.json"})


def store_name(name: str) -> str:
    """The store-safe form of a node name: unchanged unless a store cannot hold it as a child name.

    Escaped are names that are empty, start with ``.`` (``.``, ``..``, ``.zattrs``...: zarr's own
    documents or path traversal), start with ``~``, are ``zarr.json``, or contain ``/``, ``\\`` or
    NUL: they become ``~`` followed by the name percent-encoded.

    >>> store_name(".."), store_name(""), store_name("data")
    ('~..', '~', 'data')
    """
    if name and not name.startswith((".", _ESCAPE)) and name not in _RESERVED_NAMES and not _bad_chars(name):
        return name
    return _ESCAPE + quote(name, safe="")


def tree_name(name: str) -> str:
    """The node name a store-safe name stands for (inverse of :func:`store_name`)."""
    return unquote(name[1:]) if name.startswith(_ESCAPE) else name


def store_path(path: str) -> str:
    """A node path (``Experiments/<title>/data``) with every component made store-safe."""
    return "/".join(store_name(part) for part in path.split("/")) if path else ""


def _bad_chars(name: str) -> bool:
    return "/" in name or "\\" in name or "\x00" in name


def join_key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def check_key(key: str, where: str) -> str:
    """``key`` if every component is a plain name; a FormatError naming the entry otherwise."""
    if key and any(part in ("", ".", "..") or "\\" in part or "\x00" in part for part in key.split("/")):
        raise FormatError(f"{where}: entry {key!r} leaves the store (empty, '.' or '..' path component)")
    return key


class KVStore:
    """The few operations the engine needs from a store."""

    #: Whether chunk writes may come from several processes (dask.distributed workers).
    shareable = False

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        """The value of ``key`` (None if missing). ``limit``: the most bytes the caller can use (a
        chunk's largest sane size); a store that would have to inflate more refuses instead."""
        raise NotImplementedError

    def set(self, key: str, value: bytes) -> None:
        raise NotImplementedError

    def list_dir(self, prefix: str) -> list[str]:
        """Names directly below ``prefix`` ("" is the root)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def keys_under(self, prefix: str) -> Iterator[str]:
        """Every key below ``prefix`` (recursively)."""
        raise NotImplementedError

    def size(self, key: str) -> int:
        """Stored size of a key in bytes (0 if missing)."""
        value = self.get(key)
        return 0 if value is None else len(value)

    def describe(self) -> str:
        return type(self).__name__


# --------------------------------------------------------------------------------------------
# A directory that is never left
# --------------------------------------------------------------------------------------------
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CONFINED = _NOFOLLOW != 0 and os.open in os.supports_dir_fd


class DirectoryKV(KVStore):
    """A directory tree; keys are relative paths. Safe to share between processes.

    Reads refuse symlinks, FIFOs, sockets and devices anywhere inside the store.
    """

    shareable = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.fspath(root))
        self._made: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root = state["root"]
        self._made = set()

    def _refuse(self, key: str, what: str) -> FormatError:
        return FormatError(f"{self.root}: entry {key!r} is {what}; a zspy store holds only plain files and directories")

    def _open(self, key: str) -> int | None:
        """A read descriptor of the regular file ``key``, None if there is none."""
        check_key(key, str(self.root))
        if not _CONFINED:  # no openat/O_NOFOLLOW (Windows): check with lstat, then open
            return self._open_checked(key)
        parts = key.split("/")
        directory = os.open(self.root, os.O_RDONLY | _DIRECTORY)
        try:
            for depth, part in enumerate(parts[:-1]):
                try:
                    child = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=directory)
                except OSError as exc:
                    self._explain(exc, "/".join(parts[: depth + 1]), directory, part)
                    return None
                os.close(directory)
                directory = child
            try:
                fd = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK, dir_fd=directory)
            except OSError as exc:
                self._explain(exc, key, directory, parts[-1])
                return None
        finally:
            os.close(directory)
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return fd
        os.close(fd)
        if stat.S_ISDIR(mode):
            return None
        raise self._refuse(key, _kind(mode))

    def _explain(self, exc: OSError, key: str, directory: int, name: str) -> None:
        """Turn a failed confined open into None (missing) or a FormatError (a forbidden entry)."""
        if exc.errno in (errno.ENOENT, errno.EISDIR):
            return
        try:
            mode = os.lstat(name, dir_fd=directory).st_mode
        except OSError:
            return
        if stat.S_ISLNK(mode):
            raise self._refuse(key, "a symbolic link") from None
        if exc.errno == errno.ENOTDIR and stat.S_ISREG(mode):
            return
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise self._refuse(key, _kind(mode)) from None
        raise FormatError(f"{self.root}: cannot read entry {key!r} ({exc.strerror})") from None

    def _open_checked(self, key: str) -> int | None:
        path = self.root
        for depth, part in enumerate(key.split("/")):
            path = path / part
            try:
                mode = path.lstat().st_mode
            except OSError:
                return None
            if stat.S_ISLNK(mode):
                raise self._refuse("/".join(key.split("/")[: depth + 1]), "a symbolic link")
        if stat.S_ISDIR(mode):
            return None
        if not stat.S_ISREG(mode):
            raise self._refuse(key, _kind(mode))
        return os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        fd = self._open(key)
        if fd is None:
            return None
        try:
            with os.fdopen(fd, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise FormatError(f"{self.root}: cannot read entry {key!r} ({exc})") from None

    def set(self, key: str, value: bytes) -> None:
        check_key(key, str(self.root))
        path = self.root / key
        parent = key.rpartition("/")[0]
        try:
            if parent not in self._made:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._made.add(parent)
            with path.open("wb") as handle:
                handle.write(value)
        except OSError as exc:
            raise FormatError(f"{self.root}: cannot write entry {key!r} ({exc.strerror or exc})") from None

    def _listing(self, prefix: str) -> list[os.DirEntry[str]]:
        if prefix:
            fd = self._open_directory(prefix)
            if fd is None:
                return []
            try:
                return sorted(os.scandir(fd), key=lambda entry: entry.name)
            finally:
                os.close(fd)
        try:
            return sorted(os.scandir(self.root), key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _open_directory(self, prefix: str) -> int | None:
        check_key(prefix, str(self.root))
        path = self.root
        for depth, part in enumerate(prefix.split("/")):
            path = path / part
            try:
                mode = path.lstat().st_mode
            except OSError:
                return None
            if stat.S_ISLNK(mode):
                raise self._refuse("/".join(prefix.split("/")[: depth + 1]), "a symbolic link")
            if not stat.S_ISDIR(mode):
                return None
        try:
            return os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
        except OSError:
            return None

    def list_dir(self, prefix: str) -> list[str]:
        return [entry.name for entry in self._listing(prefix)]

    def delete(self, key: str) -> None:
        check_key(key, str(self.root))
        (self.root / key).unlink(missing_ok=True)

    def keys_under(self, prefix: str) -> Iterator[str]:
        for entry in self._listing(prefix):
            key = join_key(prefix, entry.name)
            if entry.is_symlink():
                raise self._refuse(key, "a symbolic link")
            if entry.is_dir(follow_symlinks=False):
                yield from self.keys_under(key)
            elif entry.is_file(follow_symlinks=False):
                yield key
            else:
                raise self._refuse(key, _kind(entry.stat(follow_symlinks=False).st_mode))

    def size(self, key: str) -> int:
        try:
            info = (self.root / check_key(key, str(self.root))).lstat()
        except OSError:
            return 0
        return info.st_size if stat.S_ISREG(info.st_mode) else 0

    def describe(self) -> str:
        return str(self.root)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


# --------------------------------------------------------------------------------------------
# Zip files, mappings and zarr-python stores
# --------------------------------------------------------------------------------------------
class ZipKV(KVStore):
    """A zip file, read only. Duplicate entries (zarr 2 appends rewritten keys) resolve to the last one."""

    shareable = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.fspath(path))
        self._local = threading.local()
        self._index: dict[str, dict[str, None]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def _zip(self) -> zipfile.ZipFile:
        handle = getattr(self._local, "zip", None)
        if handle is None:
            try:
                handle = zipfile.ZipFile(self.path, "r")
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise FormatError(f"{self.path}: not a readable zip file ({exc})") from None
            self._local.zip = handle
        return handle

    def close(self) -> None:
        handle = getattr(self._local, "zip", None)
        if handle is not None:
            handle.close()
            self._local.zip = None

    def _children(self) -> dict[str, dict[str, None]]:
        if self._index is None:
            index: dict[str, dict[str, None]] = {}
            for name in self._zip().namelist():
                parts = name.rstrip("/").split("/")
                for depth in range(len(parts)):
                    index.setdefault("/".join(parts[:depth]), {})[parts[depth]] = None
            self._index = index
        return self._index

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        check_key(key, str(self.path))
        try:
            info = self._zip().getinfo(key)
        except KeyError:
            return None
        # Inflated sizes are bounded here, not by zipfile: a 1.2 MB store whose 48-byte chunk
        # inflated to 1.2 GB read as 2.4 GB resident before the chunk was found damaged.
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            method = info.compress_type
            raise FormatError(f"{self.path}: entry {key!r} uses ZIP method {method}; only stored and deflate are read")
        if limit is not None and info.file_size > limit:
            raise FormatError(
                f"{self.path}: entry {key!r} declares {info.file_size} bytes, more than a chunk of its array can "
                f"take ({limit})"
            )
        from ._guard import check_declared_size

        check_declared_size(info.file_size, f"{self.path}: entry {key!r}")
        try:
            return self._zip().read(info)
        except KeyError:
            return None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
            raise FormatError(f"{self.path}: entry {key!r} is damaged ({exc})") from None

    def set(self, key: str, value: bytes) -> None:
        raise FormatError(f"{self.path}: zip stores are written whole (store_type='zip'), not key by key")

    def list_dir(self, prefix: str) -> list[str]:
        return sorted(self._children().get(prefix, {}))

    def keys_under(self, prefix: str) -> Iterator[str]:
        start = f"{prefix}/" if prefix else ""
        seen: set[str] = set()
        for name in self._zip().namelist():
            if name.startswith(start) and not name.endswith("/") and name not in seen:
                seen.add(name)
                yield check_key(name, str(self.path))

    def size(self, key: str) -> int:
        try:
            return int(self._zip().getinfo(key).compress_size)
        except KeyError:
            return 0

    def describe(self) -> str:
        return str(self.path)


class MappingKV(KVStore):
    """Any ``MutableMapping[str, bytes]`` (a dict, a zarr 2 style store)."""

    def __init__(self, mapping: MutableMapping[str, Any]) -> None:
        self.mapping = mapping

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        try:
            value = self.mapping[check_key(key, self.describe())]
        except KeyError:
            return None
        return bytes(value)

    def set(self, key: str, value: bytes) -> None:
        self.mapping[check_key(key, self.describe())] = value

    def list_dir(self, prefix: str) -> list[str]:
        start = f"{prefix}/" if prefix else ""
        names = {k[len(start) :].split("/", 1)[0] for k in list(self.mapping) if k.startswith(start)}
        return sorted(names)

    def delete(self, key: str) -> None:
        self.mapping.pop(key, None)

    def keys_under(self, prefix: str) -> Iterator[str]:
        start = f"{prefix}/" if prefix else ""
        return iter([k for k in list(self.mapping) if k.startswith(start)])

    def describe(self) -> str:
        return f"{type(self.mapping).__name__} store"


class _EventLoop:
    """One background event loop per process, driving zarr's async store API from synchronous code."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _pid = 0

    @classmethod
    def run(cls, coroutine: Coroutine[Any, Any, Any]) -> Any:
        with cls._lock:
            if cls._loop is None or cls._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="sciz-zarr-store", daemon=True).start()
                cls._loop, cls._pid = loop, os.getpid()
            loop = cls._loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


class ZarrStoreKV(KVStore):
    """A zarr-python 3 store object (LocalStore, ZipStore, MemoryStore, FsspecStore...), via its public API."""

    def __init__(self, store: Any) -> None:
        from zarr.storage import StorePath

        self.store = store
        _EventLoop.run(StorePath.open(store, "", mode=None))  # opens the store (a ZipStore is not yet)

    @property
    def shareable(self) -> bool:  # type: ignore[override]
        return type(self.store).__name__ in ("LocalStore", "FsspecStore", "ObjectStore")

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        from zarr.buffer import default_buffer_prototype

        buffer = _EventLoop.run(self.store.get(check_key(key, self.describe()), prototype=default_buffer_prototype()))
        return None if buffer is None else buffer.to_bytes()

    def set(self, key: str, value: bytes) -> None:
        from zarr.buffer import default_buffer_prototype

        buffer = default_buffer_prototype().buffer.from_bytes(value)
        _EventLoop.run(self.store.set(check_key(key, self.describe()), buffer))

    def list_dir(self, prefix: str) -> list[str]:
        async def collect() -> list[str]:
            return [name async for name in self.store.list_dir(prefix)]

        return sorted({n.rstrip("/") for n in _EventLoop.run(collect())})

    def delete(self, key: str) -> None:
        _EventLoop.run(self.store.delete(key))

    def keys_under(self, prefix: str) -> Iterator[str]:
        async def collect() -> list[str]:
            return [name async for name in self.store.list_prefix(f"{prefix}/" if prefix else "")]

        return iter([check_key(key, self.describe()) for key in _EventLoop.run(collect())])

    def describe(self) -> str:
        return repr(self.store)


def kv_for(target: Any) -> KVStore:
    """The key-value adapter of a path (directory or zip file), mapping or zarr store."""
    if isinstance(target, KVStore):
        return target
    if isinstance(target, str | os.PathLike):
        path = Path(os.fspath(target))
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise FormatError(f"{path}: a file that is not a zip archive cannot be a Zarr store")
            return ZipKV(path)
        if path.exists() and not path.is_dir():
            raise FormatError(f"{path}: neither a directory nor a zip file")
        return DirectoryKV(path)
    if isinstance(target, MutableMapping):
        return MappingKV(target)
    if hasattr(target, "list_dir") and hasattr(target, "supports_writes"):
        return ZarrStoreKV(target)
    raise argument_error("filename", target, "must be a path, a zarr store or a MutableMapping of bytes")
