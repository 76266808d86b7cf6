"""Streaming dask arrays into chunk stores and out of them block by block, with a progress bar.

Format writers hand a dask array and a chunk-writing target to :func:`store_dask` (zarr-style
stores that any process can write) or iterate :func:`iter_blocks` (an HDF5 file only this process
can write); both run on whatever scheduler is active (the threaded default, or a
``dask.distributed`` client of processes), keep only a few chunks in memory at a time, and show a
rich progress bar in-process or distributed's own progress display on a cluster (on a terminal or in
Jupyter only: into a pipe or a file they would write blank lines and carriage returns). This is the
storage layer's floor: :mod:`sciz.lazy` re-exports it and builds conversions on top.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .._util import require, usable_cores
from ..errors import FormatError

__all__ = ["active_client", "iter_blocks", "progress_bar", "store_dask"]


@contextlib.contextmanager
def progress_bar(total: int, description: str, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over ``total`` bytes; yields ``advance(nbytes)`` (thread-safe). Shown on a
    terminal or in Jupyter only: elsewhere rich would print a blank line into the caller's output."""
    console = _live_console() if enabled and total > 0 else None  # rich imported only for a bar
    if console is None:
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
        console=console,
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


def _live_console() -> Any:
    """A rich console for a live progress display, or None where there is none to be had (output
    to a file or a pipe, a dumb terminal): rich's progress prints a blank line there when it stops."""
    from rich.console import Console

    console = Console()
    return console if console.is_interactive or console.is_jupyter else None


def _rich_dask_callback(description: str, console: Any) -> Any:
    """A dask callback showing a rich progress bar on ``console`` over the tasks of the running graph."""
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
                console=console,
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
        if show_progressbar and _live_console() is not None:  # its text bar, not into a pipe or a file either
            from distributed import progress

            progress(future, notebook=False)
        future.result()
        return
    tasks = int(np.prod(data.numblocks)) if data.ndim else 1
    console = _live_console() if show_progressbar and tasks > 1 else None
    if console is not None:
        with _rich_dask_callback(f"writing {target.meta.path}", console):
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
