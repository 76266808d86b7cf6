"""sciz: save, compress and export scientific n-dimensional arrays with their metadata.

Nothing heavy is imported here: ``import sciz`` is fast, and codecs, formats and optional
libraries load on first use.

>>> import sciz
>>> ds = sciz.Dataset([[1.0, 2.0], [3.0, 4.0]], metadata={"units": "nm"})
>>> ds.shape
(2, 2)
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .model import Axis, Dataset

__all__ = ["Axis", "Dataset", "__version__", "load", "save"]


def __getattr__(name: str) -> Any:
    if name in ("load", "save"):
        return getattr(importlib.import_module("sciz.formats"), name)
    codecs = importlib.import_module("sciz.codecs")
    if name in getattr(codecs, "__all__", ()):
        return getattr(codecs, name)
    raise AttributeError(f"module 'sciz' has no attribute {name!r}")


def __dir__() -> list[str]:
    codecs = importlib.import_module("sciz.codecs")
    return sorted(set(globals()) | set(__all__) | set(getattr(codecs, "__all__", ())))
