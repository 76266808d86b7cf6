"""Levelling and smoothing filters for AFM image stacks, each applied to all frames at once.

Every filter takes a (frames, H, W) array (a single 2-D image also works) and returns a new array of
the same shape: floating inputs keep their dtype, integer inputs become float64. Fits run in float64.
When ``mask`` is given (True = foreground), background statistics and surface fits use only the
pixels where the mask is False, and the result is subtracted from every pixel; non-finite pixels are
always left out of fits and stay as they are. A frame whose fit cannot be made (too few background
pixels, a degenerate pixel layout) raises :class:`ProcessingError` naming the frame, never a silent
pass-through.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..errors import argument_error
from ._common import (
    ProcessingError,
    as_frames,
    as_mask,
    first_bad_frame,
    frame_means,
    frame_medians,
    lastaxis_medians,
    result_dtype,
)

__all__ = [
    "gaussian_filter",
    "polynomial_flatten",
    "polynomial_surface",
    "remove_plane",
    "row_median_align",
    "zero_mean",
    "zero_median",
]

#: Pixels per block of frames in the surface fits (float64 temporaries of ~8 MB).
_BLOCK_PIXELS = 1 << 20


@functools.lru_cache(maxsize=8)
def _orthonormal_basis(height: int, width: int, order: int) -> np.ndarray:
    """An orthonormal basis (H*W, T) of the 2-D polynomials of total degree <= ``order``.

    The monomials are built on coordinates scaled to [-1, 1] and orthonormalised with one QR, so
    the fit is well conditioned for any image size; the fitted surface is the same least-squares
    surface as with raw pixel indices, only computed stably.
    """
    y = np.linspace(-1.0, 1.0, height) if height > 1 else np.zeros(1)
    x = np.linspace(-1.0, 1.0, width) if width > 1 else np.zeros(1)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    columns = [(xx**i * yy ** (total - i)).ravel() for total in range(order + 1) for i in range(total, -1, -1)]
    q, r = np.linalg.qr(np.stack(columns, axis=1))
    # Drop directions a tiny image cannot support (e.g. x^2 on a 2-pixel-wide frame).
    keep = np.abs(np.diag(r)) > 1e-10 * max(1.0, float(np.abs(np.diag(r)).max()))
    basis = np.ascontiguousarray(q[:, keep])
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=8)
def _basis_products(height: int, width: int, order: int) -> np.ndarray:
    """Products of every pair (t <= s) of basis columns: the weighted Gram matrices are then one matmul."""
    basis = _orthonormal_basis(height, width, order)
    first, second = np.triu_indices(basis.shape[1])
    products = np.ascontiguousarray(basis[:, first] * basis[:, second])
    products.setflags(write=False)
    return products


def _check_order(order: Any) -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 0:
        raise argument_error("order", order, "must be an integer >= 0 (1: plane, 2: quadratic, ...)")
    return int(order)


def _fit(data: Any, order: Any, mask: Any, subtract: bool) -> np.ndarray:
    """Fit each frame's polynomial surface; return it (float64) or, with ``subtract``, data minus it."""
    stack = as_frames(data)
    order = _check_order(order)
    fg = as_mask(mask, stack.shape)
    n, h, w = stack.shape
    basis = _orthonormal_basis(h, w, order)
    flat = stack.reshape(n, h * w)
    out = np.empty((n, h * w), dtype=result_dtype(stack) if subtract else np.float64)
    # Blocks of a few frames keep the float64 temporaries in cache instead of streaming 2x the stack.
    block = max(1, _BLOCK_PIXELS // max(1, h * w))
    for start in range(0, n, block):
        values = flat[start : start + block].astype(np.float64)
        use = np.isfinite(values)
        if fg is not None:
            use &= ~fg[start : start + block].reshape(values.shape)
        coefficients = _coefficients(values, use, (h, w, order), start)
        surface = coefficients @ basis.T
        out[start : start + block] = values - surface if subtract else surface
    return out.reshape(stack.shape)


def _coefficients(values: np.ndarray, use: np.ndarray, key: tuple[int, int, int], start: int) -> np.ndarray:
    """Least-squares coefficients (frames, terms) of ``values`` in the basis of ``key`` = (H, W, order),
    over the pixels in ``use``; ``start`` is the first frame's index (for error messages)."""
    basis = _orthonormal_basis(*key)
    order = key[2]
    if bool(use.all()):
        # Every pixel counts: the basis is orthonormal, so the fit is one matrix product.
        return values @ basis
    terms = basis.shape[1]
    counts = use.sum(axis=1)
    bad = first_bad_frame(counts < terms)
    if bad is not None:
        raise ProcessingError(
            f"frame {start + bad}: {int(counts[bad])} background pixels cannot fit a polynomial of "
            f"order {order} ({terms} coefficients); loosen the mask",
            frame=start + bad,
        )
    pairs = np.triu_indices(terms)
    products = _basis_products(*key)
    gram = np.empty((len(values), terms, terms))
    moments = use.astype(np.float64) @ products
    gram[:, pairs[0], pairs[1]] = moments
    gram[:, pairs[1], pairs[0]] = moments
    rhs = np.where(use, values, 0.0) @ basis
    coefficients = np.linalg.solve(gram, rhs[..., np.newaxis])[..., 0]
    # Eigenvalues of Q^T W Q lie in [0, 1]. Small ones mean the background covers the frame
    # poorly (e.g. one corner); the normal equations then lose accuracy, so those few frames are
    # re-solved by SVD on their own, which also detects a truly undetermined surface.
    smallest = np.linalg.eigvalsh(gram)[:, 0]
    for frame in np.flatnonzero(smallest < 1e-6):
        rows = use[frame]
        solution, _, rank, _ = np.linalg.lstsq(basis[rows], values[frame, rows], rcond=None)
        if rank < terms:
            raise ProcessingError(
                f"frame {start + frame}: the {int(counts[frame])} background pixels do not determine a "
                f"polynomial of order {order} (they lie on a line or a curve); loosen the mask",
                frame=int(start + frame),
            )
        coefficients[frame] = solution
    return coefficients


def polynomial_surface(data: Any, order: int = 2, mask: Any = None) -> np.ndarray:
    """The least-squares 2-D polynomial surface of each frame (float64, same shape as ``data``).

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    order
        Total polynomial degree: 0 is a constant, 1 a plane, 2 a quadratic surface.
    mask
        Optional boolean array, True = foreground: those pixels are left out of the fit.

    Returns
    -------
    numpy.ndarray
        The fitted surfaces, evaluated on every pixel.

    Raises
    ------
    ProcessingError
        If a frame has too few usable pixels, or they do not determine the surface.
    """
    return _fit(data, order, mask, subtract=False)


def polynomial_flatten(data: Any, order: int = 2, mask: Any = None) -> np.ndarray:
    """Subtract each frame's least-squares polynomial surface of total degree ``order``.

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    order
        Polynomial degree (1: plane, 2: quadratic, ...).
    mask
        Optional boolean array, True = foreground, left out of the fit.

    Returns
    -------
    numpy.ndarray
        The flattened stack.

    Example
    -------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:8, 0:8]
    >>> frame = 0.1 * xx**2 + 0.5 * yy + 3.0
    >>> bool(np.allclose(polynomial_flatten(frame, order=2), 0.0))
    True
    """
    return _fit(data, order, mask, subtract=True).reshape(np.shape(data))


def remove_plane(data: Any, mask: Any = None) -> np.ndarray:
    """Subtract each frame's least-squares plane ``z = a + b*x + c*y`` (a tilt correction).

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    mask
        Optional boolean array, True = foreground, left out of the fit.

    Returns
    -------
    numpy.ndarray
        The levelled stack.
    """
    return polynomial_flatten(data, 1, mask)


def row_median_align(data: Any, mask: Any = None) -> np.ndarray:
    """Subtract from each scan line its median, removing line-to-line offsets (banding).

    With a mask the median uses the line's background pixels only; a line with no usable pixel is
    left unchanged (there is nothing to estimate its offset from).

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    mask
        Optional boolean array, True = foreground.

    Returns
    -------
    numpy.ndarray
        The aligned stack.
    """
    stack = as_frames(data)
    fg = as_mask(mask, stack.shape)
    medians, _ = lastaxis_medians(stack, None if fg is None else ~fg)
    medians = np.nan_to_num(medians, nan=0.0)
    out = stack - medians[..., np.newaxis]
    return out.astype(result_dtype(stack), copy=False).reshape(np.shape(data))


def _subtract_level(data: Any, mask: Any, statistic: str) -> np.ndarray:
    stack = as_frames(data)
    fg = as_mask(mask, stack.shape)
    compute = frame_means if statistic == "mean" else frame_medians
    levels, counts = compute(stack, None if fg is None else ~fg)
    bad = first_bad_frame(counts == 0)
    if bad is not None:
        where = "background pixel (the mask covers the frame)" if fg is not None else "finite pixel"
        raise ProcessingError(f"frame {bad}: no {where} to take the {statistic} of", frame=bad)
    out = stack - levels[:, np.newaxis, np.newaxis]
    return out.astype(result_dtype(stack), copy=False).reshape(np.shape(data))


def zero_mean(data: Any, mask: Any = None) -> np.ndarray:
    """Subtract each frame's mean height (over background pixels when a mask is given).

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    mask
        Optional boolean array, True = foreground.

    Returns
    -------
    numpy.ndarray
        The stack with each frame's (background) mean at zero.
    """
    return _subtract_level(data, mask, "mean")


def zero_median(data: Any, mask: Any = None) -> np.ndarray:
    """Subtract each frame's median height (over background pixels when a mask is given).

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    mask
        Optional boolean array, True = foreground.

    Returns
    -------
    numpy.ndarray
        The stack with each frame's (background) median at zero.
    """
    return _subtract_level(data, mask, "median")


def gaussian_filter(data: Any, sigma: float = 1.0, mask: Any = None) -> np.ndarray:
    """Smooth each frame with a 2-D Gaussian of standard deviation ``sigma`` pixels.

    All frames are filtered in one call with no smoothing across frames (sigma 0 along time); the
    image borders are reflected. The mask does not change the smoothing (it is accepted so that every
    filter has the same signature).

    Parameters
    ----------
    data
        (frames, H, W) stack or one 2-D image.
    sigma
        Standard deviation of the kernel, in pixels (0 returns a copy).
    mask
        Ignored.

    Returns
    -------
    numpy.ndarray
        The smoothed stack.
    """
    from ..formats import require

    ndimage = require("scipy.ndimage", "processing")
    if isinstance(sigma, bool) or not isinstance(sigma, int | float | np.number) or not np.isfinite(sigma):
        raise argument_error("sigma", sigma, "must be a finite number of pixels >= 0")
    if sigma < 0:
        raise argument_error("sigma", sigma, "must be >= 0")
    stack = as_frames(data)
    work = stack.astype(result_dtype(stack), copy=False)
    out = ndimage.gaussian_filter(work, sigma=(0.0, float(sigma), float(sigma)))
    return np.asarray(out).reshape(np.shape(data))
