"""Frame blocks: stacks kept on disk for out-of-core processing, and helpers that walk any stack in blocks.

:class:`FrameFile` is a (frames, H, W) array stored in a plain ``.npy`` file and read or written a
block of whole frames at a time with ``pread``/``pwrite`` (no memory map, so what has been read
does not stay counted in the process's resident memory). It looks enough like an array (``shape``,
``dtype``, ``ndim``, ``nbytes``, slicing) for the exporters, which stream it block by block.
:func:`iter_frame_blocks` yields ``(start, block)`` from a numpy array, a :class:`FrameFile` or
any lazy array (dask), and :func:`percentile` computes numpy's exact percentile of a stack without
holding it whole.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FrameFile", "Scratch", "as_stack_array", "block_frames", "iter_frame_blocks", "percentile", "percentiles"]

#: Values of one histogram bin gathered and sorted at once when selecting an order statistic; a bin
#: holding more (many equal or nearly equal values) is narrowed down by another histogram pass.
GATHER_LIMIT = 1 << 22
#: Bytes per block of frames when nothing else is asked for (one block in, one out, a few temporaries).
DEFAULT_BLOCK_BYTES = 32 << 20


def block_frames(shape: tuple[int, ...], itemsize: int = 4, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Frames per block so that one block of ``shape[1:]`` frames holds about ``block_bytes``."""
    frame = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    return max(1, block_bytes // frame)


class FrameFile:
    """A (frames, H, W) array in an ``.npy`` file, read and written in blocks of whole frames.

    Parameters
    ----------
    path
        The ``.npy`` file (created with ``shape`` and ``dtype``; its previous content is lost).
    shape, dtype
        The array's shape and dtype.
    """

    def __init__(self, path: str | os.PathLike[str], shape: tuple[int, ...], dtype: Any) -> None:
        self.path = Path(os.fspath(path))
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        header = np.lib.format.header_data_from_array_1_0(np.empty((0,), self.dtype))
        header["shape"] = self.shape
        with self.path.open("wb") as handle:
            np.lib.format.write_array_header_2_0(handle, header)
            self._offset = handle.tell()
            handle.truncate(self._offset + self.nbytes)
        self._fd = os.open(self.path, os.O_RDWR)
        self.writable = True

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> FrameFile:
        """An existing C-order ``.npy`` file of a (frames, H, W) array, read-only and read in blocks.

        Raises
        ------
        sciz.errors.FormatError
            If the file is not such an ``.npy`` file, or is shorter than its header says.
        """
        from ..errors import FormatError
        from ..formats.npy import _header

        source = Path(os.fspath(path))
        # The storage layer's checked header reader (a hostile header is a FormatError).
        shape, fortran, dtype, offset = _header(source)
        if fortran or dtype.kind not in "biuf" or len(shape) != 3:
            raise FormatError(
                f"{source}: out-of-core reading needs a C-order (frames, H, W) array of numbers, "
                f"found shape {shape}, dtype {dtype}{', Fortran order' if fortran else ''}"
            )
        self = cls.__new__(cls)
        self.path, self.shape, self.dtype, self._offset = source, tuple(int(n) for n in shape), np.dtype(dtype), offset
        if source.stat().st_size < offset + self.nbytes:
            raise FormatError(f"{source}: shorter than its header's {shape} {dtype} array")
        self._fd = os.open(source, os.O_RDONLY)
        self.writable = False
        return self

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"FrameFile({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    @property
    def _frame_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` as a new in-memory array."""
        start, stop = max(0, start), min(self.shape[0], stop)
        out = np.empty((max(0, stop - start), *self.shape[1:]), self.dtype)
        self._read_into(out, self._offset + start * self._frame_bytes)
        return out

    def _read_into(self, out: np.ndarray, position: int) -> None:
        """Fill the C-contiguous ``out`` with the file's bytes from ``position``."""
        view = out.reshape(-1).view(np.uint8).data
        done = 0
        while done < len(view):
            count = os.preadv(self._fd, [view[done:]], position + done)
            if count <= 0:
                raise OSError(f"{self.path}: short read at byte {position + done}")
            done += count

    def write(self, start: int, block: np.ndarray) -> None:
        """Store ``block`` as frames ``start:start + len(block)``."""
        data = np.ascontiguousarray(block, dtype=self.dtype)
        if data.shape[1:] != self.shape[1:] or start < 0 or start + len(data) > self.shape[0]:
            raise ValueError(f"{self.path}: block of shape {data.shape} does not fit at frame {start} of {self.shape}")
        view = data.reshape(-1).view(np.uint8).data
        position, done = self._offset + start * self._frame_bytes, 0
        try:
            while done < len(view):
                done += os.pwritev(self._fd, [view[done:]], position + done)
        except OSError as exc:  # a full disk or RLIMIT_FSIZE: say which file (folder) and why
            from ..errors import FormatError

            raise FormatError(
                f"cannot write frames {start}-{start + len(data) - 1} to {self.path}: {exc.strerror or exc}"
            ) from exc

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        first = key[0] if key else slice(None)
        if isinstance(first, int | np.integer):
            index = int(first) + (self.shape[0] if first < 0 else 0)
            if not 0 <= index < self.shape[0]:
                raise IndexError(f"frame {first} out of range for {self.shape[0]} frames")
            return self.read(index, index + 1)[(0, *key[1:])]
        if not isinstance(first, slice):
            raise TypeError(f"FrameFile takes a frame index or slice first, not {type(first).__name__}")
        start, stop, step = first.indices(self.shape[0])
        if step != 1:
            return self.read(start, stop)[(slice(None, None, step), *key[1:])] if stop > start else self.read(0, 0)
        second = key[1] if len(key) > 1 else slice(None)
        if self.ndim == 3 and isinstance(second, slice) and second.step in (None, 1) and stop > start:
            low, high, _ = second.indices(self.shape[1])
            if high - low < self.shape[1]:  # a band of rows (an HDF5 chunk, a sample): read only it
                return self._rows(start, stop, low, max(low, high))[(slice(None), slice(None), *key[2:])]
        return self.read(start, stop)[(slice(None), *key[1:])]

    def _rows(self, start: int, stop: int, low: int, high: int) -> np.ndarray:
        """Rows ``low:high`` of frames ``start:stop`` (each frame's band is one contiguous read)."""
        out = np.empty((stop - start, high - low, *self.shape[2:]), self.dtype)
        row = int(np.prod(self.shape[2:], dtype=np.int64)) * self.dtype.itemsize
        for i in range(stop - start):
            self._read_into(out[i], self._offset + (start + i) * self._frame_bytes + low * row)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.read(0, self.shape[0])
        return out if dtype is None else out.astype(dtype, copy=False)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.close()


class Scratch:
    """Where the :class:`FrameFile` layers of one out-of-core run are kept: files in ``folder``.

    Each file is unlinked as soon as it is created (on POSIX), so it vanishes with its last open
    handle: a killed process leaves nothing behind (no folder either). Elsewhere :meth:`cleanup`
    removes the files.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        from ..errors import FormatError

        self.path = Path(tempfile.gettempdir() if folder is None else os.fspath(folder))
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FormatError(f"cannot use {self.path} for out-of-core layers: {exc.strerror or exc}") from exc
        self._kept: list[Path] = []

    def new(self, shape: tuple[int, ...], dtype: Any, name: str = "layer") -> FrameFile:
        """A new layer file of ``shape`` and ``dtype``; a :class:`~sciz.errors.FormatError` naming the
        folder and the size when the file system refuses it (full, ``RLIMIT_FSIZE``, read-only)."""
        from ..errors import FormatError

        path: Path | None = None
        try:
            handle, text = tempfile.mkstemp(prefix=f"sciz-layer-{name}-", suffix=".npy", dir=self.path)
            os.close(handle)
            path = Path(text)
            frames = FrameFile(path, shape, dtype)
        except OSError as exc:
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
            size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            raise FormatError(
                f"cannot create an out-of-core layer of {size / 2**20:.1f} MiB in {self.path}: "
                f"{exc.strerror or exc} (free space there or set TMPDIR to another folder)"
            ) from exc
        if os.name == "posix":
            path.unlink()
        else:
            self._kept.append(path)
        return frames

    def cleanup(self) -> None:
        """Remove the layer files that are still named (none on POSIX)."""
        for path in self._kept:
            with contextlib.suppress(OSError):
                path.unlink()
        self._kept.clear()


def iter_frame_blocks(array: Any, frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, block)`` for consecutive blocks of ``frames`` frames; blocks are numpy arrays."""
    n = int(array.shape[0])
    for start in range(0, n, max(1, frames)):
        yield start, np.asarray(array[start : start + frames])


def as_stack_array(array: Any, dtype: Any) -> Any:
    """``array`` in ``dtype``: numpy arrays converted (no copy when already so), arrays on disk or
    lazy ones of that dtype kept as they are (exporters stream them block by block), others read."""
    if isinstance(array, np.ndarray) or np.dtype(getattr(array, "dtype", object)) != np.dtype(dtype):
        return np.asarray(array, dtype=dtype)
    return array


def percentile(array: Any, q: float, frames: int | None = None) -> float:
    """numpy's (linear) ``q``-th percentile of the finite values of ``array``, read in frame blocks.

    See :func:`percentiles`; NaN when no value is finite.
    """
    return percentiles(array, [q], frames)[0]


def percentiles(array: Any, qs: Sequence[float], frames: int | None = None) -> list[float]:
    """numpy's (linear) percentiles ``qs`` of the finite values of ``array``, without a stack-sized copy.

    A small numpy array is handled whole. Otherwise one pass counts the finite values and their
    range, one pass histograms them, and one pass gathers the few values of the bins that hold the
    order statistics numpy interpolates between, which are then selected exactly (a bin too full to
    gather is narrowed by further passes). NaN for each ``q`` when no value is finite.
    """
    if isinstance(array, np.ndarray) and array.size <= GATHER_LIMIT:
        finite = array[np.isfinite(array)]
        return [float(np.percentile(finite, q)) if finite.size else float("nan") for q in qs]
    # Blocks of ~4 MB: each pass makes float64 and int64 temporaries a few times the block's size.
    step = frames or block_frames(tuple(array.shape), 8, 4 << 20)
    count, low, high = 0, np.inf, -np.inf
    for _, block in iter_frame_blocks(array, step):
        finite = block[np.isfinite(block)]
        if finite.size:
            count += finite.size
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    if count == 0:
        return [float("nan")] * len(qs)
    positions = [(count - 1) * q / 100.0 for q in qs]
    ranks = sorted({int(np.floor(p)) for p in positions} | {int(np.ceil(p)) for p in positions})
    values = _order_statistics(array, step, ranks, low, high)
    out = []
    for position in positions:
        below, above = values[int(np.floor(position))], values[int(np.ceil(position))]
        # numpy's "linear" interpolation between the two neighbours, as numpy computes it.
        out.append(float(np.percentile(np.array([below, above]), (position - np.floor(position)) * 100.0)))
    return out


def _bin_of(values: np.ndarray, low: float, scale: float, bins: int) -> np.ndarray:
    """Histogram bin of each value (float64) over [low, low + bins / scale]; the top edge is in the last bin."""
    return np.minimum(((values - low) * scale).astype(np.int64), bins - 1)


def _order_statistics(array: Any, step: int, ranks: list[int], low: float, high: float) -> dict[int, float]:
    """The values of 0-based ``ranks`` among the sorted finite values (all within [low, high])."""
    bins = 1 << 16
    if low == high:
        return dict.fromkeys(ranks, low)
    scale = bins / (high - low)
    counts = np.zeros(bins, dtype=np.int64)
    for _, block in iter_frame_blocks(array, step):
        values = block[np.isfinite(block)].astype(np.float64)
        counts += np.bincount(_bin_of(values, low, scale, bins), minlength=bins)
    cumulative = np.cumsum(counts)
    chosen = {rank: int(np.searchsorted(cumulative, rank, side="right")) for rank in ranks}
    wanted = sorted(set(chosen.values()))
    small = [b for b in wanted if counts[b] <= GATHER_LIMIT]
    gathered: dict[int, list[np.ndarray]] = {b: [] for b in small}
    if small:
        for _, block in iter_frame_blocks(array, step):
            values = block[np.isfinite(block)].astype(np.float64)
            which = _bin_of(values, low, scale, bins)
            for b in small:
                gathered[b].append(values[which == b])
    sorted_bins = {b: np.sort(np.concatenate(parts)) for b, parts in gathered.items()}
    out = {}
    for rank, b in chosen.items():
        before = int(cumulative[b - 1]) if b else 0
        if b in sorted_bins:
            out[rank] = float(sorted_bins[b][rank - before])
        else:  # a bin too full to hold (many equal or nearly equal values): narrow it down
            out[rank] = _narrowed(array, step, rank - before, low, scale, bins, b)
    return out


def _narrowed(array: Any, step: int, rank: int, low: float, scale: float, bins: int, chosen: int) -> float:
    """The value of ``rank`` within histogram bin ``chosen``, found over that bin's own value range."""
    lowest, highest = np.inf, -np.inf
    for _, block in iter_frame_blocks(array, step):
        values = block[np.isfinite(block)].astype(np.float64)
        values = values[_bin_of(values, low, scale, bins) == chosen]
        if values.size:
            lowest, highest = min(lowest, float(values.min())), max(highest, float(values.max()))
    if lowest == highest:
        return lowest

    class _Bin:  # the values of this bin only, as an array to read in frame blocks
        shape, dtype, ndim = array.shape, np.dtype(np.float64), array.ndim

        def __getitem__(self, key: Any) -> np.ndarray:
            block = np.asarray(array[key], dtype=np.float64)
            inside = np.isfinite(block)
            inside[inside] = _bin_of(block[inside], low, scale, bins) == chosen
            return np.where(inside, block, np.nan)

    return _order_statistics(_Bin(), step, [rank], lowest, highest)[rank]
