"""The catalogue of processing steps: name, kind, parameters with defaults and checks, version.

A pipeline resolves every step name and parameter here before it touches data, so a typo is an
error that lists what exists rather than a step silently skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ArgumentError
from . import edits, filters, masks, video

__all__ = ["STEPS", "Param", "StepSpec", "get_step", "list_steps", "resolve_params"]

#: Step kinds, named as playNano records them in provenance (``step_type``).
KINDS = ("filter", "mask", "clear", "video_filter", "stack_edit")


@dataclass(frozen=True)
class Param:
    """One parameter of a step: its name, kind of value, default and allowed choices."""

    name: str
    #: ``float``, ``int``, ``bool``, ``str``, ``indices`` (int or list of ints), ``pad`` or ``frame``
    #: (an int or ``"auto"``).
    kind: str
    default: Any = None
    optional: bool = False
    choices: tuple[str, ...] = ()
    doc: str = ""

    def describe(self) -> str:
        shown = "|".join(self.choices) if self.choices else self.kind
        return f"{self.name}={self.default!r} ({shown}{', or none' if self.optional else ''})"

    def check(self, step: str, value: Any) -> Any:
        """Return ``value`` converted to this parameter's kind, or raise naming step and parameter."""
        where = f"{step}:{self.name}"
        if value is None and self.optional:
            return None
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise ArgumentError(f"{where}={value!r} is not allowed: must be a number")
            return float(value)
        if self.kind == "frame" and value == "auto":
            return value
        if self.kind in ("int", "frame"):
            if isinstance(value, float | np.floating) and float(value).is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                allowed = "an integer or 'auto'" if self.kind == "frame" else "an integer"
                raise ArgumentError(f"{where}={value!r} is not allowed: must be {allowed}")
            return int(value)
        if self.kind == "bool":
            if not isinstance(value, bool | np.bool_):
                raise ArgumentError(f"{where}={value!r} is not allowed: must be true or false")
            return bool(value)
        if self.kind == "str":
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                allowed = f"one of {', '.join(self.choices)}" if self.choices else "a string"
                raise ArgumentError(f"{where}={value!r} is not allowed: must be {allowed}")
            return value
        if self.kind in ("indices", "pad"):
            items = list(value) if isinstance(value, list | tuple) else [value]
            for item in items:
                if isinstance(item, float) and item.is_integer():
                    continue
                if isinstance(item, bool) or not isinstance(item, int | np.integer):
                    raise ArgumentError(f"{where}={value!r} is not allowed: must be an integer or a list of integers")
            converted = [int(item) for item in items]
            if self.kind == "pad":
                return converted[0] if len(converted) == 1 else tuple(converted)
            return converted
        raise AssertionError(f"unknown parameter kind {self.kind}")  # pragma: no cover


@dataclass(frozen=True)
class StepSpec:
    """A processing step: what it is, which function runs it and which parameters it takes."""

    name: str
    kind: str
    function: Callable[..., Any] | None
    params: tuple[Param, ...] = ()
    version: str = "1.0"
    summary: str = ""
    #: Filters only: whether the step fits on background pixels while a mask is active.
    uses_mask: bool = False
    _by_name: dict[str, Param] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({p.name: p for p in self.params})

    @property
    def module(self) -> str:
        return getattr(self.function, "__module__", "sciz.processing.pipeline")

    def param(self, name: str) -> Param | None:
        return self._by_name.get(name)


def _spec(name: str, kind: str, module: Any, summary: str, *params: Param, uses_mask: bool = False) -> StepSpec:
    return StepSpec(name, kind, getattr(module, name), params, summary=summary, uses_mask=uses_mask)


STEPS: dict[str, StepSpec] = {
    spec.name: spec
    for spec in [
        _spec("remove_plane", "filter", filters, "subtract each frame's least-squares plane", uses_mask=True),
        _spec(
            "polynomial_flatten",
            "filter",
            filters,
            "subtract each frame's polynomial surface",
            Param("order", "int", 2, doc="polynomial degree"),
            uses_mask=True,
        ),
        _spec("row_median_align", "filter", filters, "subtract each scan line's median", uses_mask=True),
        _spec("zero_mean", "filter", filters, "subtract each frame's mean", uses_mask=True),
        _spec("zero_median", "filter", filters, "subtract each frame's median", uses_mask=True),
        _spec(
            "gaussian_filter",
            "filter",
            filters,
            "smooth each frame with a Gaussian",
            Param("sigma", "float", 1.0, doc="kernel standard deviation in pixels"),
        ),
        _spec(
            "mask_threshold",
            "mask",
            masks,
            "foreground above a height",
            Param("threshold", "float", 0.0),
        ),
        _spec(
            "mask_below_threshold",
            "mask",
            masks,
            "foreground below a height",
            Param("threshold", "float", 0.0),
        ),
        _spec(
            "mask_mean_offset",
            "mask",
            masks,
            "foreground above mean + factor * std",
            Param("factor", "float", 1.0),
        ),
        _spec(
            "mask_morphological",
            "mask",
            masks,
            "foreground |height| > threshold, morphologically closed",
            Param("threshold", "float", 0.0),
            Param("structure_size", "int", 3),
        ),
        _spec(
            "mask_adaptive",
            "mask",
            masks,
            "foreground above each tile's mean + offset",
            Param("block_size", "int", 15),
            Param("offset", "float", 0.0),
        ),
        StepSpec("clear", "clear", None, summary="forget the active mask"),
        _spec(
            "align_frames",
            "video_filter",
            video,
            "correct drift by FFT cross-correlation",
            Param("reference_frame", "frame", 0, doc="frame index or 'auto' (the first frame that is not blank)"),
            Param("mode", "str", "pad", choices=video.ALIGN_MODES),
            Param("max_shift", "int", None, optional=True),
            Param("pre_filter_sigma", "float", None, optional=True),
            Param("max_jump", "int", None, optional=True),
        ),
        _spec(
            "intersection_crop",
            "video_filter",
            video,
            "crop to the area finite in every frame",
            Param("pad", "pad", 0),
        ),
        _spec(
            "crop_square",
            "video_filter",
            video,
            "crop to the largest centred square finite in every frame",
            Param("pad", "pad", 0),
        ),
        _spec(
            "replace_nan",
            "video_filter",
            video,
            "fill NaN pixels",
            Param("mode", "str", "zero", choices=video.NAN_MODES),
            Param("value", "float", None, optional=True),
        ),
        _spec(
            "drop_frames",
            "stack_edit",
            edits,
            "remove frames by index",
            Param("indices_to_drop", "indices", []),
        ),
        _spec(
            "select_frames",
            "stack_edit",
            edits,
            "keep only the frames listed",
            Param("keep_indices", "indices", []),
        ),
        _spec(
            "drop_frame_range",
            "stack_edit",
            edits,
            "remove frames start..end-1",
            Param("start", "int", 0),
            Param("end", "int", 1),
        ),
        _spec(
            "drop_final_frames",
            "stack_edit",
            edits,
            "remove the last frames",
            Param("n_frames_to_drop", "int", 1),
        ),
    ]
}


def list_steps() -> list[StepSpec]:
    """Every known step, in catalogue order."""
    return list(STEPS.values())


def _available() -> str:
    groups: dict[str, list[str]] = {}
    for spec in STEPS.values():
        groups.setdefault(spec.kind, []).append(spec.name)
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in groups.items())


def get_step(name: Any) -> StepSpec:
    """The step called ``name``, or an error listing every step that exists."""
    if not isinstance(name, str) or name not in STEPS:
        raise ArgumentError(f"unknown processing step {name!r}; available steps are {_available()}")
    return STEPS[name]


def resolve_params(spec: StepSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """All parameters of ``spec`` (defaults filled in, values checked), or an error listing the valid ones."""
    unknown = [key for key in given if spec.param(key) is None]
    if unknown:
        allowed = ", ".join(p.describe() for p in spec.params) or "none"
        raise ArgumentError(
            f"step {spec.name!r} has no parameter {', '.join(map(repr, unknown))}; its parameters are: {allowed}"
        )
    resolved = {}
    for param in spec.params:
        value = given.get(param.name, param.default)
        resolved[param.name] = param.check(spec.name, value) if value is not None or param.optional else value
    if spec.name == "replace_nan" and resolved["mode"] == "constant" and resolved["value"] is None:
        raise ArgumentError("step 'replace_nan': mode='constant' needs value=<number>")
    return resolved
