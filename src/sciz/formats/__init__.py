"""File formats: THE registry that finds the right format by magic bytes first, then by extension.

Built-in formats are listed in ``BUILTIN_FORMATS`` as ``module:Class`` strings and imported on first
use; third-party formats register through the ``sciz.formats`` entry-point group or
:func:`register_format`. Every entry point asks this registry, through each format's capability
flags (:meth:`Format.capabilities`): ``sciz.load``/``sciz.save``, ``sciz info``/``convert``/
``process``, :func:`sciz.lazy.convert` (``lazy``), :func:`sciz.processing.load_stack`
(``afm_stack``) and :func:`sciz.afm.export_bundles` (``stack_export``).

The AFM bundle formats are implemented in :mod:`sciz.afm` (they read and write through its bundle
code) and are named here only as strings: this package never imports the layers above it.
"""

from __future__ import annotations

import importlib
import os
import stat
import sys
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ..atomic import recover
from ..errors import FormatError, UnknownFormatError, argument_error
from ..model import Dataset
from ._base import CAPABILITIES, Format, require

__all__ = [
    "BUILTIN_FORMATS",
    "CAPABILITIES",
    "Format",
    "detect_format",
    "format_for_writing",
    "get_format",
    "list_formats",
    "load",
    "register_format",
    "require",
    "save",
]

#: Formats shipped with sciz, imported lazily. Later modules append here.
BUILTIN_FORMATS: list[str] = [
    "sciz.afm.ometiff_format:OmeTiffFormat",
    "sciz.afm.bundle_formats:AfmNpzFormat",
    "sciz.afm.bundle_formats:AfmH5Format",
    "sciz.formats.zspy:ZspyFormat",
    "sciz.formats.zspy:ZspyZipFormat",
    "sciz.formats.hspy:HspyFormat",
    "sciz.formats.npy:NpyFormat",
    "sciz.formats.scz:SczFormat",
    "sciz.formats.npz:NpzFormat",
    "sciz.formats.tmd:TmdFormat",
    "sciz.formats.stl:StlFormat",
    "sciz.formats.afm_vendor:AsdFormat",
    "sciz.formats.afm_vendor:H5JpkFormat",
    "sciz.formats.afm_vendor:SpmFormat",
    "sciz.formats.afm_vendor:JpkFormat",
    "sciz.formats.afm_vendor:IbwFormat",
    "sciz.formats.afm_vendor:GwyFormat",
    "sciz.formats.netcdf:NetcdfFormat",
    "sciz.afm.stack_inputs:TiffStackFormat",
    "sciz.afm.stack_inputs:FrameFolderFormat",
]

_registry: dict[str, Format] = {}
_loaded = False
_lock = threading.Lock()


def register_format(plugin: Format | type[Format], *, replace: bool = False) -> Format:
    """Add a format to the registry (an instance or a class with a no-argument constructor)."""
    instance = plugin() if isinstance(plugin, type) else plugin
    if not isinstance(instance, Format):
        raise argument_error("plugin", plugin, "must be a sciz.formats.Format subclass or instance")
    if instance.name in _registry and not replace and type(_registry[instance.name]) is not type(instance):
        raise FormatError(f"a format named {instance.name!r} is already registered")
    _registry[instance.name] = instance
    return instance


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        for spec in BUILTIN_FORMATS:
            module_name, _, class_name = spec.partition(":")
            module = importlib.import_module(module_name)
            register_format(getattr(module, class_name), replace=True)
        for entry in entry_points(group="sciz.formats"):
            try:
                register_format(entry.load())
            except Exception as exc:  # a broken third-party plugin must not break sciz
                import warnings

                warnings.warn(f"sciz format plugin {entry.name!r} failed to load: {exc}", stacklevel=2)
        _loaded = True


def list_formats(capability: str | None = None) -> list[Format]:
    """All registered formats in registration order; with ``capability`` only those that have it.

    ``capability`` is one of :data:`CAPABILITIES`: ``read``, ``write``, ``lazy``, ``afm-stack``,
    ``afm-export``.

    Example
    -------
    >>> from sciz.formats import list_formats
    >>> sorted(f.name for f in list_formats("lazy"))
    ['hspy', 'zspy', 'zspy-zip']
    """
    if capability is not None and capability not in CAPABILITIES:
        raise argument_error("capability", capability, f"known capabilities are {', '.join(CAPABILITIES)}")
    _load_all()
    return [f for f in _registry.values() if capability is None or capability in f.capabilities()]


def get_format(name: str) -> Format:
    """The format registered under ``name`` (case-insensitive; ``hdf5`` finds ``h5`` style aliases)."""
    _load_all()
    key = name.lower().lstrip(".")
    if key in _registry:
        return _registry[key]
    for plugin in _registry.values():
        if any(ext.lstrip(".") == key for ext in plugin.extensions):
            return plugin
    raise argument_error("format", name, f"known formats are {', '.join(sorted(_registry))}", cls=UnknownFormatError)


def _read_head(path: Path, size: int = 512) -> bytes:
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            # Opening a FIFO blocks until a writer comes; a device never ends.
            raise FormatError("not a regular file or directory (a FIFO or a device)")
        with path.open("rb") as handle:
            return handle.read(size)
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from exc


def detect_format(path: str | os.PathLike[str]) -> Format:
    """The format of an existing file or directory: magic bytes first, then the extension."""
    _load_all()
    target = Path(os.fspath(path))
    if not target.exists():
        raise FileNotFoundError(f"no such file or directory: {target}")
    is_dir = target.is_dir()
    head = b"" if is_dir else _read_head(target)
    candidates = [f for f in _registry.values() if f.can_read and f.directory == is_dir]
    by_content = [f for f in candidates if (f.magic or is_dir or _has_custom_sniff(f)) and f.sniff(target, head)]
    if by_content:
        return max(by_content, key=lambda f: (f.matches_extension(target), f.priority))
    by_extension = [f for f in candidates if not f.magic and f.matches_extension(target)]
    if by_extension:
        return max(by_extension, key=lambda f: (f.matches_extension(target), f.priority))
    kind = "directory" if is_dir else "file"
    known = ", ".join(f"{f.name} ({'/'.join(f.extensions)})" for f in _registry.values() if f.can_read)
    raise UnknownFormatError(f"{target}: not a {kind} format sciz recognises; readable formats: {known}")


def _has_custom_sniff(plugin: Format) -> bool:
    return type(plugin).sniff is not Format.sniff


def format_for_writing(path: str | os.PathLike[str], format: str | None = None) -> Format:
    """The format to write ``path`` in: ``format`` if given, else the longest matching extension."""
    _load_all()
    if format is not None:
        plugin = get_format(format)
    else:
        matches = [(f.matches_extension(path), f.generic, f.priority, f) for f in _registry.values() if f.can_write]
        best = max(matches, key=lambda m: m[:3], default=(0, True, 0, None))
        if best[0] == 0 or best[3] is None:
            known = ", ".join(f"{f.name} ({'/'.join(f.extensions)})" for f in _registry.values() if f.can_write)
            readable = [f.name for f in _registry.values() if f.matches_extension(path) and not f.can_write]
            if readable:
                raise FormatError(
                    f"{os.fspath(path)}: sciz cannot write {'/'.join(readable)} files (it only reads them); "
                    f"writable: {known}"
                )
            raise UnknownFormatError(f"{os.fspath(path)}: cannot tell the format from the name; writable: {known}")
        plugin = best[3]
    if not plugin.can_write:
        raise FormatError(f"sciz cannot write {plugin.name} files (it only reads them)")
    return plugin


def load(path: str | os.PathLike[str], *, format: str | None = None, **options: Any) -> Dataset:
    """Read any registered format into a :class:`~sciz.model.Dataset`.

    Example
    -------
    >>> import sciz
    >>> ds = sciz.load("surface.tmd")  # doctest: +SKIP
    """
    recover(path)  # a writer killed between the two renames of a directory swap left it beside the name
    if format:
        plugin = get_format(format)
    else:
        try:
            plugin = detect_format(path)
        except (FileNotFoundError, FormatError):
            # Detection looks at the name several times; a directory swap's two renames may fall
            # between the looks (the name missing for a moment). Wait for it and look once more.
            recover(path)
            plugin = detect_format(path)
    dataset = plugin.read(Path(os.fspath(path)), **options)
    if dataset.source is None:
        dataset.source = os.fspath(path)
    return dataset


def save(dataset: Dataset, path: str | os.PathLike[str], *, format: str | None = None, **options: Any) -> Path:
    """Write ``dataset`` to ``path`` (format from ``format`` or the extension) atomically.

    Raises :class:`~sciz.errors.FormatError` listing what the format cannot hold.
    """
    if not isinstance(dataset, Dataset):
        raise argument_error("dataset", dataset, "must be a sciz.Dataset")
    plugin = format_for_writing(path, format)
    try:
        problems = plugin.problems(dataset)
        if problems:
            raise FormatError(f"{plugin.name} cannot hold this dataset: " + "; ".join(problems))
        return plugin.write(dataset, Path(os.fspath(path)), **options)
    except RecursionError:  # metadata nested thousands deep: every writer walks it recursively
        raise FormatError(
            f"{os.fspath(path)}: cannot write the dataset: its metadata nests too deeply (Python's recursion "
            f"limit, {sys.getrecursionlimit()}, is reached)"
        ) from None
