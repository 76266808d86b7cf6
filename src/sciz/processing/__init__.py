"""Processing of AFM image stacks: levelling filters, masks, video steps, frame edits and pipelines.

Every step works on all frames of a (frames, H, W) array at once (numpy/scipy, no per-frame Python
loop where one can be avoided). :func:`run_pipeline` applies a list of steps to an
:class:`~sciz.stack.ImageStack`, keeping each step's output and a playNano-shaped provenance record.

Example
-------
>>> import numpy as np
>>> from sciz.processing import remove_plane, mask_threshold
>>> stack = np.random.default_rng(1).normal(size=(4, 32, 32))
>>> remove_plane(stack, mask=mask_threshold(stack, threshold=2.0)).shape
(4, 32, 32)
"""

from __future__ import annotations

from ._common import ProcessingError
from .edits import drop_final_frames, drop_frame_range, drop_frames, select_frames
from .filters import (
    gaussian_filter,
    polynomial_flatten,
    polynomial_surface,
    remove_plane,
    row_median_align,
    zero_mean,
    zero_median,
)
from .inputs import DEFAULT_CHANNELS, load_stack
from .masks import mask_adaptive, mask_below_threshold, mask_mean_offset, mask_morphological, mask_threshold
from .pipeline import (
    Pipeline,
    environment_info,
    load_processing_file,
    needs_out_of_core,
    parse_processing,
    run_pipeline,
)
from .steps import STEPS, get_step, list_steps
from .video import align_frames, crop_square, intersection_crop, replace_nan

__all__ = [
    "DEFAULT_CHANNELS",
    "STEPS",
    "Pipeline",
    "ProcessingError",
    "align_frames",
    "crop_square",
    "drop_final_frames",
    "drop_frame_range",
    "drop_frames",
    "environment_info",
    "gaussian_filter",
    "get_step",
    "intersection_crop",
    "list_steps",
    "load_processing_file",
    "load_stack",
    "mask_adaptive",
    "mask_below_threshold",
    "mask_mean_offset",
    "mask_morphological",
    "mask_threshold",
    "needs_out_of_core",
    "parse_processing",
    "polynomial_flatten",
    "polynomial_surface",
    "remove_plane",
    "replace_nan",
    "row_median_align",
    "run_pipeline",
    "select_frames",
    "zero_mean",
    "zero_median",
]
