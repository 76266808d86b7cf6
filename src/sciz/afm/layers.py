"""What an AFM bundle export writes: the layers kept (``keep``) and a word when values are rounded.

A processed stack carries the ``raw`` snapshot and one full-size layer per step; a bundle of all
of them is several times the size of the video. :func:`select_layers` keeps the ones asked for.

Example
-------
>>> from sciz.afm import export_bundles, select_layers
>>> small = select_layers(stack, "raw,final")  # doctest: +SKIP
>>> export_bundles(stack, "out", None, "npz", keep="raw,final")  # the same, written  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import FormatError, argument_error
from ..stack import ImageStack, keep_words
from ._common import as_image_stack

__all__ = ["KEEP_WORDS", "float32_note", "select_layers"]

#: Words ``keep`` understands besides layer keys and step names.
KEEP_WORDS = {
    "all": "every layer and mask (the default)",
    "none": "no layers or masks: the processed data only",
    "raw": "the unprocessed snapshot",
    "final": "the last step's layer",
    "masks": "every mask",
}


def _step_name(key: str) -> str | None:
    """``gaussian_filter`` of ``step_3_gaussian_filter``; None for keys of another shape (``raw``)."""
    parts = key.split("_", 2)
    return parts[2] if len(parts) == 3 and parts[0] == "step" and parts[1].isdigit() else None


def select_layers(stack: Any, keep: Any) -> ImageStack:
    """A shallow copy of ``stack`` holding only the processed layers and masks named in ``keep``.

    Parameters
    ----------
    stack
        An :class:`~sciz.stack.ImageStack` (or what :func:`~sciz.afm.export_bundles` accepts).
    keep
        Names, as a list or a comma/space separated string: ``all``, ``none``, ``raw``, ``final``
        (the last step's layer), ``masks`` (every mask), a layer or mask key
        (``step_2_gaussian_filter``) or a step name (``gaussian_filter``: each of its layers and
        masks). ``None`` keeps everything.

    Returns
    -------
    ImageStack
        The same data, metadata and provenance (arrays shared, not copied), fewer layers.

    Raises
    ------
    sciz.errors.ArgumentError
        For a name that is neither a word above nor a layer, mask or step of this stack (the
        message lists what the stack has).
    """
    image_stack = as_image_stack(stack)
    if keep is None:
        return image_stack
    words = keep_words(keep)
    if not words:
        raise argument_error("keep", keep, f"name at least one of {', '.join(KEEP_WORDS)} or a layer")
    layers, masks = list(image_stack.processed), list(image_stack.masks)
    steps = [key for key in layers if key != "raw"]
    chosen: set[str] = set()
    for word in words:
        found: list[str]
        if word == "all":
            found = layers + masks
        elif word == "none":
            found = []
        elif word == "final":
            found = steps[-1:]
        elif word == "masks":
            found = masks
        elif word in layers or word in masks:
            found = [word]
        else:
            found = [key for key in layers + masks if _step_name(key) == word]
            if not found and word != "raw":
                have = ", ".join(layers + masks) or "no layers"
                raise argument_error(
                    "keep", word, f"must be one of {', '.join(KEEP_WORDS)}, a layer, a mask or a step name ({have})"
                )
        chosen.update(found)
    if "none" in words and chosen:
        raise argument_error("keep", keep, "'none' cannot be combined with layers to keep")
    out = image_stack.copy()
    out.processed = {k: v for k, v in image_stack.processed.items() if k in chosen}
    out.masks = {k: v for k, v in image_stack.masks.items() if k in chosen}
    return out


def float32_note(stack: ImageStack, raw: bool = False) -> str | None:
    """What to say when the arrays a bundle export writes (as float32, playNano's layout) do not all
    fit in float32 exactly: float64 values that round, or integers beyond 2**24."""
    data, _ = stack.export_view(raw)
    arrays = [data] if raw else [data, *stack.processed.values()]
    what = stack.file_path.name if stack.file_path is not None else "the stack"
    for array in arrays:
        if _beyond_float32(array):
            # found by attack: such values became Inf in every layer, under a note about rounding
            raise FormatError(
                f"{what}: values beyond float32's range (|value| > 3.4e38) cannot be stored in AFM bundles "
                "(float32, playNano's layout); rescale the heights or save as .zspy/.npz, which keep float64"
            )
    wide = sorted({str(np.dtype(a.dtype)) for a in arrays if _rounds_in_float32(a)})
    if not wide:
        return None
    return (
        f"{what}: {' and '.join(wide)} values are stored as float32 in AFM bundles (playNano's layout): "
        "rounded to about 7 significant digits (relative error up to 6e-8)"
    )


def _beyond_float32(array: Any) -> bool:
    """Whether a finite float64 value of ``array`` would overflow float32 (frame by frame)."""
    if np.dtype(array.dtype).itemsize <= 4 or np.dtype(array.dtype).kind != "f":
        return False
    from ..processing.blocks import block_frames, iter_frame_blocks

    limit = float(np.finfo(np.float32).max)
    if array.ndim < 2:
        blocks: Any = [np.asarray(array)]
    else:
        blocks = (block for _, block in iter_frame_blocks(array, block_frames(tuple(array.shape), 8, 16 << 20)))
    with np.errstate(invalid="ignore"):
        return any(bool(np.any(np.isfinite(block) & (np.abs(block) > limit))) for block in blocks)


def _rounds_in_float32(array: Any) -> bool:
    """Whether some value changes in float32; frame by frame, so real data stop at the first frame
    and no float32 copy of the whole stack is made (lazy arrays count as changing)."""
    dtype = np.dtype(array.dtype)
    if dtype.kind == "f" and dtype.itemsize > 4:
        if not isinstance(array, np.ndarray):
            return True
        frames = array.reshape(-1, *array.shape[-2:]) if array.ndim >= 2 else array.reshape(1, -1)
        return any(not np.array_equal(f.astype(np.float32), f, equal_nan=True) for f in frames)
    if dtype.kind in "iu" and dtype.itemsize > 2 and isinstance(array, np.ndarray) and array.size:
        return bool(max(abs(int(array.min())), abs(int(array.max()))) > 2**24)
    return False
