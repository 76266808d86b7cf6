"""Height maps: the seed functions for NumPy export, TMD files and STL models.

These are thin adapters over :mod:`sciz.formats` (``npy``, ``npz``, ``tmd``, ``stl``), named and shaped as
in the TrueMapData documentation, so code written for it runs with only its import line changed:

>>> from sciz.heightmap import export_to_npz, load_from_npz
>>> import numpy as np
>>> path = export_to_npz({"height_map": np.zeros((4, 4), np.float32), "x_length": 10.0},
...                      "/tmp/sciz-doctest/terrain.npz")
>>> float(np.load(path)["x_length"])
10.0
>>> load_from_npz(path)["x_length"]
10.0

Differences from that implementation, on purpose: metadata comes back with its exact types and
values (not as strings), nothing is ever unpickled, files are written atomically, TMD readers reject
truncated files instead of zero-padding them, and STL files have a correct 80-byte header.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import argument_error
from .formats.npy import read_npy, write_npy
from .formats.npz import NpzFormat, read_npz, write_npz
from .model import Dataset

__all__ = [
    "TMDProcessor",
    "apply_gaussian_filter",
    "export_to_npy",
    "export_to_npz",
    "export_to_stl",
    "export_to_tmd",
    "load_from_npy",
    "load_from_npz",
    "load_tmd",
]


def _with_suffix(output_path: str | os.PathLike[str], suffix: str) -> str:
    # numpy.save/savez add the extension when it is missing; so do we, and return the real path.
    path = os.fspath(output_path)
    if not isinstance(path, str):
        raise argument_error("output_path", output_path, "must be a str or os.PathLike path")
    return path if path.lower().endswith(suffix) else path + suffix


def _height_map_of(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        if "height_map" not in value:
            raise argument_error(name, f"<dict with keys {sorted(map(str, value))}>", "a dict must hold 'height_map'")
        return value["height_map"]
    return value


def export_to_npy(height_map: Any, output_path: str | os.PathLike[str]) -> str:
    """Save a height map (an array, or a dict holding ``height_map``) as an ``.npy`` file.

    Parameters
    ----------
    height_map
        The array, or a dict with a ``'height_map'`` entry (other entries are not stored: ``.npy`` holds
        one array; use :func:`export_to_npz` to keep metadata).
    output_path
        Target file; ``.npy`` is appended if missing and parent directories are created.

    Returns
    -------
    str
        The path written.

    Example
    -------
    >>> import numpy as np
    >>> export_to_npy(np.ones((2, 3)), "/tmp/sciz-doctest/heightmap.npy")
    '/tmp/sciz-doctest/heightmap.npy'
    """
    path = _with_suffix(output_path, ".npy")
    write_npy(path, _height_map_of(height_map, "height_map"))
    return path


def load_from_npy(file_path: str | os.PathLike[str], *, mmap: bool | str = False) -> np.ndarray:
    """Load an ``.npy`` file (never unpickling); ``mmap=True`` maps a big file instead of reading it.

    Parameters
    ----------
    file_path
        The ``.npy`` file.
    mmap
        ``False`` reads into memory; ``True`` or ``'r'`` maps read-only; ``'r+'`` writable; ``'c'``
        copy-on-write.
    """
    return read_npy(file_path, mmap=mmap)


def export_to_npz(
    data: Mapping[str, Any] | Any,
    output_path: str | os.PathLike[str],
    compress: bool = True,
    *,
    level: int | None = None,
    threads: int | None = None,
) -> str:
    """Save arrays and metadata to an ``.npz`` file that ``np.load`` reads without pickle.

    Parameters
    ----------
    data
        A dict of arrays and metadata values (nested dicts, lists, tuples, numpy scalars, datetimes,
        ``None``, NaN...); a bare array is stored as ``height_map``; a :class:`~sciz.model.Dataset`
        is stored whole (as ``sciz.save`` does). Simple scalars become 0-d arrays
        (``np.load(p)['x_length']``); everything comes back exactly from :func:`load_from_npz`.
    output_path
        Target file; ``.npz`` is appended if missing and parent directories are created.
    compress
        Deflate the members (a compressed NPZ like ``np.savez_compressed``); ``False`` stores them.
    level
        ``None`` picks, per member, the fastest zlib setting that keeps level 6's size (or stores
        members deflate cannot shrink); ``0``-``9`` forces a level.
    threads
        Threads that deflate in parallel (``None``: every available core).

    Returns
    -------
    str
        The path written.
    """
    path = _with_suffix(output_path, ".npz")
    if isinstance(data, Dataset):  # keeps axes, layers, masks and provenance too
        NpzFormat().write(data, Path(path), compress=compress, level=level, threads=threads)
        return path
    entries = data if isinstance(data, Mapping) else {"height_map": data}
    write_npz(path, entries, compress=compress, level=level, threads=threads)
    return path


def load_from_npz(file_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load an ``.npz`` file into a dict, never unpickling.

    Files written by :func:`export_to_npz` give back every value with its type. Other NPZ files give
    their arrays, and a JSON-string ``metadata`` entry (TrueMapData's layout) is decoded into the dict.
    Object arrays raise :class:`~sciz.errors.FormatError` naming the entry.
    """
    return read_npz(file_path).entries


def load_tmd(file_path: str | os.PathLike[str], *, nodata_to_nan: bool = False) -> dict[str, Any]:
    """Read a TrueMap ``.tmd`` file into a dict: ``height_map`` plus its metadata.

    Parameters
    ----------
    file_path
        A TMD v1 or v2 file (every known variant).
    nodata_to_nan
        Turn the no-data value (about -1e10) into NaN and add a boolean ``nodata_mask``.
    """
    from .formats.tmd import read_tmd

    dataset = read_tmd(file_path, nodata_to_nan=nodata_to_nan)
    result: dict[str, Any] = {"height_map": dataset.data}
    result.update(dataset.metadata)
    if "nodata" in dataset.masks:
        result["nodata_mask"] = dataset.masks["nodata"]
    return result


def export_to_tmd(
    height_map: Any,
    output_path: str | os.PathLike[str],
    *,
    x_length: float | None = None,
    y_length: float | None = None,
    x_offset: float | None = None,
    y_offset: float | None = None,
    comment: str | None = None,
) -> str:
    """Write a canonical TrueMap v2 ``.tmd`` file (float32 heights in mm).

    ``height_map`` may be a dict as returned by :func:`load_tmd`; its ``x_length``, ``y_length``,
    ``x_offset``, ``y_offset`` and ``comment`` are used unless given here. Lengths default to the
    pixel counts (1 mm per pixel).
    """
    from .formats.tmd import write_tmd

    source = height_map if isinstance(height_map, Mapping) else {}
    path = _with_suffix(output_path, ".tmd")

    def pick(name: str, value: Any) -> Any:
        return value if value is not None else source.get(name)

    write_tmd(
        path,
        _height_map_of(height_map, "height_map"),
        x_length=pick("x_length", x_length),
        y_length=pick("y_length", y_length),
        x_offset=pick("x_offset", x_offset) or 0.0,
        y_offset=pick("y_offset", y_offset) or 0.0,
        comment=pick("comment", comment),
    )
    return path


def export_to_stl(
    height_map: Any,
    output_path: str | os.PathLike[str],
    *,
    x_length: float | None = None,
    y_length: float | None = None,
    x_offset: float | None = None,
    y_offset: float | None = None,
    z_scale: float = 1.0,
    base_thickness: float | None = None,
    ascii: bool = False,
) -> str:
    """Write a height map as an STL surface (binary by default), optionally closed by a solid base.

    Parameters
    ----------
    height_map
        A 2-D array (rows = y, columns = x), or a dict holding ``height_map`` and optionally
        ``x_length``/``y_length``/``x_offset``/``y_offset`` (as :func:`load_tmd` returns).
    output_path
        Target file; ``.stl`` is appended if missing and parent directories are created.
    x_length, y_length
        Physical size of the map; the pixel pitch is ``x_length / columns``. Default: the dict's
        values, else 1 per pixel.
    x_offset, y_offset
        Position of the first pixel (default: the dict's values, else 0).
    z_scale
        Factor applied to the heights (e.g. to exaggerate relief).
    base_thickness
        If given (> 0), close the surface into a watertight solid whose flat bottom lies this far
        below the lowest point.
    ascii
        Write ASCII STL instead of binary.

    Returns
    -------
    str
        The path written.
    """
    from .formats.stl import write_heightmap_stl

    source = height_map if isinstance(height_map, Mapping) else {}
    heights = np.asarray(_height_map_of(height_map, "height_map"))
    if heights.ndim != 2:
        raise argument_error("height_map", f"<array of shape {heights.shape}>", "must be 2-D (rows, columns)")
    rows, cols = heights.shape

    def pick(name: str, value: float | None, default: float) -> float:
        chosen = value if value is not None else source.get(name, default)
        if isinstance(chosen, bool) or not isinstance(chosen, int | float | np.integer | np.floating):
            raise argument_error(name, chosen, "must be a real number")
        return float(chosen)

    x_length = pick("x_length", x_length, float(cols))
    y_length = pick("y_length", y_length, float(rows))
    path = _with_suffix(output_path, ".stl")
    write_heightmap_stl(
        path,
        heights,
        x_pitch=x_length / cols,
        y_pitch=y_length / rows,
        x_offset=pick("x_offset", x_offset, 0.0),
        y_offset=pick("y_offset", y_offset, 0.0),
        z_scale=z_scale,
        base_thickness=base_thickness,
        binary=not ascii,
    )
    return path


class TMDProcessor:
    """Read a TMD file the way TrueMapData's ``TMDProcessor`` does: ``process()`` returns a dict.

    Example
    -------
    >>> processor = TMDProcessor("sample.tmd")  # doctest: +SKIP
    >>> data = processor.process()  # doctest: +SKIP
    >>> data["height_map"].shape, data["x_length"]  # doctest: +SKIP
    """

    def __init__(self, file_path: str | os.PathLike[str], *, nodata_to_nan: bool = False) -> None:
        self.file_path = Path(os.fspath(file_path))
        self.nodata_to_nan = nodata_to_nan
        self.data: dict[str, Any] | None = None

    def process(self) -> dict[str, Any]:
        """Read the file; returns ``height_map`` and the metadata (version, comment, sizes, offsets...)."""
        self.data = load_tmd(self.file_path, nodata_to_nan=self.nodata_to_nan)
        return self.data

    def get_height_map(self) -> np.ndarray:
        """The height map (reads the file on first use)."""
        return (self.data or self.process())["height_map"]

    def get_metadata(self) -> dict[str, Any]:
        """Everything but the height map (reads the file on first use)."""
        return {k: v for k, v in (self.data or self.process()).items() if k != "height_map"}


def apply_gaussian_filter(height_map: Any, sigma: float = 1.0) -> np.ndarray:
    """Smooth a height map with a Gaussian of ``sigma`` pixels (:func:`sciz.processing.gaussian_filter`).

    Float maps keep their dtype (integers become float64). NaN (no-data) pixels stay NaN and do not
    spread into their neighbours: valid values and valid-pixel weights are smoothed and divided.
    """
    from .processing import gaussian_filter

    heights = np.asarray(height_map)
    missing = np.isnan(heights) if heights.dtype.kind == "f" else None
    if missing is None or not missing.any():
        return gaussian_filter(heights, sigma)
    weights = gaussian_filter((~missing).astype(heights.dtype), sigma)
    blurred = gaussian_filter(np.where(missing, 0, heights), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = blurred / weights
    result[missing] = np.nan
    return result
