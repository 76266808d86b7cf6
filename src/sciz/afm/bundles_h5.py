"""playNano-compatible HDF5 bundles, chunked and compressed (lossless by default, or a sciz codec).

Layout (what playNano 0.5.0 writes and reads): ``/data`` float32 (N, H, W), ``/processed/<key>``
float32, ``/masks/<key>`` bool (both groups always present), ``/timestamps`` float64 (NaN when
unknown), scalar UTF-8 JSON strings ``/frame_metadata_json``, ``/provenance_json`` and, when there
is something to keep, ``/state_backups_json``; root attributes ``pixel_size_nm`` (float64) and
``channel`` (str).

The default filter pipeline is HDF5's own (shuffle +) deflate, which every HDF5 reader (playNano's
plain h5py included) decodes. Per array, shuffle and the deflate level are planned from sample
chunks (:mod:`sciz.afm._plan`) so the file is no larger than h5py's gzip level 4 would make it;
shuffled arrays are chunked in 128 x 128 tiles a few frames deep, unshuffled ones in 32 x 32
tiles 16 frames deep. sciz fills the chunks itself: several threads compress them with libdeflate
and h5py writes the finished chunks directly, so the file is written on all cores instead of one;
reading decodes chunks on all cores the same way.

With ``codec=`` the float arrays go through that codec's registered HDF5 filter (hdf5plugin ids,
see ``sciz.codecs``), after the codec has checked that it keeps its bound. Through the lossy ones
(zfp, sz3, sperr) NaN/Inf never reach the filter: they are filled smoothly and kept exactly in a
uint8 mask under ``/sciz_masks/<path>`` (see :mod:`sciz.formats._hdf5`), and their chunks are read
back by sciz without running the filter on them.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._util import memory_budget, usable_cores
from .._version import __version__
from ..atomic import atomic_file
from ..errors import ArgumentError, FormatError, argument_error
from ..formats import _hdf5
from ..formats._base import require
from ..formats._guard import write_errors
from ..processing.blocks import as_stack_array
from ..stack import ImageStack
from . import _plan
from ._common import (
    as_image_stack,
    bundle_provenance,
    decode_text,
    dedupe,
    frames_with_timestamps,
    json_text,
    parse_json,
    source_path,
    stack_timestamps,
    target_path,
)
from ._plan import raw_deflate

__all__ = ["load_h5_bundle", "save_h5_bundle"]

#: libdeflate levels the planner picks from, with their relative work per byte (see sciz.afm._plan).
_LEVELS = (1, 4, 7)
_LEVEL_COST = {1: 1.0, 4: 2.0, 7: 5.0, 9: 6.0}
#: Chunk geometry. Shuffled arrays (float results): tiles of up to 128 x 128 pixels, as many
#: frames deep as fit in 256 KiB. Unshuffled arrays (digitised heights, masks): 32 x 32 tiles 16
#: frames deep, so deflate finds the values that repeat from frame to frame (measured on AFM data:
#: about 6 % smaller than h5py's automatic chunks at the same level).
_TILE, _CHUNK_BYTES = 128, 256 * 1024
_DEEP_TILE, _DEEP_FRAMES = 32, 16
#: Group holding the NaN/Inf masks of arrays written through a lossy filter (see sciz.formats._hdf5).
MASK_GROUP = "sciz_masks"


def _chunk_shape(shape: tuple[int, ...], itemsize: int, shuffle: bool = True) -> tuple[int, ...]:
    n, h, w = shape
    if not shuffle:
        return (max(1, min(n, _DEEP_FRAMES)), max(1, min(h, _DEEP_TILE)), max(1, min(w, _DEEP_TILE)))
    rows, cols = max(1, min(h, _TILE)), max(1, min(w, _TILE))
    depth = max(1, min(n, _CHUNK_BYTES // max(1, rows * cols * itemsize)))
    return (depth, rows, cols)


def _shuffled(raw: np.ndarray, itemsize: int) -> np.ndarray:
    # HDF5's shuffle filter: the first bytes of all elements, then all second bytes, ...
    return np.ascontiguousarray(raw.reshape(-1, itemsize).T) if itemsize > 1 else raw


def _gzip4_size(sample: Any) -> int:
    return len(zlib.compress(sample, 4))


def _samples(array: np.ndarray, chunks: tuple[int, ...], part: tuple[int, ...]) -> list[np.ndarray]:
    # The leading ``part`` of four chunks spread over the array, as bytes.
    origins = list(_hdf5.chunk_origins(array.shape, chunks))
    picks = [origins[round(i * (len(origins) - 1) / 3)] for i in range(4)]
    out = []
    for origin in picks:
        index = tuple(slice(o, o + c) for o, c in zip(origin, part, strict=True))
        out.append(np.ascontiguousarray(array[index]).reshape(-1).view(np.uint8))
    return out


def _estimate(array: np.ndarray, levels: tuple[int, ...]) -> _plan.Estimate | None:
    """Estimated sizes with each (shuffle, level), each in its own chunk geometry, and the reference:
    gzip level 4 without shuffle (h5py's default, what playNano writes) on the unshuffled chunks."""
    itemsize = array.dtype.itemsize
    if array.nbytes < 8 * _plan.SAMPLE_BYTES:
        return None
    plain_chunks = _chunk_shape(array.shape, itemsize, shuffle=False)
    plain = _samples(array, plain_chunks, plain_chunks)
    tile_chunks = _chunk_shape(array.shape, itemsize, shuffle=True)
    # A quarter of each tile (half its rows and columns) keeps the kind of data at a quarter of the work.
    tiles = _samples(array, tile_chunks, (tile_chunks[0], max(1, tile_chunks[1] // 2), max(1, tile_chunks[2] // 2)))
    plain_scale = array.nbytes / max(1, sum(s.size for s in plain))
    tile_scale = array.nbytes / max(1, sum(s.size for s in tiles))
    sizes: dict[Any, float] = {}
    for level in levels:
        sizes[(False, level)] = plain_scale * sum(len(raw_deflate(s, level, raw=False)) for s in plain)
        sizes[(True, level)] = tile_scale * sum(
            len(raw_deflate(_shuffled(s, itemsize), level, raw=False)) for s in tiles
        )
    return _plan.Estimate(plain_scale * sum(_gzip4_size(s) for s in plain), sizes)


def _write_lossless(
    group: Any, name: str, array: np.ndarray, option: tuple[bool, int], pool: ThreadPoolExecutor
) -> None:
    shuffle, level = option
    shuffle = shuffle and array.dtype.itemsize > 1
    chunks = _chunk_shape(array.shape, array.dtype.itemsize, shuffle)
    dataset = group.create_dataset(
        name,
        shape=array.shape,
        dtype=array.dtype,
        chunks=chunks,
        compression="gzip",
        compression_opts=level,
        shuffle=shuffle,
    )
    if array.size == 0:
        return
    _hdf5.write_deflate_chunks(dataset, _chunk_blocks(array, chunks), level=level, shuffle=shuffle, pool=pool)


def _contiguous(array: Any, dtype: Any) -> Any:
    converted = as_stack_array(array, dtype)
    return np.ascontiguousarray(converted) if isinstance(converted, np.ndarray) else converted


def _chunk_blocks(array: Any, chunks: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """``(origin, block)`` of every chunk in C order; an array on disk is read one chunk-deep and
    chunk-high band of rows at a time (the origins run frame-major, then row-major), not once per
    chunk, and not a whole chunk-deep slab of frames (16 MB for 512 x 512 frames, held twice while
    the chunks of the previous one are still being compressed)."""
    band: np.ndarray | None = None
    band_start: tuple[int, ...] = ()
    for origin in _hdf5.chunk_origins(array.shape, chunks):
        index = tuple(slice(o, o + c) for o, c in zip(origin, chunks, strict=True))
        if isinstance(array, np.ndarray) or len(origin) < 3:
            yield origin, np.asarray(array[index])
            continue
        if origin[:2] != band_start:
            band_start, band = origin[:2], np.asarray(array[index[:2]])
        assert band is not None
        yield origin, band[(slice(None), slice(None), *index[2:])]


def _resolve_codec(codec: Any, tolerance: float | None) -> Any:
    if codec is None:
        if tolerance is not None:
            raise argument_error("tolerance", tolerance, "needs a codec (e.g. codec='sz3'); the default is lossless")
        return None
    from .. import codecs as sciz_codecs

    if isinstance(codec, str):
        return sciz_codecs.get(codec) if tolerance is None else sciz_codecs.get(codec, tolerance=tolerance)
    if tolerance is not None:
        raise argument_error("tolerance", tolerance, "give it to the codec object, or pass the codec by name")
    if not hasattr(codec, "hdf5_filter"):
        raise argument_error("codec", codec, "must be a codec name (e.g. 'sz3', 'zfp') or a sciz codec object")
    return codec


def _write_with_codec(group: Any, name: str, array: np.ndarray, codec: Any) -> None:
    require("hdf5plugin", "hdf5")
    chunks = _chunk_shape(array.shape, array.dtype.itemsize)
    if codec.name == "auto":  # codec="auto": the filter that compresses this array best, in these chunks
        codec = codec.choose(array, hdf5=True, chunks=chunks, measure=_hdf5.filtered_size)
    if codec.spec.hdf5_filter_id in _hdf5.FILTER_CODECS:
        # NaN/Inf never reach the lossy filter; their mask lives outside /processed and /masks,
        # which playNano reads as layers and masks.
        writer = _hdf5.LossyDatasetWriter(
            group, name, array.shape, array.dtype, chunks, codec, array, mask_name=f"/{MASK_GROUP}/{name}"
        )
        writer.write_array(array)
        return
    options = codec.hdf5_filter(array)
    if options is None:
        raise ArgumentError(
            f"codec={codec.name!r} has no registered HDF5 filter; for HDF5 bundles use one that has "
            "(zfp, sz3, sperr or szip) or the lossless default (codec=None)"
        )
    dataset = group.create_dataset(name, data=array, chunks=chunks, **dict(options))
    dataset.attrs["sciz_codec"] = json.dumps(codec.get_config())


def _string_dataset(group: Any, name: str, text: str) -> None:
    import h5py

    encoded = text.encode("utf-8")
    # Fixed-length UTF-8: playNano decodes these with .decode("utf-8"), as it writes them.
    dtype = h5py.string_dtype("utf-8", max(1, len(encoded)))
    group.create_dataset(name, data=np.array(encoded, dtype=dtype))


def save_h5_bundle(
    path: str | os.PathLike[str],
    stack: Any,
    raw: bool = False,
    *,
    codec: Any = None,
    tolerance: float | None = None,
    compression_level: int | None = None,
) -> Path:
    """Save an AFM stack as a playNano-compatible, chunked and compressed ``.h5`` bundle.

    Parameters
    ----------
    path
        Destination; ``.h5`` is appended unless the name ends with ``.h5`` or ``.hdf5``.
    stack
        A :class:`~sciz.stack.ImageStack` (or a Dataset, array or playNano ``AFMImageStack``).
    raw
        Write the ``processed['raw']`` snapshot (and the frame metadata from before any frame
        edit) without layers or masks, instead of the current data with everything.
    codec
        ``None`` (default): lossless shuffle + deflate that every HDF5 reader decodes. Otherwise a
        codec name from :mod:`sciz.codecs` with a registered HDF5 filter (``zfp``, ``sz3``,
        ``sperr``, ``szip``) or such a codec object; it compresses the float arrays (data and
        processed layers) and keeps its bound; masks stay lossless; NaN/Inf are kept exactly (a
        mask in ``/sciz_masks``). Readers need hdf5plugin.
    tolerance
        Absolute error bound for a codec given by name.
    compression_level
        ``None`` (default): per array, shuffle on or off and the deflate level are planned from
        samples so the file is about as small as h5py's gzip level 4 (what playNano writes) for
        the least work. An int 1-9 fixes the level (shuffle is still chosen per array).

    Returns
    -------
    Path
        The file written.
    """
    h5py = require("h5py", "hdf5")
    if compression_level is not None and (
        isinstance(compression_level, bool) or not isinstance(compression_level, int) or not 1 <= compression_level <= 9
    ):
        raise argument_error("compression_level", compression_level, "must be None (automatic) or an int from 1 to 9")
    image_stack = as_image_stack(stack)
    chosen = _resolve_codec(codec, tolerance)
    target = target_path(path, (".h5", ".hdf5"))
    data, frames = image_stack.export_view(raw)
    entries: list[tuple[str, Any]] = [("data", _contiguous(data, np.float32))]
    if not (raw and "raw" in image_stack.processed):
        for key, layer in image_stack.processed.items():
            entries.append((f"processed/{key}", _contiguous(layer, np.float32)))
        for key, mask in image_stack.masks.items():
            entries.append((f"masks/{key}", _contiguous(mask, np.bool_)))
    # Equal arrays (the final data is usually a copy of the last layer) are stored once and
    # hard-linked: every HDF5 reader sees two ordinary datasets.
    unique, which = dedupe([array for _, array in entries])
    lossless = [j for j, array in enumerate(unique) if chosen is None or array.dtype.kind != "f"]
    levels = (compression_level,) if compression_level is not None else _LEVELS
    costs = {
        (shuffle, level): _LEVEL_COST.get(level, float(level)) + (0.15 if shuffle else 0.0)
        for shuffle in (False, True)
        for level in levels
    }
    workers = usable_cores()

    # h5py writes by name into atomic_file's temporary sibling, which is then fsynced and renamed.
    with (
        write_errors(target),
        atomic_file(target) as handle,
        ThreadPoolExecutor(workers, thread_name_prefix="sciz-h5") as pool,
        h5py.File(handle.name, "w") as f,
    ):
        estimates = list(pool.map(lambda j: _estimate(unique[j], levels), lossless))
        options = dict(
            zip(
                lossless,
                _plan.plan(estimates, costs, (True, levels[-1] if compression_level else 4)),
                strict=True,
            )
        )
        f.create_group("processed")
        f.create_group("masks")
        first_path: dict[int, str] = {}
        for (name, _), j in zip(entries, which, strict=True):
            if j in first_path:
                f[name] = f[first_path[j]]  # hard link to the same dataset
                continue
            first_path[j] = name
            if j in options:
                _write_lossless(f, name, unique[j], options[j], pool)
            else:
                _write_with_codec(f, name, unique[j], chosen)
        f.create_dataset("timestamps", data=stack_timestamps(frames))
        _string_dataset(f, "frame_metadata_json", json_text(frames))
        _string_dataset(f, "provenance_json", json_text(image_stack.provenance))
        if image_stack.state_backups:
            _string_dataset(f, "state_backups_json", json_text(image_stack.state_backups))
        f.attrs["pixel_size_nm"] = float(image_stack.pixel_size_nm)
        f.attrs["channel"] = image_stack.channel
        f.attrs["creator"] = f"sciz {__version__}"
    return target


# ----- reading --------------------------------------------------------------------------------
_TEXT_DATASETS = ("frame_metadata_json", "provenance_json", "state_backups_json")


def _read_array(source: Path, dataset: Any) -> np.ndarray:
    # The one HDF5 chunk reader: lossy-filter chunks are never run through the filter, deflate
    # chunks are decoded on all cores, and every read goes through this file's one open handle.
    return _hdf5.read_dataset(dataset, where=f"{source}: {dataset.name}")


def _read_text(f: Any, name: str, path: Path) -> str | None:
    dataset = _hdf5.get(f, name, str(path))
    if dataset is None:
        return None
    value = _hdf5.read_dataset(dataset, where=f"{path}: /{name}")[()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size == 1 else value
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    raise FormatError(f"{path}: {name!r} must be a scalar string dataset, found {type(value).__name__}")


def _attr_text(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    return decode_text(value)


def _read_group(f: Any, name: str, source: Path, read: Any) -> dict[str, np.ndarray]:
    import h5py

    group = _hdf5.get(f, name, str(source))
    if group is None:
        return {}
    if not isinstance(group, h5py.Group):
        raise FormatError(f"{source}: /{name} must be a group of (frames, H, W) datasets, found a dataset")
    out = {}
    for key, dataset in _hdf5.items(group, str(source)):
        if not isinstance(dataset, h5py.Dataset):
            raise FormatError(f"{source}: /{name}/{key} must be a (frames, H, W) dataset, found a group")
        out[key] = read(dataset)
    return out


def _read_bundle(f: Any, source: Path, channel: str) -> tuple[Any, ...]:
    """Every array and text of an open bundle (the caller wraps h5py's errors)."""
    import h5py

    where = str(source)
    data_set = _hdf5.get(f, "data", where)
    if not isinstance(data_set, h5py.Dataset):
        raise FormatError(f"{source}: not an AFM stack bundle (no /data dataset)")
    if "pixel_size_nm" not in f.attrs:
        raise FormatError(f"{source}: not an AFM stack bundle (no pixel_size_nm attribute)")
    data = _read_array(source, data_set)
    if data.ndim != 3:
        raise FormatError(f"{source}: /data must be (frames, H, W), found shape {data.shape}")
    # Hard-linked datasets (equal layers) are read once.
    seen: dict[Any, np.ndarray] = {data_set.id: data}

    def read(dataset: Any) -> np.ndarray:
        if dataset.id in seen:  # a copy, so the layers stay independent arrays
            if seen[dataset.id].nbytes > memory_budget():  # e.g. thousands of links to one big dataset
                raise FormatError(f"{source}: {dataset.name} is another name of an array that no longer fits in memory")
            return seen[dataset.id].copy()
        seen[dataset.id] = _read_array(source, dataset)
        return seen[dataset.id]

    processed = _read_group(f, "processed", source, read)
    masks = {k: v.astype(np.bool_, copy=False) for k, v in _read_group(f, "masks", source, read).items()}
    stamps = _hdf5.get(f, "timestamps", where)
    timestamps = None if stamps is None else _hdf5.read_dataset(stamps, where=f"{source}: /timestamps")
    texts = {name: _read_text(f, name, source) for name in _TEXT_DATASETS}
    pixel_size = float(np.asarray(f.attrs["pixel_size_nm"]).reshape(-1)[0])
    name = _attr_text(f.attrs["channel"]) if "channel" in f.attrs else channel
    return data, processed, masks, timestamps, texts, pixel_size, name


def load_h5_bundle(path: str | os.PathLike[str], channel: str = "height_trace") -> ImageStack:
    """Load a playNano or sciz ``.h5`` bundle into an :class:`~sciz.stack.ImageStack`.

    Parameters
    ----------
    path
        The HDF5 file.
    channel
        Used only when the file has no ``channel`` attribute (playNano accepts and ignores it).

    Raises
    ------
    FormatError
        If the file is unreadable or damaged, ``/data`` or ``pixel_size_nm`` is missing, or a JSON
        blob is invalid.
    """
    source = source_path(path)
    try:
        with _hdf5.open_file(source) as f:
            data, processed, masks, timestamps, texts, pixel_size, name = _read_bundle(f, source, channel)
    except FormatError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise FormatError(f"{source}: unreadable HDF5 bundle ({type(exc).__name__}: {exc})") from None
    except RecursionError:
        raise FormatError(f"{source}: unreadable HDF5 bundle (its structure nests too deeply)") from None
    frames = (
        None
        if texts["frame_metadata_json"] is None
        else parse_json(texts["frame_metadata_json"], source, "frame_metadata_json")
    )
    provenance = (
        None if texts["provenance_json"] is None else parse_json(texts["provenance_json"], source, "provenance_json")
    )
    state = (
        {}
        if texts["state_backups_json"] is None
        else parse_json(texts["state_backups_json"], source, "state_backups_json")
    )
    frames = frames_with_timestamps(frames, timestamps, data.shape[0], source)
    try:
        return ImageStack(
            data,
            pixel_size,
            name,
            frames,
            processed=processed,
            masks=masks,
            provenance=bundle_provenance(provenance, source, "h5"),
            state_backups=state if isinstance(state, dict) else {},
            file_path=source,
        )
    except ValueError as exc:
        raise FormatError(f"{source}: inconsistent bundle ({exc})") from None
