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
import contextlib
import errno
import hashlib
import os
import stat
import threading
import weakref
import zipfile
from collections.abc import Coroutine, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from ..errors import FormatError, argument_error

__all__ = [
    "LONG_NAMES_ATTR",
    "MAX_NAME_BYTES",
    "DirectoryKV",
    "KVStore",
    "MappingKV",
    "ZarrStoreKV",
    "ZipKV",
    "check_key",
    "is_long_stand_in",
    "join_key",
    "kv_for",
    "store_name",
    "store_path",
    "tree_name",
]

#: First character of an escaped node name; a real name starting with it is escaped too (injective).
_ESCAPE = "~"
#: Start of the stand-in for a name too long for a file system (percent-encoding never yields ``#``).
_LONG = "~#"
_RESERVED_NAMES = frozenset({"zarr.json"})
#: Longest directory entry name, in bytes, of common file systems (ext4, XFS, APFS, NTFS in UTF-16 units).
MAX_NAME_BYTES = 255
#: Root group attribute mapping the stand-ins of long names to the names (see :func:`store_name`).
LONG_NAMES_ATTR = "_sciz_long_names"


def store_name(name: str) -> str:
    """The store-safe form of a node name: unchanged unless a store cannot hold it as a child name.

    Escaped are names that are empty, start with ``.`` (``.``, ``..``, ``.zattrs``...: zarr's own
    documents or path traversal), start with ``~``, are ``zarr.json``, or contain ``/``, ``\\`` or
    NUL: they become ``~`` followed by the name percent-encoded. A name whose store form would be
    longer than :data:`MAX_NAME_BYTES` (a directory entry the file system refuses) becomes ``~#``
    and its SHA-256; the writer records the name under :data:`LONG_NAMES_ATTR` of the root group
    and :func:`tree_name` restores it from there.

    >>> store_name(".."), store_name(""), store_name("data"), len(store_name("k" * 300))
    ('~..', '~', 'data', 66)
    """
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(
            f"name {name!r} is not valid Unicode (it holds a lone surrogate), which no store can name"
        ) from None
    if name and not name.startswith((".", _ESCAPE)) and name not in _RESERVED_NAMES and not _bad_chars(name):
        form = name
    else:
        form = _ESCAPE + quote(name, safe="")
    if len(form.encode("utf-8")) <= MAX_NAME_BYTES:
        return form
    return _LONG + hashlib.sha256(encoded).hexdigest()


def is_long_stand_in(name: str) -> bool:
    """Whether a store name stands for a name too long to store (its real name is in the root group)."""
    return name.startswith(_LONG)


def tree_name(name: str, long_names: Mapping[str, str] | None = None) -> str:
    """The node name a store-safe name stands for (inverse of :func:`store_name`).

    ``long_names``: the root group's :data:`LONG_NAMES_ATTR` record; a stand-in it lacks reads as it is.
    """
    if name.startswith(_LONG):
        real = (long_names or {}).get(name)
        return real if isinstance(real, str) and store_name(real) == name else name
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

    def reading(self) -> contextlib.AbstractContextManager[Any]:
        """Hold one version of the store for the reads inside (see :meth:`DirectoryKV.reading`)."""
        return contextlib.nullcontext()

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        """The value of ``key`` (None if missing). ``limit``: the most bytes the caller can use (a
        chunk's largest sane size); a store that would have to inflate more refuses instead."""
        raise NotImplementedError

    def set(self, key: str, value: bytes, *, sync: bool = False) -> None:
        """Store ``value`` under ``key``. ``sync``: the value is on disk when this returns (fsync),
        where the store is files; writers ask it for chunks, whose flushing then overlaps the encoding
        of the next ones instead of following all of them (``atomic_directory`` fsyncs the rest)."""
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

    The root directory is opened once (a symlinked root path is resolved then) and every entry is
    opened relative to that descriptor, so all reads of one store object see the one tree it
    opened, even while :func:`sciz.atomic.atomic_directory` replaces the store under its name.
    While :meth:`reading` (every read takes it; :func:`~sciz.zspy.file_reader` holds it for the
    whole eager read) a shared lock on the tree keeps writers from deleting it. A lazy read
    (:class:`~sciz.formats.hyperspy_zarr.ChunkSource`) refuses a tree that was replaced since; a
    store unpickled in another process (dask workers) opens the root again and refuses it if it is
    no longer the tree first opened: a :class:`~sciz.errors.FormatError` saying the store was
    replaced, never a mixture of versions. :meth:`close` (or garbage collection) closes the root.
    """

    shareable = True

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = False) -> None:
        self.root = Path(os.fspath(root))
        #: Honour ``set(..., sync=True)`` (a tree that becomes the target; not a scratch tree zipped later).
        self.durable = durable
        self._made: set[str] = set()
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._expected: tuple[int, int] | None = None  # the identity a pickled store was opened with
        self._holders = 0
        self._locked = False
        self._closer: weakref.finalize | None = None
        self._real: Path | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "identity": self._identity or self._expected, "durable": self.durable}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], durable=bool(state.get("durable")))  # type: ignore[misc]
        self._expected = state.get("identity")

    # ----- the root, held once --------------------------------------------------------------------
    def _real_root(self) -> Path:
        """The root with symlinks resolved, once: the tree the store reads is the one it names then."""
        if self._real is None:
            self._real = Path(os.path.realpath(self.root))
        return self._real

    def _replaced(self) -> FormatError:
        return FormatError(f"{self.root}: the store was replaced while being read; open it again")

    def _open_root(self) -> int | None:
        """The root descriptor (under the mutex), locked; None if there is no such directory."""
        if self._fd is None:
            from ..atomic import hold_directory, release_directory

            try:
                fd, identity = hold_directory(self._real_root())
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                raise FormatError(f"{self.root}: cannot open the store ({exc.strerror or exc})") from None
            if self._expected is not None and identity != self._expected:
                release_directory(fd, self._real_root())
                raise self._replaced()
            self._fd, self._identity, self._locked = fd, identity, True
            self._closer = weakref.finalize(self, _close_quietly, fd)
        elif not self._locked:
            # Between holds a writer may have replaced the tree: read it again only if it still has its name.
            from ..atomic import _names, _try_lock, _unlock

            if not _try_lock(self._fd, exclusive=False):  # a writer is deleting it: it was replaced
                raise self._replaced()
            if not _names(self._real_root(), self._fd):
                _unlock(self._fd)
                raise self._replaced()
            self._locked = True
        return self._fd

    @contextlib.contextmanager
    def reading(self) -> Iterator[int | None]:
        """Hold the tree for the reads inside (yields its root descriptor; None if there is no store).

        Reads inside one hold see one tree, which no sciz writer deletes meanwhile. A new hold after
        all holds were given up (a lazy read later on) refuses a tree that no longer has the store's
        name: the store was replaced.
        """
        from ..atomic import release_directory

        with self._mutex:
            fd = self._open_root()
            self._holders += 1
        try:
            yield fd
        finally:
            with self._mutex:
                self._holders -= 1
                if self._holders == 0 and self._locked and self._fd is not None:
                    self._locked = False
                    release_directory(self._fd, self._real_root(), close=False)

    def identity(self) -> tuple[int, int] | None:
        """``(st_dev, st_ino)`` of the tree this store reads (None if there is none)."""
        with self.reading():
            return self._identity

    def close(self) -> None:
        """Close the root descriptor (a later read opens the tree the name holds then)."""
        with self._mutex:
            if self._closer is not None:
                self._closer()
            self._fd, self._closer, self._locked = None, None, False

    # ----- reading entries relative to the root -------------------------------------------------------
    def _refuse(self, key: str, what: str) -> FormatError:
        return FormatError(f"{self.root}: entry {key!r} is {what}; a zspy store holds only plain files and directories")

    def _walk(self, root: int, parts: list[str]) -> int | None:
        """A descriptor of the directory ``parts`` below ``root`` (the caller closes it), None if missing."""
        directory = os.dup(root)
        for depth, part in enumerate(parts):
            try:
                child = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=directory)
            except OSError as exc:
                try:
                    self._explain(exc, "/".join(parts[: depth + 1]), directory, part)
                finally:
                    os.close(directory)
                return None
            os.close(directory)
            directory = child
        return directory

    def _open(self, key: str) -> int | None:
        """A read descriptor of the regular file ``key``, None if there is none."""
        check_key(key, str(self.root))
        if not _CONFINED:  # no openat/O_NOFOLLOW (Windows): check with lstat, then open
            return self._open_checked(key)
        parts = key.split("/")
        with self.reading() as root:
            if root is None:
                return None
            directory = self._walk(root, parts[:-1])
            if directory is None:
                return None
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

    def set(self, key: str, value: bytes, *, sync: bool = False) -> None:
        check_key(key, str(self.root))
        path = self.root / key
        parent = key.rpartition("/")[0]
        try:
            if parent not in self._made:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._made.add(parent)
            with path.open("wb") as handle:
                handle.write(value)
                if sync and self.durable:
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as exc:
            raise FormatError(f"{self.root}: cannot write entry {key!r} ({exc.strerror or exc})") from None

    def _listing(self, prefix: str) -> list[tuple[str, int]]:
        """``(name, st_mode type bits)`` of the entries directly below ``prefix``, sorted by name."""
        if prefix:
            check_key(prefix, str(self.root))
        if not _CONFINED:
            directory = self.root / prefix if prefix else self.root
            try:
                with os.scandir(directory) as entries:
                    return sorted((e.name, stat.S_IFMT(e.stat(follow_symlinks=False).st_mode)) for e in entries)
            except OSError:
                return []
        with self.reading() as root:
            if root is None:
                return []
            fd = self._walk(root, prefix.split("/")) if prefix else os.dup(root)
            if fd is None:
                return []
            try:
                with os.scandir(fd) as entries:
                    return sorted((entry.name, _entry_type(entry, fd)) for entry in entries)
            finally:
                os.close(fd)

    def list_dir(self, prefix: str) -> list[str]:
        return [name for name, _mode in self._listing(prefix)]

    def link_into(self, key: str, destination: Path) -> None:
        """Hard-link the file ``key`` of the tree this store reads to ``destination`` (copy it if links fail)."""
        check_key(key, str(self.root))
        destination.parent.mkdir(parents=True, exist_ok=True)
        parts = key.split("/")
        with self.reading() as root:
            directory = self._walk(root, parts[:-1]) if root is not None and _CONFINED else None
            if directory is not None:
                try:
                    os.link(parts[-1], destination, src_dir_fd=directory, follow_symlinks=False)
                    return
                except OSError:
                    pass  # another file system, no hard links: copy
                finally:
                    os.close(directory)
            value = self.get(key)
        if value is None:
            raise FormatError(f"{self.root}: entry {key!r} is missing")
        destination.write_bytes(value)

    def delete(self, key: str) -> None:
        check_key(key, str(self.root))
        (self.root / key).unlink(missing_ok=True)

    def keys_under(self, prefix: str) -> Iterator[str]:
        for name, mode in self._listing(prefix):
            key = join_key(prefix, name)
            if stat.S_ISDIR(mode):
                yield from self.keys_under(key)
            elif stat.S_ISREG(mode):
                yield key
            else:
                raise self._refuse(key, _kind(mode))

    def size(self, key: str) -> int:
        try:
            fd = self._open(key)
        except FormatError:
            return 0
        if fd is None:
            return 0
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def describe(self) -> str:
        return str(self.root)


def _entry_type(entry: os.DirEntry[str], directory: int) -> int:
    """The file type bits of a directory entry, without following a symlink (asked while ``directory`` is open)."""
    if entry.is_symlink():
        return stat.S_IFLNK
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    if entry.is_file(follow_symlinks=False):
        return stat.S_IFREG
    try:
        return stat.S_IFMT(os.stat(entry.name, dir_fd=directory, follow_symlinks=False).st_mode)
    except OSError:
        return 0


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


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
    """A zip file, read only, through sciz's one checked ZIP reader (:class:`._zip.ZipReader`).

    The file is opened once (every thread reads it with ``pread``): a read sees one version even
    while the file is replaced. Names, sizes, local headers and CRCs are checked. Duplicate entries
    (zarr 2 appends rewritten keys) resolve to the last one.
    """

    shareable = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.fspath(path))
        self._reader: Any = None
        self._lock = threading.Lock()
        self._index: dict[str, dict[str, None]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def _zip(self) -> Any:
        with self._lock:
            if self._reader is None:
                from ._zip import ZipReader

                self._reader = ZipReader(self.path, last_duplicate_wins=True)
            return self._reader

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _children(self) -> dict[str, dict[str, None]]:
        if self._index is None:
            index: dict[str, dict[str, None]] = {}
            for name in self._zip().members:
                parts = name.rstrip("/").split("/")
                for depth in range(len(parts)):
                    index.setdefault("/".join(parts[:depth]), {})[parts[depth]] = None
            self._index = index
        return self._index

    def get(self, key: str, limit: int | None = None) -> bytes | None:
        check_key(key, str(self.path))
        reader = self._zip()
        member = reader.members.get(key)
        if member is None or member.is_dir:
            return None
        # Inflated sizes are bounded before inflating: a 1.2 MB store whose 48-byte chunk inflated
        # to 1.2 GB read as 2.4 GB resident before the chunk was found damaged.
        if limit is not None and member.size > limit:
            raise FormatError(
                f"{self.path}: entry {key!r} declares {member.size} bytes, more than a chunk of its array can "
                f"take ({limit})"
            )
        try:
            return bytes(reader.read(member))  # the reader checks methods, memory and the CRC
        except FormatError:
            raise
        except (OSError, EOFError, ValueError, RuntimeError) as exc:
            raise FormatError(f"{self.path}: entry {key!r} is damaged ({exc})") from None

    def set(self, key: str, value: bytes, *, sync: bool = False) -> None:
        raise FormatError(f"{self.path}: zip stores are written whole (store_type='zip'), not key by key")

    def list_dir(self, prefix: str) -> list[str]:
        return sorted(self._children().get(prefix, {}))

    def keys_under(self, prefix: str) -> Iterator[str]:
        start = f"{prefix}/" if prefix else ""
        for name in self._zip().members:
            if name.startswith(start) and not name.endswith("/"):
                yield check_key(name, str(self.path))

    def size(self, key: str) -> int:
        member = self._zip().members.get(key)
        return 0 if member is None else int(member.compressed_size)

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

    def set(self, key: str, value: bytes, *, sync: bool = False) -> None:
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

    def set(self, key: str, value: bytes, *, sync: bool = False) -> None:
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
