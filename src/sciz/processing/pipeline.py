"""Processing pipelines for AFM image stacks: parse, validate, run, and record playNano-shaped provenance.

A pipeline is a list of ``(step name, parameters)``. It comes from a string
(``"remove_plane; gaussian_filter:sigma=2; mask_threshold:threshold=1"``), a YAML/JSON file
(playNano's ``filters:`` list of ``{name: ..., <param>: ...}``) or a list. Every step and parameter
is checked against :mod:`sciz.processing.steps` before any data is touched.

Running it on an :class:`~sciz.stack.ImageStack` keeps each step's output
(``processed["step_<i>_<name>"]``, ``masks["step_<i>_<name>"]``), keeps the original as
``processed["raw"]``, and appends one provenance entry per step to
``provenance["processing"]["steps"]``. If any step fails the stack is left exactly as it was and a
:class:`ProcessingError` names the step and frame.

Example
-------
>>> import numpy as np
>>> from sciz.stack import ImageStack
>>> from sciz.processing import run_pipeline
>>> stack = ImageStack(np.random.default_rng(0).normal(size=(3, 16, 16)), pixel_size_nm=2.0)
>>> _ = run_pipeline(stack, "remove_plane; gaussian_filter:sigma=1.5")
>>> sorted(stack.processed)
['raw', 'step_1_remove_plane', 'step_2_gaussian_filter']
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._util import require
from .._version import __version__
from ..errors import ArgumentError, FormatError, MissingDependencyError, SciZError, argument_error
from ..stack import keep_words
from ._common import ProcessingError, release_free_memory
from .steps import StepSpec, get_step, resolve_params

__all__ = [
    "Pipeline",
    "environment_info",
    "load_processing_file",
    "needs_out_of_core",
    "parse_processing",
    "run_pipeline",
]

#: Packages whose versions go into ``provenance["environment"]`` (as playNano records them).
_ENV_PACKAGES = ("numpy", "scipy", "h5py", "tifffile", "Pillow", "matplotlib", "afmreader", "pyyaml")

Step = tuple[str, dict[str, Any]]
ProgressCallback = Callable[[int, int, str], None]


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def environment_info() -> dict[str, Any]:
    """Time, Python, platform and key package versions, for ``provenance["environment"]``."""
    info: dict[str, Any] = {
        "timestamp": _utc_now(),
        "python_version": sys.version.replace("\n", " "),
        "platform": f"{platform.system()}-{platform.release()}-{platform.machine()}",
        "sciz_version": __version__,
    }
    for package in _ENV_PACKAGES:
        try:
            info[f"{package.lower()}_version"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return info


# -- parsing ------------------------------------------------------------------------------------
def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside brackets and quotes, so ``keep_indices=[1,2]`` stays whole."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _parse_value(text: str) -> Any:
    """A parameter value from its text: JSON numbers/lists/true/false/null, Python-style
    True/False/None, ``(1, 2)`` tuples, or else the bare string."""
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "\"'":
        return stripped[1:-1]
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if stripped.startswith("(") and stripped.endswith(")"):
        stripped = "[" + stripped[1:-1] + "]"
    try:
        return json.loads(stripped)
    except ValueError:
        return stripped


def parse_processing(text: str) -> list[Step]:
    """Parse ``"step; step:param=value,param=value; ..."`` into ``[(name, params), ...]``.

    Parameters
    ----------
    text
        Steps separated by ``;``; parameters follow a ``:`` as comma-separated ``key=value``
        pairs. Values are numbers, ``true``/``false``, ``none`` or lists like ``[0, 3]``.

    Returns
    -------
    list
        ``(step name, parameters)`` pairs, each checked against the step catalogue.

    Raises
    ------
    sciz.errors.ArgumentError
        For an unknown step or parameter (listing what exists) or malformed text.

    Example
    -------
    >>> parse_processing("remove_plane; gaussian_filter:sigma=2; drop_frames:indices_to_drop=[0,3]")
    [('remove_plane', {}), ('gaussian_filter', {'sigma': 2}), ('drop_frames', {'indices_to_drop': [0, 3]})]
    """
    if not isinstance(text, str):
        raise ArgumentError(f"processing={text!r} is not allowed: must be a string of steps separated by ';'")
    steps: list[Step] = []
    for segment in _split_top_level(text, ";"):
        segment = segment.strip()
        if not segment:
            continue
        name, _, rest = segment.partition(":")
        name = name.strip()
        params: dict[str, Any] = {}
        for pair in _split_top_level(rest, ",") if rest.strip() else []:
            if not pair.strip():
                continue
            key, equals, value = pair.partition("=")
            if not equals or not key.strip():
                raise ArgumentError(
                    f"processing step {name!r}: parameter {pair.strip()!r} is not key=value "
                    "(write e.g. gaussian_filter:sigma=2)"
                )
            params[key.strip()] = _parse_value(value)
        steps.append((name, params))
    _validate(steps)
    return steps


def load_processing_file(path: str | os.PathLike[str]) -> list[Step]:
    """Read a pipeline from a YAML or JSON file.

    The file holds ``filters:`` (playNano's key; ``steps:`` also works) with a list of entries
    ``{name: <step>, <param>: <value>, ...}`` (parameters may also sit under ``params:``), or is
    that list itself.

    Parameters
    ----------
    path
        The ``.yaml``/``.yml``/``.json`` file.

    Returns
    -------
    list
        ``(step name, parameters)`` pairs, each checked against the step catalogue.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    sciz.errors.FormatError
        If it cannot be parsed or has the wrong shape.
    sciz.errors.ArgumentError
        For an unknown step or parameter.
    """
    source = Path(os.fspath(path))
    if not source.is_file():
        raise FileNotFoundError(f"processing file not found: {source}")
    text = source.read_text(encoding="utf-8")
    content: Any
    if source.suffix.lower() == ".json":
        try:
            content = json.loads(text)
        except ValueError as exc:
            raise FormatError(f"{source}: not valid JSON ({exc})") from None
    else:
        yaml = require(
            "yaml",
            "processing",
            needed_for="reading a YAML processing file",
            otherwise="or write the pipeline as .json",
        )
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FormatError(f"{source}: not valid YAML ({exc})") from None
    entries = content
    if isinstance(content, Mapping):
        keys = [k for k in ("filters", "steps") if k in content]
        if not keys:
            raise FormatError(f"{source}: expected a top-level 'filters' (or 'steps') list of steps")
        entries = content[keys[0]]
    if not isinstance(entries, list):
        raise FormatError(f"{source}: the steps must be a list of {{name: ..., <param>: ...}} entries")
    steps: list[Step] = []
    for position, entry in enumerate(entries, start=1):
        if isinstance(entry, str):
            steps.append((entry, {}))
            continue
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise FormatError(f"{source}: step {position} must be a mapping with a 'name' (got {entry!r})")
        params = {k: v for k, v in entry.items() if k not in ("name", "params")}
        nested = entry.get("params")
        if nested is not None:
            if not isinstance(nested, Mapping):
                raise FormatError(f"{source}: step {position} 'params' must be a mapping")
            params.update(nested)
        steps.append((entry["name"], params))
    _validate(steps)
    return steps


def _validate(steps: Sequence[Step]) -> list[tuple[StepSpec, dict[str, Any]]]:
    resolved = []
    for position, (name, params) in enumerate(steps, start=1):
        try:
            spec = get_step(name)
            resolved.append((spec, resolve_params(spec, params)))
        except ArgumentError as exc:
            raise ArgumentError(f"processing step {position}: {exc}") from None
    return resolved


# -- running ------------------------------------------------------------------------------------
class Pipeline:
    """An ordered, validated list of processing steps.

    Parameters
    ----------
    steps
        A processing string, or ``(name, params)`` pairs / ``{"name": ..., ...}`` dicts / names.

    Example
    -------
    >>> Pipeline("remove_plane; mask_threshold:threshold=1; row_median_align").names
    ['remove_plane', 'mask_threshold', 'row_median_align']
    """

    def __init__(self, steps: str | Iterable[Any]) -> None:
        if isinstance(steps, str):
            parsed = parse_processing(steps)
        else:
            parsed = []
            for item in steps:
                if isinstance(item, str):
                    parsed.append((item, {}))
                elif isinstance(item, Mapping):
                    parsed.append((str(item.get("name")), {k: v for k, v in item.items() if k != "name"}))
                elif isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], Mapping):
                    parsed.append((item[0], dict(item[1])))
                else:
                    raise ArgumentError(f"pipeline step {item!r} is not a name, (name, params) or {{'name': ...}}")
        self._resolved = _validate(parsed)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Pipeline:
        """A pipeline read from a YAML/JSON file (see :func:`load_processing_file`)."""
        return cls(load_processing_file(path))

    @property
    def names(self) -> list[str]:
        """The step names in order."""
        return [spec.name for spec, _ in self._resolved]

    @property
    def steps(self) -> list[Step]:
        """``(name, resolved parameters)`` in order."""
        return [(spec.name, dict(params)) for spec, params in self._resolved]

    def __len__(self) -> int:
        return len(self._resolved)

    def __repr__(self) -> str:
        return f"Pipeline({'; '.join(_format_step(n, p) for n, p in self.steps)!r})"

    def run(
        self,
        stack: Any,
        progress: ProgressCallback | None = None,
        *,
        out_of_core: bool | str = False,
        scratch: str | os.PathLike[str] | None = None,
        frames_per_block: int | None = None,
        keep: Any = None,
        spill: bool = False,
    ) -> Any:
        """Run every step on ``stack`` (an :class:`~sciz.stack.ImageStack`) and return it.

        On success the stack's ``data`` is the last step's output, ``processed``/``masks`` hold every
        step's output, frame metadata follows frame edits, and the provenance records each step. On
        failure nothing in the stack changes and :class:`ProcessingError` names the step and frame.
        ``processed["raw"]`` is a read-only view of the input array, not a copy (no step writes into
        its input): writing into that array afterwards changes the snapshot too.

        Parameters
        ----------
        stack
            The stack to process (modified in place). Its data may be a numpy array, a
            :class:`~sciz.processing.blocks.FrameFile` or another array read by frame slices.
        progress
            Called as ``progress(done, total, step_name)`` before each step and once at the end.
        out_of_core
            ``False`` (default): every layer in memory. ``True``: every new layer goes to a file
            (:class:`~sciz.processing.blocks.FrameFile`) and frames are processed in blocks, so
            memory stays a few blocks whatever the stack's size; the exporters stream such layers.
            ``"auto"``: out of core when the layers this pipeline keeps would not fit in half of
            :func:`sciz._util.memory_budget` (see :func:`needs_out_of_core`).
        scratch
            Folder for the out-of-core layer files (default: the system's temporary folder). The
            files are unlinked at once and vanish when the stack lets go of them.
        frames_per_block
            Frames per block (default: a few MB per block).
        keep
            The layers to keep, named as :func:`sciz.afm.select_layers` takes them (``final``, a
            step name, a layer key, ``all``...; ``None``: all). A layer that is not kept is let go
            as soon as the next step has read it, and a per-frame step writes over it in place, so
            memory mode holds the input, one working layer and the masks (``keep="raw,final"``).
            Masks are always kept.
        spill
            Memory mode only: every kept layer but the final one, and every mask, goes to a file in
            ``scratch`` as it is made (a :class:`~sciz.processing.blocks.FrameFile`, read back in
            blocks with ``pread``, not mapped), so memory holds the input, the final layer and a
            few blocks whatever the number of layers kept; the values are the same. Whole-video
            steps (alignment, cropping, frame edits) read a spilled input whole. ``sciz process``
            spills; the default keeps every layer a numpy array.
        """
        if out_of_core not in (True, False, "auto"):
            raise argument_error("out_of_core", out_of_core, "must be True, False or 'auto'")
        if frames_per_block is not None and (
            isinstance(frames_per_block, bool) or not isinstance(frames_per_block, int) or frames_per_block < 1
        ):
            raise argument_error("frames_per_block", frames_per_block, "must be None or an int >= 1")
        if out_of_core == "auto":
            out_of_core = needs_out_of_core(stack, self)
        if not isinstance(spill, bool):
            raise argument_error("spill", spill, "must be True or False")
        storage = spilled = None
        if out_of_core or spill:
            from .blocks import Scratch

            storage, spilled = (Scratch(scratch), None) if out_of_core else (None, Scratch(scratch))
        try:
            return _Run(stack, self._resolved, progress, storage, frames_per_block, keep, spilled).execute()
        finally:
            for used in (storage, spilled):
                if used is not None:
                    used.cleanup()


def _format_step(name: str, params: Mapping[str, Any]) -> str:
    shown = ",".join(f"{k}={json.dumps(v)}" for k, v in params.items() if v is not None)
    return f"{name}:{shown}" if shown else name


def run_pipeline(
    stack: Any,
    processing: str | Iterable[Any] | Pipeline,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> Any:
    """Run a processing string, step list or :class:`Pipeline` on ``stack`` and return the stack.

    See :meth:`Pipeline.run` (``out_of_core``, ``scratch``, ``frames_per_block``).
    """
    pipeline = processing if isinstance(processing, Pipeline) else Pipeline(processing)
    return pipeline.run(stack, progress, **options)


def needs_out_of_core(stack: Any, pipeline: Pipeline | None = None, spill: bool = False) -> bool:
    """Whether ``stack`` processed by ``pipeline`` should run out of core: True when what memory mode
    holds and two blocks' worth of temporaries would take more than half of
    :func:`sciz._util.memory_budget`. Memory mode holds the input and one float32 stack per
    non-mask step and a quarter for each mask; with ``spill`` (as ``sciz process`` runs it) the
    input and the final layer, and one more stack while a whole-video step reads a spilled layer."""
    from .._util import memory_budget

    frames = int(np.prod(stack.data.shape, dtype=np.int64))
    resolved = pipeline._resolved if pipeline else []
    if spill:
        whole = any(spec.kind in ("video_filter", "stack_edit") for spec, _ in resolved)
        layers = 1.0 + (1.0 if any(spec.kind not in ("mask", "clear") for spec, _ in resolved) else 0.0) + whole
    else:
        layers = 1.0 + sum(
            0.25 if spec.kind == "mask" else 0.0 if spec.kind == "clear" else 1.0 for spec, _ in resolved
        )
    need = frames * 4 * (layers + 0.5)
    return need > memory_budget() / 2


def _summary(array: Any) -> dict[str, Any]:
    return {"shape": list(array.shape), "dtype": str(array.dtype)}


class _Run:
    """One execution: works on local copies of the containers and commits them only at the end.

    Steps that act on each frame alone (filters, masks) run over blocks of frames, several blocks
    at a time on the usable cores, each block writing into the step's preallocated output: the
    temporaries stay a few blocks large whatever the stack's size. Whole-video steps (alignment,
    cropping, frame edits) see the whole stack in memory mode; out of core they run in two passes
    over the blocks (see :mod:`sciz.processing.outofcore`).
    """

    def __init__(
        self,
        stack: Any,
        steps: list[tuple[StepSpec, dict[str, Any]]],
        progress: ProgressCallback | None,
        storage: Any = None,
        frames_per_block: int | None = None,
        keep: Any = None,
        spill: Any = None,
    ):
        self.stack = stack
        self.spill = spill  # memory mode: where kept layers other than the final one and masks go
        self.keep = None if keep is None else set(keep_words(keep))
        self.working: str | None = None  # the key of the layer being worked on, when this run made it
        self.steps = steps
        self.progress = progress
        self.storage = storage
        self.frames_per_block = frames_per_block
        self.processed = dict(stack.processed)
        self.masks = dict(stack.masks)
        self.frames = [dict(f) for f in stack.frame_metadata]
        self.backups = dict(stack.state_backups)
        provenance = stack.provenance if isinstance(stack.provenance, dict) else {}
        history = provenance.get("processing", {}) if isinstance(provenance.get("processing"), dict) else {}
        self.records: list[dict[str, Any]] = list(history.get("steps", []) or [])
        first = len(self.records) + 1
        layers = [(first + i, spec.name) for i, (spec, _) in enumerate(steps) if spec.kind not in ("mask", "clear")]
        self.final_index = layers[-1][0] if layers else -1  # the step whose layer is "final"
        self.final_key = f"step_{layers[-1][0]}_{layers[-1][1]}" if layers else ""

    def execute(self) -> Any:
        data = self.stack.data
        if "raw" not in self.processed:
            # No step writes into its input, so the snapshot is the input itself (read-only where
            # it is a numpy array: a copy would cost one more stack of memory).
            raw = data
            if isinstance(data, np.ndarray):
                raw = data.view()
                raw.flags.writeable = False
            self.processed["raw"] = raw
        arr = data
        mask: Any = None
        first = len(self.records) + 1
        total = len(self.steps)
        for offset, (spec, params) in enumerate(self.steps):
            index = first + offset
            if self.progress is not None:
                self.progress(offset, total, spec.name)
            try:
                arr, mask = self._step(index, spec, params, arr, mask)
                release_free_memory()  # the step's temporaries, before the next step allocates
            except MissingDependencyError:
                raise
            except ProcessingError as exc:
                frame = f" on frame {exc.frame}" if exc.frame is not None else ""
                detail = str(exc)
                if exc.frame is not None and detail.startswith(f"frame {exc.frame}: "):
                    detail = detail[len(f"frame {exc.frame}: ") :]
                raise ProcessingError(
                    f"step {index} '{spec.name}' failed{frame}: {detail}", step=spec.name, index=index, frame=exc.frame
                ) from exc
            except (SciZError, ValueError, TypeError, ArithmeticError, MemoryError, np.linalg.LinAlgError) as exc:
                raise ProcessingError(f"step {index} '{spec.name}' failed: {exc}", step=spec.name, index=index) from exc
        if self.progress is not None:
            self.progress(total, total, "done")
        self._commit(arr)
        return self.stack

    def _record(self, index: int, spec: StepSpec, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "index": index,
            "name": spec.name,
            "params": dict(params),
            "timestamp": _utc_now(),
            "step_type": spec.kind,
            "version": spec.version,
            "function_module": spec.module,
            "software": {"sciz": __version__, "numpy": np.__version__},
        }

    def _per_frame(
        self, function: Callable[..., Any], arr: Any, mask: Any, name: str, storage: Any, reuse: bool = False
    ) -> Any:
        """``function(block, mask_block)`` over frame blocks, into one output (in ``storage``, or
        memory when None); ``reuse``: into ``arr`` itself (a layer of this run that is not kept)."""
        from .outofcore import map_frames

        into = arr if reuse and self._let_go() else None
        return map_frames(function, arr, mask, storage=storage, name=name, frames=self.frames_per_block, into=into)

    def _storage_of(self, key: str) -> Any:
        """Where layer ``key`` goes: out of core every layer to disk; spilling, the kept ones but the
        final layer (``stack.data``, in memory); else None (memory)."""
        if self.storage is not None:
            return self.storage
        if self.spill is not None and key != self.final_key and self._kept(key):
            return self.spill
        return None

    def _spilled(self, out: Any, key: str) -> Any:
        """``out`` (made whole in memory by a whole-video step) moved to a file when ``key`` spills."""
        if self.storage is not None or not isinstance(out, np.ndarray) or self._storage_of(key) is None:
            return out
        from .blocks import block_frames

        moved = self.spill.new(out.shape, out.dtype, key)
        step = block_frames(out.shape, out.dtype.itemsize)
        for start in range(0, int(out.shape[0]), step):
            moved.write(start, out[start : start + step])
        return moved

    def _whole(self, arr: Any) -> Any:
        """A spilled layer read into memory for a whole-video step in memory mode."""
        from .blocks import FrameFile

        return arr.read(0, arr.shape[0]) if self.storage is None and isinstance(arr, FrameFile) else arr

    def _kept(self, key: str) -> bool:
        """Whether layer ``key`` (``step_<i>_<name>``) is among the layers to keep."""
        if self.keep is None or "all" in self.keep:
            return True
        name = "_".join(key.split("_")[2:])
        final = key == f"step_{self.final_index}_{name}" and "final" in self.keep
        return final or key in self.keep or name in self.keep

    def _let_go(self) -> bool:
        """Whether the working layer is this run's and not kept (so it can be dropped or overwritten)."""
        return self.working is not None and not self._kept(self.working)

    def _step(self, index: int, spec: StepSpec, params: dict[str, Any], arr: Any, mask: Any) -> tuple[Any, Any]:
        record = self._record(index, spec, params)
        key = f"step_{index}_{spec.name}"
        if spec.kind == "clear":
            record["mask_cleared"] = True
            self.records.append(record)
            return arr, None
        assert spec.function is not None
        function = spec.function
        call_params = {k: v for k, v in params.items() if not (v is None and spec.param(k) and spec.param(k).optional)}  # type: ignore[union-attr]
        if spec.kind == "mask":
            previous_mask = mask

            def new_mask_of(block: np.ndarray, old: np.ndarray | None) -> np.ndarray:
                made = np.asarray(function(block, **call_params), dtype=bool)
                # As playNano: a mask while another is active adds to it (logical OR).
                return made if old is None else np.logical_or(made, old, out=made)

            masks_storage = self.storage if self.storage is not None else self.spill
            new_mask = self._per_frame(new_mask_of, arr, previous_mask, key, masks_storage)
            if previous_mask is not None:
                previous = next((k for k in reversed(self.masks) if k.startswith("step_")), None)
                tail = "_".join(previous.split("_")[2:]) if previous else "overlay"
                key = f"step_{index}_{tail}_{spec.name}"
            self.masks[key] = new_mask
            record["mask_key"] = key
            record["mask_summary"] = {**_summary(new_mask), "foreground_fraction": _fraction(new_mask)}
            self.records.append(record)
            return arr, new_mask
        if spec.kind == "filter":
            masked = spec.uses_mask and mask is not None

            def filtered(block: np.ndarray, fg: np.ndarray | None) -> np.ndarray:
                return np.asarray(function(block, **call_params, **({"mask": fg} if masked else {})))

            out = self._per_frame(filtered, arr, mask if masked else None, key, self._storage_of(key), reuse=True)
            record["masked"] = masked
        elif spec.kind == "video_filter":
            if self.storage is None:
                out, meta = function(self._whole(arr), **call_params)
                out = self._spilled(out, key)
            else:
                from .outofcore import video_step

                out, meta = video_step(spec.name, function, arr, call_params, self.storage, self.frames_per_block)
            record["metadata"] = meta
            if mask is not None and out.shape != arr.shape:
                # The frames moved or were cropped: the old mask no longer lines up with them.
                mask = None
                record["mask_cleared"] = True
        else:  # stack_edit
            if self.storage is None:
                out, kept = function(self._whole(arr), **call_params)
                out = self._spilled(out, key)
            else:
                from .outofcore import edit_step

                out, kept = edit_step(function, arr, call_params, self.storage, self.frames_per_block)
            self.backups.setdefault("frame_metadata_before_edit", [dict(f) for f in self.frames])
            self.frames = [self.frames[i] for i in kept]
            if mask is not None:
                if isinstance(mask, np.ndarray):
                    mask = mask[np.asarray(kept, dtype=np.intp)]
                else:
                    from .outofcore import take_frames

                    mask = take_frames(mask, kept, self.storage or self.spill, self.frames_per_block)
            record["kept_frames"] = list(kept)
        if self._let_go():
            assert self.working is not None
            del self.processed[self.working]  # read by this step and not kept: let it go
            record["dropped_input_layer"] = self.working
        self.processed[key] = out
        self.working = key
        record["processed_key"] = key
        record["output_summary"] = _summary(out)
        self.records.append(record)
        return out, mask

    def _commit(self, arr: Any) -> None:
        stack = self.stack
        provenance = stack.provenance if isinstance(stack.provenance, dict) else {}
        provenance["environment"] = environment_info()
        keys_by_name: dict[str, list[str]] = {}
        for record in self.records:
            key = record.get("processed_key") or record.get("mask_key")
            if key:
                keys_by_name.setdefault(str(record.get("name")), []).append(key)
        provenance["processing"] = {"steps": self.records, "keys_by_name": keys_by_name}
        provenance.setdefault("analysis", {})
        stack.data = arr
        stack.frame_metadata = self.frames
        stack.processed = self.processed
        stack.masks = self.masks
        stack.state_backups = self.backups
        stack.provenance = provenance
        if hasattr(stack, "validate"):
            stack.validate()


def _fraction(mask: Any) -> float:
    """Foreground fraction of a mask, counted block by block."""
    from .blocks import block_frames, iter_frame_blocks

    if isinstance(mask, np.ndarray):
        return float(mask.mean())
    hits = sum(int(np.count_nonzero(block)) for _, block in iter_frame_blocks(mask, block_frames(mask.shape, 1)))
    return hits / max(1, int(np.prod(mask.shape)))
