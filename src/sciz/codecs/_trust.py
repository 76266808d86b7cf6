"""Knowing a stream is one of this user's own, so that it may skip the child process.

The default decode runs engines that no header check makes safe (SZ3) in a forked child
(:mod:`sciz.codecs._isolate`), which costs 10-15 % of the engine's speed on large results. A
stream sciz wrote for this user carries an HMAC-SHA256 tag under a secret key of the user's: an
engine payload with a valid tag is exactly what that engine's own encoder produced, so decoding it
in-process is as safe as decoding it right after encoding. A stream from anyone else (no tag, a
wrong one, another user's key) still decodes in the child. Hashing costs about 0.6 ms per MB of
*compressed* stream (1.6 GB/s with SHA extensions), a few ms for a 256 MB field.

The key is 32 random bytes in ``$XDG_CONFIG_HOME/sciz/stream.key`` (``~/.config`` by default),
created on the first encode that needs it, readable by its owner only; ``SCIZ_KEY_FILE`` names
another file (an absolute path: a relative one would name another key in each working directory,
so it is not used, with a warning), or, set empty, turns signing and trust off. A key file that is
not a regular file of this user with no group/other permissions, or is a symbolic link, is not
used (a warning says so once). Copying the file to another machine of the same user extends the
trust there; deleting it only makes decodes slower.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import stat
import threading
import warnings
from pathlib import Path
from typing import Any

__all__ = ["TAG_HEX", "explain", "key_path", "signing_key", "tag"]

#: Length of the tag in the stream's parameters (hex digits of an HMAC-SHA256).
TAG_HEX = 64
_KEY_BYTES = 32
_CONTEXT = b"sciz stream tag 1\0"  # separates this use of the key from any later one
_lock = threading.Lock()
_keys: dict[str, bytes] = {}
_warned: set[str] = set()


def _new_lock_in_child() -> None:
    # A lock another thread held at a fork stays locked forever in the child: give it a fresh one.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


def key_path() -> Path | None:
    """Where this user's key is (or would be created); None when ``SCIZ_KEY_FILE`` is set empty."""
    given = os.environ.get("SCIZ_KEY_FILE")
    if given is not None:
        path = Path(given).expanduser()
        if given and not path.is_absolute():
            _warn_once(
                path,
                f"sciz: SCIZ_KEY_FILE={given!r} is a relative path, which would name another key in each working "
                "directory; it is not used (give an absolute path): sz3 streams are neither tagged nor trusted and "
                "decode in a child process, slower",
            )
            return None
        return path if given else None
    config = Path(os.environ.get("XDG_CONFIG_HOME", ""))
    if not config.is_absolute():  # unset, or relative: ignored, as the XDG specification says
        config = Path("~").expanduser() / ".config"
    return config / "sciz" / "stream.key"


def signing_key(*, create: bool = False) -> bytes | None:
    """This user's key, or None (no usable key; with ``create``, one is made where none exists).

    A key read is kept for the life of the process; its absence is not: another process of the
    user (a notebook's first encode) may make the key at any time, and a long-lived process (a dask
    worker) would otherwise fork for every stream of the user's until it ends. Looking again costs
    a failed ``open``, nothing beside the fork it may save."""
    if not hasattr(os, "fork") or not hasattr(os, "geteuid"):
        return None  # no child processes to skip (and no owner to check) on this system
    path = key_path()
    if path is None:
        return None
    name = str(path)
    with _lock:
        if name in _keys:
            return _keys[name]
        key = _read_key(path)
        if key is None and create and not os.path.lexists(path):
            _create_key(path)
            key = _read_key(path)
        if key is not None:
            _keys[name] = key
        return key


def tag(key: bytes, pieces: list[Any]) -> bytes:
    """The HMAC-SHA256 of the concatenated byte ``pieces`` (buffers, hashed without joining them)."""
    mac = hmac.new(key, _CONTEXT, hashlib.sha256)
    for piece in pieces:
        mac.update(piece)
    return mac.digest()


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        if path.is_symlink():
            _warn_once(
                path,
                f"sciz: the stream key {path} is a symbolic link, which sciz does not follow (put a copy of the key "
                "file there, cp -p keeps its mode 600): sz3 streams are neither tagged nor trusted and decode in a "
                "child process, slower",
            )
        return None  # missing or unreadable: no trust (a missing key is made by the next encode)
    try:
        info = os.fstat(fd)
        unsafe = (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.geteuid()
            or info.st_mode & 0o077
            or info.st_size != _KEY_BYTES
        )
        if unsafe:
            _warn_once(
                path,
                f"sciz: the stream key {path} is not a {_KEY_BYTES}-byte file of this user readable by it alone "
                "(chmod 600, or remove it to have a new one made): sz3 streams decode in a child process, slower",
            )
            return None
        key = os.read(fd, _KEY_BYTES + 1)
        return key if len(key) == _KEY_BYTES else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _create_key(path: Path) -> None:
    """Write a new key beside ``path`` and link it into place (a concurrent creator's key wins)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            os.write(fd, os.urandom(_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)  # never replaces a key already there
    except OSError:
        pass  # a read-only home: streams are not signed, and decode in the child
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()


def explain(tagged: bool, own: bool) -> str:
    """Where the default decode runs a stream of an engine that needs the child, and why (``sciz
    info``): ``tagged`` / ``own`` as :func:`sciz.codecs.describe_stream` reports them."""
    path = key_path()
    if own:
        return f"yours (valid under your key {path}): decodes in-process, at the engine's speed"
    if not tagged:
        why = "none (written by another sciz, or with no key at hand)"
    elif path is None and not os.environ.get("SCIZ_KEY_FILE"):
        why = "not checked: SCIZ_KEY_FILE is set empty here (tags are off)"
    elif path is None:
        why = f"not checked: SCIZ_KEY_FILE={os.environ['SCIZ_KEY_FILE']!r} is not an absolute path"
    elif signing_key() is None:
        why = f"not checked: no usable key at {path}"
    else:
        why = f"made with another key than yours ({path})"
    return f"{why}: decodes in a forked child, slower (a fork per stream or zspy chunk)"


def _warn_once(path: Path, message: str) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def forget() -> None:
    """Forget the keys read so far (tests, or after ``SCIZ_KEY_FILE`` changes)."""
    with _lock:
        _keys.clear()
        _warned.clear()
