"""playNano-compatible NPZ bundles: written without pickles, read without executing pickles.

Layout (the keys playNano 0.5.0 writes and reads): ``data`` float32 (N, H, W), ``timestamps``
float64 (N,), ``pixel_size_nm``, ``channel``, ``frame_metadata_json``, ``provenance_json``,
``state_backups_json``, ``processed__<key>`` float32 and ``masks__<key>`` bool.

sciz writes every text as a plain 0-d unicode array (playNano's loader reads those too) and
deflates members on all cores with sciz's streaming ZIP writer (:mod:`sciz.formats._zipwriter`).
Reading decompresses members in parallel with libdeflate and takes text out of playNano's 0-d
object arrays with the restricted reader in :mod:`sciz.afm._safe_npy`; nothing is ever unpickled.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .._util import usable_cores
from ..atomic import atomic_file
from ..errors import FormatError, argument_error
from ..stack import ImageStack
from . import _plan
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
from ._plan import raw_deflate
from ._safe_npy import read_object_string

__all__ = ["NPZ_REQUIRED_KEYS", "load_npz_bundle", "read_npz_members", "save_npz_bundle"]

#: Members every bundle has (playNano's loader needs all but ``timestamps``).
NPZ_REQUIRED_KEYS = ("data", "pixel_size_nm", "channel", "frame_metadata_json", "provenance_json")
#: Windows of this size decide a member's deflate level; smaller members are written whole.
_WINDOW = 128 * 1024
#: What the planner chooses from, with the relative work per byte (measured speed ratios on AFM
#: data; fixed numbers keep the choice, and so the file, deterministic): libdeflate levels, and
#: zlib level 6 itself (what numpy writes, in primed parallel blocks) for data where libdeflate
#: cannot reach its size, such as digitised heights.
_ZLIB6 = "zlib-6"
_LEVEL_COST: dict[int | str, float] = {1: 1.0, 4: 2.0, 6: 3.0, 7: 5.0, _ZLIB6: 8.0}


def _npy_header(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(array)
    try:
        np.lib.format.write_array_header_1_0(buffer, header)
    except ValueError:  # header longer than 64 KiB: only version 2.0 can hold it
        buffer = io.BytesIO()
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


def _windows(flat: np.ndarray) -> list[np.ndarray]:
    # Four spread-out windows of a member decide its deflate setting.
    if flat.size <= 4 * _WINDOW:
        return [flat]
    step = (flat.size - _WINDOW) // 3
    return [flat[i * step : i * step + _WINDOW] for i in range(4)]


def _zlib6_size(sample: Any) -> int:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return len(compressor.compress(sample)) + len(compressor.flush())


def _estimate(array: np.ndarray) -> _plan.Estimate | None:
    flat = np.require(array, requirements="C").reshape(-1).view(np.uint8)
    if flat.size < 8 * _WINDOW:
        return None
    options = {
        level: (lambda sample, level=level: len(raw_deflate(sample, level)))
        for level in _LEVEL_COST
        if isinstance(level, int)
    }
    estimate = _plan.estimate_from(_windows(flat), flat.size, _zlib6_size, options)
    estimate.sizes[_ZLIB6] = estimate.reference  # zlib level 6 is the reference itself
    return estimate


def _write_member(writer: Any, name: str, array: np.ndarray, level: int | str, threads: int) -> None:
    from ..formats import _zipwriter as zw

    # np.ascontiguousarray would turn 0-d arrays into shape (1,).
    array = np.require(array, requirements="C")
    header = _npy_header(array)
    flat = array.reshape(-1).view(np.uint8)
    plan = zw.DeflatePlan(6) if level == _ZLIB6 else zw.plan_for_level(int(level))
    if flat.size < _WINDOW:
        writer.write_bytes(f"{name}.npy", header + flat.tobytes(), plan)
        return
    blocks = chain([header], zw.iterate_blocks(flat, zw.block_size_for(flat.size, threads)))
    writer.write_member(f"{name}.npy", blocks, len(header) + flat.size, plan)


def save_npz_bundle(
    path: str | os.PathLike[str], stack: Any, raw: bool = False, *, compression_level: int | None = None
) -> Path:
    """Save an AFM stack as a playNano-compatible ``.npz`` bundle (no pickles inside).

    Members go through sciz's streaming ZIP writer (:mod:`sciz.formats._zipwriter`), deflated by
    libdeflate in blocks on all cores. Each member's level is planned from samples
    (:mod:`sciz.afm._plan`) so that the whole bundle is about as small as zlib level 6 makes it
    (``numpy.savez_compressed``, playNano) for the least work: fast levels where they cost nothing,
    stronger ones where they pay.

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
    from ..formats import _zipwriter as zw

    if compression_level is not None and (
        isinstance(compression_level, bool) or not isinstance(compression_level, int) or not 0 <= compression_level <= 9
    ):
        raise argument_error("compression_level", compression_level, "must be None (automatic) or an int from 0 to 9")
    image_stack = as_image_stack(stack)
    target = target_path(path, (".npz",))
    data, frames = image_stack.export_view(raw)
    members: list[tuple[str, np.ndarray]] = [
        ("data", np.asarray(data, dtype=np.float32)),
        ("timestamps", stack_timestamps(frames)),
        # float64 keeps the calibration exact; playNano reads it with float() either way.
        ("pixel_size_nm", np.array(image_stack.pixel_size_nm, dtype=np.float64)),
        ("channel", np.array(image_stack.channel, dtype=np.str_)),
        ("frame_metadata_json", np.array(json_text(frames), dtype=np.str_)),
        ("provenance_json", np.array(json_text(image_stack.provenance), dtype=np.str_)),
        ("state_backups_json", np.array(json_text(image_stack.state_backups), dtype=np.str_)),
    ]
    if not (raw and "raw" in image_stack.processed):
        members += [(f"processed__{k}", np.asarray(v, dtype=np.float32)) for k, v in image_stack.processed.items()]
        members += [(f"masks__{k}", np.asarray(v, dtype=np.bool_)) for k, v in image_stack.masks.items()]
    threads = usable_cores()
    if compression_level is None:
        with ThreadPoolExecutor(threads) as pool:
            estimates = list(pool.map(_estimate, [array for _, array in members]))
        levels: list[int | str] = list(_plan.plan(estimates, _LEVEL_COST, 6))
    else:
        levels = [compression_level] * len(members)
    with atomic_file(target) as handle, zw.ZipStreamWriter(handle, threads=threads) as writer:
        for (name, array), level in zip(members, levels, strict=True):
            _write_member(writer, name, array, level, threads)
    return target


# ----- reading --------------------------------------------------------------------------------
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


def _member_bytes(handle: BinaryIO, archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """The uncompressed bytes of one member, CRC-checked; deflate runs in libdeflate (no GIL)."""
    where = f"{path}: member {info.filename!r}"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or not hasattr(os, "pread"):
        try:
            with archive.open(info) as member:
                return np.frombuffer(bytearray(member.read()), dtype=np.uint8)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
            raise FormatError(f"{where}: unreadable ({exc})") from None
    # os.pread: independent reads from several threads without sharing a file position.
    fd = handle.fileno()
    local = os.pread(fd, _LOCAL_HEADER.size, info.header_offset)
    if len(local) != _LOCAL_HEADER.size or local[:4] != b"PK\x03\x04":
        raise FormatError(f"{where}: bad local header (the file is damaged)")
    fields = _LOCAL_HEADER.unpack(local)
    start = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]
    compressed = os.pread(fd, info.compress_size, start)
    if len(compressed) != info.compress_size:
        raise FormatError(f"{where}: truncated ({len(compressed)} of {info.compress_size} bytes)")
    out = np.empty(info.file_size, dtype=np.uint8)
    if info.compress_type == zipfile.ZIP_STORED:
        out[:] = np.frombuffer(compressed, dtype=np.uint8)
    else:
        import imagecodecs

        try:
            imagecodecs.deflate_decode(compressed, out=out.data, raw=True)
        except Exception as exc:  # imagecodecs raises DeflateError, RuntimeError...
            raise FormatError(f"{where}: corrupt deflate data ({exc})") from None
    if zlib.crc32(out.data) != info.CRC:
        raise FormatError(f"{where}: CRC mismatch (the file is damaged)")
    return out


def _parse_npy(raw: np.ndarray, where: str) -> Any:
    try:
        if raw.size < 10 or raw[:6].tobytes() != b"\x93NUMPY":
            raise ValueError("no .npy magic")
        major = int(raw[6])
        if major == 1:
            end = 10 + int(struct.unpack("<H", raw[8:10].tobytes())[0])
        elif major in (2, 3):
            end = 12 + int(struct.unpack("<I", raw[8:12].tobytes())[0])
        else:
            raise ValueError(f"unsupported .npy version {major}")
        if end > raw.size:
            raise ValueError("header longer than the member")
        # Only the header is copied; the data stays a view of the decompressed buffer.
        stream = io.BytesIO(raw[:end].tobytes())
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    except (ValueError, SyntaxError, struct.error, EOFError) as exc:
        raise FormatError(f"{where}: not a valid .npy member ({exc})") from None
    offset = end
    body = raw[offset:]
    if dtype.hasobject:
        return read_object_string(body.tobytes(), where)
    count = int(np.prod(shape, dtype=np.int64))
    if body.size != count * dtype.itemsize:
        raise FormatError(f"{where}: {body.size} data bytes for shape {shape} of {dtype}")
    if dtype.itemsize == 0:
        return np.zeros(shape, dtype=dtype)
    array = body.view(dtype) if offset % dtype.alignment == 0 else body.copy().view(dtype)
    if fortran:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def read_npz_members(path: str | os.PathLike[str], names: list[str] | None = None) -> dict[str, Any]:
    """Every (or the named) member of an ``.npz`` file as arrays or, for object members, the one
    string they hold; decompressed in parallel and never unpickled."""
    source = Path(os.fspath(path))
    try:
        handle = source.open("rb")
    except OSError as exc:
        raise FormatError(f"cannot read {source}: {exc.strerror or exc}") from exc
    with handle:
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise FormatError(f"{source}: not a readable NPZ/ZIP file ({exc})") from None
        with archive:
            infos = {i.filename[:-4]: i for i in archive.infolist() if i.filename.endswith(".npy")}
            wanted = list(infos) if names is None else [n for n in names if n in infos]

            def load(key: str) -> Any:
                where = f"{source}: member {key!r}"
                return _parse_npy(_member_bytes(handle, archive, infos[key], source), where)

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
