"""Whole-video steps: drift correction by cross-correlation, cropping to the common area, NaN filling.

Each function takes a (frames, H, W) array and returns ``(new_stack, metadata)``, where the metadata
is a small JSON-safe dict recorded in the step's provenance (shifts, bounds, counts).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import DataWarning, argument_error
from ._common import ProcessingError, as_frames, frame_means, frame_medians, result_dtype

__all__ = ["align_frames", "crop_square", "intersection_crop", "replace_nan"]

ALIGN_MODES = ("pad", "crop", "crop_square")
NAN_MODES = ("zero", "mean", "median", "global_mean", "constant")

#: Frames correlated per FFT batch, bounding the complex temporaries (~N * 4 * H * W * 8 bytes).
_ALIGN_BATCH_PIXELS = 1 << 23


def _optional_int(name: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise argument_error(name, value, f"must be an integer >= {minimum} or None")
    return int(value)


#: A frame is blank when its spread (max - min) is at most this share of the video's largest frame
#: spread: a constant frame keeps rounding noise (about 6e-13 nm) after remove_plane and the like.
BLANK_SPREAD = 1e-6


def frame_spreads(stack: np.ndarray) -> np.ndarray:
    """Each frame's max - min over its finite pixels (0 for an all-NaN frame)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames: nanmin/nanmax say so
        flat = stack.reshape(stack.shape[0], -1)
        spread = np.nanmax(flat, axis=1) - np.nanmin(flat, axis=1)
    return np.where(np.isnan(spread), 0.0, spread).astype(np.float64)


def blank_from_spreads(spreads: np.ndarray) -> np.ndarray:
    """Indices of the blank frames given every frame's spread (:func:`frame_spreads`) of one video."""
    largest = float(spreads.max()) if spreads.size else 0.0
    return np.flatnonzero(~(spreads > BLANK_SPREAD * largest) | ~(spreads > 0))


def constant_frames(stack: np.ndarray) -> np.ndarray:
    """Indices of the blank frames: one value in every pixel, up to rounding noise (all-NaN frames too)."""
    return blank_from_spreads(frame_spreads(stack))


def _cross_correlation_peaks(stack: np.ndarray, reference: np.ndarray, max_shift: int | None) -> np.ndarray:
    """Integer (dy, dx) per frame that moves the frame onto ``reference``, from the correlation peak.

    The full linear cross-correlation of every (mean-removed) frame with the reference is computed
    with one batched real FFT per block of frames; padding to at least 2H-1 x 2W-1 avoids wrap-around.
    The peak is searched over shifts ordered from -(H-1) to H-1 (first maximum wins), optionally
    limited to |shift| <= ``max_shift``. Means are removed in the data's own precision, as playNano
    does: a blank frame then correlates to zero everywhere (its peak is the first shift searched,
    (-max_shift, -max_shift)) or, when its mean rounds, to that rounding; either way its shift carries
    no information, and the shifts agree with playNano's.
    """
    from .._util import require

    sfft = require("scipy.fft", "processing")
    n, height, width = stack.shape
    size = (sfft.next_fast_len(2 * height - 1, real=True), sfft.next_fast_len(2 * width - 1, real=True))
    ref = reference - reference.mean()
    ref_spectrum = sfft.rfft2(ref, s=size)
    limit_y = height - 1 if max_shift is None else min(height - 1, max_shift)
    limit_x = width - 1 if max_shift is None else min(width - 1, max_shift)
    # Shifts in search order, mapped to their index in the circular correlation.
    dys = np.arange(-limit_y, limit_y + 1)
    dxs = np.arange(-limit_x, limit_x + 1)
    shifts = np.zeros((n, 2), dtype=np.int64)
    block = max(1, _ALIGN_BATCH_PIXELS // (size[0] * size[1]))
    for start in range(0, n, block):
        frames = stack[start : start + block]
        frames = frames - frames.mean(axis=(1, 2), keepdims=True)
        spectrum = sfft.rfft2(frames, s=size, axes=(1, 2))
        # corr[d] = sum_j frame[j] * ref[j + d]: the frame content at j belongs at j + d.
        corr = sfft.irfft2(np.conj(spectrum) * ref_spectrum, s=size, axes=(1, 2))
        window = corr[:, dys % size[0]][:, :, dxs % size[1]]
        peaks = np.argmax(window.reshape(len(frames), -1), axis=1)
        iy, ix = np.unravel_index(peaks, window.shape[1:])
        shifts[start : start + block, 0] = dys[iy]
        shifts[start : start + block, 1] = dxs[ix]
    return shifts


def _limit_jumps(shifts: np.ndarray, max_jump: int, reference_frame: int) -> np.ndarray:
    """Replace implausible jumps between consecutive shifts (each depends on the previous, so a loop
    over the small (N, 2) shift table, not over images). The reference keeps (0, 0), as in playNano."""
    out = shifts.copy()
    for i in range(1, len(out)):
        if i == reference_frame:
            continue
        previous = out[i - 1]
        if i == 1:
            out[i] = previous + np.clip(out[i] - previous, -max_jump, max_jump)
            continue
        expected = previous + (previous - out[i - 2])
        jumped = np.abs(out[i] - previous) > max_jump
        out[i] = np.where(jumped, expected, out[i])
    return out


def _reference_index(stack: np.ndarray, reference_frame: Any) -> tuple[int, np.ndarray]:
    """The reference frame's index (``"auto"``: the first frame that is not constant) and the
    indices of the constant frames; a constant reference is warned about."""
    n = stack.shape[0]
    allowed = f"must be a frame index in 0..{n - 1} or 'auto' (the first frame that is not blank)"
    blank = constant_frames(stack)
    if isinstance(reference_frame, str) and reference_frame == "auto":
        usable = np.setdiff1d(np.arange(n), blank)
        index = int(usable[0]) if usable.size else 0
    elif (
        isinstance(reference_frame, bool)
        or not isinstance(reference_frame, int | np.integer)
        or not -n <= reference_frame < n
    ):
        raise argument_error("reference_frame", reference_frame, allowed)
    else:
        index = int(reference_frame) % n
    if index in blank:
        warn_blank_reference(index, float(stack[index].flat[0]), blank.size, n, stacklevel=4)
    return index, blank


def warn_blank_reference(index: int, value: float, blank: int, frames: int, stacklevel: int = 2) -> None:
    """Warn that align_frames' reference frame ``index`` is blank (every pixel ``value``)."""
    others = "" if blank == frames else "; reference_frame='auto' takes the first frame that is not"
    warnings.warn(
        DataWarning(
            f"align_frames: the reference frame {index} is blank (every pixel {value:g}), "
            f"so every shift is meaningless ({blank} of {frames} frames are blank{others})"
        ),
        stacklevel=stacklevel,
    )


def align_frames(
    data: Any,
    reference_frame: int | str = 0,
    mode: str = "pad",
    max_shift: int | None = None,
    pre_filter_sigma: float | None = None,
    max_jump: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Correct drift: shift every frame by whole pixels onto a reference frame.

    Shifts come from the peak of the FFT cross-correlation of each frame with the reference. With
    ``mode="pad"`` the output canvas grows to hold every shifted frame, uncovered pixels are NaN;
    ``"crop"`` keeps only the area every frame covers; ``"crop_square"`` the largest centred square
    inside it.

    Parameters
    ----------
    data
        (frames, H, W) stack.
    reference_frame
        Index of the frame the others are aligned to (its shift is (0, 0)), or ``"auto"``: the
        first frame that is not blank (constant). A blank reference correlates with nothing, so
        every shift would be meaningless: it is used as asked, with a
        :class:`~sciz.errors.DataWarning`.
    mode
        ``pad``, ``crop`` or ``crop_square``.
    max_shift
        Largest shift searched, in pixels (``None``: any).
    pre_filter_sigma
        Gaussian smoothing (pixels) applied to the copies used for correlation only.
    max_jump
        Largest change of shift between consecutive frames; bigger jumps are replaced by a linear
        extrapolation of the previous two shifts.

    Returns
    -------
    tuple
        The aligned stack (floating) and metadata: ``shifts`` (list of [dy, dx]), ``original_shape``,
        ``aligned_shape``, ``reference_frame`` (the index used), ``blank_frames``, ``mode`` and,
        when cropped, ``crop``. Shifts and shapes are those playNano 0.5.0 computes.

    Example
    -------
    >>> aligned, meta = align_frames(stack, reference_frame="auto", max_shift=20)  # doctest: +SKIP
    >>> meta["reference_frame"], meta["shifts"][:2]  # doctest: +SKIP
    (3, [[-20, -20], [-20, -20]])
    """
    stack = as_frames(data)
    n, height, width = stack.shape
    if mode not in ALIGN_MODES:
        raise argument_error("mode", mode, f"must be one of {', '.join(ALIGN_MODES)}")
    max_shift = _optional_int("max_shift", max_shift, 0)
    max_jump = _optional_int("max_jump", max_jump, 0)
    work = stack.astype(result_dtype(stack), copy=False)
    finite = np.isfinite(work)
    bad = np.flatnonzero(~finite.all(axis=(1, 2)))
    if bad.size:
        raise ProcessingError(
            f"frame {int(bad[0])}: has NaN or infinite pixels; run replace_nan before align_frames",
            frame=int(bad[0]),
        )
    reference_frame, blank = _reference_index(work, reference_frame)
    probe = work
    if pre_filter_sigma is not None:
        from .filters import gaussian_filter

        probe = gaussian_filter(work, pre_filter_sigma)
    shifts = _cross_correlation_peaks(probe, probe[reference_frame], max_shift)
    shifts[reference_frame] = 0  # the reference is not moved (its self-correlation peak may not be 0 when blank)
    if max_jump is not None:
        shifts = _limit_jumps(shifts, max_jump, reference_frame)
    low = shifts.min(axis=0)
    new_h = height + int(shifts[:, 0].max() - low[0])
    new_w = width + int(shifts[:, 1].max() - low[1])
    aligned = np.full((n, new_h, new_w), np.nan, dtype=work.dtype)
    starts = shifts - low
    # Placing N frames at N offsets is N slice copies; fancy indexing would be slower.
    for i, (y0, x0) in enumerate(starts):
        aligned[i, y0 : y0 + height, x0 : x0 + width] = work[i]
    meta: dict[str, Any] = {
        "reference_frame": reference_frame,
        "blank_frames": blank.tolist(),
        "method": "fft_cross_correlation",
        "mode": mode,
        "shifts": shifts.tolist(),
        "original_shape": [height, width],
        "aligned_shape": [new_h, new_w],
        "max_shift": max_shift,
        "max_jump": max_jump,
        "pre_filter_sigma": pre_filter_sigma,
    }
    if mode == "crop":
        aligned, meta["crop"] = intersection_crop(aligned)
    elif mode == "crop_square":
        aligned, meta["crop"] = crop_square(aligned)
    return aligned, meta


def _pad4(pad: Any) -> tuple[int, int, int, int]:
    """``pad`` as (top, bottom, left, right) from an int, (vertical, horizontal) or 4 values."""
    values = [pad] if isinstance(pad, int | np.integer) and not isinstance(pad, bool) else pad
    if (
        isinstance(values, list | tuple)
        and len(values) in (1, 2, 4)
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 0 for v in values)
    ):
        sides = [int(v) for v in values]
        if len(sides) == 1:
            return sides[0], sides[0], sides[0], sides[0]
        if len(sides) == 2:
            return sides[0], sides[0], sides[1], sides[1]
        return sides[0], sides[1], sides[2], sides[3]
    raise argument_error("pad", pad, "must be an int >= 0, (vertical, horizontal) or (top, bottom, left, right)")


def _common_bounds(stack: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the rows and columns that hold a pixel finite in every frame."""
    valid = np.isfinite(stack).all(axis=0)
    rows = np.flatnonzero(valid.any(axis=1))
    cols = np.flatnonzero(valid.any(axis=0))
    if not rows.size or not cols.size:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _crop_padded(stack: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``stack[:, y0:y1, x0:x1]`` where bounds may reach past the edges (filled with NaN)."""
    n, height, width = stack.shape
    out = np.full((n, y1 - y0, x1 - x0), np.nan, dtype=stack.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
    out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = stack[:, sy0:sy1, sx0:sx1]
    return out


def intersection_crop(data: Any, pad: Any = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Crop to the bounding box of the pixels that are finite in every frame (after alignment).

    Parameters
    ----------
    data
        (frames, H, W) stack, typically NaN-padded by :func:`align_frames`.
    pad
        Extra pixels kept around that box (int, (vertical, horizontal) or (top, bottom, left,
        right)); beyond the data they are NaN.

    Returns
    -------
    tuple
        The cropped stack and metadata with ``bounds`` ([y0, y1, x0, x1], exclusive ends) and shapes.

    Raises
    ------
    ProcessingError
        If no pixel is finite in every frame (nothing would remain).
    """
    stack = as_frames(data).astype(result_dtype(np.asarray(data)), copy=False)
    top, bottom, left, right = _pad4(pad)
    bounds = _common_bounds(stack)
    if bounds is None:
        raise ProcessingError("no pixel is finite in every frame: the frames share no common area to crop to")
    y0, y1, x0, x1 = bounds
    cropped = _crop_padded(stack, y0 - top, y1 + bottom, x0 - left, x1 + right)
    meta = {
        "operation": "intersection_crop",
        "original_shape": list(stack.shape[1:]),
        "bounds": [y0, y1, x0, x1],
        "pad": [top, bottom, left, right],
        "new_shape": list(cropped.shape[1:]),
    }
    return cropped, meta


def crop_square(data: Any, pad: Any = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Crop to the largest square centred in the area finite in every frame.

    Parameters
    ----------
    data
        (frames, H, W) stack.
    pad
        Extra pixels kept around the square (as in :func:`intersection_crop`).

    Returns
    -------
    tuple
        The cropped stack and metadata with ``bounds`` of the square and shapes.
    """
    stack = as_frames(data).astype(result_dtype(np.asarray(data)), copy=False)
    top, bottom, left, right = _pad4(pad)
    bounds = _common_bounds(stack)
    if bounds is None:
        raise ProcessingError("no pixel is finite in every frame: the frames share no common area to crop to")
    y0, y1, x0, x1 = bounds
    side = min(y1 - y0, x1 - x0)
    sy = y0 + (y1 - y0 - side) // 2
    sx = x0 + (x1 - x0 - side) // 2
    cropped = _crop_padded(stack, sy - top, sy + side + bottom, sx - left, sx + side + right)
    meta = {
        "operation": "crop_square",
        "original_shape": list(stack.shape[1:]),
        "bounds": [sy, sy + side, sx, sx + side],
        "pad": [top, bottom, left, right],
        "new_shape": list(cropped.shape[1:]),
    }
    return cropped, meta


def replace_nan(data: Any, mode: str = "zero", value: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Fill NaN pixels: with 0, each frame's mean or median, the whole stack's mean, or ``value``.

    Parameters
    ----------
    data
        (frames, H, W) stack.
    mode
        ``zero``, ``mean`` (per frame), ``median`` (per frame), ``global_mean`` or ``constant``.
    value
        The fill value for ``mode="constant"`` (required there, not allowed otherwise).

    Returns
    -------
    tuple
        The filled stack and metadata (``nans_filled``, ``mode``, ``value_used``).

    Raises
    ------
    ProcessingError
        If a frame is entirely NaN in ``mean``/``median`` mode (there is nothing to fill from).
    """
    stack = as_frames(data)
    if mode not in NAN_MODES:
        raise argument_error("mode", mode, f"must be one of {', '.join(NAN_MODES)}")
    if mode == "constant":
        if value is None or isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise argument_error("value", value, "mode='constant' needs a numeric value")
    elif value is not None:
        raise argument_error("value", value, f"is only used with mode='constant' (mode is {mode!r})")
    out = stack.astype(result_dtype(stack), copy=True)
    missing = np.isnan(out)
    count = int(missing.sum())
    if count:
        if mode == "zero":
            out[missing] = 0
        elif mode == "constant":
            out[missing] = value
        elif mode == "global_mean":
            fills, _ = frame_means(out.reshape(1, -1, 1), None)
            if not np.isfinite(fills[0]):
                raise ProcessingError("every pixel is NaN: global_mean has nothing to average")
            out[missing] = fills[0]
        else:
            compute = frame_means if mode == "mean" else frame_medians
            fills, counts = compute(out, None)
            has_nan = missing.any(axis=(1, 2))
            empty = np.flatnonzero(has_nan & (counts == 0))
            if empty.size:
                frame = int(empty[0])
                raise ProcessingError(f"frame {frame}: every pixel is NaN, so its {mode} is undefined", frame=frame)
            per_pixel = np.broadcast_to(fills.astype(out.dtype)[:, np.newaxis, np.newaxis], out.shape)
            out[missing] = per_pixel[missing]
    meta = {"nans_filled": count, "mode": mode, "value_used": value if mode == "constant" else None}
    return out, meta
