"""HyperSpy's signal tree (zspy and hspy): the layout with sciz's exact record, and Dataset conversion.

The pieces live in small modules: :mod:`~sciz.formats.hyperspy_layout` (HyperSpy's layout),
:mod:`~sciz.formats.hyperspy_record` (sciz's exact record of the metadata) and
:mod:`~sciz.formats.hyperspy_convert` (Dataset <-> signal dictionary). This module joins layout and
record for writing and reading, and re-exports what the zspy and hspy engines use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import FormatError
from .hyperspy_convert import dataset_to_signal, describe, signal_to_dataset
from .hyperspy_layout import (
    FORMAT_VERSION,
    ArrayLoader,
    ArrayNode,
    GroupNode,
    LayoutPolicy,
    TreeReader,
    default_navigate,
    experiment_name,
    is_lazy_array,
    lay_out_signal,
    normalize_signal,
    parse_version,
    signal_chunks,
)
from .hyperspy_record import SIDECAR_ATTR, apply_record, attach_record, wrap_arrays

__all__ = [
    "FORMAT_VERSION",
    "SIDECAR_ATTR",
    "ArrayNode",
    "GroupNode",
    "LayoutPolicy",
    "dataset_to_signal",
    "default_navigate",
    "describe",
    "experiment_name",
    "is_lazy_array",
    "normalize_signal",
    "read_signals",
    "signal_chunks",
    "signal_to_dataset",
    "write_signal_tree",
]


def write_signal_tree(
    signal: Mapping[str, Any], policy: LayoutPolicy, *, file_format: str, root: GroupNode | None = None
) -> tuple[GroupNode, GroupNode]:
    """The tree of one signal in HyperSpy's layout, with sciz's exact record attached.

    Returns ``(root, experiment_group)``. ``signal`` must have been through :func:`normalize_signal`.
    """
    wrapped = wrap_arrays(signal)
    root, experiment = lay_out_signal(wrapped, policy, file_format=file_format, root=root)
    attach_record(experiment, wrapped)
    return root, experiment


def read_signals(
    root: GroupNode, loader: ArrayLoader, policy: LayoutPolicy, *, lazy: bool = False, exact: bool = True
) -> list[dict[str, Any]]:
    """Every signal of a tree as RosettaSciIO-style dictionaries (plus models without a signal).

    With ``exact`` (default) each signal whose sciz record still matches the HyperSpy layout comes
    back exactly as written; the record is ignored otherwise.
    """
    version = parse_version(root.attrs.get("file_format_version"), root)
    reader = TreeReader(root, loader, version, lazy)
    models: dict[str, dict[str, Any]] = {}
    standalone: list[dict[str, Any]] = []
    analysis = root.children.get("Analysis")
    model_group = analysis.children.get("models") if isinstance(analysis, GroupNode) else None
    if isinstance(model_group, GroupNode):
        for name, node in model_group.children.items():
            if not isinstance(node, GroupNode):
                continue
            model = reader.group_to_dict(node, lazy)
            owner = model.pop("_signal", None)
            if owner:
                models.setdefault(str(owner).strip("/"), {})[name] = model
            else:
                standalone.append({name: model})
    signals: list[dict[str, Any]] = []
    experiments = root.children.get("Experiments")
    if isinstance(experiments, GroupNode):
        for group in experiments.children.values():
            if not isinstance(group, GroupNode) or not isinstance(group.children.get("data"), ArrayNode):
                continue
            signal = reader.signal_dict(group, lazy)
            signal["models"] = models.pop(group.path, {})
            if exact:
                signal = apply_record(group, signal, root, loader, policy, version, lazy)
            signals.append(signal)
    for owner_models in models.values():
        standalone.append(owner_models)
    signals.extend(standalone)
    if not signals:
        raise FormatError("no signal found: the file has no Experiments/<name>/data array")
    return signals
