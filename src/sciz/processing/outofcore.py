"""Running pipeline steps over blocks of frames, in memory or out of core (layers on disk).

Filters and masks act on each frame alone, so :func:`map_frames` runs them block by block (several
blocks at once on the usable cores) into one preallocated output: a numpy array in memory mode, a
:class:`~sciz.processing.blocks.FrameFile` out of core.

Whole-video steps need every frame (a reference frame, the area finite in all frames, a global
mean). Out of core they run in two passes over the blocks, giving what the step gives on the whole
stack:

* ``align_frames``: pass 1 correlates each block with the reference frame (the step itself, run on
  the reference followed by the block) and collects the shifts; ``max_jump`` and the canvas size
  are then decided from all shifts, and pass 2 places every frame on it. The crop modes then crop
  the aligned layer as below. The reference must be a frame index.
* ``intersection_crop``/``crop_square``: pass 1 ANDs every frame's finite map; pass 2 runs the step
  on each block followed by one frame that is finite exactly on that common area, so it finds the
  whole stack's bounds.
* ``replace_nan``: per frame, except ``global_mean``, whose mean is taken in pass 1.
* Frame edits (``drop_frames`` ...): the step picks the frames from the frame count, and the kept
  frames are copied block by block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._util import usable_cores
from ..errors import argument_error
from ._common import ProcessingError, serial_blas
from .blocks import FrameFile, Scratch, block_frames, iter_frame_blocks

__all__ = ["edit_step", "map_frames", "take_frames", "video_step"]

#: Bytes (as float64) per block of frames of a per-frame step: small enough that each core's
#: temporaries stay in cache-friendly sizes, large enough that per-call overhead does not show.
MEMORY_BLOCK_BYTES = 4 << 20


def _read(array: Any, start: int, stop: int) -> np.ndarray:
    if isinstance(array, FrameFile):
        return array.read(start, stop)
    return np.asarray(array[start:stop])


def _shifted(exc: ProcessingError, start: int) -> ProcessingError:
    """The same error with its frame counted from the whole stack instead of the block."""
    if exc.frame is None or start == 0:
        return exc
    frame = exc.frame + start
    detail = str(exc)
    prefix = f"frame {exc.frame}: "
    detail = f"frame {frame}: {detail[len(prefix) :]}" if detail.startswith(prefix) else detail
    return ProcessingError(detail, step=exc.step, index=exc.index, frame=frame)


def _allocate(storage: Scratch | None, shape: tuple[int, ...], dtype: Any, name: str) -> Any:
    return np.empty(shape, dtype) if storage is None else storage.new(shape, dtype, name)


def _store(out: Any, start: int, block: np.ndarray) -> None:
    if isinstance(out, FrameFile):
        out.write(start, block)
    else:
        out[start : start + len(block)] = block


def map_frames(
    function: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
    data: Any,
    mask: Any = None,
    *,
    storage: Scratch | None = None,
    name: str = "layer",
    frames: int | None = None,
    into: Any = None,
) -> Any:
    """``function(block, mask_block)`` over blocks of frames of ``data``, stacked into one output.

    ``function`` must return an array of its block's shape. The output is a numpy array, or with
    ``storage`` a :class:`FrameFile` in it. Blocks run on the usable cores (BLAS kept to one thread
    each); a :class:`ProcessingError` names the frame in the whole stack. ``into``: a writable
    array or scratch layer file of the output's shape and dtype to write into instead of a new one
    (``data`` itself, when the caller will not keep it: each block is read before its own result
    replaces it, and no block reads another's frames).
    """
    n = int(data.shape[0])
    if frames is None:
        # The same small blocks on disk: each core's float64 temporaries are a few times the block,
        # and a pread/pwrite of a few MB costs no more per byte than a larger one.
        frames = block_frames(tuple(data.shape), 8, MEMORY_BLOCK_BYTES)
    starts = list(range(0, n, frames))

    def run(start: int) -> np.ndarray:
        block = _read(data, start, start + frames)
        fg = None if mask is None else _read(mask, start, start + frames)
        try:
            result = np.asarray(function(block, fg))
        except ProcessingError as exc:
            raise _shifted(exc, start) from None
        if result.shape != block.shape:
            raise ProcessingError(f"a per-frame step returned shape {result.shape} for a block of {block.shape}")
        return result

    with serial_blas():
        if not starts:
            return _allocate(storage, tuple(data.shape), _empty_dtype(function, data), name)
        head = run(0)
        shape = (n, *head.shape[1:])
        reusable = into is not None and into.shape == shape and into.dtype == head.dtype and _writable(into)
        out = into if reusable else _allocate(storage, shape, head.dtype, name)
        _store(out, 0, head)
        del head
        rest = starts[1:]
        workers = min(usable_cores(), len(rest))
        if workers <= 1:
            for start in rest:
                _store(out, start, run(start))
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="sciz-frames") as pool:
                for _ in pool.map(lambda start: _store(out, start, run(start)), rest):
                    pass
    return out


def _writable(array: Any) -> bool:
    """Whether ``array`` can be written into: a writable numpy array, or a layer file of a scratch."""
    return bool(array.flags.writeable) if isinstance(array, np.ndarray) else getattr(array, "writable", False)


def _empty_dtype(function: Callable[..., Any], data: Any) -> np.dtype:
    """The dtype ``function`` gives for a stack of no frames."""
    return np.asarray(function(np.empty((0, *data.shape[1:]), data.dtype), None)).dtype


def take_frames(data: Any, kept: Sequence[int], storage: Scratch, frames: int | None = None) -> FrameFile:
    """Frames ``kept`` of ``data`` (in that order) copied into a new :class:`FrameFile`."""
    shape = (len(kept), *data.shape[1:])
    out = storage.new(shape, data.dtype, "frames")
    step = frames or block_frames(tuple(data.shape), np.dtype(data.dtype).itemsize)
    indices = np.asarray(kept, dtype=np.intp)
    for start in range(0, len(indices), step):
        chosen = indices[start : start + step]
        low, high = int(chosen.min()), int(chosen.max()) + 1
        if high - low <= 4 * len(chosen):
            block = _read(data, low, high)[chosen - low]
        else:
            block = np.stack([_read(data, int(i), int(i) + 1)[0] for i in chosen])
        out.write(start, block)
    return out


def edit_step(
    function: Callable[..., Any], data: Any, params: dict[str, Any], storage: Scratch, frames: int | None
) -> tuple[FrameFile, list[int]]:
    """A frame edit out of core: the step chooses from the frame count alone, the frames are copied."""
    _, kept = function(np.zeros((int(data.shape[0]), 1, 1), dtype=np.float32), **params)
    return take_frames(data, list(kept), storage, frames), list(kept)


def video_step(
    name: str,
    function: Callable[..., Any],
    data: Any,
    params: dict[str, Any],
    storage: Scratch,
    frames: int | None,
) -> tuple[Any, dict[str, Any]]:
    """A whole-video step out of core, in two passes over frame blocks (see the module docstring)."""
    step = frames or block_frames(tuple(data.shape), 8, 4 * MEMORY_BLOCK_BYTES)
    if name == "align_frames":
        return _align(function, data, params, storage, step)
    if name in ("intersection_crop", "crop_square"):
        return _crop(function, data, params, storage, step)
    if name == "replace_nan":
        return _replace_nan(function, data, params, storage, step)
    raise ProcessingError(f"step {name!r} has no out-of-core form; run it in memory mode")


def _common_area(data: Any, step: int) -> np.ndarray:
    valid = np.ones(data.shape[1:], dtype=bool)
    for _, block in iter_frame_blocks(data, step):
        valid &= np.isfinite(block).all(axis=0)
    return valid


def _crop(
    function: Callable[..., Any], data: Any, params: dict[str, Any], storage: Scratch, step: int
) -> tuple[FrameFile, dict[str, Any]]:
    valid = _common_area(data, step)
    out: FrameFile | None = None
    meta: dict[str, Any] = {}
    for start, block in iter_frame_blocks(data, step):
        work = block if block.dtype.kind == "f" else block.astype(np.float64)
        # One more frame, finite exactly where every frame of the stack is: the step then finds
        # the bounds of the whole stack's common area in this block.
        template = np.where(valid, work.dtype.type(0), work.dtype.type(np.nan))[np.newaxis]
        cropped, meta = function(np.concatenate([work, template]), **params)
        if out is None:
            out = storage.new((int(data.shape[0]), *cropped.shape[1:]), cropped.dtype, "cropped")
        out.write(start, cropped[:-1])
    if out is None:  # no frames: the step on the empty stack says what it says
        cropped, meta = function(np.empty((0, *data.shape[1:]), data.dtype), **params)
        out = storage.new(cropped.shape, cropped.dtype, "cropped")
    return out, meta


def _replace_nan(
    function: Callable[..., Any], data: Any, params: dict[str, Any], storage: Scratch, step: int
) -> tuple[FrameFile, dict[str, Any]]:
    call = dict(params)
    if params.get("mode") == "global_mean":
        total, count = 0.0, 0
        for _, block in iter_frame_blocks(data, step):
            finite = np.isfinite(block)
            total += float(np.where(finite, block, 0).sum(dtype=np.float64))
            count += int(finite.sum())
        if count == 0 and any(bool(np.isnan(block).any()) for _, block in iter_frame_blocks(data, step)):
            raise ProcessingError("every pixel is NaN: global_mean has nothing to average")
        call = {"mode": "constant", "value": total / count if count else 0.0}
    filled = 0
    out: FrameFile | None = None
    meta: dict[str, Any] = {}
    for start, block in iter_frame_blocks(data, step):
        try:
            result, meta = function(block, **call)
        except ProcessingError as exc:
            raise _shifted(exc, start) from None
        filled += int(meta.get("nans_filled", 0))
        if out is None:
            out = storage.new((int(data.shape[0]), *result.shape[1:]), result.dtype, "filled")
        out.write(start, result)
    if out is None:
        result, meta = function(np.empty((0, *data.shape[1:]), data.dtype), **params)
        out = storage.new(result.shape, result.dtype, "filled")
    meta = {**meta, "nans_filled": filled, "mode": params.get("mode"), "value_used": params.get("value")}
    return out, meta


def _align(
    function: Callable[..., Any], data: Any, params: dict[str, Any], storage: Scratch, step: int
) -> tuple[FrameFile, dict[str, Any]]:
    import warnings

    from ..errors import DataWarning
    from .video import _limit_jumps, blank_from_spreads, frame_spreads, warn_blank_reference

    n, height, width = (int(x) for x in data.shape)
    spreads = [frame_spreads(block) for _, block in iter_frame_blocks(data, step)]
    blank = blank_from_spreads(np.concatenate(spreads) if spreads else np.zeros(0)).astype(np.int64)
    reference = params.get("reference_frame", 0)
    if n and isinstance(reference, str) and reference == "auto":
        usable = np.setdiff1d(np.arange(n), blank)
        reference = int(usable[0]) if usable.size else 0
    if isinstance(reference, bool) or not isinstance(reference, int | np.integer) or not -n <= reference < n:
        raise argument_error("reference_frame", reference, f"must be a frame index in 0..{n - 1} or 'auto'")
    reference = int(reference) % n
    ref_frame = _read(data, reference, reference + 1)
    if reference in blank:
        warn_blank_reference(reference, float(ref_frame.flat[0]), blank.size, n, stacklevel=3)
    probe_params = {**params, "reference_frame": 0, "mode": "pad", "max_jump": None}
    shifts = np.zeros((n, 2), dtype=np.int64)
    meta: dict[str, Any] = {}
    # Pass 1: each block's shifts onto the reference (the step itself, on [reference, block...]).
    for start, block in iter_frame_blocks(data, step):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DataWarning)  # said once above, not once per block
                _, meta = function(np.concatenate([ref_frame.astype(block.dtype, copy=False), block]), **probe_params)
        except ProcessingError as exc:
            if exc.frame == 0:
                raise _shifted(exc, reference) from None
            raise _shifted(exc, start - 1) from None
        shifts[start : start + len(block)] = np.asarray(meta["shifts"], dtype=np.int64)[1:]
    if n:
        shifts[reference] = 0  # the reference is not moved, as in memory mode
    if params.get("max_jump") is not None:
        shifts = _limit_jumps(shifts, int(params["max_jump"]), reference)
    low = shifts.min(axis=0) if n else np.zeros(2, dtype=np.int64)
    new_h = height + int(shifts[:, 0].max() - low[0]) if n else height
    new_w = width + int(shifts[:, 1].max() - low[1]) if n else width
    dtype = ref_frame.dtype if ref_frame.dtype.kind == "f" else np.dtype(np.float64)
    aligned = storage.new((n, new_h, new_w), dtype, "aligned")
    starts = shifts - low
    # Pass 2: every frame placed on the common canvas.
    for start, block in iter_frame_blocks(data, step):
        canvas = np.full((len(block), new_h, new_w), np.nan, dtype=dtype)
        for i, frame in enumerate(block):
            y0, x0 = starts[start + i]
            canvas[i, y0 : y0 + height, x0 : x0 + width] = frame
        aligned.write(start, canvas)
    meta = {
        **meta,
        "reference_frame": reference,
        "blank_frames": blank.tolist(),
        "shifts": shifts.tolist(),
        "aligned_shape": [new_h, new_w],
        "max_jump": params.get("max_jump"),
        "mode": params.get("mode", "pad"),
    }
    mode = meta["mode"]
    if mode == "pad":
        return aligned, meta
    from .video import crop_square, intersection_crop

    cropped, meta["crop"] = _crop(intersection_crop if mode == "crop" else crop_square, aligned, {}, storage, step)
    return cropped, meta
