"""Knowing a stream is one of this user's own, so that it may skip the child process.

The default decode runs engines that no header check makes safe (SZ3) in a forked child
(:mod:`sciz.codecs._isolate`), which costs 10-15 % of the engine's speed on large results. A
stream sciz wrote for this user carries an HMAC-SHA256 tag under a secret key of the user's: an
engine payload with a valid tag is exactly what that engine's own encoder produced, so decoding it
in-process is as safe as decoding it right after encoding. A stream from anyone else (no tag, a
wrong one, another user's key) still decodes in the child, and so does every stream where an
allocation may fail (:func:`allocations_may_fail`: SZ3 aborts on one, whoever wrote the stream).
Hashing costs about 0.6 ms per MB of *compressed* stream (1.6 GB/s with SHA extensions), a few ms
for a 256 MB field.

The key is 32 random bytes in ``$XDG_CONFIG_HOME/sciz/stream.key`` (``~/.config`` by default),
created on the first encode that needs it, readable by its owner only; ``SCIZ_KEY_FILE`` names
another file (an absolute path: a relative one would name another key in each working directory,
so it is not used, with a warning), or, set empty, turns signing and trust off. A key file that is
not a regular file of this user with no group/other permissions, or is a symbolic link, is not
used (a warning says so once). Copying the file to another machine of the same user extends the
trust there; deleting or replacing it ends the trust in the streams tagged under it (within a
second, in running processes too).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import os
import stat
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from ..errors import StreamKeyWarning

__all__ = ["TAG_HEX", "allocations_may_fail", "explain", "key_path", "signing_key", "tag"]

#: Length of the tag in the stream's parameters (hex digits of an HMAC-SHA256).
TAG_HEX = 64
_KEY_BYTES = 32
_CONTEXT = b"sciz stream tag 1\0"  # separates this use of the key from any later one
_lock = threading.Lock()
_keys: dict[str, tuple[float, bytes | None]] = {}  # path: (when read, key)
_made: set[str] = set()  # keys this process tried to make: one attempt each (a failure repeats)
_warned: set[str] = set()
#: How long a key read stays in use: a deleted or replaced key stops being trusted within it
#: (attack finding: read once per process, a leaked key that the user deleted stayed trusted by
#: every running notebook or server). A read costs about 8 us, more on a network home.
_REREAD_SECONDS = 1.0


def _new_lock() -> None:
    """A child forked while another thread held the lock inherits it held for ever (attack finding:
    its first sz3 encode hung): it starts with a free one."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


def key_path() -> Path | None:
    """Where this user's key is (or would be created); None when ``SCIZ_KEY_FILE`` is set empty or
    relative, or when no home directory can be found."""
    try:
        return _key_path()
    except RuntimeError:  # HOME unset and no passwd entry (a container's arbitrary user id): every
        return None  # sz3 encode and tagged decode raised "Could not determine home directory" (attack finding)


def _key_path() -> Path | None:
    given = os.environ.get("SCIZ_KEY_FILE")
    if given is not None:
        path = Path(given).expanduser()
        if given and not path.is_absolute():
            # It would name a key in whatever folder sciz runs in (attack finding): a data folder
            # shared later hands the key, and in-process decodes, to its readers.
            _warn_once(
                path,
                f"sciz: SCIZ_KEY_FILE={given!r} is not an absolute path, so no key is used: "
                "sz3 streams are not tagged and decode in a child process, slower",
            )
            return None
        return path if given else None
    config = Path(os.environ.get("XDG_CONFIG_HOME", ""))
    if not config.is_absolute():  # unset, or relative: ignored, as the XDG specification says
        config = Path("~").expanduser() / ".config"
    return config / "sciz" / "stream.key"


def signing_key(*, create: bool = False) -> bytes | None:
    """This user's key, or None (no usable key; with ``create``, one is made where none exists).

    What a read found, a key or none, is used for :data:`_REREAD_SECONDS`, then read again: a key
    deleted or replaced stops being trusted, and a key another process of the user made meanwhile
    (a notebook's first encode) is found by a long-lived process (a dask worker), which would
    otherwise fork for every stream of the user's until it ends."""
    if not hasattr(os, "fork") or not hasattr(os, "geteuid"):
        return None  # no child processes to skip (and no owner to check) on this system
    path = key_path()
    if path is None:
        return None
    name = str(path)
    with _lock:
        now = time.monotonic()
        when, key = _keys.get(name, (-math.inf, None))
        if now - when < _REREAD_SECONDS and (key is not None or not create or name in _made):
            return key
        key = _read_key(path)
        if key is None and create and name not in _made and not os.path.lexists(path):
            # Once per process: where it fails (a read-only home, a file system without hard links)
            # every sz3 encode wrote, fsynced and deleted a new key (attack finding).
            _made.add(name)
            _create_key(path)
            key = _read_key(path)
        _keys[name] = (now, key)
        return key


def tag(key: bytes, pieces: list[Any]) -> bytes:
    """The HMAC-SHA256 of the concatenated byte ``pieces`` (buffers, hashed without joining them)."""
    mac = hmac.new(key, _CONTEXT, hashlib.sha256)
    for piece in pieces:
        mac.update(piece)
    return mac.digest()


def allocations_may_fail() -> bool:
    """Whether an allocation may fail here rather than be granted: an address-space or data limit
    (``ulimit -v`` / ``-d``, as batch schedulers set) or strict overcommit. The tag proves who wrote a
    stream, not that its engine cannot abort: SZ3 meets a failed allocation with std::terminate or
    SIGSEGV even on its own streams (attack finding: an own 4 MB stream under ``ulimit -v`` killed
    the caller), so there every stream of such an engine decodes in the child, which turns that
    into an error."""
    import resource

    if any(
        resource.getrlimit(limit)[0] != resource.RLIM_INFINITY for limit in (resource.RLIMIT_AS, resource.RLIMIT_DATA)
    ):
        return True
    return _strict_overcommit()


@functools.cache
def _strict_overcommit() -> bool:
    try:
        return Path("/proc/sys/vm/overcommit_memory").read_bytes().strip() == b"2"
    except OSError:
        return False


def _read_key(path: Path) -> bytes | None:
    # Non-blocking: a FIFO there would otherwise wait for a writer forever (attack finding; the
    # check below then refuses it as no regular file).
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
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
    """Make a new key at ``path`` unless one is there (a concurrent creator's key wins; killed
    creators' temporary keys are removed as any sciz writer's debris)."""
    from ..atomic import link_new_file

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        link_new_file(path, os.urandom(_KEY_BYTES), mode=0o600)
    except OSError:
        pass  # a read-only home, no hard links: streams are not signed, and decode in the child


def explain(tagged: bool, own: bool) -> str:
    """Where the default decode runs a stream of an engine that needs the child, and why (``sciz
    info``): ``tagged`` / ``own`` as :func:`sciz.codecs.describe_stream` reports them."""
    path = key_path()
    if own and allocations_may_fail():
        return (
            f"yours (valid under your key {path}), but memory is limited here (ulimit -v/-d or strict overcommit), "
            "where SZ3 aborts on a failed allocation: decodes in a forked child, slower"
        )
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
        warnings.warn(StreamKeyWarning(message), stacklevel=4)


def forget() -> None:
    """Forget the keys read so far (tests, or after ``SCIZ_KEY_FILE`` changes)."""
    with _lock:
        _keys.clear()
        _made.clear()
        _warned.clear()
