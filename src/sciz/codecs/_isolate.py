"""Running an engine in a forked child, so that its crash on a forged payload cannot take the caller down.

Checksums stop accidental damage, and each codec checks its engine's own header against the sciz
header before the engine runs, but a forged payload with a valid header can still abort an engine
whose decoder throws C++ exceptions through its C interface (SZ3), and a damaged HDF5 filter chunk
can make a filter print and call ``exit``. :func:`run_in_child` is the one place sciz does this:
the driver decodes streams holding such payloads there by default, unless they carry this user's
tag (:mod:`sciz.codecs._trust`; every stream with ``isolated=True``), and the HDF5 reader runs
hdf5plugin's SZ3 filter there.

A large result (from 16 MiB) is decoded by the child straight into a memory file (``memfd``) that
the parent allocates on another core while the child works and then maps *privately*: no copy, and
the caller's array behaves as any other (a process it forks later gets its own copy, never memory
shared with the caller); a page the caller writes is copied then, so rewriting a whole result holds
its memory twice until the array is freed. Measured on the 256 MB benchmark field
(sz3, 1 thread, each decode in a fresh forked process as benchmarks/codecs.py times it, CPU time of
parent and child, a machine loaded 6x over): raw engine median 0.87 s, sciz 0.90 s (copying out of
``/proc/<child>/mem`` instead, into a result faulted in 4 KiB pages meanwhile: 1.08 s). On a quiet
machine, wall time, best of 7: raw 0.65-0.69 s, sciz 0.74-0.82 s (0.85-0.89x); the rest is the fork
and the memory file's 4 KiB pages (no shmem huge pages here). Mapping the pages on a second thread
in the child (MADV_POPULATE_WRITE) did not help (0.78x alone, no change beside the preallocation). Smaller
results, and systems without memory files, still take that copy; where the child's memory cannot be
read, the child sends the result through the pipe instead. A crash, an ``exit``, a hang past
``timeout`` or an address-space limit hit in the child becomes ``error`` in the caller. POSIX only.
"""

from __future__ import annotations

import contextlib
import faulthandler
import itertools
import math
import mmap
import os
import signal
import struct
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._util import usable_cores
from ..errors import CodecError

__all__ = ["decode_in_child", "run_in_child"]

_OK, _FAILED = b"K", b"F"
_PARALLEL_COPY = 16 << 20  # results from this size are faulted in early and copied on several threads
_READ, _SEND = b"R", b"S"  # the parent's answer: it has read the memory / the child must send it
_PREALLOCATE = True  # the parent allocates a memory file's pages while the child decodes


def run_in_child(
    work: Callable[[np.ndarray], None],
    shape: tuple[int, ...],
    dtype: np.dtype,
    *,
    error: type[CodecError] | Callable[[str], Exception],
    timeout: float,
    what: str,
    out: np.ndarray | None = None,
    locks: Sequence[Any] = (),
) -> np.ndarray:
    """``work(result)`` in a forked child; return ``result`` (or ``out``), filled by it.

    ``what`` names the work in errors ("the sz3 engine"). ``locks`` (re-entrant locks) are held while
    forking, besides imagecodecs' own: a lock another thread holds at the fork stays locked forever
    in the child (found by review: imagecodecs loads codecs lazily under one lock, and the child hung
    on it). The forking thread is the child's only thread, so it owns them there and can go on.
    What the child prints (filters do) is captured and quoted in the error.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float | np.number) or not timeout > 0:  # NaN too
        raise error(f"timeout={timeout!r} is not allowed: must be a positive number of seconds (inf: no limit)")
    if not hasattr(os, "fork"):
        raise error(f"running {what} safely needs os.fork (POSIX)")
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    result = out
    shared = _shared_file(nbytes) if out is None else -1
    status_read, status_write = os.pipe()
    answer_read, answer_write = os.pipe()
    with tempfile.TemporaryFile() as printed:
        with warnings.catch_warnings(), contextlib.ExitStack() as held:
            for lock in (*_engine_locks(), *locks):
                held.enter_context(lock)
            # Python 3.12+ warns about fork() in a process with threads; the child only runs ``work``.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            parents = (status_read, answer_write)
            _child(work, shape, dtype, timeout, printed.fileno(), status_write, answer_read, parents, shared)
        os.close(status_write)
        os.close(answer_read)
        reason = ""
        try:
            if shared >= 0 and _PREALLOCATE:
                # The file's pages allocated (and zeroed) here, on another core, while the child
                # decodes: the child's writes then only map them.
                with contextlib.suppress(OSError):
                    os.posix_fallocate(shared, 0, nbytes)
            if result is None and shared < 0:
                # Allocated after the fork (the parent's pages at fork time are copy-on-write) and
                # faulted in now, on another core, while the child decodes: off the critical path.
                result = _faulted_in(shape, dtype)
            status = _read_exactly(status_read, 9)
            if status[:1] == _OK and shared >= 0:
                result = _private_view(shared, shape, dtype)
            elif status[:1] == _OK:
                assert result is not None
                _fetch(pid, struct.unpack("<Q", status[1:])[0], result, nbytes, answer_write, status_read)
            elif status[:1] == _FAILED:
                reason = _read_all(status_read).decode(errors="replace")
            _, wait_status = os.waitpid(pid, 0)
        except BaseException:  # Ctrl-C (or anything) while the child runs: stop it too
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            raise
        finally:
            os.close(status_read)
            os.close(answer_write)
            if shared >= 0:
                os.close(shared)
        printed.seek(0)
        said = printed.read()[-2000:].decode(errors="replace").strip()
    if status[:1] == _OK and os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0:
        assert result is not None
        return result
    if status[:1] == _FAILED:
        raise error(reason + (f" (it printed: {said[-400:]})" if said else ""))
    if os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        why = f"took over {timeout:.0f} s" if number == signal.SIGALRM else f"crashed (signal {number})"
    else:
        why = f"exited with status {os.WEXITSTATUS(wait_status)} without a result"
    raise error(f"{what} {why}: the data is damaged or forged" + (f" (it printed: {said[-400:]})" if said else ""))


def _child(
    work: Callable[[np.ndarray], None],
    shape: tuple[int, ...],
    dtype: np.dtype,
    timeout: float,
    printed: int,
    status: int,
    answer: int,
    parents: tuple[int, int],
    shared: int = -1,
) -> None:  # pragma: no cover - runs in the child
    code = 0
    try:
        for descriptor in parents:
            os.close(descriptor)
        # A crash here is reported by the parent; no traceback dump of the forked interpreter.
        faulthandler.disable()
        os.dup2(printed, 1)
        os.dup2(printed, 2)
        # The parent's handlers (a test timeout, Ctrl-C) must not swallow the hang guard.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if math.isfinite(timeout):
            signal.alarm(max(1, min(math.ceil(timeout), 2**31 - 1)))
        result = np.empty(shape, dtype) if shared < 0 else _shared_view(shared, shape, dtype)
        _limit_memory(result.nbytes)
        try:
            work(result)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, CodecError) else f"{type(exc).__name__}: {exc}"
            os.write(status, _FAILED + bytes(8) + message.encode()[:4000])
            return
        signal.alarm(0)
        os.write(status, _OK + struct.pack("<Q", result.ctypes.data if result.nbytes else 0))
        if shared >= 0:  # the result is in the shared file already
            return
        # Stay alive until the parent has read our memory (EOF: the parent is gone).
        if _read_exactly(answer, 1) == _SEND:
            view = memoryview(result.reshape(-1).view(np.uint8).data)
            while view:
                view = view[os.write(status, view) :]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _engine_locks() -> list[Any]:
    """imagecodecs' lock around its lazy loading of codec modules (none if this imagecodecs has no such lock)."""
    try:
        import imagecodecs.imagecodecs as loader
    except ImportError:
        return []
    lock = getattr(loader, "_LOCK", None)
    return [lock] if lock is not None and hasattr(lock, "__enter__") else []


def _shared_file(nbytes: int) -> int:
    """A memory file the child decodes a large result into (-1: none, the child's memory is copied).

    The parent then maps the same pages privately (:func:`_private_view`): no copy at all, against
    0.05-0.1 s per 256 MiB for copying out of the child's memory (one core; more under load), which
    alone cost the isolated sz3 decode 5-13 % of the raw engine's speed.
    """
    if nbytes < _PARALLEL_COPY or not hasattr(os, "memfd_create"):
        return -1
    try:
        descriptor = os.memfd_create("sciz-result", os.MFD_CLOEXEC)
    except OSError:
        return -1
    try:
        os.ftruncate(descriptor, nbytes)
    except OSError:
        os.close(descriptor)
        return -1
    return descriptor


def _shared_view(descriptor: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:  # pragma: no cover
    """The child's result: the memory file, mapped shared, asking for huge pages. The kernel gives
    them where /sys/kernel/mm/transparent_hugepage/shmem_enabled is ``advise`` or ``always`` (then
    mapping it costs what the raw engine's numpy output costs); with ``never`` (this machine) it maps
    4 KiB pages: 65536 more minor faults per 256 MiB in the child, measured 0.05-0.1 s of system time."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    memory = mmap.mmap(descriptor, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):
            memory.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(memory, dtype=dtype).reshape(shape)


def _private_view(descriptor: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The parent's result: the child's memory file mapped *privately*. Reading costs nothing; a
    page the caller writes is copied then (copy-on-write), and a process the caller forks later
    gets its own copy as of any array's, never memory shared with this one."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    memory = mmap.mmap(descriptor, nbytes, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return np.frombuffer(memory, dtype=dtype).reshape(shape)  # the array keeps the mapping alive


def _faulted_in(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A fresh array for the child's result; a large one with its pages already in memory.

    Faulting them in now, while the child works on another core, takes the faults off the copy.
    Large results are mapped in plain 4 KiB pages populated by the kernel in one call: numpy's
    arrays ask for huge pages, whose allocation can stall on memory compaction (measured: 0.4-1.1 s
    for 256 MiB in a process that had just encoded, against 0.03-0.05 s in 4 KiB pages).
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes < _PARALLEL_COPY or usable_cores() < 2 or not hasattr(mmap, "MAP_POPULATE"):
        return np.empty(shape, dtype)
    try:
        memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    except (OSError, ValueError):
        return np.empty(shape, dtype)
    return np.frombuffer(memory, dtype=dtype).reshape(shape)  # the array keeps the mapping alive


def _fetch(pid: int, address: int, result: np.ndarray, nbytes: int, answer: int, status: int) -> None:
    """Copy the child's result into ``result``: from its memory if readable, else through the pipe."""
    target = memoryview(result.reshape(-1).view(np.uint8).data) if nbytes else memoryview(b"")
    try:
        descriptor = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except OSError:
        descriptor = -1
    try:
        done = 0
        if descriptor >= 0:
            # Large results are read on several threads (preadv releases the GIL): the copy is
            # the main cost of isolation (256 MiB: ~0.05 s on one core).
            pieces = min(usable_cores(), 4) if nbytes >= _PARALLEL_COPY else 1
            edges = [nbytes * i // pieces // 4096 * 4096 for i in range(pieces)] + [nbytes]
            spans = list(itertools.pairwise(edges))
            if pieces > 1:
                with ThreadPoolExecutor(pieces) as pool:
                    copied = list(pool.map(lambda s: _read_span(descriptor, target, address, *s), spans))
            else:
                copied = [_read_span(descriptor, target, address, *spans[0])]
            done = nbytes if all(copied) else 0
    finally:
        if descriptor >= 0:
            os.close(descriptor)
    if done == nbytes:
        os.write(answer, _READ)
        return
    os.write(answer, _SEND)
    done = 0
    while done < nbytes:
        count = os.readv(status, [target[done:]])
        if count <= 0:
            raise OSError("the child stopped sending its result")
        done += count


def _read_span(descriptor: int, target: memoryview, address: int, start: int, stop: int) -> bool:
    """Read bytes ``start:stop`` of the child's result at ``address`` into ``target``; False if it fails."""
    done = start
    with contextlib.suppress(OSError):
        while done < stop:
            count = os.preadv(descriptor, [target[done:stop]], address + done)
            if count <= 0:
                break
            done += count
    return done == stop


def _read_exactly(descriptor: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        piece = os.read(descriptor, size - len(data))
        if not piece:
            break
        data += piece
    return data


def _read_all(descriptor: int) -> bytes:
    pieces = []
    while piece := os.read(descriptor, 65536):
        pieces.append(piece)
    return b"".join(pieces)


def _limit_memory(output_bytes: int) -> None:  # pragma: no cover - runs in the child
    """Cap the child's address space: a hostile payload must not take the machine's memory."""
    try:
        import resource

        with Path("/proc/self/status").open() as status:
            size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
        limit = size + 16 * output_bytes + (1 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, StopIteration, ValueError):
        pass


def decode_in_child(
    header: Any, error: type[CodecError], timeout: float, numthreads: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Decode the parsed, checked stream ``header`` in a forked child; crashes and hangs become ``error``."""
    from .driver import decode_parsed

    dtype = header.dtype.newbyteorder(">") if header.big_endian else header.dtype

    def decode(result: np.ndarray) -> None:
        decode_parsed(header, result, numthreads, error)

    return run_in_child(
        decode,
        tuple(header.shape),
        dtype,
        error=error,
        timeout=timeout,
        what=f"the {header.codec} engine",
        out=out,
    )
