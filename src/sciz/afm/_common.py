"""Helpers shared by the AFM bundle readers and writers: stack coercion, paths, playNano-style JSON."""

from __future__ import annotations

import copy
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, argument_error
from ..metadata import decode_text, plain_json
from ..model import Dataset
from ..stack import ImageStack

__all__ = [
    "as_image_stack",
    "bundle_provenance",
    "decode_text",
    "dedupe",
    "frames_with_timestamps",
    "json_text",
    "parse_json",
    "sanitize_name",
    "target_path",
]

_STACK_FIELDS = ("data", "pixel_size_nm", "channel", "frame_metadata")


def as_image_stack(value: Any, name: str = "stack") -> ImageStack:
    """``value`` as an :class:`ImageStack`: an ImageStack, a Dataset, a 2-D/3-D array, or any object
    with playNano's ``AFMImageStack`` attributes (data, pixel_size_nm, channel, frame_metadata, ...)."""
    if isinstance(value, ImageStack):
        value.validate()
        return value
    if isinstance(value, Dataset):
        return ImageStack.from_dataset(value)
    if all(hasattr(value, attr) for attr in _STACK_FIELDS):
        file_path = getattr(value, "file_path", None)
        return ImageStack(
            np.asarray(value.data),
            float(value.pixel_size_nm),
            str(value.channel),
            value.frame_metadata,
            processed={k: np.asarray(v) for k, v in (getattr(value, "processed", None) or {}).items()},
            masks={k: np.asarray(v) for k, v in (getattr(value, "masks", None) or {}).items()},
            provenance=getattr(value, "provenance", None),
            state_backups=getattr(value, "state_backups", None),
            file_path=os.fspath(file_path) if file_path else None,
        )
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        return ImageStack(np.asarray(value))
    raise argument_error(
        name, value, "must be a sciz ImageStack, a Dataset, a (frames, H, W) array or a playNano AFMImageStack"
    )


def source_path(path: Any, name: str = "path") -> Path:
    """``path`` as the Path of an existing file, or an error naming the argument / a FileNotFoundError."""
    if not isinstance(path, str | os.PathLike):
        raise argument_error(name, path, "must be a str or os.PathLike path")
    source = Path(os.fspath(path)).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"no such file: {source}")
    return source


def target_path(path: Any, suffixes: tuple[str, ...], name: str = "path") -> Path:
    """``path`` as a Path ending in one of ``suffixes`` (the first is appended when none matches)."""
    if not isinstance(path, str | os.PathLike):
        raise argument_error(name, path, "must be a str or os.PathLike path")
    target = Path(os.fspath(path)).expanduser()
    if not target.name:
        raise argument_error(name, path, "must name a file")
    if not target.name.lower().endswith(suffixes):
        target = target.with_name(target.name + suffixes[0])
    return target


_UNSAFE = re.compile(r"[^\w.\-]+")


def sanitize_name(name: str | None, fallback: str) -> str:
    """A file stem without directory parts or characters that are unsafe in file names."""
    text = fallback if name is None or not str(name).strip() else str(name).strip()
    text = Path(text).name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".npz", ".hdf5", ".h5", ".gif"):
        if text.lower().endswith(suffix):
            text = text[: -len(suffix)]
            break
    text = _UNSAFE.sub("_", text).strip("._")
    return text or fallback


def json_text(value: Any) -> str:
    """Plain JSON text that playNano's ``json.loads`` reads (NaN kept as Python's JSON does)."""
    return plain_json(value)


def parse_json(text: Any, path: Path, key: str) -> Any:
    """Decode one JSON blob of a bundle; a clear FormatError names the file and the key."""
    if isinstance(text, np.ndarray):
        text = text[()]
    if isinstance(text, bytes | bytearray | np.bytes_):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{path}: {key!r} is not UTF-8 text ({exc})") from None
    if not isinstance(text, str):
        raise FormatError(f"{path}: {key!r} holds a {type(text).__name__}, expected JSON text")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{path}: {key!r} is not valid JSON ({exc})") from None


def frames_with_timestamps(frames: Any, timestamps: Any, n_frames: int, path: Path) -> list[dict[str, Any]]:
    """Frame metadata of a bundle, checked against the frame count; missing timestamps are taken
    from the bundle's ``timestamps`` array when it has them."""
    if frames is None:
        frames = [{} for _ in range(n_frames)]
    if not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
        raise FormatError(f"{path}: frame metadata must be a JSON list of objects")
    if len(frames) != n_frames:
        raise FormatError(f"{path}: frame metadata has {len(frames)} entries for {n_frames} frames")
    if timestamps is not None:
        times = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if times.size == n_frames:
            for frame, time in zip(frames, times, strict=True):
                if frame.get("timestamp") is None and math.isfinite(time):
                    frame["timestamp"] = float(time)
    return frames


def bundle_provenance(provenance: Any, path: Path, bundle_type: str) -> dict[str, Any]:
    """The stored provenance with ``bundle: {bundle_file, bundle_type}`` added, as playNano's loaders do."""
    if provenance is None:
        provenance = {}
    if not isinstance(provenance, dict):
        raise FormatError(f"{path}: provenance must be a JSON object, found {type(provenance).__name__}")
    out = copy.deepcopy(provenance)
    bundle = out.get("bundle")
    if not isinstance(bundle, dict):
        bundle = {}
    bundle.update(bundle_file=str(path), bundle_type=bundle_type)
    out["bundle"] = bundle
    return out


def dedupe(arrays: list[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
    """The distinct arrays (by identity or equal shape, dtype and values) and, per input, its index
    among them: bundles store equal layers once (the final data is usually a copy of the last layer)."""
    unique: list[np.ndarray] = []
    which: list[int] = []
    for array in arrays:
        found = next((j for j, u in enumerate(unique) if _same(u, array)), None)
        if found is None:
            unique.append(array)
            found = len(unique) - 1
        which.append(found)
    return unique, which


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return False  # arrays on disk or lazy: equal only when they are the same object
    if a.shape != b.shape or a.dtype != b.dtype or a.ndim == 0:
        return False
    # Frame block by frame block: different arrays usually differ in the first block, and equal ones
    # are compared without whole-array temporaries (a stack-sized bool array per comparison).
    step = max(1, (1 << 22) // max(1, a[0].nbytes))
    equal_nan = a.dtype.kind == "f"
    return all(
        np.array_equal(a[start : start + step], b[start : start + step], equal_nan=equal_nan)
        for start in range(0, a.shape[0], step)
    )


def stack_timestamps(frames: list[dict[str, Any]]) -> np.ndarray:
    """Per-frame timestamps (float64, NaN where unknown) of an export's frame metadata."""
    values = [f.get("timestamp") for f in frames]
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
