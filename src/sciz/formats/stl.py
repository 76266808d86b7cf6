"""STL models from height maps: vectorised binary (default) and ASCII writers, an optional solid base, a reader.

A height map of ``rows x cols`` pixels becomes ``2 (rows-1)(cols-1)`` surface triangles with a vertex at
each pixel: ``x = x_offset + column * x_pitch`` and ``y = y_offset + (rows - 1 - row) * y_pitch`` (row 0
is the top of the image, so the model is not mirrored), ``z = height * z_scale``. With a base, four
walls and a flat bottom ``base_thickness`` below the lowest point close the surface into a watertight
solid (every edge shared by exactly two triangles, normals outward). Triangles are generated with numpy
in bands of rows, so memory stays bounded and a 1000 x 1000 map takes about a second.

Binary STL: an 80-byte header (never starting with ``solid``), a uint32 triangle count, then 50 bytes
per triangle (normal, three vertices as float32, a uint16 attribute).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..atomic import atomic_file
from ..errors import FormatError, argument_error
from ..model import Axis, Dataset, StoredArray, as_array
from ._base import Format
from ._guard import write_errors

__all__ = ["RECORD", "StlFormat", "heightmap_triangle_count", "read_stl", "write_heightmap_stl", "write_triangles"]

#: One binary STL facet.
RECORD = np.dtype([("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attribute", "<u2")])
HEADER_BYTES = 80
#: Triangles generated per band: bounds memory (~13 MB of records) whatever the map size.
_BAND_TRIANGLES = 1 << 18
_ASCII_FACETS_PER_WRITE = 1 << 14
_FACET_TEMPLATE = (
    "facet normal %.9e %.9e %.9e\n outer loop\n"
    "  vertex %.9e %.9e %.9e\n  vertex %.9e %.9e %.9e\n  vertex %.9e %.9e %.9e\n"
    " endloop\nendfacet\n"
)


def _real(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        raise argument_error(name, value, "must be a real number")
    number = float(value)
    if not np.isfinite(number) or (positive and number <= 0):
        raise argument_error(name, value, "must be a finite number" + (" > 0" if positive else ""))
    return number


def heightmap_triangle_count(rows: int, cols: int, *, base: bool) -> int:
    """Triangles for a ``rows x cols`` map: the surface, plus walls and bottom with a base."""
    surface = 2 * (rows - 1) * (cols - 1)
    if not base:
        return surface
    perimeter = 2 * (rows - 1) + 2 * (cols - 1)
    return surface + 2 * perimeter + (perimeter - 2)


def _normals(triangles: np.ndarray) -> np.ndarray:
    """Unit normals (right-hand rule); zero for degenerate triangles."""
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    length = np.sqrt(np.einsum("ij,ij->i", normals, normals))
    np.divide(normals, length[:, None], out=normals, where=length[:, None] > 0)
    normals[length == 0] = 0.0
    return normals


class _Grid:
    """Vertex coordinates of a height map, computed once so shared vertices are bit-identical."""

    def __init__(
        self, heights: np.ndarray, x_pitch: float, y_pitch: float, x_offset: float, y_offset: float, z_scale: float
    ) -> None:
        rows, cols = heights.shape
        self.rows, self.cols = rows, cols
        self.x = (x_offset + np.arange(cols, dtype=np.float64) * x_pitch).astype(np.float32)
        self.y = (y_offset + np.arange(rows - 1, -1, -1, dtype=np.float64) * y_pitch).astype(np.float32)
        self.heights = heights
        self.z_scale = z_scale

    def z(self, rows: slice | np.ndarray, cols: slice | np.ndarray | int = slice(None)) -> np.ndarray:
        return (np.asarray(self.heights[rows, cols], dtype=np.float64) * self.z_scale).astype(np.float32)

    def surface_bands(self) -> Iterator[np.ndarray]:
        """Surface triangles, band of rows by band of rows, each as an (n, 3, 3) float32 array."""
        cells = self.cols - 1
        band = max(1, _BAND_TRIANGLES // max(2 * cells, 1))
        xl, xr = self.x[:-1], self.x[1:]
        for top in range(0, self.rows - 1, band):
            bottom = min(top + band, self.rows - 1)
            z = self.z(slice(top, bottom + 1))
            n = bottom - top
            yt = np.broadcast_to(self.y[top:bottom, None], (n, cells))
            yb = np.broadcast_to(self.y[top + 1 : bottom + 1, None], (n, cells))
            xa = np.broadcast_to(xl, (n, cells))
            xb = np.broadcast_to(xr, (n, cells))
            # Corners: a top-left, b top-right, c bottom-left, d bottom-right (as seen from above).
            a = np.stack([xa, yt, z[:-1, :-1]], axis=-1)
            b = np.stack([xb, yt, z[:-1, 1:]], axis=-1)
            c = np.stack([xa, yb, z[1:, :-1]], axis=-1)
            d = np.stack([xb, yb, z[1:, 1:]], axis=-1)
            triangles = np.empty((n, cells, 2, 3, 3), dtype=np.float32)
            # Counter-clockwise from above, so the normals point up.
            triangles[:, :, 0, 0], triangles[:, :, 0, 1], triangles[:, :, 0, 2] = c, d, b
            triangles[:, :, 1, 0], triangles[:, :, 1, 1], triangles[:, :, 1, 2] = c, b, a
            yield triangles.reshape(-1, 3, 3)

    def base(self, thickness: float) -> np.ndarray:
        """Walls and bottom closing the surface, ``thickness`` below its lowest point."""
        rows, cols = self.rows, self.cols
        # Perimeter counter-clockwise from above: bottom row left->right, right column up, top row
        # right->left, left column down (image rows grow downwards, y upwards).
        last_row, last_col = rows - 1, cols - 1
        ring_i = np.concatenate(
            [
                np.full(cols - 1, last_row),
                np.arange(last_row, 0, -1),
                np.zeros(cols - 1, dtype=np.int64),
                np.arange(0, last_row),
            ]
        )
        ring_j = np.concatenate(
            [
                np.arange(0, last_col),
                np.full(rows - 1, last_col),
                np.arange(last_col, 0, -1),
                np.zeros(rows - 1, dtype=np.int64),
            ]
        )
        top_z = self.z(ring_i, ring_j)
        floor = np.float32(self._minimum() - thickness)
        top = np.stack([self.x[ring_j], self.y[ring_i], top_z], axis=-1)
        bottom = np.stack([self.x[ring_j], self.y[ring_i], np.full(top_z.shape, floor)], axis=-1)
        top_next, bottom_next = np.roll(top, -1, axis=0), np.roll(bottom, -1, axis=0)
        walls = np.concatenate(
            [np.stack([bottom, bottom_next, top_next], axis=1), np.stack([bottom, top_next, top], axis=1)]
        )
        floor_triangles = self._floor(floor)
        return np.concatenate([walls, floor_triangles]).astype(np.float32)

    def _minimum(self) -> float:
        low = np.inf
        step = max(1, (1 << 22) // max(self.cols, 1))
        for start in range(0, self.rows, step):
            low = min(low, float(np.min(self.z(slice(start, start + step)))))
        return low

    def _floor(self, floor: np.float32) -> np.ndarray:
        """Bottom triangles using only perimeter vertices (no T-junctions with the walls)."""
        rows, cols = self.rows, self.cols

        def point(i: np.ndarray | int, j: np.ndarray | int) -> np.ndarray:
            i_arr, j_arr = np.broadcast_arrays(np.asarray(i), np.asarray(j))
            return np.stack([self.x[j_arr], self.y[i_arr], np.full(i_arr.shape, floor)], axis=-1)

        steps = np.arange(rows - 1)
        pieces = []
        if cols == 2:
            left_i, right_i = point(steps, 0), point(steps, 1)
            left_n, right_n = point(steps + 1, 0), point(steps + 1, 1)
            pieces += [np.stack([left_i, right_i, right_n], 1), np.stack([left_i, right_n, left_n], 1)]
        else:
            apex = np.broadcast_to(point(0, 1), (rows - 1, 3))
            pieces.append(np.stack([apex, point(steps, 0), point(steps + 1, 0)], 1))
            pieces.append(np.stack([point(0, 1), point(rows - 1, 0), point(rows - 1, 1)])[None])
            apex = np.broadcast_to(point(0, cols - 2), (rows - 1, 3))
            pieces.append(np.stack([apex, point(steps, cols - 1), point(steps + 1, cols - 1)], 1))
            pieces.append(np.stack([point(0, cols - 2), point(rows - 1, cols - 1), point(rows - 1, cols - 2)])[None])
            middle = np.arange(1, cols - 2)
            if middle.size:
                pieces.append(np.stack([point(0, middle), point(rows - 1, middle), point(rows - 1, middle + 1)], 1))
                pieces.append(np.stack([point(0, middle), point(rows - 1, middle + 1), point(0, middle + 1)], 1))
        triangles = np.concatenate(pieces).astype(np.float32)
        # The bottom faces down: flip every triangle whose normal points up.
        up = _normals(triangles.astype(np.float64))[:, 2] > 0
        triangles[up] = triangles[up][:, ::-1]
        return triangles


def _header(text: str) -> bytes:
    encoded = text.encode("ascii", "replace")[:HEADER_BYTES]
    if encoded[:5].lower() == b"solid":  # readers would take the file for ASCII STL
        encoded = (b"sciz " + encoded)[:HEADER_BYTES]
    return encoded.ljust(HEADER_BYTES, b" ")


def _write_binary_band(handle: BinaryIO, triangles: np.ndarray) -> None:
    records = np.zeros(len(triangles), dtype=RECORD)
    records["vertices"] = triangles
    records["normal"] = _normals(triangles.astype(np.float64))
    handle.write(records.tobytes())


def _write_ascii_band(handle: BinaryIO, triangles: np.ndarray) -> None:
    normals = _normals(triangles.astype(np.float64)).astype(np.float32)
    values = np.concatenate([normals, triangles.reshape(-1, 9)], axis=1).astype(np.float64)
    for start in range(0, len(values), _ASCII_FACETS_PER_WRITE):
        chunk = values[start : start + _ASCII_FACETS_PER_WRITE]
        # One %-format over a whole chunk: the loop runs in C, not per facet in Python.
        handle.write(((_FACET_TEMPLATE * len(chunk)) % tuple(chunk.ravel().tolist())).encode("ascii"))


def _solid_name(text: str) -> str:
    name = re.sub(r"\s+", "_", text.strip()) or "sciz"
    return name.encode("ascii", "replace").decode("ascii")


def write_heightmap_stl(
    path: str | os.PathLike[str],
    heights: Any,
    *,
    x_pitch: float = 1.0,
    y_pitch: float = 1.0,
    x_offset: float = 0.0,
    y_offset: float = 0.0,
    z_scale: float = 1.0,
    base_thickness: float | None = None,
    binary: bool = True,
    header: str = "sciz height map",
) -> Path:
    """Write a height map as an STL surface (or a watertight solid with ``base_thickness``).

    Parameters
    ----------
    path
        Target file; parent directories are created; written atomically.
    heights
        2-D real array, at least 2 x 2, without NaN or infinities.
    x_pitch, y_pitch
        Distance between neighbouring pixels along x (columns) and y (rows), > 0.
    x_offset, y_offset
        Coordinates of the first column and of the last row (the bottom-left corner seen from above).
    z_scale
        Factor applied to the heights.
    base_thickness
        ``None``: the open surface only. A number > 0: add walls and a flat bottom this far below
        the lowest point.
    binary
        Binary STL (default) or ASCII.
    header
        Header text (binary) or solid name (ASCII).
    """
    data = as_array(heights, "heights")
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 2:
        raise argument_error("heights", f"<array of shape {data.shape}>", "must be 2-D with at least 2 x 2 pixels")
    if np.dtype(data.dtype).kind not in "biuf":
        raise argument_error("heights", f"<array of {data.dtype}>", "must hold real numbers")
    values = np.asarray(data)
    if values.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise argument_error(
                "heights",
                f"<{bad} NaN or infinite values>",
                "STL vertices must be finite; fill no-data first (e.g. np.nan_to_num or a fill value)",
            )
    x_pitch = _real("x_pitch", x_pitch, positive=True)
    y_pitch = _real("y_pitch", y_pitch, positive=True)
    grid = _Grid(
        values,
        x_pitch,
        y_pitch,
        _real("x_offset", x_offset),
        _real("y_offset", y_offset),
        _real("z_scale", z_scale),
    )
    base = None if base_thickness is None else _real("base_thickness", base_thickness, positive=True)
    count = heightmap_triangle_count(*values.shape, base=base is not None)
    if binary and count > 0xFFFFFFFF:
        raise argument_error(
            "heights", f"<array of shape {values.shape}>", "binary STL holds at most 2**32-1 triangles"
        )
    with write_errors(path), atomic_file(path) as handle:
        if binary:
            handle.write(_header(header))
            handle.write(np.uint32(count).astype("<u4").tobytes())
        else:
            handle.write(f"solid {_solid_name(header)}\n".encode("ascii"))
        write_band = _write_binary_band if binary else _write_ascii_band
        for band in grid.surface_bands():
            write_band(handle, band)
        if base is not None:
            write_band(handle, grid.base(base))
        if not binary:
            handle.write(f"endsolid {_solid_name(header)}\n".encode("ascii"))
    return Path(os.fspath(path))


def write_triangles(
    path: str | os.PathLike[str], triangles: Any, *, binary: bool = True, header: str = "sciz mesh"
) -> Path:
    """Write an (n, 3, 3) array of triangle vertices as STL (normals from the right-hand rule)."""
    data = np.asarray(as_array(triangles, "triangles"))
    if data.ndim != 3 or data.shape[1:] != (3, 3) or data.dtype.kind not in "biuf":
        raise argument_error("triangles", f"<{data.dtype} array {data.shape}>", "must be a real (n, 3, 3) array")
    with write_errors(path), atomic_file(path) as handle:
        if binary:
            handle.write(_header(header))
            handle.write(np.uint32(len(data)).astype("<u4").tobytes())
        else:
            handle.write(f"solid {_solid_name(header)}\n".encode("ascii"))
        for start in range(0, len(data), _BAND_TRIANGLES):
            band = data[start : start + _BAND_TRIANGLES].astype(np.float32)
            (_write_binary_band if binary else _write_ascii_band)(handle, band)
        if not binary:
            handle.write(f"endsolid {_solid_name(header)}\n".encode("ascii"))
    return Path(os.fspath(path))


_VERTEX = re.compile(rb"vertex\s+(\S+)\s+(\S+)\s+(\S+)")
_NORMAL = re.compile(rb"facet\s+normal\s+(\S+)\s+(\S+)\s+(\S+)")


def read_stl(path: str | os.PathLike[str]) -> Dataset:
    """Read a binary or ASCII STL file: ``data`` (n, 3, 3) float32 vertices, layer ``normals`` (n, 3).

    Raises :class:`~sciz.errors.FormatError` when the size does not match the triangle count (binary)
    or the facets are malformed (ASCII).
    """
    source = Path(os.fspath(path))
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {source}") from None
    size = len(raw)
    if size >= HEADER_BYTES + 4:
        count = int(np.frombuffer(raw, "<u4", 1, HEADER_BYTES)[0])
        if size == HEADER_BYTES + 4 + RECORD.itemsize * count:
            records = np.frombuffer(raw, RECORD, count, HEADER_BYTES + 4)
            header = raw[:HEADER_BYTES].rstrip(b"\x00 ").decode("latin-1")
            return _mesh_dataset(source, records["vertices"].copy(), records["normal"].copy(), header, "binary")
    if raw.lstrip()[:5].lower() == b"solid":
        return _read_ascii(source, raw)
    if size < HEADER_BYTES + 4:
        raise FormatError(f"{source}: truncated STL: {size} bytes, a binary STL needs at least 84")
    expected = HEADER_BYTES + 4 + RECORD.itemsize * count
    problem = "truncated" if size < expected else "oversized"
    raise FormatError(
        f"{source}: {problem} binary STL: the header says {count} triangles ({expected} bytes), the file has {size}"
    )


def _read_ascii(source: Path, raw: bytes) -> Dataset:
    first_line = raw.lstrip().split(b"\n", 1)[0]
    name = first_line[5:].strip().decode("latin-1")
    try:
        vertices = np.array(_VERTEX.findall(raw), dtype=np.float64)
        normals = np.array(_NORMAL.findall(raw), dtype=np.float64)
    except ValueError as exc:
        raise FormatError(f"{source}: malformed ASCII STL: a coordinate is not a number ({exc})") from None
    facets = raw.count(b"endfacet")
    if len(vertices) != 3 * facets or len(normals) != facets:
        raise FormatError(
            f"{source}: malformed ASCII STL: {facets} facets but {len(normals)} normals and {len(vertices)} vertices"
        )
    if not raw.rstrip().split(b"\n")[-1].lstrip().startswith(b"endsolid"):
        raise FormatError(f"{source}: truncated ASCII STL: no 'endsolid' line at the end")
    return _mesh_dataset(
        source,
        vertices.reshape(-1, 3, 3).astype(np.float32),
        normals.reshape(-1, 3).astype(np.float32),
        name,
        "ascii",
    )


def _mesh_dataset(source: Path, vertices: np.ndarray, normals: np.ndarray, header: str, kind: str) -> Dataset:
    dataset = Dataset(
        vertices,
        axes=[Axis("triangle"), Axis("vertex"), Axis("coordinate")],
        layers={"normals": normals},
        metadata={"stl_header": header, "stl_format": kind, "triangles": len(vertices)},
        name=header,  # the title sciz writes there (a height map's title, or the mesh's header)
    )
    if kind == "binary":
        # Each 50-byte record: 12 bytes of normal, 36 of vertices, 2 of attribute (counted with the vertices).
        count = len(vertices)
        dataset.storage = {
            "data": StoredArray(codec="none", stored_bytes=HEADER_BYTES + 4 + 38 * count),
            "layers/normals": StoredArray(codec="none", stored_bytes=12 * count),
        }
    else:
        dataset.storage = {"data": StoredArray(codec="ascii", stored_bytes=source.stat().st_size)}
    return dataset


#: Metadata a height map's STL embodies (geometry) or may drop without loss (the source format's version).
_HEIGHTMAP_KEYS = frozenset(
    {
        "width",
        "height",
        "x_length",
        "y_length",
        "x_offset",
        "y_offset",
        "x_pixel_size",
        "y_pixel_size",
        "units",
        "version",
        "comment",
    }
)
_MESH_KEYS = frozenset({"stl_header", "stl_format", "triangles"})


def _is_mesh(dataset: Dataset) -> bool:
    return dataset.ndim == 3 and dataset.shape[1:] == (3, 3)


class StlFormat(Format):
    """STL: writes height maps as surfaces (or solids) and meshes as triangles; reads any STL.

    Write options: ``ascii`` (False), ``z_scale`` (1.0), ``base_thickness`` (None). Read options: none.
    """

    name = "stl"
    description = "STL triangle mesh (binary or ASCII); height maps become surfaces"
    extensions = (".stl",)

    def read(self, path: Path, **options: Any) -> Dataset:
        if options:
            first = sorted(options)[0]
            raise argument_error(f"option {first}", options[first], "reading stl files takes no options")
        return read_stl(path)

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        unknown = sorted(set(options) - {"ascii", "z_scale", "base_thickness"})
        if unknown:
            raise argument_error(
                f"option {unknown[0]}", options[unknown[0]], "writing stl files takes: ascii, z_scale, base_thickness"
            )
        binary = not options.get("ascii", False)
        metadata = dataset.metadata
        if _is_mesh(dataset):
            header = str(metadata.get("stl_header") or dataset.name or "sciz mesh")
            return write_triangles(path, dataset.data, binary=binary, header=header)
        y_axis, x_axis = dataset.axes[0], dataset.axes[1]
        comment = metadata.get("comment")
        return write_heightmap_stl(
            path,
            dataset.data,
            x_pitch=x_axis.scale,
            y_pitch=y_axis.scale,
            x_offset=x_axis.offset,
            y_offset=y_axis.offset,
            z_scale=options.get("z_scale", 1.0),
            base_thickness=options.get("base_thickness"),
            binary=binary,
            header=dataset.name or (str(comment) if comment else "sciz height map"),
        )

    def problems(self, dataset: Dataset) -> list[str]:
        found: list[str] = []
        mesh = _is_mesh(dataset)
        if not mesh and (dataset.ndim != 2 or min(dataset.shape) < 2):
            found.append(f"data of shape {dataset.shape}: STL holds a 2-D height map (>= 2x2) or (n, 3, 3) triangles")
        if dataset.dtype.kind not in "biuf":
            found.append(f"data of dtype {dataset.dtype}: STL coordinates are real numbers")
        elif not mesh and dataset.ndim == 2:
            values = np.asarray(dataset.data)
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                found.append("NaN or infinite heights (STL vertices must be finite; fill no-data first)")
            elif values.dtype.itemsize >= 4 and values.dtype != np.float32:
                with np.errstate(all="ignore"):
                    exact = np.array_equal(values.astype(np.float32).astype(values.dtype), values)
                if not exact:
                    found.append(f"{values.dtype} heights that float32 (STL's vertices) cannot hold exactly")
            for axis in dataset.axes:
                if axis.scale <= 0:
                    found.append(f"axis {axis.name!r} has scale {axis.scale} (STL needs a pitch > 0)")
            units = {a.units for a in dataset.axes} | {dataset.metadata.get("units") or ""}
            if len(units - {""}) > 1:
                found.append(f"mixed units {sorted(units - {''})} (STL has one unit for x, y and z)")
        layers = sorted(set(dataset.layers) - ({"normals"} if mesh else set()))
        if layers:
            found.append(f"layers {layers} (STL holds one surface)")
        if dataset.masks:
            found.append(f"masks {sorted(dataset.masks)} (STL holds one surface)")
        if dataset.name and not mesh and _header(dataset.name).decode("ascii").rstrip() != dataset.name:
            found.append(f"title {dataset.name!r} (the STL header keeps at most 80 ASCII characters, not 'solid...')")
        allowed = _MESH_KEYS if mesh else _HEIGHTMAP_KEYS
        extra = sorted(str(k) for k in dataset.metadata if k not in allowed)
        if extra:
            found.append(f"metadata {extra} (STL keeps only the geometry)")
        if dataset.provenance:
            found.append(f"provenance ({len(dataset.provenance)} steps; STL holds none)")
        return found
