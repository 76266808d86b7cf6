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
    serial_blas,
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


@functools.lru_cache(maxsize=16)
def _axis_basis(size: int, order: int) -> np.ndarray:
    """Orthonormal polynomials of degree 0..order sampled on ``size`` points (size, degrees).

    Built from the monomials of coordinates scaled to [-1, 1] with one QR, so fits stay well
    conditioned for any image size. A line of n points supports degrees below n only.
    """
    coordinate = np.linspace(-1.0, 1.0, size) if size > 1 else np.zeros(1)
    degrees = min(order + 1, size)
    q, _ = np.linalg.qr(np.vander(coordinate, degrees, increasing=True))
    basis = np.ascontiguousarray(q)
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=8)
def _terms(height: int, width: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """(y degree, x degree) of every basis term ``Ly_j(y) * Lx_i(x)`` with ``i + j <= order``."""
    ky, kx = _axis_basis(height, order).shape[1], _axis_basis(width, order).shape[1]
    pairs = [(j, i) for j in range(ky) for i in range(kx) if i + j <= order]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def _term_columns(height: int, width: int, order: int) -> np.ndarray:
    """Every 2-D basis term sampled on all pixels, as columns (H*W, terms)."""
    ly, lx = _axis_basis(height, order), _axis_basis(width, order)
    ys, xs = _terms(height, width, order)
    return (ly[:, ys][:, np.newaxis, :] * lx[:, xs][np.newaxis, :, :]).reshape(height * width, len(ys))


@functools.lru_cache(maxsize=8)
def _basis_products(height: int, width: int, order: int) -> np.ndarray:
    """Products of every pair (t <= s) of 2-D basis terms, over all pixels (H*W, pairs): with these
    the weighted Gram matrices of all frames are one matrix product."""
    columns = _term_columns(height, width, order)
    first, second = np.triu_indices(columns.shape[1])
    products = np.ascontiguousarray(columns[:, first] * columns[:, second])
    products.setflags(write=False)
    return products


def _check_order(order: Any) -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 0:
        raise argument_error("order", order, "must be an integer >= 0 (1: plane, 2: quadratic, ...)")
    return int(order)


def _fit(data: Any, order: Any, mask: Any, subtract: bool) -> np.ndarray:
    with serial_blas():
        return _fit_blocks(data, order, mask, subtract)


def _fit_blocks(data: Any, order: Any, mask: Any, subtract: bool) -> np.ndarray:
    """Fit each frame's polynomial surface; return it (float64) or, with ``subtract``, data minus it.

    The basis is the tensor product of 1-D orthonormal polynomials, ``Ly_j(y) * Lx_i(x)`` with
    ``i + j <= order``: it spans the 2-D polynomials of that total degree, is orthonormal over the
    full grid (so an unmasked fit is just the projections ``Ly^T Z Lx``), and surfaces are evaluated
    as ``Ly C Lx^T`` per frame - small matrix products instead of one pass per term.
    """
    stack = as_frames(data)
    order = _check_order(order)
    fg = as_mask(mask, stack.shape)
    n, h, w = stack.shape
    ly, lx = _axis_basis(h, order), _axis_basis(w, order)
    ys, xs = _terms(h, w, order)
    keep = np.zeros((ly.shape[1], lx.shape[1]), dtype=bool)
    keep[ys, xs] = True
    out = np.empty(stack.shape, dtype=result_dtype(stack) if subtract else np.float64)
    # Blocks of a few frames keep the float64 temporaries in cache instead of streaming 2x the stack.
    block = max(1, _BLOCK_PIXELS // max(1, h * w))
    for start in range(0, n, block):
        values = stack[start : start + block].astype(np.float64)
        use = np.isfinite(values)
        if fg is not None:
            use &= ~fg[start : start + block]
        if bool(use.all()):
            coefficients = np.matmul(ly.T, values @ lx)
            coefficients[:, ~keep] = 0.0
        else:
            coefficients = np.zeros((len(values), *keep.shape))
            coefficients[:, ys, xs] = _weighted_coefficients(values, use, (h, w, order), start)
        surface = np.matmul(ly @ coefficients, lx.T)
        if subtract:
            np.subtract(values, surface, out=out[start : start + block], casting="same_kind")
        else:
            out[start : start + block] = surface
    return out


def _weighted_coefficients(values: np.ndarray, use: np.ndarray, key: tuple[int, int, int], start: int) -> np.ndarray:
    """Least-squares coefficients (frames, terms) of ``values`` over the pixels in ``use``, in the
    basis of ``key`` = (H, W, order); ``start`` is the first frame's index (for error messages)."""
    order = key[2]
    ys, xs = _terms(*key)
    terms = len(ys)
    flat_values = values.reshape(len(values), -1)
    flat_use = use.reshape(flat_values.shape)
    counts = flat_use.sum(axis=1)
    bad = first_bad_frame(counts < terms)
    if bad is not None:
        raise ProcessingError(
            f"frame {start + bad}: {int(counts[bad])} background pixels cannot fit a polynomial of "
            f"order {order} ({terms} coefficients); loosen the mask",
            frame=start + bad,
        )
    pairs = np.triu_indices(terms)
    gram = np.empty((len(values), terms, terms))
    moments = flat_use.astype(np.float64) @ _basis_products(*key)
    gram[:, pairs[0], pairs[1]] = moments
    gram[:, pairs[1], pairs[0]] = moments
    ly, lx = _axis_basis(key[0], order), _axis_basis(key[1], order)
    rhs = np.matmul(ly.T, np.where(use, values, 0.0) @ lx)[:, ys, xs]
    coefficients = np.linalg.solve(gram, rhs[..., np.newaxis])[..., 0]
    # Eigenvalues of the Gram matrix lie in [0, 1]. Small ones mean the background covers the frame
    # poorly (e.g. one corner); the normal equations then lose accuracy, so those few frames are
    # re-solved by SVD on their own, which also detects a truly undetermined surface.
    poor = np.flatnonzero(np.linalg.eigvalsh(gram)[:, 0] < 1e-6)
    if poor.size:
        columns = _term_columns(*key)
        for frame in poor:
            rows = flat_use[frame]
            solution, _, rank, _ = np.linalg.lstsq(columns[rows], flat_values[frame, rows], rcond=None)
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
    return _fit(data, order, mask, subtract=False).reshape(np.shape(data))


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
    dtype = result_dtype(stack)
    # The median of float32 values is one of them or the midpoint of two, which numpy's float32
    # median (playNano's) rounds to float32 as well: subtracting in the data's precision computes
    # what playNano computes, without a float64 round trip of the whole stack.
    medians = np.nan_to_num(medians, nan=0.0).astype(dtype)
    return np.subtract(stack, medians[..., np.newaxis], dtype=dtype).reshape(np.shape(data))


def _subtract_level(data: Any, mask: Any, statistic: str) -> np.ndarray:
    stack = as_frames(data)
    fg = as_mask(mask, stack.shape)
    compute = frame_means if statistic == "mean" else frame_medians
    levels, counts = compute(stack, None if fg is None else ~fg)
    bad = first_bad_frame(counts == 0)
    if bad is not None:
        where = "background pixel (the mask covers the frame)" if fg is not None else "finite pixel"
        raise ProcessingError(f"frame {bad}: no {where} to take the {statistic} of", frame=bad)
    dtype = result_dtype(stack)
    if statistic == "median" and dtype == stack.dtype:
        # In the data's precision, as playNano computes it (see row_median_align).
        return np.subtract(stack, levels.astype(dtype)[:, np.newaxis, np.newaxis]).reshape(np.shape(data))
    out = stack - levels[:, np.newaxis, np.newaxis]
    return out.astype(dtype, copy=False).reshape(np.shape(data))


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
    from .._util import require

    ndimage = require("scipy.ndimage", "processing")
    if isinstance(sigma, bool) or not isinstance(sigma, int | float | np.number) or not np.isfinite(sigma):
        raise argument_error("sigma", sigma, "must be a finite number of pixels >= 0")
    if sigma < 0:
        raise argument_error("sigma", sigma, "must be >= 0")
    stack = as_frames(data)
    work = stack.astype(result_dtype(stack), copy=False)
    out = ndimage.gaussian_filter(work, sigma=(0.0, float(sigma), float(sigma)))
    return np.asarray(out).reshape(np.shape(data))
