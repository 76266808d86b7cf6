"""The contract every file format plugin fulfils."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from ..errors import FormatError, MissingDependencyError
from ..model import Dataset

__all__ = ["Format", "require", "single_array_problems", "zip_member_names"]


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or raise an error naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is needed for this and is not installed ({exc}); install it with: pip install 'sciz[{extra}]'"
        ) from exc


def zip_member_names(path: Path) -> set[str] | None:
    """The member names of a zip file, or None if ``path`` is not a readable zip (for ``sniff``)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None


def single_array_problems(dataset: Dataset, label: str) -> list[str]:
    """What a file holding one bare array (``label``: ".npy", ".scz") cannot keep of ``dataset``."""
    found = []
    if dataset.layers:
        found.append(f"layers {sorted(dataset.layers)} (a {label} file holds one array)")
    if dataset.masks:
        found.append(f"masks {sorted(dataset.masks)} (a {label} file holds one array)")
    if dataset.metadata:
        found.append(f"metadata {sorted(map(str, dataset.metadata))} ({label} holds no metadata)")
    calibrated = [
        a.name for a in dataset.axes if a.units or a.scale != 1.0 or a.offset != 0.0 or a.navigate is not None
    ]
    if calibrated:
        found.append(f"axis calibration of {calibrated} ({label} holds no axes)")
    if dataset.provenance:
        found.append(f"provenance ({len(dataset.provenance)} steps; {label} holds no metadata)")
    return found


class Format(ABC):
    """A file format sciz can read and/or write.

    Subclasses set the class attributes and implement :meth:`read` and/or :meth:`write`. Optional
    heavy libraries are imported inside those methods (use :func:`require`), never at import time.
    """

    #: Short unique name, used by ``format=`` arguments and the CLI.
    name: ClassVar[str]
    #: One line for ``sciz info`` and error messages.
    description: ClassVar[str] = ""
    #: File name endings, longest match wins (``.ome.tif`` beats ``.tif``).
    extensions: ClassVar[tuple[str, ...]] = ()
    #: Byte prefixes that identify the format; checked before the extension.
    magic: ClassVar[tuple[bytes, ...]] = ()
    #: Whether files of this format are directory trees (zarr).
    directory: ClassVar[bool] = False
    #: Among formats sharing a magic (zip: npz, zspy), higher priority wins when extensions do not decide.
    priority: ClassVar[int] = 0
    can_read: ClassVar[bool] = True
    can_write: ClassVar[bool] = True

    def sniff(self, path: Path, head: bytes) -> bool:
        """Whether ``path`` (first bytes ``head``; empty for directories) is of this format.

        The default checks :attr:`magic`. Formats sharing a container (zip, HDF5) override this to
        look inside.
        """
        return any(head.startswith(m) for m in self.magic)

    def matches_extension(self, path: str | os.PathLike[str]) -> int:
        """Length of the longest extension of this format that ``path`` ends with (0: none)."""
        lowered = os.fspath(path).lower().rstrip("/\\")
        return max((len(ext) for ext in self.extensions if lowered.endswith(ext)), default=0)

    @abstractmethod
    def read(self, path: Path, **options: Any) -> Dataset:
        """Read ``path`` into a :class:`~sciz.model.Dataset`."""

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        """Write ``dataset`` to ``path`` atomically and return the path written."""
        raise FormatError(f"sciz cannot write {self.name} files")

    def problems(self, dataset: Dataset) -> list[str]:
        """What in ``dataset`` this format cannot hold (empty: everything fits)."""
        return []

    def __repr__(self) -> str:
        return f"<format {self.name}: {', '.join(self.extensions)}>"
