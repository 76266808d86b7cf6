"""The contract every file format plugin fulfils."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .._util import require
from ..errors import FormatError
from ..model import Dataset

if TYPE_CHECKING:
    from ..stack import ImageStack

__all__ = ["CAPABILITIES", "Format", "require", "single_array_problems", "zip_member_names"]

#: The capability flags of a :class:`Format`, as :meth:`Format.capabilities` names them.
CAPABILITIES = ("read", "write", "lazy", "afm-stack", "afm-export")


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
    if dataset.name:
        found.append(f"title {dataset.name!r} ({label} holds no title)")
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
    # -- capabilities: every entry point (sciz.load/save, the CLI, sciz.lazy, AFM inputs and exports)
    # asks the registry through these flags instead of keeping its own list of formats.
    #: :meth:`read` works (``sciz.load``, ``sciz info``, ``sciz convert`` sources).
    can_read: ClassVar[bool] = True
    #: :meth:`write` works (``sciz.save``, ``sciz convert`` targets).
    can_write: ClassVar[bool] = True
    #: Writes any Dataset it can hold. ``False`` for formats made for one kind of data (the AFM
    #: bundles): a name's extension picks them only when no generic format has that extension
    #: (``x.npz`` stays a plain NPZ; ``--to afm-npz`` or ``format="afm-npz"`` asks for the bundle).
    generic: ClassVar[bool] = True
    #: :meth:`read` takes ``lazy=True`` (dask arrays) and :meth:`write` streams dask arrays chunk
    #: by chunk, so :func:`sciz.lazy.convert` between two such formats never holds the data whole.
    lazy: ClassVar[bool] = False
    #: The file holds an AFM image stack: :meth:`read_stack` returns an
    #: :class:`~sciz.stack.ImageStack` (``sciz process`` and :func:`sciz.processing.load_stack`).
    afm_stack: ClassVar[bool] = False
    #: Names under which :func:`sciz.afm.export_bundles` and ``sciz process --export`` write an AFM
    #: stack in this format with :meth:`write_stack` (the first is the canonical one); empty: none.
    stack_export: ClassVar[tuple[str, ...]] = ()
    #: The keyword options :meth:`write_stack` takes.
    stack_options: ClassVar[tuple[str, ...]] = ()
    #: The pip extra that installs what the reader/writer needs (named in errors and listings).
    extra: ClassVar[str | None] = None

    def capabilities(self) -> frozenset[str]:
        """The flags that hold, by name (a subset of :data:`CAPABILITIES`)."""
        flags = {
            "read": self.can_read,
            "write": self.can_write,
            "lazy": self.lazy,
            "afm-stack": self.afm_stack,
            "afm-export": bool(self.stack_export),
        }
        return frozenset(name for name, held in flags.items() if held)

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

    def read_stack(self, path: Path, channel: str | None = None, pixel_size_nm: float | None = None) -> ImageStack:
        """Read ``path`` as an AFM :class:`~sciz.stack.ImageStack` (formats with :attr:`afm_stack`).

        ``channel`` picks the data channel (``None``: the format's default); ``pixel_size_nm``
        replaces the file's pixel size.
        """
        raise FormatError(f"{path}: {self.name} files do not hold an AFM stack")

    def write_stack(self, stack: ImageStack, path: Path, raw: bool = False, **options: Any) -> Path:
        """Write an AFM stack (its processed layers, or only the ``raw`` snapshot) to ``path``."""
        raise FormatError(f"sciz cannot write AFM stacks as {self.name} files")

    def describe(self, path: Path, **options: Any) -> dict[str, Any] | None:
        """A JSON-able description of ``path`` for ``sciz info``, for files one Dataset cannot show.

        ``None`` (the default): ``sciz info`` reads the file with :meth:`read` and describes the
        Dataset. A format whose files hold several arrays of their own kind (netCDF variables,
        for one) returns its own report: ``sciz info --json`` prints it under the common keys
        (path, format, description, size_on_disk) and the text report shows it key by key.
        """
        return None

    def problems(self, dataset: Dataset) -> list[str]:
        """What in ``dataset`` this format cannot hold (empty: everything fits)."""
        return []

    def __repr__(self) -> str:
        return f"<format {self.name}: {', '.join(self.extensions)}>"
