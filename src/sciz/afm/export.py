"""Several bundle formats in one call, named the way playNano names its exports."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import DataWarning, argument_error
from ..formats import Format, list_formats
from ._common import as_image_stack
from .gif import export_stem
from .layers import float32_note, select_layers

__all__ = ["export_bundles", "export_formats", "parse_formats"]


def export_formats() -> dict[str, Format]:
    """Accepted export names -> the registered format that writes them (``format.stack_export``).

    The first name of each format is its canonical one (``tif`` for OME-TIFF, ``npz``, ``h5``);
    ``hdf5`` and ``h5`` are the same format.
    """
    return {name: plugin for plugin in list_formats("afm-export") for name in plugin.stack_export}


def parse_formats(formats: Any) -> list[str]:
    """Canonical format names from a list or a comma/space separated string, in order, without repeats."""
    if isinstance(formats, str):
        items = formats.replace(",", " ").split()
    elif isinstance(formats, list | tuple | set | frozenset):
        items = []
        for item in formats:
            if not isinstance(item, str):
                raise argument_error("formats", formats, f"must hold format names ({', '.join(export_formats())})")
            items.extend(item.replace(",", " ").split())
    else:
        raise argument_error("formats", formats, "must be a list of format names or a comma-separated string")
    known = export_formats()
    out: list[str] = []
    for item in items:
        plugin = known.get(item.strip().lower().lstrip("."))
        if plugin is None:
            raise argument_error("formats", item, f"known formats are {', '.join(known)}")
        if plugin.stack_export[0] not in out:
            out.append(plugin.stack_export[0])
    if not out:
        canonical = ", ".join(dict.fromkeys(p.stack_export[0] for p in known.values()))
        raise argument_error("formats", formats, f"name at least one format ({canonical})")
    return out


def export_bundles(
    afm_stack: Any,
    output_folder: str | os.PathLike[str] | None,
    base_name: str | None,
    formats: Any,
    raw: bool = False,
    *,
    codec: Any = None,
    tolerance: float | None = None,
    keep: Any = None,
) -> dict[str, Path]:
    """Write ``afm_stack`` in each of ``formats`` into ``output_folder`` as ``<base_name>[_filtered].<ext>``.

    Parameters
    ----------
    afm_stack
        A :class:`~sciz.stack.ImageStack` (or a Dataset, array or playNano ``AFMImageStack``).
    output_folder
        Target directory (created); ``None`` means ``output``.
    base_name
        File stem; ``None`` uses the source file's stem. ``_filtered`` is appended when processed
        data is exported, as playNano does.
    formats
        Any of ``tif`` (OME-TIFF), ``npz``, ``h5``/``hdf5``, as a list or ``"npz,h5"``.
    raw
        Export the unprocessed ``raw`` snapshot only.
    codec, tolerance
        Passed to :func:`~sciz.afm.save_h5_bundle` for the HDF5 bundle.
    keep
        The processed layers and masks to write (``"raw,final"``...; see
        :func:`~sciz.afm.select_layers`); ``None`` writes them all.

    Returns
    -------
    dict
        Canonical format name -> path written.

    Example
    -------
    >>> export_bundles(afm_stack=stack, output_folder="exports", base_name="my_stack",
    ...                formats=["tif", "npz", "h5"], raw=False)  # doctest: +SKIP
    """
    chosen = parse_formats(formats)
    stack = as_image_stack(afm_stack, "afm_stack")
    folder = Path(os.fspath(output_folder)) if output_folder is not None else Path("output")
    stem = export_stem(stack, base_name, raw)
    if not raw:
        stack = select_layers(stack, keep)
    note = float32_note(stack, raw)
    if note:
        warnings.warn(DataWarning(note), stacklevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    known = export_formats()
    written: dict[str, Path] = {}
    for name in chosen:
        plugin = known[name]
        # A codec is the HDF5 bundle's option; formats that take none are not given it.
        options = {k: v for k, v in (("codec", codec), ("tolerance", tolerance)) if k in plugin.stack_options}
        written[name] = plugin.write_stack(stack, folder / f"{stem}{plugin.extensions[0]}", raw, **options)
    return written
