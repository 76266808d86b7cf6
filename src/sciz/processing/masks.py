"""Foreground masks for AFM image stacks (True = foreground), computed for all frames at once.

Every function takes a (frames, H, W) array (or one 2-D image) and returns a boolean array of the
same shape. Non-finite pixels are never foreground. While a mask is active in a pipeline, the
levelling filters fit on the background (mask False) only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import argument_error
from ._common import as_frames

#: Pixels per block of frames for the float64 statistics (~8 MB temporaries).
_BLOCK_PIXELS = 1 << 20

__all__ = [
    "mask_adaptive",
    "mask_below_threshold",
    "mask_mean_offset",
    "mask_morphological",
    "mask_threshold",
]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not np.isfinite(value):
        raise argument_error(name, value, "must be a finite number")
    return float(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise argument_error(name, value, "must be an integer >= 1")
    return int(value)


def mask_threshold(data: Any, threshold: float = 0.0) -> np.ndarray:
    """Foreground where the height is above ``threshold``.

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    threshold
        Height above which a pixel is foreground.

    Returns
    -------
    numpy.ndarray
        Boolean mask, True = foreground.
    """
    stack = as_frames(data)
    level = _number("threshold", threshold)
    with np.errstate(invalid="ignore"):
        return ((stack > level) & np.isfinite(stack)).reshape(np.shape(data))


def mask_below_threshold(data: Any, threshold: float = 0.0) -> np.ndarray:
    """Foreground where the height is below ``threshold`` (pits, holes).

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    threshold
        Height below which a pixel is foreground.

    Returns
    -------
    numpy.ndarray
        Boolean mask, True = foreground.
    """
    stack = as_frames(data)
    level = _number("threshold", threshold)
    with np.errstate(invalid="ignore"):
        return ((stack < level) & np.isfinite(stack)).reshape(np.shape(data))


def mask_mean_offset(data: Any, factor: float = 1.0) -> np.ndarray:
    """Foreground where a pixel exceeds its frame's mean by more than ``factor`` standard deviations.

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    factor
        Multiple of each frame's standard deviation (over its finite pixels).

    Returns
    -------
    numpy.ndarray
        Boolean mask, True = foreground.
    """
    stack = as_frames(data)
    factor = _number("factor", factor)
    out = np.empty(stack.shape, dtype=bool)
    block = max(1, _BLOCK_PIXELS // max(1, stack.shape[1] * stack.shape[2]))
    # Blocks of a few frames keep the float64 temporaries small and in cache.
    for start in range(0, stack.shape[0], block):
        values = stack[start : start + block].astype(np.float64)
        finite = np.isfinite(values)
        counts = finite.sum(axis=(1, 2), keepdims=True)
        if not bool(finite.all()):
            values[~finite] = 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = values.sum(axis=(1, 2), keepdims=True) / counts
            values -= mean
            values[~finite] = 0.0
            std = np.sqrt(np.einsum("ijk,ijk->i", values, values)[:, None, None] / counts)
            out[start : start + block] = finite & (values > factor * std)
    return out.reshape(np.shape(data))


def mask_morphological(data: Any, threshold: float = 0.0, structure_size: int = 3) -> np.ndarray:
    """Foreground where ``|height| > threshold``, closed with a square of ``structure_size`` pixels.

    The closing (dilation then erosion) fills small gaps inside features; it acts within each
    frame only (the structuring element has no extent along time).

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    threshold
        Absolute height above which a pixel is foreground before the closing.
    structure_size
        Side of the square structuring element, in pixels.

    Returns
    -------
    numpy.ndarray
        Boolean mask, True = foreground.
    """
    from .._util import require

    ndimage = require("scipy.ndimage", "processing")
    stack = as_frames(data)
    level = _number("threshold", threshold)
    size = _positive_int("structure_size", structure_size)
    with np.errstate(invalid="ignore"):
        binary = np.abs(stack) > level
    structure = np.ones((1, size, size), dtype=bool)
    closed = ndimage.binary_closing(binary, structure=structure)
    return np.asarray(closed, dtype=bool).reshape(np.shape(data))


def mask_adaptive(data: Any, block_size: int = 15, offset: float = 0.0) -> np.ndarray:
    """Foreground where a pixel exceeds the mean of its ``block_size`` tile by more than ``offset``.

    Each frame is cut into a grid of square tiles (the last row and column of tiles may be smaller);
    every tile is thresholded at its own mean, which follows slow background variations.

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    block_size
        Side of the tiles, in pixels.
    offset
        Added to each tile's mean before comparing.

    Returns
    -------
    numpy.ndarray
        Boolean mask, True = foreground.
    """
    stack = as_frames(data)
    size = _positive_int("block_size", block_size)
    offset = _number("offset", offset)
    _, height, width = stack.shape
    rows = np.arange(0, height, size)
    cols = np.arange(0, width, size)
    values = stack.astype(np.float64, copy=False)
    # Tile sums via reduceat along both image axes, then divided by each tile's pixel count.
    sums = np.add.reduceat(np.add.reduceat(values, rows, axis=1), cols, axis=2)
    tile_h = np.diff(np.append(rows, height))
    tile_w = np.diff(np.append(cols, width))
    means = sums / np.multiply.outer(tile_h, tile_w)
    local = np.repeat(np.repeat(means, tile_h, axis=1), tile_w, axis=2)
    with np.errstate(invalid="ignore"):
        return (stack > local + offset).reshape(np.shape(data))
