"""Several bundle formats in one call, named the way playNano names its exports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import argument_error
from ._common import as_image_stack, sanitize_name
from .bundles_h5 import save_h5_bundle
from .bundles_npz import save_npz_bundle
from .gif import _default_stem, _is_filtered
from .ome_tiff import save_ome_tiff_stack

__all__ = ["EXPORT_FORMATS", "export_bundles", "parse_formats"]

#: Accepted names -> canonical format (``hdf5`` and ``h5`` are the same; ``tif`` is OME-TIFF).
EXPORT_FORMATS = {
    "tif": "tif",
    "tiff": "tif",
    "ome-tiff": "tif",
    "ome.tif": "tif",
    "npz": "npz",
    "h5": "h5",
    "hdf5": "h5",
}


def parse_formats(formats: Any) -> list[str]:
    """Canonical format names from a list or a comma/space separated string, in order, without repeats."""
    if isinstance(formats, str):
        items = formats.replace(",", " ").split()
    elif isinstance(formats, list | tuple | set | frozenset):
        items = []
        for item in formats:
            if not isinstance(item, str):
                raise argument_error("formats", formats, f"must hold format names ({', '.join(EXPORT_FORMATS)})")
            items.extend(item.replace(",", " ").split())
    else:
        raise argument_error("formats", formats, "must be a list of format names or a comma-separated string")
    out: list[str] = []
    for item in items:
        key = EXPORT_FORMATS.get(item.strip().lower().lstrip("."))
        if key is None:
            raise argument_error("formats", item, f"known formats are {', '.join(EXPORT_FORMATS)}")
        if key not in out:
            out.append(key)
    if not out:
        raise argument_error("formats", formats, "name at least one format (tif, npz, h5)")
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
    folder.mkdir(parents=True, exist_ok=True)
    stem = sanitize_name(base_name, _default_stem(stack))
    if _is_filtered(stack, raw):
        stem += "_filtered"
    written: dict[str, Path] = {}
    for name in chosen:
        if name == "tif":
            written[name] = save_ome_tiff_stack(folder / f"{stem}.ome.tif", stack, raw)
        elif name == "npz":
            written[name] = save_npz_bundle(folder / f"{stem}.npz", stack, raw)
        else:
            written[name] = save_h5_bundle(folder / f"{stem}.h5", stack, raw, codec=codec, tolerance=tolerance)
    return written
