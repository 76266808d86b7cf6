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

from .errors import FormatError
from .formats._base import require

__all__ = [
    "active_client",
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


def _rich_dask_callback(total: int, description: str) -> Any:
    from dask.callbacks import Callback

    class _RichTasks(Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._context = progress_bar(total, description)
            self._advance: Callable[[int], None] = lambda n: None

        def _start(self, dsk: Any) -> None:
            self._advance = self._context.__enter__()

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            self._advance(1)

        def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
            self._context.__exit__(None, None, None)

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
        with _rich_dask_callback(tasks * 2, f"writing {target.meta.path}"):
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

        batch = in_flight or max(1, 2 * (os.cpu_count() or 1))
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

    Each block depends only on its position and ``seed``, so any scheduler computes the same values
    and the array is never materialised whole.
    """
    da = require("dask.array", "dask")
    dtype = np.dtype(dtype)

    def block(block_info: Any = None) -> np.ndarray:
        info = block_info[None]
        location = info["array-location"]
        block_shape = tuple(b - a for a, b in location)
        rng = np.random.default_rng([seed, *(a for a, _ in location)])
        grids = np.meshgrid(*(np.arange(a, b, dtype=np.float32) for a, b in location), indexing="ij", sparse=True)
        pattern = sum(np.sin(g * (0.05 + 0.01 * i)) for i, g in enumerate(grids))
        noisy = 100.0 + 20.0 * pattern + rng.standard_normal(block_shape, dtype=np.float32)
        return np.asarray(noisy, dtype=dtype)

    return da.map_blocks(block, chunks=da.core.normalize_chunks(chunks, shape), dtype=dtype, meta=np.empty((0,) * len(shape), dtype))


def peak_rss() -> int:
    """Peak resident memory of this process in bytes (Linux/macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def current_rss() -> int:
    """Current resident memory of this process in bytes."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss()
