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


def decode_in_child(codec: Any, data: Any, header: StreamHeader, timeout: float) -> np.ndarray:
    """Decode ``data`` (already framing-checked as ``header``) with ``codec`` in a forked child."""
    if not hasattr(os, "fork"):
        raise codec.error("isolated decoding needs os.fork (POSIX); decode trusted streams without isolated=True")
    dtype = header.dtype.newbyteorder(">") if header.big_endian else header.dtype
    nbytes = header.size * dtype.itemsize
    shared = mmap.mmap(-1, max(nbytes, 1))
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
            signal.alarm(max(1, math.ceil(timeout)))
            codec.decode(data, out=result)
            os.write(write_end, b"")
        except BaseException as exc:
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode()[:4000])
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    while True:
        piece = os.read(read_end, 4096)
        if not piece:
            break
        chunks.append(piece)
    os.close(read_end)
    _, wait_status = os.waitpid(pid, 0)
    message = b"".join(chunks).decode(errors="replace")
    if os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        reason = "took longer than the timeout" if number == signal.SIGALRM else f"crashed (signal {number})"
        raise codec.error(f"the {codec.name} engine {reason} on this stream: it is damaged or hostile")
    if os.WEXITSTATUS(wait_status) != 0:
        raise codec.error(message or f"decoding failed in the isolated child (exit {os.WEXITSTATUS(wait_status)})")
    if not isinstance(result, np.ndarray):  # pragma: no cover - defensive
        raise CodecError("isolated decode produced no array")
    return result
