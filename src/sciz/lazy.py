"""Big data: converting files chunk by chunk through dask, test signals and memory high-water marks.

:func:`convert` streams between any two formats whose registry entry says they stream lazily
(``Format.lazy``); the chunk-level machinery the format writers use (:func:`store_dask`,
:func:`iter_blocks`, :func:`progress_bar`, :func:`active_client`) lives in the storage layer
(:mod:`sciz.formats._streaming`) and is re-exported here. :func:`synthetic_signal` builds a large
test signal chunk by chunk without ever holding it whole, and :func:`peak_rss` reports memory
high-water marks.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from ._util import require
from .formats._streaming import active_client, iter_blocks, progress_bar, store_dask

__all__ = [
    "active_client",
    "convert",
    "current_rss",
    "iter_blocks",
    "peak_rss",
    "progress_bar",
    "store_dask",
    "synthetic_signal",
]


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


def convert(source: Any, target: Any, *, format: str | None = None, **options: Any) -> Any:
    """Convert any readable file to any writable format, streaming chunk by chunk when both sides can.

    When both formats stream lazily (``Format.lazy`` in the registry: zspy, hspy), the source is
    opened lazily and the data flows through dask one chunk at a time into the writer without ever
    being whole in memory; other formats are read and written whole. Returns the written path.

    Example
    -------
    >>> from sciz.lazy import convert
    >>> convert("scan.hspy", "scan.zspy", compressor="zstd")  # doctest: +SKIP
    """
    from .formats import detect_format, format_for_writing, save

    reader = detect_format(source)
    writer = format_for_writing(target, format)
    lazy = reader.lazy and writer.lazy
    dataset = reader.read(_as_path(source), **({"lazy": True} if lazy else {}))
    return save(dataset, target, format=writer.name, **options)


def _as_path(value: Any) -> Any:
    from pathlib import Path

    return Path(os.fspath(value))
