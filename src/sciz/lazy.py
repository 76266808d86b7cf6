"""Big data: streaming dask arrays into stores chunk by chunk, with a progress bar, on any dask scheduler.

Writers hand a dask array and a chunk-writing target to :func:`store_dask`; it runs on whatever
scheduler is active (the threaded default, or a ``dask.distributed`` client of processes), keeps
only a few chunks in memory at a time, and shows a rich progress bar in-process or distributed's
own progress display on a cluster. :func:`synthetic_signal` builds a large test signal chunk by
chunk without ever holding it whole, and :func:`peak_rss` reports memory high-water marks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ._util import usable_cores
from .errors import FormatError
from .formats._base import require

__all__ = [
    "STREAMING_FORMATS",
    "active_client",
    "convert",
    "iter_blocks",
    "peak_rss",
    "progress_bar",
    "store_dask",
    "synthetic_signal",
]


@contextlib.contextmanager
def progress_bar(total: int, description: str, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over ``total`` bytes; yields ``advance(nbytes)`` (thread-safe)."""
    if not enabled or total <= 0:
        yield lambda nbytes: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    lock = threading.Lock()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(nbytes: int) -> None:
            with lock:
                progress.update(task, advance=nbytes)

        yield advance


def active_client() -> Any:
    """The ``dask.distributed`` client in use as the default scheduler, or None."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import default_client

        client = default_client()
    except (ValueError, ImportError):
        return None
    import dask

    scheduler = dask.config.get("scheduler", None)
    if scheduler not in (None, "dask.distributed", "distributed") and scheduler is not getattr(client, "get", None):
        return None
    return client


def _rich_dask_callback(description: str) -> Any:
    """A dask callback showing a rich progress bar over the tasks of the running graph."""
    from dask.callbacks import Callback
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    class _RichTasks(Callback):
        def __init__(self) -> None:
            super().__init__()
            self._progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._task: Any = None

        def _start_state(self, dsk: Any, state: Any) -> None:
            total = sum(len(state[k]) for k in ("ready", "waiting", "finished", "running") if k in state)
            self._progress.start()
            self._task = self._progress.add_task(description, total=max(total, len(dsk)))

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            self._progress.update(self._task, advance=1)

        def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
            self._progress.stop()

    return _RichTasks()


def store_dask(data: Any, target: Any, *, show_progressbar: bool = True) -> None:
    """Write a dask array into a chunk target (``target[region] = block``), one chunk per task.

    The array is first rechunked to the target's chunk grid, so each task writes exactly one stored
    chunk and no two tasks touch the same key (no locks, safe across processes).
    """
    da = require("dask.array", "dask")
    chunks = target.meta.chunks
    if data.chunks != da.core.normalize_chunks(chunks, data.shape, dtype=data.dtype):
        data = data.rechunk(chunks)
    client = active_client()
    if client is not None:
        if not getattr(target.kv, "shareable", False):
            raise FormatError(
                f"{target.kv.describe()}: a dask.distributed cluster cannot write into this store; "
                "write to a directory (store_type='local') or a zip file"
            )
        stored = da.store(data, target, lock=False, compute=False)
        future = client.compute(stored)
        if show_progressbar:
            from distributed import progress

            progress(future, notebook=False)
        future.result()
        return
    tasks = int(np.prod(data.numblocks)) if data.ndim else 1
    if show_progressbar and tasks > 1:
        with _rich_dask_callback(f"writing {target.meta.path}"):
            da.store(data, target, lock=False)
    else:
        da.store(data, target, lock=False)


def iter_blocks(
    data: Any, chunks: tuple[int, ...], *, show_progressbar: bool = True, in_flight: int | None = None
) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    """Compute a dask array block by block on the active scheduler; yield ``(region, block)`` in order.

    For targets only this process can write (an HDF5 file): at most ``in_flight`` blocks are
    computed at once (default: two per worker thread), so memory stays at a few blocks.
    """
    da = require("dask.array", "dask")
    if data.chunks != da.core.normalize_chunks(chunks, data.shape, dtype=data.dtype):
        data = data.rechunk(chunks)
    offsets = [np.concatenate([[0], np.cumsum(c)]).astype(int) for c in data.chunks]
    indices = list(np.ndindex(*data.numblocks))

    def region(index: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(int(offsets[d][i]), int(offsets[d][i + 1])) for d, i in enumerate(index))

    client = active_client()
    total = int(data.nbytes)
    with progress_bar(total, "writing", enabled=show_progressbar and len(indices) > 1) as advance:
        if client is not None:
            from collections import deque

            window = in_flight or max(2, 2 * sum(client.nthreads().values()))
            queue: deque[tuple[tuple[int, ...], Any]] = deque()
            position = 0
            while position < len(indices) or queue:
                while position < len(indices) and len(queue) < window:
                    index = indices[position]
                    queue.append((index, client.compute(data.blocks[index])))
                    position += 1
                index, future = queue.popleft()
                block = np.asarray(future.result())
                advance(block.nbytes)
                yield region(index), block
            return
        import dask

        batch = in_flight or usable_cores()
        for start in range(0, len(indices), batch):
            chosen = indices[start : start + batch]
            blocks = dask.compute(*[data.blocks[index] for index in chosen])
            for index, block in zip(chosen, blocks, strict=True):
                advance(int(np.asarray(block).nbytes))
                yield region(index), np.asarray(block)


def synthetic_signal(
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    *,
    dtype: Any = np.float32,
    seed: int = 0,
) -> Any:
    """A deterministic lazy test signal (smooth pattern + noise), generated chunk by chunk.

    Every element depends only on its global index and ``seed`` (a counter-based hash gives the
    noise), so any chunking and any scheduler give the same values, and the array is never whole
    in memory.
    """
    da = require("dask.array", "dask")
    dtype = np.dtype(dtype)
    strides = [int(np.prod(shape[i + 1 :], dtype=np.int64)) for i in range(len(shape))]

    limit = 1 << 18  # elements per slab: bounds the temporaries whatever the chunk size

    def fill(out: np.ndarray, location: list[tuple[int, int]], axes: list[int], base: int, level: float) -> None:
        index = np.full(out.shape, base % 2**64, dtype=np.uint64)
        out[...] = level
        for dim, ((a, b), axis) in enumerate(zip(location, axes, strict=True)):
            view = [1] * out.ndim
            view[dim] = b - a
            coordinate = np.arange(a, b, dtype=np.uint64).reshape(view)
            index += coordinate * np.uint64(strides[axis])
            out += np.float32(20.0) * np.sin(coordinate.astype(np.float32) * np.float32(0.05 + 0.01 * axis))
        # splitmix64 of (index + seed): uniform noise that does not depend on the chunking
        index += np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            index ^= index >> np.uint64(shift)
            index *= np.uint64(factor)
        index ^= index >> np.uint64(31)
        index >>= np.uint64(40)
        noise = index.astype(np.float32)
        del index
        noise *= np.float32(2.0**-24)
        noise -= np.float32(0.5)
        out += noise

    def block(block_info: Any = None) -> np.ndarray:
        location = [tuple(pair) for pair in block_info[None]["array-location"]]
        out = np.empty(tuple(b - a for a, b in location), dtype=np.float32)
        if not out.size:
            return out.astype(dtype, copy=False)
        ndim = out.ndim
        split = next((k for k in range(ndim) if int(np.prod(out.shape[k + 1 :])) <= limit), ndim - 1)
        rows = max(1, limit // max(1, int(np.prod(out.shape[split + 1 :]))))
        for lead in np.ndindex(*out.shape[:split]):
            base = sum((location[k][0] + i) * strides[k] for k, i in enumerate(lead))
            level = 100.0 + sum(
                20.0 * float(np.sin(np.float32(location[k][0] + i) * np.float32(0.05 + 0.01 * k)))
                for k, i in enumerate(lead)
            )
            a = location[split][0]
            for start in range(0, out.shape[split], rows):
                stop = min(out.shape[split], start + rows)
                piece = out[(*lead, slice(start, stop))]
                fill(piece, [(a + start, a + stop), *location[split + 1 :]], list(range(split, ndim)), base, level)
        return out.astype(dtype, copy=False)

    return da.map_blocks(
        block, chunks=da.core.normalize_chunks(chunks, shape), dtype=dtype, meta=np.empty((0,) * len(shape), dtype)
    )


def peak_rss() -> int:
    """Peak resident memory of this process in bytes.

    On Linux this is ``VmHWM`` of the process's own address space: ``ru_maxrss`` would include the
    peak of the parent that spawned it (the kernel carries it across ``exec``).
    """
    from pathlib import Path

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def current_rss() -> int:
    """Current resident memory of this process in bytes."""
    try:
        from pathlib import Path

        return int(Path(f"/proc/{os.getpid()}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss()


#: Formats whose readers can return dask arrays (``lazy=True``) and whose writers stream them.
STREAMING_FORMATS = frozenset({"zspy", "zspy-zip", "hspy"})


def convert(source: Any, target: Any, *, format: str | None = None, **options: Any) -> Any:
    """Convert any readable file to any writable format, streaming chunk by chunk when both sides can.

    The source is opened lazily if its format supports it (zspy, hspy), so the data flows through
    dask one chunk at a time into a streaming writer (zspy, hspy) without ever being whole in
    memory; other formats are read and written whole. Returns the written path.

    Example
    -------
    >>> from sciz.lazy import convert
    >>> convert("scan.hspy", "scan.zspy", compressor="zstd")  # doctest: +SKIP
    """
    from .formats import detect_format, format_for_writing, save

    reader = detect_format(source)
    writer = format_for_writing(target, format)
    lazy = reader.name in STREAMING_FORMATS and writer.name in STREAMING_FORMATS
    dataset = reader.read(_as_path(source), **({"lazy": True} if lazy else {}))
    return save(dataset, target, format=writer.name, **options)


def _as_path(value: Any) -> Any:
    from pathlib import Path

    return Path(os.fspath(value))
