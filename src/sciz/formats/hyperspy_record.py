"""sciz's exact record of a HyperSpy signal, kept beside the layout (which loses information).

HyperSpy's layout loses list order past ten items, tuples, bytes, datetimes, numpy scalar types...
sciz therefore also stores, as the attribute ``_sciz`` of each experiment group (HyperSpy ignores
it), the exact signal encoded with :mod:`sciz.metadata`, arrays replaced by references into the
tree. On reading, the record is used only if laying it out again gives what the file holds now (it
would not after another program rewrote the metadata); otherwise the layout is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .. import metadata as sciz_metadata
from ..errors import ArgumentError, FormatError
from .hyperspy_layout import (
    SIDECAR_ATTR,
    ArrayLoader,
    ArrayNode,
    ArrayRef,
    GroupNode,
    LayoutPolicy,
    Placeholder,
    TreeReader,
    experiment_name,
    is_array,
    lay_out_signal,
    plain_value,
)

__all__ = ["SIDECAR_ATTR", "apply_record", "attach_record", "wrap_arrays"]

_SIDECAR_VERSION = 1
_REF = "__sciz_ref__"


def wrap_arrays(signal: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``signal`` whose arrays are :class:`ArrayRef` (the data's with role ``"signal"``)."""
    memo: dict[int, ArrayRef] = {}
    return {key: _replace_arrays(value, memo, "signal" if key == "data" else "meta") for key, value in signal.items()}


def attach_record(experiment: GroupNode, wrapped: Mapping[str, Any]) -> None:
    """Store the exact record of a laid-out signal (``wrapped`` by :func:`wrap_arrays`) on its group."""
    record = {key: _restore_refs(value) for key, value in wrapped.items()}
    record["__version__"] = _SIDECAR_VERSION
    try:
        experiment.attrs[SIDECAR_ATTR] = sciz_metadata.encode(record)
    except ArgumentError as exc:
        raise ArgumentError(f"signal {experiment.path.rpartition('/')[2]!r}: {exc}") from None


def _replace_arrays(value: Any, memo: dict[int, ArrayRef], role: str = "meta") -> Any:
    """A copy of a nested structure with every array wrapped in an :class:`ArrayRef`.

    The same array object (met twice, e.g. in the metadata and in a Dataset record) gets the same ref.
    """
    if is_array(value):
        ref = memo.get(id(value))
        if ref is None:
            ref = memo[id(value)] = ArrayRef(value, role)
        return ref
    if isinstance(value, dict):
        return {k: _replace_arrays(v, memo) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_arrays(v, memo) for v in value]
    if isinstance(value, tuple):
        return tuple(_replace_arrays(v, memo) for v in value)
    return value


def _restore_refs(value: Any) -> Any:
    """The sidecar form: every written :class:`ArrayRef` becomes ``{"__sciz_ref__": path}``."""
    if isinstance(value, ArrayRef):
        if value.path:
            return {_REF: value.path}
        if isinstance(value.array, np.ndarray):
            return value.array  # not laid out anywhere: kept inline (small metadata arrays only)
        raise ArgumentError("a lazy array outside the signal's metadata cannot be stored")
    if isinstance(value, dict):
        return {k: _restore_refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_refs(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_restore_refs(v) for v in value)
    return value


def _canon(value: Any) -> Any:
    """A comparable form that ignores what the storage engines change (types, containers)."""
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    if isinstance(value, Placeholder):
        return ("array", value.shape)
    if isinstance(value, np.ndarray):
        return ("array", value.shape) if value.dtype.kind not in "biufcUS" else _canon(plain_value(value).tolist())
    if isinstance(value, np.generic):
        return _canon(plain_value(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float):
        return ("float", repr(value)) if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return float(value)
    return repr(value)


def _memory_loader(node: ArrayNode, lazy: bool) -> Any:
    return node.data if node.data is not None else Placeholder(node.shape, node.dtype)


def _list_loader(loader: ArrayLoader) -> ArrayLoader:
    """Loads the small list arrays of the layout for real, and stands in for every other array."""

    def load(node: ArrayNode, lazy: bool) -> Any:
        name = node.path.rsplit("/", 1)[-1]
        if name.startswith(("_list_", "_tuple_", "_ragged_shapes_")) or node.dtype.kind == "O":
            return loader(node, False)
        return Placeholder(node.shape, node.dtype)

    return load


def apply_record(
    group: GroupNode,
    signal: dict[str, Any],
    root: GroupNode,
    loader: ArrayLoader,
    policy: LayoutPolicy,
    version: tuple[int, ...],
    lazy: bool,
) -> dict[str, Any]:
    raw = group.attrs.get(SIDECAR_ATTR)
    if raw is None:
        return signal
    try:
        record = sciz_metadata.decode(plain_value(raw) if not isinstance(raw, str) else raw)
    except FormatError:
        return signal
    if not isinstance(record, dict) or record.pop("__version__", None) != _SIDECAR_VERSION:
        return signal
    # The record counts only if laying it out again gives what the file holds now.
    try:
        projection_signal = _resolve_refs(record, lambda path: _placeholder_at(root, path))
        projection_signal["data"] = _placeholder_at(root, group.path + "/data")
        layout_root, _ = lay_out_signal(
            wrap_arrays(_normalize_for_projection(projection_signal)), policy, file_format="HyperSpy"
        )
        laid_out = _find(layout_root, f"Experiments/{experiment_name(projection_signal)}")
        if not isinstance(laid_out, GroupNode):
            return signal
        projected = TreeReader(layout_root, _list_loader(_memory_loader), version, lazy).signal_dict(laid_out, lazy)
        stored = TreeReader(root, _list_loader(loader), version, lazy).signal_dict(group, lazy)
    except (ArgumentError, FormatError, KeyError, TypeError, ValueError):
        return signal
    for part in ("metadata", "original_metadata", "axes", "learning_results"):
        if _canon(projected.get(part)) != _canon(stored.get(part)):
            return signal
    if _canon(projected["attributes"]) != _canon(stored["attributes"]):
        return signal
    record.pop("data", None)  # already read with the signal: never load it twice
    exact = _resolve_refs(record, lambda path: _load_path(root, path, loader, lazy))
    exact["data"] = signal["data"]
    exact.setdefault("attributes", {})
    if isinstance(exact["attributes"], dict):
        exact["attributes"]["_lazy"] = bool(lazy)
    exact.setdefault("models", signal.get("models", {}))
    return exact


def _normalize_for_projection(signal: dict[str, Any]) -> dict[str, Any]:
    out = dict(signal)
    for key in ("metadata", "original_metadata", "attributes", "learning_results", "models", "package_info"):
        out.setdefault(key, {})
    out.setdefault("axes", [])
    return out


def _find(root: GroupNode, path: str) -> GroupNode | ArrayNode:
    node: GroupNode | ArrayNode = root
    for part in path.split("/"):
        if not isinstance(node, GroupNode) or part not in node.children:
            raise KeyError(path)
        node = node.children[part]
    return node


def _placeholder_at(root: GroupNode, path: str) -> Placeholder:
    node = _find(root, path)
    if not isinstance(node, ArrayNode):
        raise KeyError(path)
    return Placeholder(node.shape, node.dtype)


def _load_path(root: GroupNode, path: str, loader: ArrayLoader, lazy: bool) -> Any:
    node = _find(root, path)
    if not isinstance(node, ArrayNode):
        raise KeyError(path)
    parent_path, _, key = path.rpartition("/")
    parent = _find(root, parent_path) if parent_path else root
    if isinstance(parent, GroupNode):
        # the layout reader also rebuilds ragged arrays from their stored shapes
        data = TreeReader(root, loader, (3, 3), lazy).read_array(parent, key, node, lazy)
    else:
        data = loader(node, lazy)
    if isinstance(data, np.ndarray) and data.dtype.kind == "O" and node.attrs.get("_sciz_dtype"):
        data = data.astype(node.attrs["_sciz_dtype"])
    return data


def _resolve_refs(value: Any, resolve: Callable[[str], Any]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _REF in value and isinstance(value[_REF], str):
            return resolve(value[_REF])
        return {k: _resolve_refs(v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_refs(v, resolve) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve_refs(v, resolve) for v in value)
    return value
