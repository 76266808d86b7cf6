"""Stack edits: remove or keep frames. Each returns the new stack and the kept frame indices.

The kept indices let the pipeline carry the per-frame metadata (timestamps) and any active mask
along with the frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import argument_error
from ._common import as_frames

__all__ = ["drop_final_frames", "drop_frame_range", "drop_frames", "select_frames"]


def _indices(name: str, values: Any, n_frames: int) -> list[int]:
    """Frame indices from an int or an iterable of ints, each checked to lie in 0..n_frames-1."""
    items: Iterable[Any] = [values] if isinstance(values, int | np.integer) else values
    if isinstance(values, str | bytes) or not isinstance(items, Iterable):
        raise argument_error(name, values, "must be a frame index or a list of frame indices")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | np.integer):
            raise argument_error(name, values, "must hold integer frame indices")
        if not 0 <= item < n_frames:
            raise argument_error(name, values, f"frame indices must lie in 0..{n_frames - 1}")
        out.append(int(item))
    return sorted(set(out))


def _keep(stack: np.ndarray, kept: list[int]) -> tuple[np.ndarray, list[int]]:
    if not kept:
        raise argument_error("frames", "<all>", "an edit must keep at least one frame")
    return stack[np.asarray(kept, dtype=np.intp)], kept


def drop_frames(data: Any, indices_to_drop: Any = ()) -> tuple[np.ndarray, list[int]]:
    """Remove the frames at ``indices_to_drop``.

    Parameters
    ----------
    data
        (frames, H, W) stack.
    indices_to_drop
        A frame index or a list of them (0-based).

    Returns
    -------
    tuple
        The remaining frames and their original indices.
    """
    stack = as_frames(data)
    dropped = set(_indices("indices_to_drop", indices_to_drop, stack.shape[0]))
    return _keep(stack, [i for i in range(stack.shape[0]) if i not in dropped])


def select_frames(data: Any, keep_indices: Any = ()) -> tuple[np.ndarray, list[int]]:
    """Keep only the frames at ``keep_indices`` (in frame order).

    Parameters
    ----------
    data
        (frames, H, W) stack.
    keep_indices
        A frame index or a list of them (0-based).

    Returns
    -------
    tuple
        The kept frames and their original indices.
    """
    stack = as_frames(data)
    return _keep(stack, _indices("keep_indices", keep_indices, stack.shape[0]))


def drop_frame_range(data: Any, start: int = 0, end: int = 1) -> tuple[np.ndarray, list[int]]:
    """Remove frames ``start`` (inclusive) to ``end`` (exclusive).

    Parameters
    ----------
    data
        (frames, H, W) stack.
    start, end
        The half-open range of frame indices to remove.

    Returns
    -------
    tuple
        The remaining frames and their original indices.
    """
    stack = as_frames(data)
    n = stack.shape[0]
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= n:
            raise argument_error(name, value, f"must be an integer in 0..{n}")
    if start >= end:
        raise argument_error("end", end, f"must be greater than start={start}")
    return _keep(stack, [i for i in range(n) if not start <= i < end])


def drop_final_frames(data: Any, n_frames_to_drop: int = 1) -> tuple[np.ndarray, list[int]]:
    """Remove the last ``n_frames_to_drop`` frames.

    Parameters
    ----------
    data
        (frames, H, W) stack.
    n_frames_to_drop
        How many frames to remove from the end.

    Returns
    -------
    tuple
        The remaining frames and their original indices.
    """
    stack = as_frames(data)
    n = stack.shape[0]
    count = n_frames_to_drop
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or not 0 <= count < n:
        raise argument_error("n_frames_to_drop", count, f"must be an integer in 0..{n - 1}")
    return _keep(stack, list(range(n - int(count))))
