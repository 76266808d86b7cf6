"""Registry formats for the AFM inputs that only ``sciz process`` used to read: plain TIFF stacks and
folders of single frames.

Both read through :mod:`sciz.processing.inputs` (the one implementation), so ``sciz info``,
``sciz convert`` and ``sciz.load`` see the same frames, pixel size and warnings (no pixel size
found, blank frames) as ``sciz process``. The registry names these classes in ``BUILTIN_FORMATS``;
the storage layer never imports :mod:`sciz.afm`.

Example
-------
>>> import sciz
>>> ds = sciz.load("frames/")  # doctest: +SKIP
>>> ds.metadata["afm_stack"]["pixel_size_nm"]  # doctest: +SKIP
1.0
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from ..formats._base import Format
from ..model import Dataset, StoredArray
from ..stack import ImageStack
from .ometiff_format import _TIFF_MAGIC, _stored

__all__ = ["FrameFolderFormat", "TiffStackFormat"]

#: Files whose presence makes a directory a store of its own (zarr v2/v3), never a folder of frames.
_STORE_MARKERS = (".zgroup", ".zarray", ".zattrs", "zarr.json")


def _read(plugin: Format, path: Path, options: dict[str, Any]) -> ImageStack:
    """The stack :func:`sciz.processing.load_stack` reads (its warnings included); options
    ``channel`` and ``pixel_size_nm`` as there."""
    from ..errors import argument_error
    from ..processing.inputs import load_stack

    unknown = sorted(set(options) - {"channel", "pixel_size_nm"})
    if unknown:
        raise argument_error("options", unknown, f"the {plugin.name} reader takes 'channel' and 'pixel_size_nm'")
    return load_stack(path, options.get("channel"), pixel_size_nm=options.get("pixel_size_nm"))


class TiffStackFormat(Format):
    """A plain (non-OME) TIFF: one image or a stack of frames; pixel size from ImageJ's unit and
    resolution tags when it has them."""

    name = "tiff"
    description = "TIFF image or frame stack (pixel size from ImageJ unit and resolution tags; read only)"
    extensions = (".tif", ".tiff")
    magic = _TIFF_MAGIC
    can_write: ClassVar[bool] = False
    afm_stack: ClassVar[bool] = True
    extra: ClassVar[str | None] = "tiff"

    def read(self, path: Path, **options: Any) -> Dataset:
        dataset = _read(self, path, options).to_dataset()
        dataset.storage = {"data": _stored(path, every_page=True)}  # frames may be several series
        return dataset

    def read_stack(self, path: Path, channel: str | None = None, pixel_size_nm: float | None = None) -> ImageStack:
        from ..processing.inputs import _load_tiff

        with _refuse_damage(path):
            return _load_tiff(path, channel, pixel_size_nm)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _refuse_damage(path: Path) -> Iterator[None]:
    """A FormatError when tifffile reports damage while reading ``path``: on a truncated file it logs
    "invalid page offset" and returns the pages before the break (a 3-frame stack read as 1 frame)."""
    logger = logging.getLogger("tifffile")
    collect = _Collect()
    logger.addHandler(collect)
    try:
        yield
    finally:
        logger.removeHandler(collect)
    if collect.messages:
        from ..errors import FormatError

        raise FormatError(f"{path}: damaged TIFF ({collect.messages[0]}); nothing is returned from it")


class FrameFolderFormat(Format):
    """A folder of single-frame files (``.npy``, ``.tif``, vendor images), sorted by name with
    numbers in natural order; all frames of one kind and one size."""

    name = "frames"
    description = "folder of single-frame files (.npy, .tif, .spm, .jpk, .ibw, .gwy), one frame each; read only"
    directory = True
    priority = -1
    can_write: ClassVar[bool] = False
    afm_stack: ClassVar[bool] = True

    def sniff(self, path: Path, head: bytes) -> bool:
        from ..processing.inputs import _FRAME_SUFFIXES

        if not path.is_dir() or any((path / marker).exists() for marker in _STORE_MARKERS):
            return False
        with os.scandir(path) as entries:  # the first frame file decides: a folder may hold thousands
            for entry in entries:
                name = entry.name.lower()
                if not name.startswith(".") and name.endswith(_FRAME_SUFFIXES) and entry.is_file():
                    return True
        return False

    def read(self, path: Path, **options: Any) -> Dataset:
        stack = _read(self, path, options)
        dataset = stack.to_dataset()
        files = [str(frame.get("source_file")) for frame in stack.frame_metadata]
        kinds = sorted({Path(name).suffix.lower() for name in files})
        stored = sum((path / name).stat().st_size for name in dict.fromkeys(files))
        dataset.storage = {
            "data": StoredArray(
                codec=f"{'/'.join(kinds) or '?'} frame files",
                stored_bytes=stored,
                details={"frame files": f"{len(set(files))} ({files[0]} .. {files[-1]})" if files else 0},
            )
        }
        return dataset

    def read_stack(self, path: Path, channel: str | None = None, pixel_size_nm: float | None = None) -> ImageStack:
        from ..processing.inputs import _load_folder

        return _load_folder(path, channel, pixel_size_nm)
