"""Decoding a stream in a forked child, so that an engine crash on a forged payload cannot take the caller down.

Checksums stop accidental damage, and each codec checks its engine's own header against the sciz
header before the engine runs, but a forged payload with a valid header can still abort an engine
whose decoder throws C++ exceptions through its C interface (SZ3). The driver therefore decodes
streams holding such payloads here by default (and every stream with ``isolated=True``): one
forked child per stream decodes all its chunks (on ``numthreads`` threads) straight into shared
memory that becomes the returned array, so nothing is copied back. A crash or hang (``timeout``)
of the child raises the codec's error. POSIX only (needs fork).
"""

from __future__ import annotations

import math
import mmap
import os
import signal
import warnings

import numpy as np

from ..errors import CodecError
from ._stream import StreamHeader

__all__ = ["decode_in_child"]


def decode_in_child(header: StreamHeader, error: type[CodecError], timeout: float, numthreads: int) -> np.ndarray:
    """Decode the parsed, checked stream ``header`` in a forked child; crashes and hangs become ``error``."""
    from .driver import decode_parsed

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
            decode_parsed(header, result, numthreads, error)
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
        raise error(f"the {header.codec} engine {reason} on this stream: it is damaged or forged")
    if os.WEXITSTATUS(wait_status) != 0:
        message = b"".join(pieces).decode(errors="replace")
        raise error(message or f"decoding failed in the isolated child (exit {os.WEXITSTATUS(wait_status)})")
    return result
