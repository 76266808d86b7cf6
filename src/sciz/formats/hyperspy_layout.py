"""HyperSpy's hierarchical signal layout (zspy and hspy), independent of the storage engine.

A signal dictionary in RosettaSciIO's shape (``data``, ``axes``, ``metadata``, ``original_metadata``,
``attributes``, ``learning_results``, ``models``, ``package_info``) is laid out as a tree of
:class:`GroupNode` / :class:`ArrayNode` objects exactly as HyperSpy writes it (``dict2group``
semantics), and such a tree (read from Zarr or HDF5) is read back as HyperSpy reads it. The engines
only move trees; sciz's exact record of the metadata is :mod:`sciz.formats.hyperspy_record`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import pathlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ArgumentError, FormatError, argument_error

__all__ = [
    "FORMAT_VERSION",
    "SIDECAR_ATTR",
    "ArrayLoader",
    "ArrayNode",
    "ArrayRef",
    "GroupNode",
    "LayoutPolicy",
    "Placeholder",
    "TreeReader",
    "TreeWriter",
    "default_navigate",
    "experiment_name",
    "is_array",
    "is_lazy_array",
    "lay_out_signal",
    "normalize_signal",
    "parse_version",
    "plain_value",
    "signal_chunks",
]

#: The HyperSpy file format version sciz writes.
FORMAT_VERSION = "3.3"
#: Attribute of ``Experiments/<title>`` holding sciz's exact record (:mod:`~sciz.formats.hyperspy_record`),
#: which the layout reader skips.
SIDECAR_ATTR = "_sciz"
_NONE = "_None_"


def is_lazy_array(value: Any) -> bool:
    """True for dask arrays (checked without importing dask)."""
    return type(value).__module__.startswith("dask.") and hasattr(value, "chunks") and hasattr(value, "dask")


def is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray | Placeholder) or is_lazy_array(value)


@dataclass(frozen=True)
class Placeholder:
    """Stands for an array whose values do not matter (checking the sciz record against the layout)."""

    shape: tuple[int, ...]
    dtype: np.dtype = field(default_factory=lambda: np.dtype("f8"))

    @property
    def ndim(self) -> int:
        return len(self.shape)


# --------------------------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class ArrayNode:
    """An array in the tree: its data when writing, or a backend handle when reading."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data: Any = None
    #: ``"signal"``: the experiment's main data (user chunks and compressor); ``"meta"``: anything else.
    role: str = "meta"
    #: Backend handle (zarr array description, h5py dataset) of an array read from a file.
    handle: Any = None
    #: Ragged arrays: the element shapes (an object array written beside as ``_ragged_shapes_<key>``).
    attrs: dict[str, Any] = field(default_factory=dict)
    #: Path of the node from the root ("Experiments/x/data"), filled by the writer.
    path: str = ""


@dataclass(eq=False)
class GroupNode:
    """A group: attributes and named children."""

    attrs: dict[str, Any] = field(default_factory=dict)
    children: dict[str, GroupNode | ArrayNode] = field(default_factory=dict)
    path: str = ""

    def group(self, name: str) -> GroupNode:
        """The child group ``name``, created if missing."""
        child = self.children.get(name)
        if not isinstance(child, GroupNode):
            child = GroupNode(path=_join(self.path, name))
            self.children[name] = child
        return child

    def walk(self) -> Iterator[GroupNode | ArrayNode]:
        """This group and every node below it, parents first."""
        yield self
        for child in self.children.values():
            if isinstance(child, GroupNode):
                yield from child.walk()
            else:
                yield child


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


@dataclass(frozen=True)
class LayoutPolicy:
    """What the storage engine can hold as an attribute (zarr: JSON; HDF5: numpy values)."""

    #: ``"zarr"`` or ``"hdf5"``.
    engine: str

    @property
    def json_attrs(self) -> bool:
        return self.engine == "zarr"


# --------------------------------------------------------------------------------------------
# Writing: signal dict -> tree
# --------------------------------------------------------------------------------------------
class ArrayRef:
    """Stands for an array of the signal while it is written; knows where the array went."""

    __slots__ = ("array", "path", "role")

    def __init__(self, array: Any, role: str = "meta") -> None:
        self.array = array
        self.role = role
        self.path = ""


class TreeWriter:
    """Lays a signal dictionary out as HyperSpy does (``dict2group`` semantics)."""

    def __init__(self, policy: LayoutPolicy) -> None:
        self.policy = policy

    # -- values ---------------------------------------------------------------------------------
    def attr_value(self, value: Any) -> tuple[bool, Any]:
        """(storable, stored form) of a scalar for an attribute."""
        if isinstance(value, bool | np.bool_):
            return True, bool(value) if self.policy.json_attrs else np.bool_(value)
        if isinstance(value, str):
            return True, str(value)
        if isinstance(value, int | np.integer):
            if -(2**63) <= int(value) < 2**63:
                return True, int(value) if self.policy.json_attrs else value
            return True, str(value)
        if isinstance(value, float | np.floating):
            return True, float(value) if self.policy.json_attrs else value
        if isinstance(value, complex | np.complexfloating):
            return True, str(complex(value)) if self.policy.json_attrs else value
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return True, value.isoformat()
        if isinstance(value, dt.timedelta | pathlib.PurePath):
            return True, str(value)
        return False, None

    def write_dict(self, mapping: Mapping[Any, Any], group: GroupNode) -> None:
        for raw_key, value in mapping.items():
            key = str(raw_key).replace("/", "-") or "_"
            _check_text(key, group, key)  # values: each writer refuses what it cannot hold, naming the file
            self.write_item(key, value, group)

    def write_item(self, key: str, value: Any, group: GroupNode) -> None:
        if isinstance(value, dict):
            self.write_dict(value, group.group(key))
        elif isinstance(value, ArrayRef):
            self.write_array(group, key, value)
        elif is_array(value):
            self.write_array(group, key, ArrayRef(value))
        elif value is None:
            group.attrs[key] = _NONE
        elif isinstance(value, bytes | bytearray):
            self.write_bytes(group, key, bytes(value))
        elif isinstance(value, list | tuple | set | frozenset):
            kind = "_tuple_" if isinstance(value, tuple) else "_list_"
            items = list(value)
            if items:
                self.write_sequence(key, group, items, kind)
            else:
                group.attrs[f"{kind}empty_{key}"] = _NONE
        else:
            storable, stored = self.attr_value(value)
            if not storable:
                raise ArgumentError(
                    f"metadata item {_join(group.path, key)!r}: a {type(value).__name__} cannot be stored in "
                    "HyperSpy's layout"
                )
            group.attrs[key] = stored

    def write_bytes(self, group: GroupNode, key: str, value: bytes) -> None:
        if b"\x00" not in value:
            try:
                group.attrs[key] = value.decode("utf-8")
                return
            except UnicodeDecodeError:
                pass
        if self.policy.json_attrs:
            # JSON attributes cannot hold raw bytes; HyperSpy reads this as a uint8 array.
            self.write_array(group, key, ArrayRef(np.frombuffer(value, np.uint8).copy()))
        else:
            group.attrs[f"_bs_{key}"] = np.void(value)

    def write_sequence(self, key: str, group: GroupNode, items: list[Any], kind: str) -> None:
        flat = self._homogeneous(items)
        if flat is None:
            child = group.group(f"{kind}{len(items)}_{key}")
            # Item keys zero-padded to one width ("00".."11"): HyperSpy and RosettaSciIO sort item keys
            # as strings, so "10" came before "2"; sciz reads both forms as numbers (_index_key).
            width = len(str(len(items) - 1))
            for index, item in enumerate(items):
                self.write_item(str(index).zfill(width), item, child)
            return
        self.write_array(group, f"{kind}{key}", ArrayRef(flat))

    @staticmethod
    def _homogeneous(items: list[Any]) -> np.ndarray | None:
        """The 1-D numeric or string array HyperSpy stores for a flat list, or None (stored as a group)."""
        scalar = (bool, int, float, str, np.bool_, np.integer, np.floating, np.str_)
        if not all(isinstance(item, scalar) for item in items):
            return None
        if any(isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**63 for item in items):
            return None
        array = np.array(items)
        if array.ndim != 1 or array.dtype.kind not in "biufU":
            return None
        return array

    def write_array(self, group: GroupNode, key: str, ref: ArrayRef) -> None:
        array = ref.array
        if array.dtype == object:
            array, shapes = _flatten_ragged(array)
            shapes_node = ArrayNode(
                shape=shapes.shape, dtype=shapes.dtype, data=shapes, path=_join(group.path, f"_ragged_shapes_{key}")
            )
            group.children[f"_ragged_shapes_{key}"] = shapes_node
        node = ArrayNode(
            shape=tuple(int(n) for n in array.shape),
            dtype=np.dtype(array.dtype),
            data=array,
            role=ref.role,
            path=_join(group.path, key),
        )
        group.children[key] = node
        ref.path = node.path

    # -- signals ------------------------------------------------------------------------------
    def write_signal(self, signal: Mapping[str, Any], group: GroupNode, root: GroupNode) -> None:
        group.attrs.update({k: str(v) for k, v in (signal.get("package_info") or {}).items()})
        for index, axis in enumerate(signal.get("axes") or []):
            axis_group = GroupNode(path=_join(group.path, f"axis-{index}"))
            group.children[f"axis-{index}"] = axis_group
            self.write_dict(axis, axis_group)
        data = signal["data"]
        self.write_array(group, "data", data if isinstance(data, ArrayRef) else ArrayRef(data, "signal"))
        for name in ("metadata", "original_metadata", "learning_results", "attributes"):
            self.write_dict(signal.get(name) or {}, group.group(name))
        models = signal.get("models") or {}
        if models:
            model_group = root.group("Analysis").group("models")
            self.write_dict(models, model_group)
            for name in models:
                model = model_group.children.get(str(name))
                if isinstance(model, GroupNode):
                    model.attrs["_signal"] = "/" + group.path


def _check_text(text: str, group: GroupNode, key: str) -> None:
    """Refuse a key no store can name: one with a lone surrogate is not valid Unicode (zspy raised an
    OSError or UnicodeEncodeError about its temporary directory)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ArgumentError(
            f"metadata item {_join(group.path, key)!r}: {text!r} is not valid Unicode (a lone surrogate), "
            "which neither Zarr nor HDF5 can store"
        ) from None


def experiment_name(signal: Mapping[str, Any]) -> str:
    """The group name HyperSpy uses for a signal: its title, ``/`` replaced, or ``__unnamed__``."""
    title = ((signal.get("metadata") or {}).get("General") or {}).get("title") or ""
    return str(title).replace("/", "-") or "__unnamed__"


def lay_out_signal(
    signal: Mapping[str, Any], policy: LayoutPolicy, *, file_format: str, root: GroupNode | None = None
) -> tuple[GroupNode, GroupNode]:
    """Lay one signal out in HyperSpy's tree; returns ``(root, experiment_group)``.

    Arrays of ``signal`` may be wrapped in :class:`ArrayRef` (each learns where it was laid out).
    """
    root = root if root is not None else GroupNode()
    root.attrs.update({"file_format": file_format, "file_format_version": FORMAT_VERSION})
    experiments = root.group("Experiments")
    name = experiment_name(signal)
    _check_text(name, experiments, name)  # the title names a group
    experiment = GroupNode(path=_join(experiments.path, name))
    experiments.children[name] = experiment
    TreeWriter(policy).write_signal(signal, experiment, root)
    return root, experiment


# --------------------------------------------------------------------------------------------
# Reading: tree -> signal dicts
# --------------------------------------------------------------------------------------------
#: ``loader(node, lazy)`` returns the node's data (numpy, or dask when lazy).
ArrayLoader = Callable[[ArrayNode, bool], Any]


def plain_value(value: Any) -> Any:
    """An attribute value as HyperSpy means it: Python scalars, str instead of bytes, None for ``_None_``."""
    if isinstance(value, bytes | np.bytes_):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value)
    if isinstance(value, str | np.str_):
        value = str(value)
        return None if value == _NONE else value
    if isinstance(value, np.bool_ | np.integer | np.floating | np.complexfloating):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "S":
            value = value.astype("U")
        if value.dtype.kind == "O":
            value = np.array([plain_value(v) for v in value.ravel()]).reshape(value.shape)
    return value


def _index_key(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.isdigit() else (1, key)


def _as_sequence(children: dict[str, Any]) -> list[Any]:
    # Items are keyed "0", "1", ...: order them as numbers (HyperSpy sorts them as strings).
    return [children[k] for k in sorted(children, key=_index_key)]


def _legacy_datetime(key: str, value: Any) -> tuple[str, Any]:
    # HyperSpy metadata < 2 stored "datetime.date(2014, 7, 9)" under _datetime_<key>.
    text = str(value)
    numbers = tuple(int(n) for n in text[text.index("(") + 1 : text.rindex(")")].split(",") if n.strip())
    name = key[len("_datetime_") :]
    made: dt.date | dt.time = dt.date(*numbers) if name.startswith("date") else dt.time(*numbers)  # type: ignore[arg-type]
    return name, made.isoformat()


class TreeReader:
    """Reads HyperSpy's layout (``group2dict`` semantics), with its ordering faults fixed."""

    def __init__(self, root: GroupNode, loader: ArrayLoader, version: tuple[int, ...], lazy: bool) -> None:
        self.root = root
        self.loader = loader
        self.version = version
        self.lazy = lazy

    def read_attrs(self, group: GroupNode, out: dict[str, Any]) -> None:
        for key, raw in group.attrs.items():
            if key == SIDECAR_ATTR or key.startswith("_sig_"):
                continue
            if key.startswith("_bs_"):
                out[key[4:]] = raw.tobytes() if hasattr(raw, "tobytes") else plain_value(raw)
                continue
            value = plain_value(raw)
            if key.startswith("_list_empty_"):
                out[key[len("_list_empty_") :]] = []
            elif key.startswith("_tuple_empty_"):
                out[key[len("_tuple_empty_") :]] = ()
            elif key.startswith(("_datetime_date", "_datetime_time")):
                try:
                    name, iso = _legacy_datetime(key, value)
                except (ValueError, TypeError):
                    out[key] = value
                else:
                    out[name] = iso
            else:
                out[key] = value

    def read_array(self, group: GroupNode, key: str, node: ArrayNode, lazy: bool) -> Any:
        data = self.loader(node, lazy)
        shapes = group.children.get(f"_ragged_shapes_{key}")
        if isinstance(shapes, ArrayNode) and node.dtype.kind == "O" and not isinstance(data, Placeholder):
            data = _unflatten(np.asarray(data), np.asarray(self.loader(shapes, False)))
        return data

    def group_to_dict(self, group: GroupNode, lazy: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.read_attrs(group, out)
        for key, child in group.children.items():
            if key.startswith("_ragged_shapes_"):
                continue
            if key.startswith("_sig_") and isinstance(child, GroupNode):
                out[key] = self.signal_dict(child, lazy)
            elif isinstance(child, ArrayNode):
                if key.startswith(("_list_", "_tuple_")):
                    values = np.asarray(self.read_array(group, key, child, False))
                    values = plain_value(values)
                    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
                    if key.startswith("_list_"):
                        out[key[len("_list_") :]] = items
                    else:
                        out[key[len("_tuple_") :]] = tuple(items)
                else:
                    data = self.read_array(group, key, child, lazy)
                    if isinstance(data, np.ndarray) and data.dtype.kind == "S":
                        with contextlib.suppress(UnicodeDecodeError):
                            data = data.astype("U")
                    out[key] = data
            elif key.startswith("_hspy_AxesManager_"):
                out[key] = _as_sequence(self.group_to_dict(child, lazy))
            elif key.startswith(("_list_", "_tuple_")):
                prefix = "_list_" if key.startswith("_list_") else "_tuple_"
                rest = key[len(prefix) :]
                count, _, name = rest.partition("_")
                if not count.isdigit():
                    out[key] = self.group_to_dict(child, lazy)
                    continue
                items = _as_sequence(self.group_to_dict(child, lazy))
                out[name] = items if prefix == "_list_" else tuple(items)
            else:
                out[key] = self.group_to_dict(child, lazy)
        return out

    def signal_dict(self, group: GroupNode, lazy: bool) -> dict[str, Any]:
        old = self.version < (1, 2)
        meta_key, original_key = (
            ("mapped_parameters", "original_parameters") if old else ("metadata", "original_metadata")
        )
        signal: dict[str, Any] = {
            "metadata": self._child_dict(group, meta_key, lazy),
            "original_metadata": self._child_dict(group, original_key, lazy),
            "attributes": self._child_dict(group, "attributes", lazy),
        }
        package = plain_value(group.attrs.get("package", "")) or ""
        version = plain_value(group.attrs.get("package_version", "")) or ""
        signal["package_info"] = {"package": str(package), "package_version": str(version)}
        data_node = group.children.get("data")
        if not isinstance(data_node, ArrayNode):
            raise FormatError(f"{group.path or '/'}: a HyperSpy signal group needs a 'data' array")
        signal["data"] = self.read_array(group, "data", data_node, lazy)
        signal["attributes"]["_lazy"] = bool(lazy)
        signal["axes"] = self.axes(group, len(data_node.shape), lazy)
        for name in ("learning_results", "peak_learning_results"):
            if isinstance(group.children.get(name), GroupNode):
                signal["attributes"][name] = self._child_dict(group, name, lazy)
        for name in ("mva_results", "peak_mva_results"):
            if self.version < (1, 1) and isinstance(group.children.get(name), GroupNode):
                signal["attributes"][name.replace("mva", "learning")] = self._child_dict(group, name, lazy)
        general = signal["metadata"].get("General")
        if isinstance(general, dict) and general.get("title") == "__unnamed__":
            general["title"] = ""
        _migrate_metadata(signal["metadata"], self.version)
        return signal

    def _child_dict(self, group: GroupNode, name: str, lazy: bool) -> dict[str, Any]:
        child = group.children.get(name)
        return self.group_to_dict(child, lazy) if isinstance(child, GroupNode) else {}

    def axes(self, group: GroupNode, ndim: int, lazy: bool) -> list[dict[str, Any]]:
        axes: list[dict[str, Any]] = []
        for index in range(ndim):
            node = group.children.get(f"axis-{index}")
            if not isinstance(node, GroupNode):
                break
            axes.append(self.group_to_dict(node, lazy))
        if len(axes) == ndim:
            return axes
        listed = group.children.get(f"_list_{ndim}_axes")
        if isinstance(listed, GroupNode):
            return _as_sequence(self.group_to_dict(listed, lazy))
        raise FormatError(f"{group.path or '/'}: expected {ndim} axis groups (axis-0 ...) or _list_{ndim}_axes")


def _flatten_ragged(array: Any) -> tuple[Any, np.ndarray]:
    """A ragged (object) array as HyperSpy stores it: 1-D items plus an array of their shapes."""
    if isinstance(array, Placeholder):
        return array, np.empty(array.shape, dtype=object)
    array = np.asarray(array.compute() if is_lazy_array(array) else array)
    flat = np.empty(array.shape, dtype=object)
    shapes = np.empty(array.shape, dtype=object)
    for index in np.ndindex(array.shape):
        item = np.asarray(array[index])
        flat[index] = item.ravel()
        shapes[index] = np.array(item.shape, dtype=np.int64)
    return flat, shapes


def _unflatten(flat: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    out = np.empty(flat.shape, dtype=object)
    for index in np.ndindex(flat.shape):
        item = np.asarray(flat[index])
        if item.dtype.kind in "OS":
            item = np.array([plain_value(v) for v in item.ravel()])
        out[index] = item.reshape(tuple(int(n) for n in np.asarray(shapes[index]).ravel()))
    return out


def _move(source: dict[str, Any], key: str, target: dict[str, Any], new_key: str | None = None) -> None:
    if key in source:
        target[new_key or key] = source.pop(key)


def _migrate_metadata(metadata: dict[str, Any], version: tuple[int, ...]) -> None:
    """Bring metadata written by old HyperSpy versions to the current structure."""
    if version < (1, 2):
        if "_internal_parameters" in metadata:
            internal = metadata.pop("_internal_parameters")
            _move(internal, "stacking_history", internal, "Stacking_history")
            _move(internal, "folding", internal, "Folding")
            metadata["_HyperSpy"] = internal
        if "Variance_estimation" in metadata:
            _move(metadata, "Variance_estimation", metadata.setdefault("Noise_properties", {}), "Variance_linear_model")
        for instrument in ("TEM", "SEM"):
            if instrument in metadata:
                metadata.setdefault("Acquisition_instrument", {})[instrument] = metadata.pop(instrument)
        general_keys = ("title", "date", "time", "original_filename")
        if any(k in metadata for k in general_keys):
            general = metadata.setdefault("General", {})
            for key in general_keys:
                _move(metadata, key, general)
        signal_keys = ("record_by", "signal_origin", "signal_type")
        if any(k in metadata for k in signal_keys):
            section = metadata.setdefault("Signal", {})
            for key in signal_keys:
                _move(metadata, key, section)
    if version < (3, 0):
        instruments = metadata.get("Acquisition_instrument")
        if isinstance(instruments, dict):
            for instrument in ("TEM", "SEM"):
                section = instruments.get(instrument)
                if isinstance(section, dict) and "tilt_stage" in section:
                    section["Stage"] = {"tilt_alpha": section.pop("tilt_stage")}
            tem = instruments.get("TEM")
            if isinstance(tem, dict):
                for key in ("exposure", "exposure_time"):
                    if key in tem:
                        tem.setdefault("Detector", {})["Camera"] = {"exposure": tem.pop(key)}


def parse_version(value: Any, root: GroupNode) -> tuple[int, ...]:
    """The file format version as a tuple (1.0 / 2.0 for files without the attribute)."""
    if value is None:
        if "Experiments" in root.children:
            return (1, 0)
        if "Analysis" in root.children:
            return (2, 0)
        raise FormatError("not a HyperSpy file: no file_format_version and no Experiments group")
    value = plain_value(value)
    if isinstance(value, float):
        value = f"{value:.2f}".rstrip("0")
    try:
        return tuple(int(part) for part in str(value).split("."))
    except ValueError:
        raise FormatError(f"file_format_version {value!r} is not a version number") from None


# --------------------------------------------------------------------------------------------
# Signal dictionaries and the sciz Dataset
# --------------------------------------------------------------------------------------------
def default_navigate(ndim: int) -> list[bool]:
    """HyperSpy's split when nothing says otherwise: the last one or two axes are the signal."""
    signal_dims = min(ndim, 2)
    return [True] * (ndim - signal_dims) + [False] * signal_dims


def normalize_signal(signal: Mapping[str, Any]) -> dict[str, Any]:
    """A complete signal dictionary: checks ``data`` and ``axes``, fills the optional parts."""
    if not isinstance(signal, Mapping):
        raise argument_error("signal", signal, "must be a dict with at least 'data' (a RosettaSciIO signal dict)")
    if "data" not in signal:
        raise argument_error("signal", sorted(signal), "needs a 'data' array")
    data = signal["data"]
    if not is_array(data):
        data = np.asarray(data)
    out = dict(signal)
    out["data"] = data
    ndim = len(data.shape)
    axes = list(signal.get("axes") or [])
    if axes and len(axes) != ndim:
        raise argument_error("signal['axes']", f"<{len(axes)} axes>", f"needs one axis dict per dimension ({ndim})")
    navigate = default_navigate(ndim)
    filled = []
    for index in range(ndim):
        if axes and not isinstance(axes[index], Mapping):
            raise argument_error(f"signal['axes'][{index}]", axes[index], "must be a dict")
        axis = dict(axes[index]) if axes else {}
        axis.setdefault("size", int(data.shape[index]))
        if int(axis["size"]) != int(data.shape[index]):
            raise argument_error(
                f"signal['axes'][{index}]['size']",
                axis["size"],
                f"must equal data.shape[{index}] = {data.shape[index]}",
            )
        if not axes:
            axis.update({"name": f"axis{index}", "units": "", "scale": 1.0, "offset": 0.0})
        axis.setdefault("navigate", navigate[index])
        filled.append(axis)
    out["axes"] = filled
    metadata = dict(signal.get("metadata") or {})
    general = dict(metadata.get("General") or {})
    general.setdefault("title", "")
    metadata["General"] = general
    out["metadata"] = metadata
    for key in ("original_metadata", "learning_results", "models"):
        out[key] = dict(signal.get(key) or {})
    attributes = dict(signal.get("attributes") or {})
    out["attributes"] = attributes
    out["package_info"] = dict(signal.get("package_info") or {"package": "", "package_version": ""})
    # RosettaSciIO's own keys that are not part of the file layout.
    out.pop("tmp_parameters", None)
    out.pop("package", None)
    out.pop("package_version", None)
    return out


def signal_chunks(
    shape: tuple[int, ...], itemsize: int, signal_axes: list[int] | tuple[int, ...], target_bytes: float
) -> tuple[int, ...]:
    """Chunks that hold whole signals, about ``target_bytes`` each, contiguous in C order where possible.

    Navigation axes are grown from the innermost outwards, so a chunk is one contiguous slab of a
    C-ordered array (no gathering copy when writing it) and the last chunk along the split axis is
    as full as the others allow.
    """
    if not shape:
        return ()
    if any(n == 0 for n in shape):
        return tuple(max(1, n) for n in shape)
    chunks = [n if i in signal_axes else 1 for i, n in enumerate(shape)]
    budget = int(target_bytes // max(1, math.prod(chunks) * itemsize))
    for index in reversed([i for i in range(len(shape)) if i not in signal_axes]):
        if budget <= 1:
            break
        if shape[index] <= budget:
            chunks[index] = shape[index]
            budget //= shape[index]
        else:
            pieces = math.ceil(shape[index] / budget)
            chunks[index] = math.ceil(shape[index] / pieces)
            break
    return tuple(chunks)
