"""OME-TIFF export and import of AFM stacks, readable by playNano, tifffile, Bio-Formats and Fiji.

What is written (the layout playNano 0.5.0 reads): float32 frames as a 5-D ``TCZYX`` image (T =
frames, C = Z = 1), one TIFF page per frame, OME-XML 2016-06 with ``PhysicalSizeX/Y`` in µm,
``TimeIncrement`` and one ``Plane`` per frame carrying ``DeltaT`` in seconds, the channel name, and
resolution tags in pixels per inch. Private tags on the first page: 65000 = provenance JSON,
65001 = JSON list of processed-layer names (both as playNano writes them) and 65002 = the frame
metadata JSON (a sciz addition that playNano ignores). Masks and extra layers are not stored; use
the NPZ or HDF5 bundles for those.

Single-frame stacks round-trip through sciz (the reader uses the OME dimension sizes instead of
tifffile's squeezed shape) and through playNano: a one-frame file adds tifffile's "shaped"
description after the OME-XML (see :func:`_single_frame_layout`), which playNano's own one-frame
files lack (it cannot read those back).
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file
from ..errors import FormatError
from ..formats._base import require
from ..formats._guard import check_tiff_series_size, write_errors
from ..processing.blocks import as_stack_array, iter_frame_blocks
from ..stack import ImageStack
from ._common import as_image_stack, bundle_provenance, json_text, source_path, target_path

__all__ = [
    "TAG_FRAME_METADATA",
    "TAG_PROCESSED_KEYS",
    "TAG_PROVENANCE",
    "load_ome_tiff_stack",
    "save_ome_tiff_stack",
]

#: Private TIFF tags (the reusable range 65000-65535), as playNano uses them.
TAG_PROVENANCE = 65000
TAG_PROCESSED_KEYS = 65001
#: sciz's addition: the full per-frame metadata, so it survives the round trip.
TAG_FRAME_METADATA = 65002
_UNDEFINED = 7  # TIFF data type for opaque bytes
_NM_PER_INCH = 25_400_000.0
_OME_NS = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"
_NM_PER_OME_UNIT = {"nm": 1.0, "µm": 1e3, "um": 1e3, "mm": 1e6, "cm": 1e7, "m": 1e9, "pm": 1e-3, "Å": 0.1}
_S_PER_OME_UNIT = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}


#: Characters an OME-XML attribute does not give back: those XML 1.0 cannot hold, and tab, CR and LF,
#: which tifffile leaves unescaped and XML parsers then read as spaces.
_XML_INVALID = re.compile("[\\x00-\\x1f\\ud800-\\udfff\\ufffe\\uffff]")


def save_ome_tiff_stack(
    path: str | os.PathLike[str],
    afm_stack: Any,
    raw: bool = False,
    *,
    compression: str | None = None,
) -> Path:
    """Save an AFM stack as an OME-TIFF (``.ome.tif``) that ImageJ/Fiji, tifffile and playNano open.

    Parameters
    ----------
    path
        Destination; ``.ome.tif`` is appended unless the name ends with ``.tif`` or ``.tiff``.
    afm_stack
        A :class:`~sciz.stack.ImageStack` (or a Dataset, array or playNano ``AFMImageStack``).
    raw
        Write the ``processed['raw']`` snapshot (with the frame metadata from before any frame
        edit) instead of the current data.
    compression
        ``None`` (uncompressed, as playNano) or a tifffile compression such as ``"zlib"`` or
        ``"zstd"`` (Fiji reads ``zlib``; ``zstd`` needs a recent Bio-Formats).

    Returns
    -------
    Path
        The file written.
    """
    tifffile = require("tifffile", "tiff")
    stack = as_image_stack(afm_stack, "afm_stack")
    target = target_path(path, (".ome.tif", ".ome.tiff", ".tif", ".tiff"))
    bad = _XML_INVALID.search(stack.channel)
    if bad:
        # The name goes into the OME-XML, which cannot hold it: the file written was unreadable
        # (a NUL or other control character) or the write died with a raw UnicodeEncodeError.
        raise FormatError(
            f"{target}: the channel name {stack.channel!r} holds {bad.group()!r}, which OME-XML cannot give back "
            "(control characters, tabs and newlines included, lone surrogates, U+FFFE, U+FFFF)"
        )
    data, frames = stack.export_view(raw)
    values = as_stack_array(data, np.float32)
    n_frames, height, width = values.shape
    times = [f.get("timestamp") for f in frames]
    known = [t for t in times if t is not None and math.isfinite(t)]
    pixel_um = stack.pixel_size_nm * 1e-3
    metadata: dict[str, Any] = {
        "axes": "TCZYX",
        "Name": stack.channel,
        "PhysicalSizeX": pixel_um,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": pixel_um,
        "PhysicalSizeYUnit": "µm",
        "Channel": {"Name": stack.channel},
        # Planes without a known time simply carry no DeltaT (it is optional in the schema).
        "Plane": [{"DeltaT": float(t), "DeltaTUnit": "s"} if t is not None and math.isfinite(t) else {} for t in times],
    }
    if len(known) == n_frames and n_frames > 1:
        metadata["TimeIncrement"] = float(np.median(np.diff(np.asarray(known, dtype=np.float64))))
        metadata["TimeIncrementUnit"] = "s"
    if not any(metadata["Plane"]):
        del metadata["Plane"]
    extratags = [
        _bytes_tag(TAG_PROVENANCE, json_text(stack.provenance)),
        _bytes_tag(TAG_PROCESSED_KEYS, json.dumps(list(stack.processed))),
        _bytes_tag(TAG_FRAME_METADATA, json_text(frames)),
    ]
    dpi = _NM_PER_INCH / stack.pixel_size_nm
    layout: dict[str, Any] = {"metadata": metadata, "ome": True}
    if n_frames == 1:
        layout = _single_frame_layout(tifffile, (n_frames, 1, 1, height, width), metadata)
    with write_errors(target), atomic_file(target) as handle:
        tifffile.imwrite(
            handle,
            _planes(values),
            **(
                {} if isinstance(values, np.ndarray) else {"shape": (n_frames, 1, 1, height, width), "dtype": "float32"}
            ),
            photometric="minisblack",
            resolution=(dpi, dpi),
            resolutionunit="INCH",
            extratags=extratags,
            compression=compression,
            # Past 4 GiB of frames the classic TIFF offsets overflow; tifffile picks BigTIFF by itself
            # only for an array in memory, so frames streamed from disk (out of core) say it here.
            bigtiff=4 * n_frames * height * width > 2**32 - 2**25,
            **layout,
        )
    return target


def _planes(values: Any) -> Any:
    """The frames for tifffile: the array itself, or one frame at a time from an array on disk."""
    if isinstance(values, np.ndarray):
        return values.reshape(values.shape[0], 1, 1, *values.shape[1:])
    return (frame for _, block in iter_frame_blocks(values, 8) for frame in block)


def _single_frame_layout(tifffile: Any, shape: tuple[int, ...], metadata: dict[str, Any]) -> dict[str, Any]:
    """How to write one frame so that playNano reads it too, not only OME readers.

    playNano 0.5.0 takes ``tifffile.TiffFile.asarray()``, which squeezes a one-frame OME series to
    2-D, and refuses anything but 3-D or 5-D. tifffile's own "shaped" series is never squeezed, so
    the first page carries two ImageDescription tags, as tifffile writes them for a description
    plus shaped metadata: the OME-XML first (tifffile's ``is_ome``, ome-types, Bio-Formats and
    libtiff take the first of duplicate tags) and the shape JSON ``{"shape": [1, 1, 1, H, W]}``
    second (tifffile reads the series from it, so ``asarray()`` is 5-D).
    """
    ome = tifffile.OmeXml()
    ome.addimage(np.float32, shape, (1, 1, 1, *shape[-2:], 1), **metadata)
    return {"description": ome.tostring(declaration=True).encode("utf-8"), "metadata": {"axes": "TCZYX"}}


def _bytes_tag(code: int, text: str) -> tuple[int, int, int, bytes, bool]:
    encoded = text.encode("utf-8")
    return (code, _UNDEFINED, len(encoded), encoded, True)


def _tag_json(page: Any, code: int, source: Path) -> Any:
    tag = page.tags.get(code)
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    try:
        return json.loads(value)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{source}: private tag {code} does not hold valid JSON ({exc})") from None


def _float_attr(element: ET.Element | None, name: str) -> float | None:
    if element is None or name not in element.attrib:
        return None
    try:
        return float(element.attrib[name])
    except ValueError:
        return None


def _parse_ome(xml: str, source: Path) -> dict[str, Any]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise FormatError(f"{source}: invalid OME-XML ({exc})") from None
    namespace = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else _OME_NS
    image = root.find(f"{namespace}Image")
    pixels = image.find(f"{namespace}Pixels") if image is not None else None
    if pixels is None:
        raise FormatError(f"{source}: the OME-XML has no Image/Pixels element")
    info: dict[str, Any] = {
        "order": pixels.attrib.get("DimensionOrder", "XYCZT"),
        "sizes": {axis: int(pixels.attrib.get(f"Size{axis}", "1")) for axis in "XYCZT"},
    }
    size = _float_attr(pixels, "PhysicalSizeX")
    unit = pixels.attrib.get("PhysicalSizeXUnit", "µm")
    info["pixel_size_nm"] = size * _NM_PER_OME_UNIT[unit] if size and unit in _NM_PER_OME_UNIT else None
    channel = pixels.find(f"{namespace}Channel")
    info["channel"] = channel.attrib.get("Name") if channel is not None else None
    times: dict[int, float] = {}
    for plane in pixels.findall(f"{namespace}Plane"):
        delta = _float_attr(plane, "DeltaT")
        if delta is None:
            continue
        scale = _S_PER_OME_UNIT.get(plane.attrib.get("DeltaTUnit", "s"), 1.0)
        times[int(plane.attrib.get("TheT", "0"))] = delta * scale
    info["times"] = times
    return info


def load_ome_tiff_stack(path: str | os.PathLike[str], channel: str = "height_trace") -> ImageStack:
    """Load an OME-TIFF (from sciz, playNano or any single-channel T/Z stack) as an ImageStack.

    Parameters
    ----------
    path
        The ``.ome.tif`` file.
    channel
        Channel name to use when the OME metadata does not name one.

    Raises
    ------
    FormatError
        If the file is not a readable OME-TIFF, or holds several channels or Z-planes per time
        point (not an AFM video).
    """
    tifffile = require("tifffile", "tiff")
    source = source_path(path)
    try:
        with tifffile.TiffFile(source) as tif:
            if not tif.is_ome or not tif.ome_metadata:
                raise FormatError(f"{source}: not an OME-TIFF (no OME-XML in the first page)")
            info = _parse_ome(tif.ome_metadata, source)
            _check_planes(info, len(tif.pages), source)
            series = tif.series[0]
            check_tiff_series_size(tif, series, source)
            values = series.asarray()
            axes = series.get_axes(False)
            shape = series.get_shape(False)
            page = tif.pages[0]
            provenance = _tag_json(page, TAG_PROVENANCE, source)
            stored_frames = _tag_json(page, TAG_FRAME_METADATA, source)
    except FormatError:
        raise
    except FileNotFoundError:
        raise
    except Exception as exc:  # tifffile raises many kinds on damaged files (struct.error, RecursionError, ...)
        raise FormatError(f"{source}: unreadable OME-TIFF ({type(exc).__name__}: {exc})") from None
    data = _to_frames(np.asarray(values).reshape(shape), axes, source)
    n_frames = data.shape[0]
    frames: list[dict[str, Any]]
    if isinstance(stored_frames, list) and len(stored_frames) == n_frames:
        frames = [dict(f) if isinstance(f, dict) else {} for f in stored_frames]
    else:
        frames = [{} for _ in range(n_frames)]
        pixel = info["pixel_size_nm"]
        for index, frame in enumerate(frames):
            frame["timestamp"] = info["times"].get(index)
            if pixel:
                frame["frame_pixel_size_nm"] = pixel
    try:
        return ImageStack(
            data,
            info["pixel_size_nm"] or 1.0,
            info["channel"] or channel,
            frames,
            provenance=bundle_provenance(provenance if isinstance(provenance, dict) else {}, source, "ome-tiff"),
            file_path=source,
        )
    except ValueError as exc:
        raise FormatError(f"{source}: inconsistent OME-TIFF ({exc})") from None


def _check_planes(info: dict[str, Any], pages: int, source: Path) -> None:
    """Refuse OME-XML that declares more planes than the file has pages, before tifffile builds the
    series: it makes an entry per declared plane (a 56 KB file saying SizeT="1000000000" took 15 GB
    and 80 s before failing) and fills missing planes with zeros."""
    sizes = info["sizes"]
    planes = sizes["Z"] * sizes["C"] * sizes["T"]
    if min(sizes.values()) < 1 or planes > pages:
        shown = ", ".join(f"Size{axis}={sizes[axis]}" for axis in "XYZCT")
        raise FormatError(f"{source}: the OME-XML declares {shown} ({planes} planes), but the file holds {pages} pages")


def _to_frames(values: np.ndarray, axes: str, source: Path) -> np.ndarray:
    """Reorder a tifffile series to (frames, Y, X); T (or Z, or a lone extra axis) becomes frames."""
    if "Y" not in axes or "X" not in axes:
        raise FormatError(f"{source}: image axes {axes!r} have no Y and X")
    sizes = dict(zip(axes, values.shape, strict=True))
    extra = [a for a in axes if a not in "YX" and sizes[a] > 1]
    if len(extra) > 1:
        raise FormatError(
            f"{source}: image has {', '.join(f'{a}={sizes[a]}' for a in extra)}; an AFM stack has only frames"
        )
    frame_axis = extra[0] if extra else next((a for a in "TZQ" if a in axes), None)
    order = ([axes.index(frame_axis)] if frame_axis else []) + [axes.index("Y"), axes.index("X")]
    rest = [i for i in range(values.ndim) if i not in order]
    moved = np.transpose(values, order + rest)
    return moved.reshape(moved.shape[0] if frame_axis else 1, sizes["Y"], sizes["X"])
