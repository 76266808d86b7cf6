"""Atomic writing of files and directory trees: a crash never leaves a half-written or missing target.

Every writer in sciz writes into a temporary sibling (same directory, so the final rename stays on
one file system), flushes and fsyncs it, then renames it over the target. Readers therefore see
either the old complete version or the new complete version, never a mixture.

Guarantees
----------
- **Files** (:func:`atomic_file`): the new file takes the target's name with one ``rename(2)``,
  which replaces the old file in one step: at every instant the name holds the old or the new
  complete file, whatever is killed when.
- **Directories** (:func:`atomic_directory`): POSIX has no portable call that swaps two directories
  in one step (Linux's ``renameat2(RENAME_EXCHANGE)`` is not exposed by Python's standard library,
  and the only PyPI wrapper, ``renameat2``, has had no release since 2022). So the swap takes two
  renames, and the tree is recorded so that nothing is ever lost between them: the complete new
  tree is first renamed to a *ready* sibling (the rename is the mark that it is complete), then,
  under a lock on the parent directory, the old tree is renamed to an *old* sibling and the ready
  tree to the target. A process killed between these two renames (a window of microseconds) leaves
  the target name empty but the complete new tree under its ready name; the next access through
  sciz (:func:`recover`, called by every sciz write of that target and by :func:`sciz.load`)
  renames it into place. So: through sciz, a read after any kill returns the old or the new
  complete tree, never nothing; a program that is not sciz may find the name missing until then.
- **Debris**: every temporary sibling is named ``.<target>.sciz-<kind>-<host>-<pid>-<start>-<token>``
  (``<host>`` a hash of the host name, ``<start>`` the writer's process start time where the system
  tells it, so a reused pid is not mistaken for the writer). The next write of the same target
  removes the siblings whose writer is no longer running on this host (:func:`remove_debris`);
  siblings of running writers, and of other hosts sharing the folder, are left alone. (Writers in
  another pid namespace on the same host, e.g. containers sharing a volume under one host name,
  cannot be told apart from dead ones.)
- **Readers of a tree** (:func:`hold_directory`) open its root once and every entry relative to it,
  so a read sees the one tree it opened, whatever renames happen; they hold a shared ``flock`` on
  it while reading. A writer that has renamed the old tree aside deletes it only if it can take an
  exclusive lock without waiting; otherwise it leaves it, and the last reader
  (:func:`release_directory`) or the next write of the target removes it. Writers never wait for
  readers. (Where ``flock`` is unavailable, e.g. Windows, trees are deleted as before.)
- **Concurrency**: writers of the same target each write their own sibling; the swap is serialised
  by the parent lock, so the last write to complete wins and no writer sees another's half-renamed
  state (no ``FileNotFoundError``/``ENOTEMPTY`` from a race).
- **Never delete what is not ours**: an existing target is replaced only if ``replace_if(path)``
  says it is a file or store of the format being written (or, without ``replace_if``, if it is a
  regular file for :func:`atomic_file` or an empty directory for :func:`atomic_directory`);
  anything else is a :class:`~sciz.errors.FormatError` naming the path, and nothing is touched.
- **Errors**: an ``OSError`` while writing (``ENOSPC``, permissions...) becomes a
  :class:`~sciz.errors.FormatError` naming the target and the reason; the temporary is removed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .errors import FormatError, SciZError

__all__ = [
    "DEBRIS_KINDS",
    "atomic_directory",
    "atomic_file",
    "debris_of",
    "fsync_directory",
    "hold_directory",
    "link_new_file",
    "prepare_target",
    "public_names",
    "recover",
    "release_directory",
    "remove_debris",
    "scratch_directory",
    "scratch_sibling",
    "write_error",
]

#: The kinds of temporary siblings: a tree or file being written, a complete tree waiting for the
#: swap, a replaced tree waiting for removal, debris being removed, scratch space of a writer.
DEBRIS_KINDS = ("tmp", "ready", "old", "trash", "scratch")
_SIBLING = re.compile(
    r"^\.(?P<name>.+)\.sciz-(?P<kind>[a-z]+)-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-(?P<start>\d+)-(?P<token>[0-9a-f]+)$"
)
#: Kinds no writer needs once they have their name: a replaced tree (left behind while a reader held it)
#: and trash. Any write of the target may remove them, even while their writer runs.
_LEFT_BEHIND = ("old", "trash")
_counter = itertools.count()
_thread_lock = threading.Lock()


def prepare_target(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` as an absolute :class:`Path`, creating its parent directories."""
    target = Path(os.fspath(path)).expanduser()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FormatError(f"cannot write {target}: cannot create its folder ({exc.strerror or exc})") from exc
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


# ----- names of temporary siblings -------------------------------------------------------------------
@functools.cache
def _process_start(pid: int) -> int:
    """The start time of process ``pid`` in clock ticks since boot (0 where the system does not say)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return 0
    # Field 22 counts from after the command name, which is in parentheses and may hold spaces.
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else 0


@functools.cache
def _host() -> str:
    """Six hex digits naming this machine: another host's pids (a shared network folder) are not ours to judge."""
    import socket
    import zlib

    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFFFF:06x}"


def _sibling(target: Path, kind: str) -> Path:
    pid = os.getpid()
    token = f"{time.time_ns():x}{next(_counter) & 0xFFFF:04x}{os.urandom(2).hex()}"
    return target.with_name(f".{target.name}.sciz-{kind}-{_host()}-{pid}-{_process_start(pid)}-{token}")


def _owner_alive(pid: int, start: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        return True  # on Windows os.kill(pid, 0) would terminate the process: assume alive, remove nothing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return True  # cannot tell: assume alive, remove nothing
    if start == 0:
        return True
    _process_start.cache_clear()  # a pid's start time is only stable for a live process
    current = _process_start(pid)
    return current == 0 or current == start


def debris_of(path: str | os.PathLike[str], *, include_live: bool = False) -> list[Path]:
    """Temporary siblings of ``path`` left by sciz writers (by default only those whose writer is gone)."""
    target = Path(os.fspath(path)).absolute()
    found = []
    try:
        entries = [entry.name for entry in target.parent.iterdir()]
    except OSError:
        return []
    for entry in entries:
        match = _SIBLING.match(entry)
        if not match or match["name"] != target.name or match["kind"] not in DEBRIS_KINDS:
            continue
        if include_live or (
            match["host"] == _host()
            and (match["kind"] in _LEFT_BEHIND or not _owner_alive(int(match["pid"]), int(match["start"])))
        ):
            found.append(target.parent / entry)
    return sorted(found, key=lambda p: _SIBLING.match(p.name)["token"])  # type: ignore[index]


def _remove(path: Path) -> bool:
    """Remove a file, a symlink or a whole tree, whatever it is; missing is fine.

    A tree a reader holds (:func:`hold_directory`) is left where it is (False): writers never wait
    for readers; the last reader or a later write removes it.
    """
    try:
        if path.is_dir() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW)
            try:
                if not _try_lock(fd, exclusive=True):
                    return False
                shutil.rmtree(path, ignore_errors=True)  # holding the lock: no reader takes it meanwhile
            finally:
                os.close(fd)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass
    return True


def _held(path: Path) -> bool:
    """Whether a reader holds the tree ``path`` (a shared lock taken by :func:`hold_directory`)."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW)
    except OSError:
        return False
    try:
        return not _try_lock(fd, exclusive=True)
    finally:
        os.close(fd)


def _try_lock(fd: int, *, exclusive: bool) -> bool:
    """flock ``fd`` without waiting: False if another holder conflicts (True where locks are unsupported)."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True  # no locks on this file system (some network mounts): behave as before locks
    return True


def _unlock(fd: int) -> None:
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
    except (ImportError, OSError):
        pass


# ----- the parent lock and recovery --------------------------------------------------------------------
@contextlib.contextmanager
def _parent_lock(directory: Path) -> Iterator[None]:
    """Serialise swaps in ``directory`` between threads and processes (flock on the folder itself)."""
    with _thread_lock:
        try:
            import fcntl
        except ImportError:  # Windows: threads are serialised, processes race (their renames fail cleanly)
            yield
            return
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:  # an unreadable folder: threads are still serialised
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _recover_locked(target: Path) -> list[Path]:
    """Under the parent lock: put a missing target back; return dead siblings to remove (renamed to trash)."""
    dead = debris_of(target)
    if not (target.exists() or target.is_symlink()):
        # The newest complete tree wins: a ready tree (new data) before an old one (the data it replaced).
        for kind in ("ready", "old"):
            candidates = [p for p in dead if _SIBLING.match(p.name)["kind"] == kind]  # type: ignore[index]
            if candidates:
                candidates[-1].replace(target)
                dead.remove(candidates[-1])
                break
    trash = []
    for path in dead:
        if _held(path):
            continue  # a reader still reads this replaced tree: the last reader or a later write removes it
        moved = _sibling(target, "trash")
        try:
            path.replace(moved)
        except OSError:
            continue  # another process took it first
        trash.append(moved)
    return trash


def recover(path: str | os.PathLike[str]) -> bool:
    """Finish what a killed writer of ``path`` left: restore a missing target from its complete sibling.

    Returns True if the target was restored. Dead writers' siblings are removed only by writes
    (:func:`remove_debris`): a read deletes nothing but a replaced tree it alone still held.
    """
    target = Path(os.fspath(path)).absolute()
    if target.exists() or target.is_symlink() or not target.parent.is_dir():
        return False
    # Missing: a writer may be between its two renames right now. Its lock is held for just those
    # two renames, so waiting for it means reading the new tree instead of finding nothing.
    with _parent_lock(target.parent):
        if target.exists():
            return False  # a running writer finished its swap meanwhile
        return _restore_locked(target)


def _restore_locked(target: Path) -> bool:
    """Under the parent lock, with ``target`` missing: rename its newest complete sibling into place."""
    for kind in ("ready", "old"):
        candidates = [p for p in debris_of(target) if _SIBLING.match(p.name)["kind"] == kind]  # type: ignore[index]
        if candidates:
            candidates[-1].replace(target)
            fsync_directory(target.parent)
            return True
    return False


# ----- readers of directory trees ----------------------------------------------------------------------
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: How often a reader tries again to take a tree that is replaced under it while it opens it.
_HOLD_ATTEMPTS = 1000


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _names(target: Path, fd: int) -> bool:
    """Whether ``target`` names the tree open as ``fd`` right now."""
    try:
        return _identity(target.stat()) == _identity(os.fstat(fd))
    except OSError:
        return False


def _open_current(target: Path) -> int:
    """Open the directory ``target`` names; a name missing during a swap is waited for (or restored)."""
    flags = os.O_RDONLY | _O_DIRECTORY
    try:
        return os.open(target, flags)
    except FileNotFoundError:
        if not target.parent.is_dir():
            raise
    # Between the two renames of a swap the name is missing; the writer holds the parent lock for them.
    with _parent_lock(target.parent):
        if not (target.exists() or target.is_symlink()):
            _restore_locked(target)
        return os.open(target, flags)


def hold_directory(path: str | os.PathLike[str]) -> tuple[int, tuple[int, int]]:
    """Open the directory tree ``path`` names now, to read one version of it whatever replaces it.

    Returns a descriptor of the tree's root, to open every entry relative to (``dir_fd``), holding a
    shared lock, and the tree's identity ``(st_dev, st_ino)``. While the lock is held, sciz writers
    that replace the tree do not delete it: they leave it, renamed, to its readers
    (:func:`release_directory` removes it when the last one is done) or to a later write. A name
    missing between the two renames of a swap is waited for, or restored as by :func:`recover`.
    Raises ``FileNotFoundError`` if there is no such directory.
    """
    target = Path(os.fspath(path)).absolute()
    for _ in range(_HOLD_ATTEMPTS):
        fd = _open_current(target)
        # Lock, then check the name still holds this tree: a writer renames a tree away before it
        # checks for readers, so a tree that still has its name after the lock is safe to read.
        if _try_lock(fd, exclusive=False) and _names(target, fd):
            return fd, _identity(os.fstat(fd))
        os.close(fd)
    raise FormatError(f"cannot read {target}: it was replaced {_HOLD_ATTEMPTS} times while being opened; try again")


def release_directory(fd: int, path: str | os.PathLike[str], *, close: bool = True) -> None:
    """Give up the lock of :func:`hold_directory` (and close ``fd`` unless ``close`` is False).

    If the tree was replaced meanwhile, its writer left it behind for its readers: the last reader
    removes it, so nothing is left beside the target.
    """
    target = Path(os.fspath(path)).absolute()
    try:
        if not _names(target, fd) and _try_lock(fd, exclusive=True):  # fails while other readers hold it
            identity = _identity(os.fstat(fd))
            for sibling in debris_of(target, include_live=True):
                if _SIBLING.match(sibling.name)["kind"] in _LEFT_BEHIND:  # type: ignore[index]
                    with contextlib.suppress(OSError):
                        if _identity(sibling.lstat()) == identity:
                            shutil.rmtree(sibling, ignore_errors=True)
                            break
    finally:
        if close:
            os.close(fd)
        else:
            _unlock(fd)


def remove_debris(path: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed writers of ``path`` left (after restoring a missing target); return what was removed."""
    target = Path(os.fspath(path)).absolute()
    if not target.parent.is_dir() or not debris_of(target):
        return []
    with _parent_lock(target.parent):
        trash = _recover_locked(target)
    for path_ in trash:
        _remove(path_)
    return trash


# ----- replacement checks and error wrapping ------------------------------------------------------------
def _check_replaceable(
    target: Path, replace_if: Callable[[Path], bool] | None, *, directory: bool, retries: int = 3
) -> None:
    try:
        info = target.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FormatError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        empty_directory = stat.S_ISDIR(info.st_mode) and next(target.iterdir(), None) is None
    except FileNotFoundError:
        return  # another writer's swap moved it away meanwhile: nothing there to replace
    except OSError as exc:
        raise FormatError(f"cannot write {target}: {exc.strerror or exc}") from exc
    if directory and empty_directory:
        return  # nothing there to lose: a directory write may always take an empty directory's place
    if replace_if is not None:
        try:
            ours = bool(replace_if(target))
        except (OSError, ValueError):
            ours = False
        if ours:
            return
        try:
            now = target.lstat()
        except FileNotFoundError:
            return  # another writer's swap moved it away while it was being checked
        except OSError as exc:
            raise FormatError(f"cannot write {target}: {exc.strerror or exc}") from exc
        if (now.st_ino, now.st_dev) != (info.st_ino, info.st_dev) and retries:
            # Another writer's swap put a new tree there while the old one was checked (seen: the
            # check looked inside a tree being moved away): check what is there now.
            return _check_replaceable(target, replace_if, directory=directory, retries=retries - 1)
        kind = "directory" if stat.S_ISDIR(info.st_mode) else "file"
        raise FormatError(
            f"cannot write {target}: a {kind} is there that is not a file of the format being written; "
            "sciz replaces only its own format's files: remove it or choose another name"
        )
    if directory:
        raise FormatError(f"cannot write {target}: it exists and is not known to be a store of this format")
    if stat.S_ISDIR(info.st_mode):
        raise FormatError(f"cannot write file {target}: a directory is in the way")
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
        raise FormatError(f"cannot write {target}: it is not a regular file (a FIFO, socket or device)")


@contextlib.contextmanager
def _wrap_os_errors(target: Path) -> Iterator[None]:
    try:
        yield
    except SciZError as exc:
        # A writer's own error names the file it was writing: the temporary sibling, not the user's path.
        if exc.args and isinstance(exc.args[0], str):
            exc.args = (public_names(exc.args[0], target), *exc.args[1:])
        raise
    except OSError as exc:
        raise write_error(target, exc) from exc


#: A temporary sibling's name inside a path: ``.NAME.sciz-KIND-HOST-PID-START-TOKEN``.
_SIBLING_IN_TEXT = re.compile(
    r"(?:^|(?<=[/\\'\"\s(]))\.(?P<name>[^/\\'\"]+?)\.sciz-[a-z]+-[0-9a-f]{6}-\d+-\d+-[0-9a-f]+"
)


def public_names(text: str, target: Any = None) -> str:
    """``text`` with every temporary sibling's name (``.x.npz.sciz-tmp-...``) replaced by the name of
    the file it becomes (``x.npz``); ``target``, if given, is then said once where it follows itself
    (``/d/x.zspy: /d/x.zspy: cannot write ...``)."""
    text = _SIBLING_IN_TEXT.sub(lambda m: m["name"], text)
    if target is not None:
        name = os.fspath(target)
        text = text.replace(f"{name}: {name}: ", f"{name}: ")
    return text


def write_error(target: Any, exc: BaseException) -> FormatError:
    """The one error for a write to ``target`` that failed with ``exc`` (here and in the format writers).

    h5py reports a full disk as ``OSError: Can't write data (... errno = 28 ...)`` without
    ``errno`` set; both forms of ENOSPC (and of EDQUOT, EFBIG) are named plainly.
    """
    text = public_names(str(exc))
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
        filename = None if exc.filename is None else public_names(os.fsdecode(exc.filename))
        if filename is not None and filename not in (str(target), os.fspath(Path(os.fspath(target)).absolute())):
            reason += f" ({filename})"
        return FormatError(f"cannot write {target}: {reason}")
    code = getattr(exc, "errno", None)
    for number, meaning in (
        (errno.ENOSPC, "no space left on the device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EFBIG, "the file is larger than this system allows"),
    ):
        if code == number or f"errno = {number}," in text or os.strerror(number) in text:
            return FormatError(f"cannot write {target}: {meaning} (the target was left as it was)")
    return FormatError(f"cannot write {target}: {type(exc).__name__}: {text}")


# ----- the writers ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike[str], *, replace_if: Callable[[Path], bool] | None = None
) -> Iterator[BinaryIO]:
    """Open a temporary sibling of ``path`` for binary writing; on success it replaces ``path``.

    Parameters
    ----------
    path
        The target file; parent directories are created.
    replace_if
        Called with an existing ``path``: True if it is a file of the format being written, which
        may be replaced. Without it any regular file (or symlink) is replaced.

    On any exception the temporary file is removed and ``path`` is left as it was; an ``OSError``
    (``ENOSPC``...) comes out as a :class:`~sciz.errors.FormatError` naming ``path``. Temporary
    files of killed writers of ``path`` are removed first.

    Example
    -------
    >>> with atomic_file("out.bin") as fh:  # doctest: +SKIP
    ...     fh.write(b"data")
    """
    target = prepare_target(path)
    _check_replaceable(target, replace_if, directory=False)
    with _wrap_os_errors(target):
        remove_debris(target)
        temporary = _sibling(target, "tmp")
        try:
            with temporary.open("xb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            temporary.chmod(_default_file_mode())
            _check_replaceable(target, replace_if, directory=False)
            temporary.replace(target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_directory(target.parent)


def link_new_file(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> bool:
    """Create ``path`` holding ``data`` unless something is there already (it is never replaced).

    The bytes go to a temporary sibling created with ``mode`` (a secret is never readable by others,
    not even for a moment), fsynced, then hard-linked into place: concurrent creators agree on one
    whole file, the first linked. Returns whether ours was. A killed creator's sibling is debris like
    any writer's (:func:`remove_debris`, run first). ``OSError`` (no hard links, a read-only folder)
    is the caller's to handle.
    """
    target = Path(os.fspath(path)).absolute()
    remove_debris(target)
    temporary = _sibling(target, "tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, target)
        except FileExistsError:
            return False
        fsync_directory(target.parent)
        return True
    finally:
        temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str], *, replace_if: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it takes the place of ``path``.

    Parameters
    ----------
    path
        The target directory; parent directories are created.
    replace_if
        Called with an existing ``path``: True if it is a store of the format being written, which
        may be replaced. Without it only an empty directory is replaced. Anything else raises a
        :class:`~sciz.errors.FormatError` before anything is written or removed.

    See the module documentation for what a kill at any moment leaves (never a lost target).
    """
    target = prepare_target(path)
    _check_replaceable(target, replace_if, directory=True)
    with _wrap_os_errors(target):
        remove_debris(target)
        temporary = _sibling(target, "tmp")
        temporary.mkdir()
        try:
            yield temporary
            _fsync_tree(temporary)
            temporary.chmod(_default_directory_mode())
            ready = _sibling(target, "ready")
            temporary.replace(ready)  # the mark that the tree is complete
        except BaseException:
            _remove(temporary)
            raise
        try:
            old = _swap_into_place(ready, target, replace_if)
        except BaseException:
            _remove(ready)
            raise
        if old is not None:
            _remove(old)


def _swap_into_place(ready: Path, target: Path, replace_if: Callable[[Path], bool] | None) -> Path | None:
    """Under the parent lock: move the old target aside and the ready tree in; return the old one's new name."""
    with _parent_lock(target.parent):
        trash = _recover_locked(target)
        old: Path | None = None
        if target.exists() or target.is_symlink():
            _check_replaceable(target, replace_if, directory=True)
            old = _sibling(target, "old")
            target.replace(old)
        ready.replace(target)
        fsync_directory(target.parent)
    for path in trash:
        _remove(path)
    return old


def scratch_sibling(path: str | os.PathLike[str]) -> Path:
    """Create and return a working directory beside ``path`` that the caller removes when done.

    If the caller is killed first, the next write of ``path`` removes it (its name marks it as a
    sciz writer's, with the writer's pid). Prefer :func:`scratch_directory`, which removes it itself.
    """
    target = prepare_target(path)
    with _wrap_os_errors(target):
        scratch = _sibling(target, "scratch")
        scratch.mkdir()
    return scratch


@contextlib.contextmanager
def scratch_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary working directory beside ``path``, removed afterwards (or by the next write if killed)."""
    scratch = scratch_sibling(path)
    try:
        yield scratch
    finally:
        _remove(scratch)


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
    # Temporary files are created 0666 & ~umask by open(); keep that explicit for clarity.
    return 0o666 & ~_umask()


def _default_directory_mode() -> int:
    return 0o777 & ~_umask()
