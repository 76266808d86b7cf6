"""TrueMap ``.tmd`` height maps: every known v1/v2 variant read with strict size checks; canonical v2 written.

A TMD file is a short text magic, an optional NUL-terminated comment (v2), two uint32 dimensions, four
float32 lengths/offsets in millimetres (two for v1), then float32 heights row by row (little-endian).
Writers disagree on the magic's case and on the comment's length, so the reader tries candidate
header offsets and keeps the one whose dimensions account for the file size exactly; a file that is
shorter or longer than its header says is an error, never silently padded or cut.

Example
-------
>>> import sciz
>>> surface = sciz.load("v2_Surface.tmd")  # doctest: +SKIP
>>> surface.metadata["x_length"], surface.shape  # doctest: +SKIP
(2.5199999809265137, (169, 169))
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file
from ..errors import FormatError, argument_error
from ..model import Axis, Dataset, StoredArray, as_array
from ._base import Format
from ._guard import write_errors

__all__ = ["NODATA_VALUE", "TmdFormat", "TmdHeader", "read_tmd", "read_tmd_header", "write_tmd"]

#: The magic text, compared case-insensitively (some writers spell it ``Truemap``).
MAGIC = b"binary truemap data file"
#: What TrueMap writes for unmeasured pixels.
NODATA_VALUE = np.float32(-1e10)
#: Heights at or below this are no-data (real files hold -1e10; no surface is 1000 km deep in mm).
NODATA_THRESHOLD = -1e9
#: The canonical v2 layout: 32-byte magic line, 24-byte comment, header fields at 56, data at 80.
CANONICAL_MAGIC = b"Binary TrueMap Data File v2.0\r\n\x00"
CANONICAL_COMMENT_BYTES = 24
DEFAULT_COMMENT = "Created by sciz"
#: Dimension offsets seen in real files, tried first (v2: TrueMap, GelSight empty comment, 30-byte magic).
_KNOWN_OFFSETS = {2: (56, 33, 52, 32), 1: (28,)}
#: Bytes after the dimensions' offset: width, height, then 4 (v2) or 2 (v1) float32 fields.
_FIELDS_BYTES = {2: 24, 1: 16}
#: How far into the file a header may reach.
_HEAD_BYTES = 1024
#: Metadata keys that a TMD file holds (others cannot be written).
TMD_KEYS = frozenset(
    {
        "version",
        "comment",
        "width",
        "height",
        "x_length",
        "y_length",
        "x_offset",
        "y_offset",
        "units",
        "x_pixel_size",
        "y_pixel_size",
        "nodata_count",
    }
)


@dataclass(frozen=True)
class TmdHeader:
    """The header of a TMD file, as found in it."""

    version: int
    comment: str
    width: int
    height: int
    x_length: float
    y_length: float
    x_offset: float
    y_offset: float
    #: Where the width field sits (56 in canonical v2 files, 28 in v1).
    dimensions_offset: int
    #: Where the heights start.
    data_offset: int

    def metadata(self) -> dict[str, Any]:
        """The metadata sciz reports for this file (lengths and offsets in mm)."""
        return {
            "version": self.version,
            "comment": self.comment,
            "width": self.width,
            "height": self.height,
            "x_length": self.x_length,
            "y_length": self.y_length,
            "x_offset": self.x_offset,
            "y_offset": self.y_offset,
            "units": "mm",
            "x_pixel_size": self.x_length / self.width,
            "y_pixel_size": self.y_length / self.height,
        }


def _magic_end(head: bytes, version: int) -> int:
    """Where the magic line ends (after its CR LF / LF and, for v2, its NUL)."""
    match = re.match(rb"binary truemap data file( v\d+\.\d+)?(\r?\n)?\x00?", head, re.IGNORECASE)
    return match.end() if match else len(MAGIC)


def _parsed_offset(head: bytes, version: int) -> int:
    """The dimension offset implied by reading the header as text: magic line, then a NUL-ended comment."""
    position = _magic_end(head, version)
    if version == 1:
        while position < len(head) and head[position] == 0:
            position += 1
        return position
    end = head.find(b"\x00", position)
    return end + 1 if end >= 0 else position


def _clean_comment(raw: bytes) -> str:
    text = raw.replace(b"\x00", b" ")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        decoded = text.decode("latin-1")
    return " ".join(decoded.split())


def _dimensions(head: bytes, offset: int) -> tuple[int, int]:
    width, height = np.frombuffer(head, dtype="<u4", count=2, offset=offset)
    return int(width), int(height)


def read_tmd_header(path: str | os.PathLike[str]) -> TmdHeader:
    """Parse and check the header of a TMD file (v1 or v2, every known variant).

    Raises
    ------
    FormatError
        When the file is not TMD, its header is malformed, or its size does not match the
        dimensions (truncated or oversized), naming the file and the mismatch.
    """
    source = Path(os.fspath(path))
    try:
        size = source.stat().st_size
        with source.open("rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {source}") from None
    except OSError as exc:
        raise FormatError(f"cannot read {source}: {exc.strerror or exc}") from exc
    if head[: len(MAGIC)].lower() != MAGIC:
        raise FormatError(
            f"{source}: not a TMD file: it starts with {head[:32]!r}, TMD files start with b'Binary TrueMap Data File'"
        )
    version_match = re.match(rb" v(\d+)\.(\d+)", head[len(MAGIC) :])
    version = int(version_match.group(1)) if version_match else 1
    if version not in _FIELDS_BYTES:
        raise FormatError(f"{source}: TMD version {version} is not supported (v1, v2)")
    fields = _FIELDS_BYTES[version]
    parsed = _parsed_offset(head, version)
    start = _magic_end(head, version) if version == 2 else len(MAGIC)
    candidates = [parsed, *_KNOWN_OFFSETS[version], *range(start, len(head) - fields + 1)]
    chosen = None
    for offset in dict.fromkeys(candidates):  # ordered, without repeats
        if offset + fields > len(head):
            continue
        width, height = _dimensions(head, offset)
        if width and height and offset + fields + 4 * width * height == size:
            chosen = offset
            break
    if chosen is None:
        raise _size_error(source, head, size, version, parsed)
    width, height = _dimensions(head, chosen)
    floats = np.frombuffer(head, dtype="<f4", count=fields // 4 - 2, offset=chosen + 8).astype(np.float64)
    x_length, y_length = float(floats[0]), float(floats[1])
    x_offset, y_offset = (float(floats[2]), float(floats[3])) if version == 2 else (0.0, 0.0)
    for name, value in (("x_length", x_length), ("y_length", y_length), ("x_offset", x_offset), ("y_offset", y_offset)):
        if not np.isfinite(value):
            raise FormatError(f"{source}: malformed header: {name} is {value}")
    comment = _clean_comment(head[_magic_end(head, version) : chosen]) if version == 2 else ""
    return TmdHeader(
        version=version,
        comment=comment,
        width=width,
        height=height,
        x_length=x_length,
        y_length=y_length,
        x_offset=x_offset,
        y_offset=y_offset,
        dimensions_offset=chosen,
        data_offset=chosen + fields,
    )


def _size_error(source: Path, head: bytes, size: int, version: int, parsed: int) -> FormatError:
    # Diagnose with the offset the header text implies (the comment's NUL), which is what a reader
    # of this variant would use.
    fields = _FIELDS_BYTES[version]
    if parsed + fields > len(head):
        return FormatError(
            f"{source}: truncated TMD v{version} header: the file has {size} bytes, its header needs {parsed + fields}"
        )
    width, height = _dimensions(head, parsed)
    if width == 0 or height == 0:
        return FormatError(f"{source}: malformed TMD v{version} header: width={width}, height={height}")
    expected = parsed + fields + 4 * width * height
    what = f"its header (at byte {parsed}) says {width}x{height} float32 heights, so it needs {expected} bytes"
    if size < expected:
        return FormatError(f"{source}: truncated TMD file: {what} but has {size} ({expected - size} missing)")
    return FormatError(f"{source}: oversized TMD file: {what} but has {size} ({size - expected} extra)")


def read_tmd(path: str | os.PathLike[str], *, nodata_to_nan: bool = False) -> Dataset:
    """Read a TMD file into a :class:`~sciz.model.Dataset` (float32 heights in mm, axes in mm).

    Parameters
    ----------
    path
        The ``.tmd`` file.
    nodata_to_nan
        Replace no-data pixels (about -1e10) by NaN and add the boolean mask ``masks['nodata']``
        (and ``metadata['nodata_count']``).

    Returns
    -------
    Dataset
        ``data`` of shape (height, width); metadata: version, comment, width, height, x_length,
        y_length, x_offset, y_offset, units ('mm'), x_pixel_size, y_pixel_size.
    """
    if not isinstance(nodata_to_nan, bool | np.bool_):
        raise argument_error("nodata_to_nan", nodata_to_nan, "must be True or False")
    source = Path(os.fspath(path))
    header = read_tmd_header(source)
    count = header.width * header.height
    with source.open("rb") as handle:
        handle.seek(header.data_offset)
        heights = np.fromfile(handle, dtype="<f4", count=count)
    if heights.size != count:  # the file changed under us since the header check
        raise FormatError(f"{source}: truncated TMD file: {heights.size} of {count} heights could be read")
    heights = heights.astype(np.float32, copy=False).reshape(header.height, header.width)
    metadata = header.metadata()
    masks = {}
    if nodata_to_nan:
        nodata = heights <= NODATA_THRESHOLD
        heights[nodata] = np.nan
        masks["nodata"] = nodata
        metadata["nodata_count"] = int(nodata.sum())
    dataset = Dataset(
        heights,
        axes=[
            Axis("y", "mm", header.y_length / header.height, header.y_offset),
            Axis("x", "mm", header.x_length / header.width, header.x_offset),
        ],
        masks=masks,
        metadata=metadata,  # no title: a TMD file holds none (its comment is metadata["comment"])
    )
    dataset.storage = {"data": StoredArray(codec="none", stored_bytes=4 * count)}
    if nodata_to_nan:
        # The mask is not stored separately: those pixels hold the no-data value in the heights.
        dataset.storage["masks/nodata"] = StoredArray(codec="in data (-1e10)", stored_bytes=0)
    return dataset


def _comment_bytes(comment: str | None) -> bytes:
    text = DEFAULT_COMMENT if comment is None else comment
    if not isinstance(text, str):
        raise argument_error("comment", text, "must be a str")
    limit = CANONICAL_COMMENT_BYTES - 3
    if len(text) > limit or not text.isascii() or not text.isprintable():
        raise argument_error(
            "comment", text, f"a canonical TMD v2 comment holds at most {limit} printable ASCII characters"
        )
    # Pad with spaces, not NULs: readers that scan for the NUL and readers that jump to byte 56 agree.
    return text.ljust(limit).encode("ascii") + b"\r\n\x00"


def _float32_field(name: str, value: Any) -> np.float32:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        raise argument_error(name, value, "must be a real number (millimetres)")
    if not np.isfinite(value) or abs(float(value)) > float(np.finfo(np.float32).max):
        raise argument_error(name, value, "must be finite and fit in float32")
    return np.float32(value)


def write_tmd(
    path: str | os.PathLike[str],
    heights: Any,
    *,
    x_length: float | None = None,
    y_length: float | None = None,
    x_offset: float = 0.0,
    y_offset: float = 0.0,
    comment: str | None = None,
    nodata_mask: Any = None,
) -> Path:
    """Write a canonical TMD v2 file atomically (the layout TrueMap writes: data at byte 80).

    Parameters
    ----------
    path
        Target file; parent directories are created.
    heights
        2-D array (rows = y, columns = x) in mm, stored as little-endian float32.
    x_length, y_length
        Physical size in mm (default: 1 mm per pixel).
    x_offset, y_offset
        Position of the region in the full field of view, mm.
    comment
        At most 21 printable ASCII characters (default ``'Created by sciz'``).
    nodata_mask
        Boolean array; its pixels are written as the no-data value (-1e10).
    """
    data = as_array(heights, "heights")
    if data.ndim != 2 or 0 in data.shape:
        raise argument_error("heights", f"<array of shape {data.shape}>", "must be a non-empty 2-D array")
    if np.dtype(data.dtype).kind not in "biuf":
        raise argument_error("heights", f"<array of {data.dtype}>", "must hold real numbers")
    rows, cols = (int(n) for n in data.shape)
    if max(rows, cols) > 0xFFFFFFFF:
        raise argument_error("heights", f"<array of shape {data.shape}>", "TMD dimensions are uint32")
    mask = None
    if nodata_mask is not None:
        mask = np.asarray(nodata_mask)
        if mask.dtype != np.bool_ or mask.shape != (rows, cols):
            raise argument_error("nodata_mask", f"<{mask.dtype} array {mask.shape}>", f"must be bool of {(rows, cols)}")
    fields = np.array(
        [
            _float32_field("x_length", float(cols) if x_length is None else x_length),
            _float32_field("y_length", float(rows) if y_length is None else y_length),
            _float32_field("x_offset", x_offset),
            _float32_field("y_offset", y_offset),
        ],
        dtype="<f4",
    )
    header = (
        CANONICAL_MAGIC + _comment_bytes(comment) + np.array([cols, rows], dtype="<u4").tobytes() + fields.tobytes()
    )
    step = max(1, (4 << 20) // (4 * cols))  # about 4 MiB per write: bounded memory for any size
    with write_errors(path), atomic_file(path) as handle:
        handle.write(header)
        for start in range(0, rows, step):
            block = np.asarray(data[start : start + step]).astype("<f4")
            if mask is not None:
                block[mask[start : start + step]] = NODATA_VALUE
            handle.write(block.tobytes())
    return Path(os.fspath(path))


_LENGTH_UNITS_IN_MM = {"mm": 1.0, "m": 1e3, "cm": 10.0, "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "nm": 1e-6}


class TmdFormat(Format):
    """TrueMap ``.tmd`` height maps. Read option: ``nodata_to_nan``. Write option: ``comment``."""

    name = "tmd"
    description = "TrueMap/GelSight TMD height map (v1, v2; float32 mm)"
    extensions = (".tmd",)

    def sniff(self, path: Path, head: bytes) -> bool:
        return head[: len(MAGIC)].lower() == MAGIC

    def read(self, path: Path, **options: Any) -> Dataset:
        unknown = sorted(set(options) - {"nodata_to_nan"})
        if unknown:
            raise argument_error(f"option {unknown[0]}", options[unknown[0]], "reading tmd files takes: nodata_to_nan")
        return read_tmd(path, nodata_to_nan=options.get("nodata_to_nan", False))

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        unknown = sorted(set(options) - {"comment"})
        if unknown:
            raise argument_error(f"option {unknown[0]}", options[unknown[0]], "writing tmd files takes: comment")
        lengths = self._lengths(dataset)
        metadata = dataset.metadata
        comment = options.get("comment", metadata.get("comment") or None)
        return write_tmd(
            path,
            dataset.data,
            x_length=lengths["x_length"],
            y_length=lengths["y_length"],
            x_offset=lengths["x_offset"] or 0.0,
            y_offset=lengths["y_offset"] or 0.0,
            comment=comment if isinstance(comment, str) or comment is None else str(comment),
            nodata_mask=dataset.masks.get("nodata"),
        )

    @staticmethod
    def _lengths(dataset: Dataset) -> dict[str, float | None]:
        """Lengths and offsets in mm: from the metadata if it has them, else from the axes."""
        metadata = dataset.metadata
        out: dict[str, float | None] = {}
        for name, axis_index, size_index, kind in (
            ("x_length", -1, 1, "scale"),
            ("y_length", 0, 0, "scale"),
            ("x_offset", -1, 1, "offset"),
            ("y_offset", 0, 0, "offset"),
        ):
            if name in metadata:
                out[name] = metadata[name]
                continue
            if dataset.ndim != 2:
                out[name] = None
                continue
            axis = dataset.axes[axis_index]
            factor = _LENGTH_UNITS_IN_MM.get(axis.units, 1.0 if not axis.units else None)
            if factor is None:
                out[name] = None
                continue
            value = axis.scale * dataset.shape[size_index] if kind == "scale" else axis.offset
            out[name] = float(value) * factor
        return out

    def problems(self, dataset: Dataset) -> list[str]:
        found: list[str] = []
        if dataset.ndim != 2:
            found.append(f"data of shape {dataset.shape}: TMD holds one 2-D height map")
        if dataset.dtype.kind not in "biuf":
            found.append(f"data of dtype {dataset.dtype}: TMD holds real float32 heights")
        elif dataset.dtype != np.float32:
            exact = (dataset.dtype.itemsize < 4 and dataset.dtype.kind != "f") or dataset.dtype == np.float16
            if not exact:
                values = np.asarray(dataset.data)
                with np.errstate(all="ignore"):
                    exact = np.array_equal(values.astype(np.float32).astype(values.dtype), values, equal_nan=True)
            change = "the values are kept" if exact else "the values would change"
            found.append(f"data of dtype {dataset.dtype} (TMD stores float32 heights; {change})")
        if dataset.name:
            found.append(f"title {dataset.name!r} (TMD holds no title; its comment is metadata['comment'])")
        if dataset.layers:
            found.append(f"layers {sorted(dataset.layers)} (TMD holds one height map)")
        extra_masks = sorted(set(dataset.masks) - {"nodata"})
        if extra_masks:
            found.append(f"masks {extra_masks} (TMD holds only the no-data mask, as -1e10)")
        extra_keys = sorted(str(k) for k in dataset.metadata if k not in TMD_KEYS)
        if extra_keys:
            found.append(f"metadata {extra_keys} (TMD holds only {', '.join(sorted(TMD_KEYS))})")
        units = dataset.metadata.get("units")
        if units not in (None, "mm"):
            found.append(f"heights in {units!r} (TMD heights are in mm)")
        elif units is None and dataset.axes:
            from ..stack import _NM_PER_UNIT

            # Heights share the lateral unit (an AFM image in nm): the axes become mm, the heights would
            # not, and every reader takes a TMD's heights as mm (a 1e6 error for nm).
            lateral = str(dataset.axes[-1].units).strip()
            if lateral in _NM_PER_UNIT and lateral != "mm":
                found.append(
                    f"heights in {lateral} (its axes are in {lateral}; TMD converts the axes to mm but holds the "
                    "heights as given, which readers take as mm)"
                )
        comment = dataset.metadata.get("comment")
        if comment:
            try:
                _comment_bytes(str(comment))
            except ValueError as exc:
                found.append(str(exc))
        if dataset.ndim == 2:
            for name, value in self._lengths(dataset).items():
                if value is None:
                    found.append(f"{name}: axis units {dataset.axes[0 if 'y' in name else 1].units!r} are not a length")
        if dataset.provenance:
            found.append(f"provenance ({len(dataset.provenance)} steps; TMD holds none)")
        return found
