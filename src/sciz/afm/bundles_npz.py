"""playNano-compatible NPZ bundles: written without pickles, read without executing pickles.

Layout (the keys playNano 0.5.0 writes and reads): ``data`` float32 (N, H, W), ``timestamps``
float64 (N,), ``pixel_size_nm``, ``channel``, ``frame_metadata_json``, ``provenance_json``,
``state_backups_json``, ``processed__<key>`` float32 and ``masks__<key>`` bool.

sciz writes every text as a plain 0-d unicode array (playNano's loader reads those too) and
deflates members on all cores with sciz's ZIP writer (:mod:`sciz.formats._zip`). Reading goes
through the same module's checked reader, members in parallel, and takes text out of playNano's
0-d object arrays with the streamed, bounded scan in :mod:`sciz.afm._safe_npy`; nothing is ever
unpickled.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._util import usable_cores
from ..atomic import atomic_file
from ..errors import FormatError, argument_error
from ..formats._zip import ZipReader, ZipStreamWriter
from ..formats.npz import read_npy_member, write_array_member
from ..processing.blocks import as_stack_array
from ..stack import ImageStack
from ._common import (
    as_image_stack,
    bundle_provenance,
    decode_text,
    frames_with_timestamps,
    json_text,
    parse_json,
    stack_timestamps,
    target_path,
)
from ._safe_npy import read_object_string

__all__ = ["NPZ_REQUIRED_KEYS", "load_npz_bundle", "read_npz_members", "save_npz_bundle"]

#: Members every bundle has (playNano's loader needs all but ``timestamps``).
NPZ_REQUIRED_KEYS = ("data", "pixel_size_nm", "channel", "frame_metadata_json", "provenance_json")


def save_npz_bundle(
    path: str | os.PathLike[str], stack: Any, raw: bool = False, *, compression_level: int | None = None
) -> Path:
    """Save an AFM stack as a playNano-compatible ``.npz`` bundle (no pickles inside).

    Members go through sciz's streaming ZIP writer (:mod:`sciz.formats._zip`), deflated in blocks
    on all cores. Each member's setting is chosen from samples (:func:`sciz.formats._deflate.choose_plan`)
    so that it is about as small as zlib level 6 makes it (``numpy.savez_compressed``, playNano) for
    the least work.

    Parameters
    ----------
    path
        Destination; ``.npz`` is appended when the name does not end with it.
    stack
        A :class:`~sciz.stack.ImageStack` (or a Dataset, array or playNano ``AFMImageStack``).
    raw
        Write the unprocessed ``processed['raw']`` snapshot (with the frame metadata from before
        any frame edit) and no layers or masks, instead of the current data with all layers.
    compression_level
        A fixed deflate level (0 stores, 1-9) instead of the per-member choice.

    Returns
    -------
    Path
        The file written.

    Example
    -------
    >>> save_npz_bundle("out/stack_filtered.npz", stack)  # doctest: +SKIP
    """
    if compression_level is not None and (
        isinstance(compression_level, bool) or not isinstance(compression_level, int) or not 0 <= compression_level <= 9
    ):
        raise argument_error("compression_level", compression_level, "must be None (automatic) or an int from 0 to 9")
    image_stack = as_image_stack(stack)
    target = target_path(path, (".npz",))
    data, frames = image_stack.export_view(raw)
    members: list[tuple[str, Any]] = [
        ("data", as_stack_array(data, np.float32)),
        ("timestamps", stack_timestamps(frames)),
        # float64 keeps the calibration exact; playNano reads it with float() either way.
        ("pixel_size_nm", np.array(image_stack.pixel_size_nm, dtype=np.float64)),
        ("channel", np.array(image_stack.channel, dtype=np.str_)),
        ("frame_metadata_json", np.array(json_text(frames), dtype=np.str_)),
        ("provenance_json", np.array(json_text(image_stack.provenance), dtype=np.str_)),
        ("state_backups_json", np.array(json_text(image_stack.state_backups), dtype=np.str_)),
    ]
    if not (raw and "raw" in image_stack.processed):
        members += [(f"processed__{k}", as_stack_array(v, np.float32)) for k, v in image_stack.processed.items()]
        members += [(f"masks__{k}", as_stack_array(v, np.bool_)) for k, v in image_stack.masks.items()]
    threads = usable_cores()
    with atomic_file(target) as handle, ZipStreamWriter(handle, threads=threads) as writer:
        for name, array in members:
            write_array_member(
                writer,
                f"{name}.npy",
                # np.ascontiguousarray would make 0-d arrays (1,); arrays on disk stream as they are.
                np.require(array, requirements="C") if isinstance(array, np.ndarray) else array,
                compress=compression_level != 0,
                level=compression_level,
                threads=threads,
            )
    return target


# ----- reading --------------------------------------------------------------------------------


def read_npz_members(path: str | os.PathLike[str], names: list[str] | None = None) -> dict[str, Any]:
    """Every (or the named) ``.npy`` member of an ``.npz`` file as arrays or, for object members, the
    one string they hold; read in parallel through sciz's ZIP reader and never unpickled."""
    with ZipReader(path) as archive:
        members = {m.name[:-4]: m for m in archive.members.values() if m.name.endswith(".npy")}
        wanted = list(members) if names is None else [n for n in names if n in members]

        def load(key: str) -> Any:
            return read_npy_member(archive, members[key], read_object_string)

        workers = min(len(wanted), usable_cores()) or 1
        with ThreadPoolExecutor(workers) as pool:
            values = list(pool.map(load, wanted))
    return dict(zip(wanted, values, strict=True))


def _text(value: Any, path: Path, key: str) -> str:
    if isinstance(value, np.ndarray):
        if value.shape != () or value.dtype.kind not in "US":
            raise FormatError(f"{path}: {key!r} must be a 0-d string, found {value.dtype} of shape {value.shape}")
        value = value[()]
    return decode_text(value)


def load_npz_bundle(path: str | os.PathLike[str], channel: str = "height_trace") -> ImageStack:
    """Load a playNano or sciz ``.npz`` bundle into an :class:`~sciz.stack.ImageStack`.

    Parameters
    ----------
    path
        The ``.npz`` file.
    channel
        Accepted for playNano compatibility; the bundle's own channel name is used.

    Raises
    ------
    FormatError
        If a required member is missing, a JSON blob is invalid, an object member holds anything
        but a plain string, or the archive is damaged.
    """
    if not isinstance(path, str | os.PathLike):
        raise argument_error("path", path, "must be a str or os.PathLike path")
    source = Path(os.fspath(path))
    members = read_npz_members(source)
    missing = [k for k in NPZ_REQUIRED_KEYS if k not in members]
    if missing:
        raise FormatError(f"{source}: not an AFM stack bundle; missing members {', '.join(missing)}")
    data = members["data"]
    if not isinstance(data, np.ndarray) or data.ndim != 3:
        raise FormatError(f"{source}: 'data' must be a (frames, H, W) array")
    pixel = members["pixel_size_nm"]
    if not isinstance(pixel, np.ndarray) or pixel.size != 1 or pixel.dtype.kind not in "fiu":
        raise FormatError(f"{source}: 'pixel_size_nm' must be a number")
    frames = parse_json(
        _text(members["frame_metadata_json"], source, "frame_metadata_json"), source, "frame_metadata_json"
    )
    provenance = parse_json(_text(members["provenance_json"], source, "provenance_json"), source, "provenance_json")
    state = {}
    if "state_backups_json" in members:
        state = parse_json(
            _text(members["state_backups_json"], source, "state_backups_json"), source, "state_backups_json"
        )
    frames = frames_with_timestamps(frames, members.get("timestamps"), data.shape[0], source)
    processed = {k[len("processed__") :]: v for k, v in members.items() if k.startswith("processed__")}
    masks = {k[len("masks__") :]: np.asarray(v, dtype=np.bool_) for k, v in members.items() if k.startswith("masks__")}
    try:
        return ImageStack(
            data,
            float(pixel.reshape(())),
            _text(members["channel"], source, "channel"),
            frames,
            processed=processed,
            masks=masks,
            provenance=bundle_provenance(provenance, source, "npz"),
            state_backups=state if isinstance(state, dict) else {},
            file_path=source,
        )
    except ValueError as exc:
        raise FormatError(f"{source}: inconsistent bundle ({exc})") from None
