"""NumPy ``.npz`` archives: exact, pickle-free dictionaries of arrays and metadata, and the NPZ format.

Layout written by sciz (every member is a plain ``.npy`` file, so ``np.load(path)`` reads it all):

- arrays are members named after their key;
- simple scalars (``bool``, ``int``, ``float``, ``complex``, ``str``, numpy scalars) are 0-d arrays,
  so ``np.load(p)['x_length']`` works;
- anything else (nested dicts, lists, tuples, ``None``, datetimes, bytes...) is a 0-d string array
  holding :func:`sciz.metadata.encode` JSON;
- a last member ``__sciz__`` holds a JSON manifest with the kind of every entry (so a Python ``float``
  comes back as ``float`` and a ``np.float32`` as ``np.float32``) and, for a saved
  :class:`~sciz.model.Dataset`, its axes, provenance and name.

Reading never unpickles: object arrays are refused with an error naming the member. Files from other
tools (``np.savez``, the TrueMapData exporter with its JSON-string ``metadata`` member) are read too.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from .._util import usable_cores
from ..atomic import atomic_file
from ..errors import ArgumentError, FormatError, argument_error
from ..metadata import decode, encode
from ..model import Axis, Dataset, StoredArray, is_array
from ._base import Format, zip_member_names
from ._deflate import STORED, choose_plan, plan_for_level
from ._guard import check_declared_size
from ._zip import (
    MemberStream,
    ZipMember,
    ZipReader,
    ZipStreamWriter,
    block_size_for,
    zip_name_problem,
)
from .npy import header_length, parse_header

__all__ = ["MANIFEST_KEY", "NpzContents", "NpzFormat", "read_npy_member", "read_npz", "write_array_member", "write_npz"]

#: The member holding sciz's manifest (JSON text in a 0-d string array).
MANIFEST_KEY = "__sciz__"
_FORMAT_TAG = "sciz-npz"
_FORMAT_VERSION = 1
_SCALAR_KINDS = {"bool": bool, "int": int, "float": float, "complex": complex, "str": str}
_KINDS = {"array", "npscalar", "json", "bytes", *_SCALAR_KINDS}
_INT64 = np.iinfo(np.int64)
#: Small samples decide the deflate setting; this share of a member is enough and costs little.
_SAMPLE_SHARE = 32
_SAMPLE_WINDOW, _SAMPLE_MAX = 512 * 1024, 2 * 1024 * 1024


# ----------------------------------------------------------------------------------------------- writing


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or "\x00" in key:
        raise argument_error("key", key, "NPZ keys must be non-empty str without NUL characters")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise argument_error("key", key, "NPZ keys are file names in the archive and must be valid UTF-8") from None
    if key == MANIFEST_KEY:
        raise argument_error("key", key, f"{MANIFEST_KEY!r} is reserved for sciz's manifest")
    return key


def member_name(key: str) -> str:
    """The ``.npy`` member that holds ``key``: the key itself where it is a safe relative path, else
    with ``/``, ``\\`` and ``:`` percent-escaped (``%`` is always escaped, so names never collide)."""
    text = key.replace("%", "%25")
    if zip_name_problem(f"{text}.npy") is None:
        return f"{text}.npy"
    return text.replace("/", "%2F").replace("\\", "%5C").replace(":", "%3A") + ".npy"


def _entry(key: str, value: Any) -> tuple[str, Any]:
    """The kind of ``value`` and the array that stores it."""
    if isinstance(value, np.ndarray) or (is_array(value) and not isinstance(value, np.generic)):
        if np.dtype(value.dtype).hasobject:
            raise argument_error(
                f"data[{key!r}]",
                f"<array of dtype {value.dtype}>",
                "object arrays would need pickle; convert them to numeric or string arrays",
            )
        return "array", value
    kind = type(value)
    if kind is bool:
        return "bool", np.array(value, dtype=np.bool_)
    if kind is int and _INT64.min <= value <= _INT64.max:
        return "int", np.array(value, dtype=np.int64)
    if kind is float:
        return "float", np.array(value, dtype=np.float64)
    if kind is complex:
        return "complex", np.array(value, dtype=np.complex128)
    if kind is str and not value.endswith("\x00"):
        # numpy strips trailing NULs from strings; those go through JSON instead.
        return "str", np.array(value, dtype=f"<U{max(len(value), 1)}")
    if (
        isinstance(value, np.generic)
        and not value.dtype.hasobject
        and not (value.dtype.kind in "SU" and bytes(value.tobytes()).endswith(b"\x00"))
    ):
        return "npscalar", np.array(value)
    try:
        text = encode(value)
    except ArgumentError as exc:
        raise ArgumentError(f"data[{key!r}]: {exc}") from None
    return "json", np.array(text, dtype=f"<U{max(len(text), 1)}")


def _npy_header(dtype: np.dtype, shape: tuple[int, ...], fortran_order: bool) -> bytes:
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran_order, "shape": shape}
    buffer = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buffer, header)
    except ValueError:  # a header over 64 KiB (huge structured dtypes) needs format 2.0
        buffer = io.BytesIO()
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


def _flat_bytes(array: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """A uint8 view of the array's memory and whether it is in Fortran order (None: not contiguous)."""
    if array.flags.c_contiguous:
        return array.reshape(-1).view(np.uint8), False
    if array.flags.f_contiguous:
        return array.T.reshape(-1).view(np.uint8), True
    return None, False


def _windows(flat: np.ndarray) -> list[np.ndarray]:
    """Evenly spread windows of a member that decide its deflate setting.

    Windows are 512 KiB: smaller ones hide what thorough match finding gains over long distances,
    and then the size of a setting is misjudged (128 KiB windows put zlib-ng 7 at +1.8 % against
    zlib 6 on an int16 AFM stack that it compresses to +1.2 %).
    """
    size = flat.size
    if size <= 2 * _SAMPLE_WINDOW:
        return [flat]
    count = max(1, min(_SAMPLE_MAX // _SAMPLE_WINDOW, size // (_SAMPLE_SHARE * _SAMPLE_WINDOW)))
    if count == 1:
        start = (size - _SAMPLE_WINDOW) // 2
        return [flat[start : start + _SAMPLE_WINDOW]]
    starts = [i * (size - _SAMPLE_WINDOW) // (count - 1) for i in range(count)]
    return [flat[start : start + _SAMPLE_WINDOW] for start in starts]


def _strided_blocks(array: np.ndarray, block: int) -> Iterator[bytes]:
    # Not contiguous: copy block by block in C order (what np.save does, in smaller pieces).
    count = max(1, block // max(array.itemsize, 1))
    pieces: Any = np.nditer(array, flags=["external_loop", "buffered", "zerosize_ok"], buffersize=count, order="C")
    for piece in pieces:
        yield piece.tobytes("C")


def _lazy_blocks(array: Any, block: int) -> Iterator[Any]:
    # Dask and other lazy arrays: materialise slabs along the first axis, one at a time.
    if array.ndim == 0:
        yield np.ascontiguousarray(np.asarray(array)).reshape(-1).view(np.uint8)
        return
    row = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * np.dtype(array.dtype).itemsize)
    step = max(1, block // row)
    for start in range(0, int(array.shape[0]), step):
        slab = np.ascontiguousarray(np.asarray(array[start : start + step]))
        yield slab.reshape(-1).view(np.uint8)


def write_array_member(
    archive: ZipStreamWriter, name: str, array: Any, *, compress: bool, level: int | None, threads: int
) -> None:
    """Write ``array`` (numpy or lazy) as the ``.npy`` member ``name``: stored, at zlib ``level``, or
    (``level`` None) with the setting :func:`~sciz.formats._deflate.choose_plan` picks from samples."""
    dtype = np.dtype(array.dtype)
    shape = tuple(int(n) for n in array.shape)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    block = block_size_for(size, threads)
    samples: list[Any]
    flat: np.ndarray | None = None
    if isinstance(array, np.ndarray):
        flat, fortran = _flat_bytes(array)
        header = _npy_header(dtype, shape, fortran)
        if flat is not None:
            blocks: Iterator[Any] = (flat[start : start + block] for start in range(0, flat.size, block))
            samples = _windows(flat) if compress and level is None else []
        else:
            blocks = _strided_blocks(array, block)
            first: Any = next(blocks, b"")
            samples = [first]
            blocks = chain([first], blocks)
    else:
        header = _npy_header(dtype, shape, False)
        blocks = _lazy_blocks(array, block)
        first = next(blocks, b"")
        samples = [first]
        blocks = chain([first], blocks)
    if not compress:
        plan = STORED
    elif level is not None:
        plan = plan_for_level(level)
    else:
        plan = choose_plan(samples, len(header) + size, threads, whole=flat is not None)
    if plan.whole and flat is not None:
        blocks = iter([flat])  # one libdeflate call over the array's own memory
    archive.write_member(name, chain([header], blocks), len(header) + size, plan)


def _check_level(level: Any) -> int | None:
    if level is None:
        return None
    if isinstance(level, bool) or not isinstance(level, int | np.integer) or not 0 <= level <= 9:
        raise argument_error("level", level, "must be None (choose per member) or an int from 0 (store) to 9")
    return int(level)


def write_npz(
    path: str | os.PathLike[str],
    entries: Mapping[str, Any],
    *,
    compress: bool = True,
    level: int | None = None,
    threads: int | None = None,
    dataset: Mapping[str, Any] | None = None,
    force_zip64: bool = False,
) -> Path:
    """Write ``entries`` (arrays and metadata values) to an NPZ archive atomically.

    Parameters
    ----------
    path
        The file to write; parent directories are created.
    entries
        Keys (non-empty str) to arrays or metadata values; see the module docstring for the layout.
    compress
        Deflate members (``np.load`` reads both); ``False`` stores them.
    level
        ``None`` picks the fastest setting that keeps level 6's size per member (stored when deflate
        cannot shrink it); ``0``-``9`` forces that deflate level (zlib-ng; 0 stores).
    threads
        Threads that deflate in parallel (``None``: all cores this process may use).
    dataset
        Extra information kept in the manifest (used by :class:`NpzFormat` for axes and provenance).
    force_zip64
        Write ZIP64 records even for small files.

    Returns
    -------
    Path
        The path written.
    """
    if not isinstance(entries, Mapping):
        raise argument_error("data", entries, "must be a dict of arrays and metadata values")
    if not isinstance(compress, bool | np.bool_):
        raise argument_error("compress", compress, "must be True or False")
    level = _check_level(level)
    prepared = {_check_key(key): _entry(key, value) for key, value in entries.items()}
    manifest: dict[str, Any] = {
        "format": _FORMAT_TAG,
        "version": _FORMAT_VERSION,
        "entries": [[key, kind] for key, (kind, _array) in prepared.items()],
    }
    if dataset is not None:
        manifest["dataset"] = dict(dataset)
    manifest_text = encode(manifest)
    workers = usable_cores() if threads is None else threads
    with atomic_file(path) as handle, ZipStreamWriter(handle, threads=workers, force_zip64=force_zip64) as archive:
        for key, (_kind, array) in prepared.items():
            write_array_member(archive, member_name(key), array, compress=bool(compress), level=level, threads=workers)
        write_array_member(
            archive,
            f"{MANIFEST_KEY}.npy",
            np.array(manifest_text, dtype=f"<U{max(len(manifest_text), 1)}"),
            compress=bool(compress),
            level=6 if compress else 0,
            threads=workers,
        )
    return Path(os.fspath(path))


# ----------------------------------------------------------------------------------------------- reading


@dataclass
class NpzContents:
    """What :func:`read_npz` found: the entries, sciz's manifest (if any) and how each member is stored."""

    entries: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None
    storage: dict[str, StoredArray] = field(default_factory=dict)


def _member_error(path: Path, member: str, problem: str) -> FormatError:
    return FormatError(f"{path}: member {member!r}: {problem}")


def _refuse_object(stream: MemberStream, where: str) -> Any:
    raise FormatError(
        f"{where}: holds an object array stored with pickle; sciz never unpickles (it could run code). "
        "Re-save it with numeric or string dtypes"
    )


def read_npy_member(
    reader: ZipReader, member: ZipMember, on_object: Callable[[MemberStream, str], Any] = _refuse_object
) -> Any:
    """One ``.npy`` member as an array, its header and sizes checked before anything is allocated.

    Object arrays (pickles) go to ``on_object`` with the member's stream (by default they are refused);
    nothing is ever unpickled.
    """
    where = f"{reader.path}: member {member.name!r}"
    with reader.open(member) as stream:
        prefix = stream.read(12)
        total = header_length(prefix, where, member.size)
        shape, fortran, dtype, nbytes = parse_header(prefix[:total] + stream.read(max(0, total - len(prefix))), where)
        if dtype.hasobject:
            return on_object(stream, where)
        if nbytes != stream.remaining:
            raise FormatError(f"{where}: {stream.remaining} data bytes for a {dtype} array of shape {shape} ({nbytes})")
        check_declared_size(nbytes, where)
        out = np.empty(shape[::-1] if fortran else shape, dtype=dtype)  # C order; transposed for Fortran
        if nbytes:
            stream.readinto(out.reshape(-1).view(np.uint8))
    return out.T if fortran else out


def _storage(member: ZipMember) -> StoredArray:
    return StoredArray(codec="none" if member.stored else "deflate", stored_bytes=int(member.compressed_size))


def _decode_entry(path: Path, key: str, kind: str, value: Any) -> Any:
    if kind in ("array", "bytes"):
        return value
    if not isinstance(value, np.ndarray) or value.ndim != 0:
        raise _member_error(path, key, f"the manifest says {kind} but the member is not a 0-d array")
    if kind == "npscalar":
        return value[()]
    if kind == "json":
        if value.dtype.kind != "U":
            raise _member_error(path, key, f"the manifest says JSON text but the member is {value.dtype}")
        try:
            return decode(str(value[()]))
        except FormatError as exc:
            raise _member_error(path, key, str(exc)) from None
    expected = _SCALAR_KINDS[kind]
    allowed = {"bool": "b", "int": "iu", "float": "f", "complex": "c", "str": "U"}[kind]
    if value.dtype.kind not in allowed:
        raise _member_error(path, key, f"the manifest says {kind} but the member is {value.dtype}")
    return expected(value[()])


def _parse_manifest(path: Path, value: Any) -> dict[str, Any] | None:
    if not isinstance(value, np.ndarray) or value.ndim != 0 or value.dtype.kind != "U":
        return None
    try:
        manifest = decode(str(value[()]))
    except FormatError as exc:
        raise _member_error(path, MANIFEST_KEY, f"unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT_TAG:
        return None
    version = manifest.get("version")
    if not isinstance(version, int) or version > _FORMAT_VERSION:
        raise _member_error(path, MANIFEST_KEY, f"manifest version {version!r} is newer than this sciz reads")
    entries = manifest.get("entries")
    if not isinstance(entries, list) or not all(
        isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and item[1] in _KINDS for item in entries
    ):
        raise _member_error(path, MANIFEST_KEY, "malformed manifest: 'entries' must list [key, kind] pairs")
    return manifest


def read_npz(path: str | os.PathLike[str]) -> NpzContents:
    """Read every entry of an NPZ archive without unpickling anything.

    Files written by sciz come back exactly (types included). Other NPZ files give their arrays; a
    0-d string member ``metadata`` holding a JSON object (the TrueMapData exporter's layout) is decoded
    and its keys are added to the entries (arrays win on a name clash). Object arrays raise
    :class:`~sciz.errors.FormatError` naming the member.
    """
    raw: dict[str, Any] = {}
    contents = NpzContents()
    with ZipReader(path) as archive:
        source = archive.path
        for member in archive.members.values():
            if member.is_dir:
                continue
            key = member.name[: -len(".npy")] if member.name.endswith(".npy") else member.name
            if key in raw:
                raise _member_error(source, member.name, f"a second member for the key {key!r}")
            raw[key] = read_npy_member(archive, member) if member.name.endswith(".npy") else archive.read(member)
            contents.storage[key] = _storage(member)
    manifest = _parse_manifest(source, raw.pop(MANIFEST_KEY)) if MANIFEST_KEY in raw else None
    contents.storage.pop(MANIFEST_KEY, None)
    if manifest is not None:
        contents.manifest = manifest
        for key, kind in manifest["entries"]:
            if key not in raw and member_name(key)[: -len(".npy")] not in raw:
                raise _member_error(source, key, "listed in the manifest but missing from the archive")
            stored = member_name(key)[: -len(".npy")]
            contents.entries[key] = _decode_entry(source, key, kind, raw.pop(stored if stored in raw else key))
        contents.entries.update(raw)  # members added by other tools after sciz wrote the file
        return contents
    contents.entries = raw
    _merge_json_metadata(contents.entries)
    return contents


def _merge_json_metadata(entries: dict[str, Any]) -> None:
    value = entries.get("metadata")
    if not isinstance(value, np.ndarray) or value.ndim != 0 or value.dtype.kind != "U":
        return
    try:
        decoded = decode(str(value[()]))
    except FormatError:
        return  # a plain string that happens to be called metadata
    if not isinstance(decoded, dict):
        return
    del entries["metadata"]
    for key, item in decoded.items():
        entries.setdefault(str(key), item)


# ----------------------------------------------------------------------------------------------- format


def _real(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    number = float(value)
    return number if np.isfinite(number) else None


def _axes_from_lengths(shape: tuple[int, ...], metadata: Mapping[str, Any]) -> list[Axis]:
    # Height-map dictionaries (the seeds' layout) carry x_length/y_length instead of axes.
    x_length, y_length = _real(metadata.get("x_length")), _real(metadata.get("y_length"))
    if len(shape) != 2 or x_length is None or y_length is None:
        return []
    units = metadata.get("units", "")
    units = units if isinstance(units, str) else ""
    rows, cols = shape
    return [
        Axis("y", units, y_length / max(rows, 1), _real(metadata.get("y_offset")) or 0.0),
        Axis("x", units, x_length / max(cols, 1), _real(metadata.get("x_offset")) or 0.0),
    ]


class NpzFormat(Format):
    """NumPy ``.npz``: a ZIP of ``.npy`` members; sciz keeps layers, masks, axes, metadata, provenance.

    Read options: none. Write options: ``compress`` (default True), ``level`` (None or 0-9),
    ``threads``.
    """

    name = "npz"
    description = "NumPy .npz archive (sciz keeps layers, masks, axes, metadata and provenance)"
    extensions = (".npz",)
    magic = (b"PK\x03\x04", b"PK\x05\x06")

    def sniff(self, path: Path, head: bytes) -> bool:
        if not super().sniff(path, head):
            return False
        names = zip_member_names(path)
        if names is None:
            return False
        if not names:
            return self.matches_extension(path) > 0
        return all(n.endswith((".npy", "/")) for n in names)

    def read(self, path: Path, **options: Any) -> Dataset:
        _no_options("reading", self.name, options, ())
        contents = read_npz(path)
        entries = contents.entries
        info = (contents.manifest or {}).get("dataset")
        if isinstance(info, dict):
            return self._dataset_from_manifest(path, contents, info)
        arrays = {k: v for k, v in entries.items() if isinstance(v, np.ndarray) and v.ndim > 0}
        if not arrays:
            raise FormatError(f"{path}: the archive holds no array to use as data (entries: {sorted(entries)})")
        primary = next((k for k in ("height_map", "data") if k in arrays), max(arrays, key=lambda k: arrays[k].size))
        metadata = {k: v for k, v in entries.items() if k not in arrays}
        layers: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        placement = {primary: "data"}
        for key, value in arrays.items():
            if key == primary:
                continue
            if key.startswith("masks/") and value.dtype == np.bool_:
                name = key.split("/", 1)[1].replace("/", "_")
                masks[name] = value
                placement[key] = f"masks/{name}"
            else:
                name = key.removeprefix("layers/").replace("/", "_")
                layers[name] = value
                placement[key] = f"layers/{name}"
        dataset = Dataset(
            arrays[primary],
            axes=_axes_from_lengths(arrays[primary].shape, metadata),
            layers=layers,
            masks=masks,
            metadata=metadata,
            name=path.stem,
        )
        dataset.storage = {target: contents.storage[key] for key, target in placement.items()}
        return dataset

    @staticmethod
    def _dataset_from_manifest(path: Path, contents: NpzContents, info: Mapping[str, Any]) -> Dataset:
        entries = contents.entries
        if "data" not in entries:
            raise FormatError(f"{path}: sciz dataset archive without its 'data' member")
        layers = {k.split("/", 1)[1]: v for k, v in entries.items() if k.startswith("layers/")}
        masks = {k.split("/", 1)[1]: v for k, v in entries.items() if k.startswith("masks/")}
        metadata = entries.get("metadata", {})
        try:
            dataset = Dataset(
                entries["data"],
                axes=[Axis.from_dict(a) for a in info.get("axes", [])],
                layers=layers,
                masks=masks,
                metadata=metadata if isinstance(metadata, dict) else {"metadata": metadata},
                provenance=list(info.get("provenance", [])),
                name=str(info.get("name", "")),
            )
        except (ArgumentError, TypeError, AttributeError) as exc:
            raise FormatError(f"{path}: the sciz dataset description is inconsistent ({exc})") from None
        dataset.storage = {k: v for k, v in contents.storage.items() if k in dataset.arrays()}
        return dataset

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        opts = _no_options("writing", self.name, options, ("compress", "level", "threads"))
        entries: dict[str, Any] = {"data": dataset.data}
        entries.update({f"layers/{k}": v for k, v in dataset.layers.items()})
        entries.update({f"masks/{k}": v for k, v in dataset.masks.items()})
        entries["metadata"] = dataset.metadata
        info = {
            "name": dataset.name,
            "axes": [axis.to_dict() for axis in dataset.axes],
            "provenance": dataset.provenance,
        }
        return write_npz(path, entries, dataset=info, **opts)

    def problems(self, dataset: Dataset) -> list[str]:
        found = []
        for label, value in (("metadata", dataset.metadata), ("provenance", dataset.provenance)):
            try:
                encode(value)
            except ArgumentError as exc:
                found.append(f"{label} cannot be stored exactly ({exc})")
        return found


def _no_options(action: str, name: str, options: Mapping[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        allowed_text = ", ".join(allowed) if allowed else "none"
        raise argument_error(
            f"option {unknown[0]}", options[unknown[0]], f"options for {action} {name} files: {allowed_text}"
        )
    return dict(options)
