"""The in-memory dataset every format reader returns and every writer takes.

A :class:`Dataset` is a primary array with named, calibrated axes, plus named extra layers (for
example processed steps), boolean masks, nested metadata and a provenance log. Arrays may be numpy
arrays or lazy dask arrays; nothing here forces a lazy array into memory.
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._version import __version__
from .errors import ArgumentError, argument_error

__all__ = ["Axis", "Dataset", "StoredArray", "as_array", "is_array"]


def is_array(value: Any) -> bool:
    """True for numpy arrays and lazy array objects (dask) that have ``shape``, ``dtype`` and ``ndim``."""
    return isinstance(value, np.ndarray) or all(hasattr(value, a) for a in ("shape", "dtype", "ndim", "__array__"))


def as_array(value: Any, name: str) -> Any:
    """Return ``value`` as an array (numpy or lazy); lists and scalars become numpy arrays."""
    if is_array(value):
        array = value
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise argument_error(name, value, f"must be an array or convertible to one ({exc})") from None
    if array.dtype == object:
        raise argument_error(name, f"<{type(value).__name__} of dtype object>", "object arrays are not supported")
    return array


@dataclass
class Axis:
    """One axis of the primary array: its name, physical units, and the linear calibration
    ``coordinate = offset + scale * index``."""

    name: str = ""
    units: str = ""
    scale: float = 1.0
    offset: float = 0.0
    #: HyperSpy's navigation/signal split; ``None`` when the source does not say.
    navigate: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise argument_error("Axis.name", self.name, "must be a str")
        if not isinstance(self.units, str):
            raise argument_error("Axis.units", self.units, "must be a str")
        for attr in ("scale", "offset"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise argument_error(f"Axis.{attr}", value, "must be a real number")
            if not np.isfinite(value):
                raise argument_error(f"Axis.{attr}", value, "must be finite")

    def coordinates(self, size: int) -> np.ndarray:
        """The physical coordinate of each of ``size`` indices."""
        return self.offset + self.scale * np.arange(size, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "units": self.units,
            "scale": self.scale,
            "offset": self.offset,
            "navigate": self.navigate,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Axis:
        known = {k: values[k] for k in ("name", "units", "scale", "offset", "navigate") if k in values}
        return cls(**known)


@dataclass
class StoredArray:
    """How one array is stored on disk, as reported by a reader (for ``sciz info``)."""

    codec: str = "none"
    stored_bytes: int | None = None
    chunks: tuple[int, ...] | None = None
    #: The codec's parameters (tolerance, mode...), as stored.
    parameters: dict[str, Any] = field(default_factory=dict)
    #: Anything else worth reporting, e.g. ``{"chunks": 4, "chunks stored losslessly": 1}``.
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Dataset:
    """A primary n-dimensional array with axes, layers, masks, metadata and provenance.

    Parameters
    ----------
    data
        The primary array (numpy or dask).
    axes
        One :class:`Axis` per dimension; missing ones are filled with ``axis<i>`` defaults.
    layers
        Extra named arrays, e.g. processed steps (``step_1_remove_plane``).
    masks
        Named boolean arrays.
    metadata
        Nested metadata; anything :mod:`sciz.metadata` can encode exactly.
    provenance
        A log of what produced the data, one dict per step.
    name
        A short title.
    source
        Where the data was read from, if anywhere.

    Example
    -------
    >>> import numpy as np
    >>> from sciz import Dataset, Axis
    >>> ds = Dataset(np.zeros((4, 5)), axes=[Axis("y", "nm", 0.5), Axis("x", "nm", 0.5)])
    >>> ds.shape
    (4, 5)
    """

    data: Any
    axes: list[Axis] = field(default_factory=list)
    layers: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    name: str = ""
    source: str | None = None
    #: Filled by readers: how each array (``data``, ``layers/<k>``, ``masks/<k>``) is stored.
    storage: dict[str, StoredArray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = as_array(self.data, "data")
        axes = [a if isinstance(a, Axis) else Axis.from_dict(a) for a in (self.axes or [])]
        if len(axes) > self.data.ndim:
            raise ArgumentError(f"axes: {len(axes)} axes given for an array of {self.data.ndim} dimensions")
        axes += [Axis(name=f"axis{i}") for i in range(len(axes), self.data.ndim)]
        self.axes = axes
        self.layers = {self._check_key("layers", k): as_array(v, f"layers[{k!r}]") for k, v in self.layers.items()}
        masks = {}
        for key, value in self.masks.items():
            mask = as_array(value, f"masks[{key!r}]")
            if mask.dtype != np.bool_:
                raise argument_error(f"masks[{key!r}]", f"<array of {mask.dtype}>", "masks must be boolean arrays")
            masks[self._check_key("masks", key)] = mask
        self.masks = masks
        if not isinstance(self.metadata, dict):
            raise argument_error("metadata", self.metadata, "must be a dict")
        if not isinstance(self.provenance, list) or not all(isinstance(p, dict) for p in self.provenance):
            raise argument_error("provenance", self.provenance, "must be a list of dicts")

    @staticmethod
    def _check_key(kind: str, key: Any) -> str:
        if not isinstance(key, str) or not key or "/" in key:
            raise argument_error(f"{kind} key", key, "must be a non-empty str without '/'")
        return key

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        return int(self.data.ndim)

    def arrays(self) -> dict[str, Any]:
        """Every array by its storage path: ``data``, ``layers/<key>``, ``masks/<key>``."""
        out: dict[str, Any] = {"data": self.data}
        out.update({f"layers/{k}": v for k, v in self.layers.items()})
        out.update({f"masks/{k}": v for k, v in self.masks.items()})
        return out

    def copy(self, **changes: Any) -> Dataset:
        """A shallow copy (arrays shared, containers new), with ``changes`` applied."""
        fresh: dict[str, Any] = {
            "axes": [replace(a) for a in self.axes],
            "layers": dict(self.layers),
            "masks": dict(self.masks),
            "metadata": dict(self.metadata),
            "provenance": list(self.provenance),
            "storage": dict(self.storage),
        }
        fresh.update(changes)
        return replace(self, **fresh)

    def add_provenance(self, step: str, parameters: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """Append a provenance entry (step name, parameters, UTC time, versions) and return it."""
        entry: dict[str, Any] = {
            "step": step,
            "parameters": dict(parameters or {}),
            "time": dt.datetime.now(dt.UTC).isoformat(),
            "versions": software_versions(),
        }
        entry.update(extra)
        self.provenance.append(entry)
        return entry

    def __repr__(self) -> str:
        axes = ", ".join(f"{a.name}[{n}]" for a, n in zip(self.axes, self.shape, strict=True))
        extra = []
        if self.layers:
            extra.append(f"layers={sorted(self.layers)}")
        if self.masks:
            extra.append(f"masks={sorted(self.masks)}")
        tail = (", " + ", ".join(extra)) if extra else ""
        return f"Dataset({self.name!r}, {self.dtype} ({axes}){tail})"


def software_versions() -> dict[str, str]:
    """Versions that matter for reproducing a result: Python, platform, numpy and sciz."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "sciz": __version__,
    }
