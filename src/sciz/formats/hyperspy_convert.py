"""A sciz :class:`~sciz.model.Dataset` as a HyperSpy signal dictionary and back (layers, masks included)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..model import Axis, Dataset
from .hyperspy_layout import default_navigate, is_array

__all__ = ["LAZY_DETAIL", "dataset_to_signal", "describe", "signal_to_dataset", "stored_lazy"]

#: ``Dataset.storage["data"].details`` key where the zspy/hspy readers keep the ``_lazy`` attribute the
#: file stored (whether HyperSpy saved a lazy signal), so a conversion writes it unchanged.
LAZY_DETAIL = "HyperSpy _lazy"


def stored_lazy(dataset: Dataset) -> bool:
    """The ``_lazy`` attribute a HyperSpy file should store for ``dataset``.

    What its source file stored, if it was read from one; False otherwise. Whether sciz streams the
    data (a lazy ``sciz convert`` reads dask arrays) is how it was moved, not a property of the signal:
    writing ``is_lazy_array(data)`` made a lazy conversion of an eagerly saved file say lazy.
    """
    stored = dataset.storage.get("data")
    value = stored.details.get(LAZY_DETAIL) if stored is not None else None
    return value if isinstance(value, bool) else False


def dataset_to_signal(dataset: Dataset) -> dict[str, Any]:
    """The signal dictionary that stores a :class:`~sciz.model.Dataset` (layers and masks included)."""
    navigate = default_navigate(dataset.ndim)
    axes = []
    for index, (axis, size) in enumerate(zip(dataset.axes, dataset.shape, strict=True)):
        axes.append(
            {
                "_type": "UniformDataAxis",
                "name": axis.name,
                "units": axis.units,
                "scale": axis.scale,
                "offset": axis.offset,
                "size": size,
                "navigate": navigate[index] if axis.navigate is None else bool(axis.navigate),
                "is_binned": False,
            }
        )
    metadata = dict(dataset.metadata)
    original = metadata.pop("original_metadata", {})
    general = dict(metadata.get("General") or {}) if isinstance(metadata.get("General", {}), dict) else {}
    general["title"] = dataset.name
    metadata["General"] = general
    metadata.setdefault("Signal", {"signal_type": ""})
    extras: dict[str, Any] = {}
    if dataset.layers:
        extras["layers"] = dict(dataset.layers)
    if dataset.masks:
        extras["masks"] = dict(dataset.masks)
    if dataset.provenance:
        extras["provenance"] = list(dataset.provenance)
    if extras:
        metadata["_sciz"] = extras
    return {
        "data": dataset.data,
        "axes": axes,
        "metadata": metadata,
        "original_metadata": original if isinstance(original, dict) else {"value": original},
        "attributes": {"_lazy": stored_lazy(dataset)},
        "learning_results": {},
        "models": {},
        "package_info": {"package": "", "package_version": ""},
        # Exactly what the Dataset held, for a lossless round trip through sciz.
        "sciz_dataset": {
            "metadata": dataset.metadata,
            "axes": [a.to_dict() for a in dataset.axes],
            "name": dataset.name,
        },
    }


def signal_to_dataset(signal: Mapping[str, Any], source: str | None = None) -> Dataset:
    """A :class:`~sciz.model.Dataset` from a signal dictionary (exact for files sciz wrote)."""
    metadata = dict(signal.get("metadata") or {})
    extras = metadata.pop("_sciz", None)
    extras = extras if isinstance(extras, dict) else {}
    record = signal.get("sciz_dataset")
    data = signal["data"]
    if isinstance(record, dict):
        axes = [Axis.from_dict(a) for a in record.get("axes", [])]
        return Dataset(
            data,
            axes=axes,
            layers=dict(extras.get("layers") or {}),
            masks=dict(extras.get("masks") or {}),
            metadata=dict(record.get("metadata") or {}),
            provenance=list(extras.get("provenance") or []),
            name=str(record.get("name", "")),
            source=source,
        )
    axes = []
    for index, axis in enumerate(signal.get("axes") or []):
        scale = axis.get("scale", 1.0)
        offset = axis.get("offset", 0.0)
        axes.append(
            Axis(
                name=str(axis.get("name") or f"axis{index}"),
                units=str(axis.get("units") or ""),
                scale=float(scale) if isinstance(scale, int | float | np.number) else 1.0,
                offset=float(offset) if isinstance(offset, int | float | np.number) else 0.0,
                navigate=None if axis.get("navigate") is None else bool(axis.get("navigate")),
            )
        )
    original = signal.get("original_metadata") or {}
    if original:
        metadata["original_metadata"] = dict(original)
    title = (metadata.get("General") or {}).get("title", "") if isinstance(metadata.get("General"), dict) else ""
    layers = {k: v for k, v in (extras.get("layers") or {}).items() if is_array(v)}
    masks = {k: v for k, v in (extras.get("masks") or {}).items() if is_array(v)}
    return Dataset(
        data,
        axes=axes,
        layers=layers,
        masks=masks,
        metadata=metadata,
        provenance=[p for p in extras.get("provenance") or [] if isinstance(p, dict)],
        name=str(title or ""),
        source=source,
    )


def describe(value: Any) -> str:
    """Short JSON-ish description used in error messages."""
    try:
        return json.dumps(value, default=str)[:80]
    except (TypeError, ValueError):
        return repr(value)[:80]
