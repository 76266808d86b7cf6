"""Decoding untrusted streams in a forked child, so even a hostile payload cannot take the caller down.

Checksums stop every accidental corruption before an engine sees it, but a stream crafted with
valid checksums can still drive an engine into a crash (the engines abort or segfault on such
input). ``isolated=True`` decodes in a child process that writes into shared memory: a crash or
hang of the engine becomes the codec's error in the caller. POSIX only (needs fork).
"""

from __future__ import annotations

import math
import mmap
import os
import signal
import warnings
from typing import Any

import numpy as np

from ..errors import CodecError
from ._stream import StreamHeader

__all__ = ["decode_in_child"]


def decode_in_child(header: StreamHeader, data: Any, error: type[CodecError], timeout: float) -> np.ndarray:
    """Decode ``data`` (already framing-checked as ``header``) in a forked child; crashes become ``error``."""
    from .driver import decode_stream

    if not hasattr(os, "fork"):
        raise error("isolated decoding needs os.fork (POSIX); decode trusted streams without isolated=True")
    dtype = header.dtype.newbyteorder(">") if header.big_endian else header.dtype
    shared = mmap.mmap(-1, max(header.size * dtype.itemsize, 1))
    result = np.frombuffer(shared, dtype=dtype, count=header.size).reshape(header.shape)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a process with threads; the child only decodes and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 0
        try:
            os.close(read_end)
            # The parent's SIGALRM handler (e.g. a test timeout) must not swallow our hang guard.
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(max(1, math.ceil(timeout)))
            decode_stream(data, header.codec, error, out=result)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, CodecError) else f"{type(exc).__name__}: {exc}"
            os.write(write_end, message.encode()[:4000])
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    pieces = []
    while piece := os.read(read_end, 4096):
        pieces.append(piece)
    os.close(read_end)
    _, wait_status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        reason = "took longer than the timeout" if number == signal.SIGALRM else f"crashed (signal {number})"
        raise error(f"the {header.codec} engine {reason} on this stream: it is damaged or hostile")
    if os.WEXITSTATUS(wait_status) != 0:
        message = b"".join(pieces).decode(errors="replace")
        raise error(message or f"decoding failed in the isolated child (exit {os.WEXITSTATUS(wait_status)})")
    return result
