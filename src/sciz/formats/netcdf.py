"""netCDF files (classic CDF-1/2/5 and netCDF-4/HDF5): read one variable as a Dataset, describe them all.

A netCDF file holds many variables on shared dimensions; a sciz :class:`~sciz.model.Dataset` holds
one primary array. The mapping:

- ``sciz.load("x.nc", variable="tos")`` reads one data variable (default: the data variable with
  the most elements) with xarray's CF decoding (``mask_and_scale``: fill and missing values become
  NaN, packed integers are unpacked; times stay numbers, as stored). Its dimensions become
  :class:`~sciz.model.Axis` objects: name, units, and scale/offset from the coordinate variable
  when it is regular (equal steps within 1e-6 of the step), else scale 1 with the coordinate in
  ``metadata["coordinates"]``. The variable's attributes go to ``metadata["attributes"]``, its CF
  encoding (``_FillValue``, ``missing_value``, ``scale_factor``, ``add_offset``, dtype) to
  ``metadata["encoding"]``, the global attributes to ``metadata["global_attributes"]`` and the other
  variables' names to ``metadata["other_variables"]``. With ``mask_and_scale=False`` the data are
  the stored values, fill values included, exactly.
- Several variables with their shared coordinates, groups and CF semantics are what
  :class:`xarray.Dataset` models: use ``xarray.open_dataset`` for that, :func:`sciz.xarray.encoding`
  to compress it, and :func:`sciz.netcdf.compress` for a whole file. sciz does not write netCDF
  through :func:`sciz.save` (one array would drop the rest of the file).

:meth:`NetcdfFormat.describe` (``sciz info x.nc``) lists dimensions (unlimited marked), coordinates
and data variables with dtype, shape, CF attributes, the stored filters and the stored size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, argument_error
from ..model import Axis, Dataset, StoredArray
from ._base import Format, require

__all__ = ["CLASSIC_MAGIC", "HDF5_MAGIC", "NetcdfFormat", "classic_extents", "netcdf_kind", "open_xarray"]

#: CDF-1 (classic), CDF-2 (64-bit offset) and CDF-5 (64-bit data) magic; netCDF-4 is an HDF5 file.
CLASSIC_MAGIC = {b"CDF\x01": "classic", b"CDF\x02": "64bit_offset", b"CDF\x05": "cdf5"}
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: CF attributes ``sciz info`` shows for each variable.
CF_ATTRIBUTES = ("units", "long_name", "standard_name", "_FillValue", "missing_value", "scale_factor", "add_offset")
#: HDF5 filter ids by name, for the stored-filter column.
FILTER_NAMES = {
    1: "deflate",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    32001: "blosc",
    32013: "zfp",
    32015: "zstd",
    32024: "sz3",
    32026: "blosc2",
    32028: "sperr",
}


def netcdf_kind(path: Path) -> str:
    """``classic``, ``64bit_offset``, ``cdf5`` or ``netcdf4`` from the file's magic; FormatError otherwise."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head[:4] in CLASSIC_MAGIC:
        return CLASSIC_MAGIC[head[:4]]
    if head.startswith(HDF5_MAGIC):
        return "netcdf4"
    raise FormatError(f"{path}: not a netCDF file (no CDF or HDF5 signature; first bytes {head[:4]!r})")


def check_complete(path: Path, handle: Any) -> None:
    """Refuse a classic file whose variables' data reach past its end (netCDF-C reads a cut file's
    tail, or data placed past the end, as fill values: other data, silently).

    ``handle`` is the open ``netCDF4.Dataset`` (netCDF-4 files are HDF5's to check). The extents
    come from the file's own header (:func:`classic_extents`): each variable's ``begin`` and size,
    the record variables' records interleaved up to ``numrecs``.
    """
    if handle.data_model.startswith("NETCDF4"):
        return
    actual = path.stat().st_size
    needed = sum(math.prod(int(n) for n in v.shape) * np.dtype(v.dtype).itemsize for v in handle.variables.values())
    if actual < needed:  # the shapes netCDF-C derived, whatever sizes the header states
        raise FormatError(f"{path}: truncated netCDF file: {actual} bytes on disk, its variables alone need {needed}")
    for name, end in classic_extents(path).items():
        if end > actual:
            raise FormatError(
                f"{path}: truncated netCDF file: variable {name!r} needs bytes up to {end}, the file has {actual}"
            )


#: Bytes per value of the classic nc_types 1-11 (byte, char, short, int, float, double, ubyte, ushort,
#: uint, int64, uint64).
_CLASSIC_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}
#: numrecs of a file still being streamed (the count is then taken from the file's length).
_STREAMING = {0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}


def classic_extents(path: Path) -> dict[str, int]:
    """Per variable of a classic (CDF-1/2/5) file, the byte its data end at, from the header.

    Follows the classic format specification: counts are 4-byte (8 in CDF-5), ``begin`` offsets
    4-byte in CDF-1 and 8 in CDF-2/5; a record variable's data end at ``begin + (numrecs - 1) *
    recsize + vsize``. A header that declares more entries than its bytes can hold is refused.
    """
    with path.open("rb") as handle:
        raw = handle.read(64 << 20)  # headers are far smaller; entries past this are refused below
    version = raw[3] if len(raw) >= 4 else 0
    count_size = 8 if version == 5 else 4
    offset_size = 4 if version == 1 else 8
    at = 4

    def take(size: int) -> int:
        nonlocal at
        if at + size > len(raw):
            raise FormatError(f"{path}: netCDF header cut short at byte {at}")
        value = int.from_bytes(raw[at : at + size], "big")
        at += size
        return value

    def count() -> int:
        value = take(count_size)
        if value * 4 > len(raw) - at:
            raise FormatError(f"{path}: netCDF header declares {value} entries, more than the file holds")
        return value

    def skip_name() -> None:
        nonlocal at
        length = count()
        at += length + (-length % 4)

    def skip_attributes() -> None:
        nonlocal at
        take(4)
        for _ in range(count()):
            skip_name()
            kind = take(4)
            values = take(count_size) * _CLASSIC_SIZES.get(kind, 1)
            at += values + (-values % 4)

    numrecs = take(count_size)
    take(4)
    lengths = []
    for _ in range(count()):
        skip_name()
        lengths.append(take(count_size))
    skip_attributes()
    take(4)
    variables = []
    for _ in range(count()):
        start = at
        length = take(count_size)
        name = raw[start + count_size : start + count_size + length].decode("utf-8", "replace")
        at = start + count_size + length + (-length % 4)
        dims = [take(count_size) for _ in range(count())]
        skip_attributes()
        kind = take(4)
        take(count_size)  # vsize: not trusted (a forged one hid a cut tail, found by attack); computed below
        begin = take(offset_size)
        if any(d >= len(lengths) for d in dims):
            raise FormatError(f"{path}: variable {name!r} names a dimension the header does not declare")
        is_record = bool(dims) and lengths[dims[0]] == 0
        slab = math.prod(lengths[d] for d in (dims[1:] if is_record else dims)) * _CLASSIC_SIZES.get(kind, 1)
        variables.append((name, slab, begin, is_record))
    in_records = [slab for _, slab, _, record in variables if record]
    # Each variable's slab of a record is padded to 4 bytes, unless it is the only record variable.
    recsize = in_records[0] if len(in_records) == 1 else sum(n + (-n % 4) for n in in_records)
    records = 0 if numrecs in _STREAMING else numrecs
    return {
        name: begin + ((records - 1) * recsize + slab if records else 0) if record else begin + slab
        for name, slab, begin, record in variables
    }


def open_xarray(path: Path, **options: Any) -> Any:
    """``xarray.open_dataset`` with the engine for the file's kind (h5netcdf + hdf5plugin for netCDF-4).

    Errors of a truncated or corrupt file become :class:`FormatError` naming the file.
    """
    xr = require("xarray", "netcdf", needed_for="reading netCDF files")
    kind = netcdf_kind(path)
    if kind == "netcdf4":
        require("h5netcdf", "netcdf", needed_for="reading netCDF-4 files")
        require("hdf5plugin", "netcdf", needed_for="reading netCDF-4 files with SZ3/ZFP/SPERR filters")
        engine = "h5netcdf"
    else:
        nc4 = require("netCDF4", "netcdf", needed_for="reading netCDF classic files")
        engine = "netcdf4"
        try:
            with nc4.Dataset(path) as handle:
                check_complete(path, handle)
        except FormatError:
            raise
        except (OSError, UnicodeDecodeError) as exc:  # undecodable names in a damaged header (attack)
            raise FormatError(f"{path}: cannot read it as netCDF ({kind}): {exc}") from None
    try:
        return xr.open_dataset(path, engine=engine, **options)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError) as exc:  # UnicodeDecodeError too
        raise FormatError(f"{path}: cannot read it as netCDF ({kind}): {type(exc).__name__}: {exc}") from None


def _regular(values: np.ndarray) -> tuple[float, float] | None:
    """(offset, scale) of an evenly spaced 1-d coordinate, or None."""
    if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iuf":
        return None
    if values.size == 1:
        return float(values[0]), 1.0
    steps = np.diff(values.astype(np.float64))
    step = float(steps.mean())
    if step == 0 or not np.all(np.abs(steps - step) <= 1e-6 * abs(step)):
        return None
    return float(values[0]), step


def _plain(value: Any) -> Any:
    """An attribute value as JSON-able Python (numpy scalars and arrays unwrapped)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _data_variables(ds: Any) -> list[str]:
    return [str(name) for name in ds.data_vars]


class NetcdfFormat(Format):
    """netCDF classic and netCDF-4 files, read with xarray (one variable per Dataset)."""

    name = "netcdf"
    description = "netCDF classic (CDF-1/2/5) and netCDF-4 files (one variable per Dataset; xarray for the whole)"
    extensions = (".nc", ".nc4", ".cdf", ".netcdf")
    magic = tuple(CLASSIC_MAGIC)
    can_write = False
    extra = "netcdf"

    def sniff(self, path: Path, head: bytes) -> bool:
        if head[:4] in CLASSIC_MAGIC:
            return True
        if not head.startswith(HDF5_MAGIC):
            return False
        if self.matches_extension(path):
            return True
        try:
            import h5py

            with h5py.File(path, "r") as handle:  # netCDF-C and h5netcdf mark their files so
                return "_NCProperties" in handle.attrs
        except (OSError, ImportError, ValueError, KeyError, RuntimeError):
            return False

    def read(self, path: Path, **options: Any) -> Dataset:
        """One variable: ``variable=`` (default: the largest data variable); ``mask_and_scale`` (True)."""
        variable = options.pop("variable", None)
        mask_and_scale = options.pop("mask_and_scale", True)
        if options:
            raise argument_error("options", sorted(options), "netCDF takes variable= and mask_and_scale=")
        with open_xarray(path, mask_and_scale=bool(mask_and_scale), decode_times=False) as ds:
            names = _data_variables(ds) or [str(n) for n in ds.variables]
            if variable is None:
                if not names:
                    raise FormatError(f"{path}: the file holds no variables")
                variable = max(names, key=lambda n: ds[n].size)
            if variable not in ds.variables:
                raise argument_error("variable", variable, f"{path} holds {', '.join(map(str, ds.variables))}")
            var = ds[variable]
            if var.dtype.kind not in "biuf":
                raise FormatError(
                    f"{path}: variable {variable!r} is {var.dtype} (sciz reads numeric variables; use xarray)"
                )
            try:  # the values are read here: a damaged chunk or block fails now, not at opening
                data = np.asarray(var.values)
                axes, coordinates = self._axes(ds, var)
            except FormatError:
                raise
            except (OSError, RuntimeError, ValueError, KeyError, IndexError, TypeError) as exc:
                raise FormatError(
                    f"{path}: cannot read variable {variable!r} ({netcdf_kind(path)}): {type(exc).__name__}: {exc}"
                ) from None
            metadata: dict[str, Any] = {
                "variable": variable,
                "dimensions": list(map(str, var.dims)),
                "attributes": {str(k): _plain(v) for k, v in var.attrs.items()},
                "encoding": {
                    str(k): _plain(v)
                    for k, v in var.encoding.items()
                    if k in ("_FillValue", "missing_value", "scale_factor", "add_offset", "dtype")
                },
                "global_attributes": {str(k): _plain(v) for k, v in ds.attrs.items()},
                "other_variables": [str(n) for n in ds.variables if n != variable],
            }
            if "dtype" in metadata["encoding"]:
                metadata["encoding"]["dtype"] = str(metadata["encoding"]["dtype"])
            if coordinates:
                metadata["coordinates"] = coordinates
        stored = StoredArray(codec="netcdf", stored_bytes=None, details={"kind": netcdf_kind(path)})
        return Dataset(data, axes=axes, metadata=metadata, name=variable, storage={"data": stored})

    @staticmethod
    def _axes(ds: Any, var: Any) -> tuple[list[Axis], dict[str, list[Any]]]:
        axes, irregular = [], {}
        for dim in var.dims:
            units, offset, scale = "", 0.0, 1.0
            if dim in ds.variables:
                coordinate = ds[dim]
                units = str(coordinate.attrs.get("units", ""))
                values = np.asarray(coordinate.values)
                regular = _regular(values)
                if regular is None:
                    irregular[str(dim)] = [_plain(v) for v in values.tolist()]
                else:
                    offset, scale = regular
            axes.append(Axis(name=str(dim), units=units, scale=scale, offset=offset))
        return axes, irregular

    def describe(self, path: Path, **options: Any) -> dict[str, Any] | None:
        """Dimensions, coordinates and data variables with their CF attributes, filters and sizes."""
        if options:
            raise argument_error("options", sorted(options), "sciz info takes no read options for netCDF")
        kind = netcdf_kind(path)
        nc4 = require("netCDF4", "netcdf", needed_for="describing netCDF files")
        try:
            handle = nc4.Dataset(path, "r")
        except OSError as exc:
            raise FormatError(f"{path}: cannot open it as netCDF ({kind}): {exc}") from None
        try:
            check_complete(path, handle)
            storage = _hdf5_storage(path) if kind == "netcdf4" else {}
            report = {"netcdf_format": handle.data_model, "kind": kind}
            report |= _describe_group(handle, "/", storage)
        finally:
            handle.close()
        return report


def _describe_group(group: Any, where: str, storage: dict[str, dict[str, Any]]) -> dict[str, Any]:
    dimensions = {
        name: f"{len(dim)} (unlimited)" if dim.isunlimited() else len(dim) for name, dim in group.dimensions.items()
    }
    # Coordinates: dimension variables, their bounds and the auxiliary ones a "coordinates" attribute names
    bounds = {str(v.getncattr("bounds")) for v in group.variables.values() if "bounds" in v.ncattrs()}
    for v in group.variables.values():
        if "coordinates" in v.ncattrs():
            bounds.update(str(v.getncattr("coordinates")).split())
    coordinates: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for name, var in group.variables.items():
        row = _describe_variable(var, f"{where.rstrip('/')}/{name}", storage)
        is_coordinate = (var.dimensions == (name,)) or name in bounds
        (coordinates if is_coordinate else data)[name] = row
    out: dict[str, Any] = {"dimensions": dimensions, "coordinates": coordinates, "data_variables": data}
    attrs = {k: _plain(group.getncattr(k)) for k in group.ncattrs()}
    if attrs:
        out["attributes"] = attrs
    if group.groups:
        out["groups"] = {
            name: _describe_group(sub, f"{where.rstrip('/')}/{name}", storage) for name, sub in group.groups.items()
        }
    return out


def _describe_variable(var: Any, where: str, storage: dict[str, dict[str, Any]]) -> dict[str, Any]:
    dtype = var.dtype if isinstance(var.dtype, np.dtype) else np.dtype("O")
    shape = [int(n) for n in var.shape]
    raw = int(math.prod(shape) * dtype.itemsize) if dtype.kind != "O" else None
    row: dict[str, Any] = {
        "dtype": str(var.dtype) if isinstance(var.dtype, np.dtype) else getattr(var.dtype, "__name__", str(var.dtype)),
        "dimensions": list(var.dimensions),
        "shape": shape,
    }
    attributes = {k: _plain(var.getncattr(k)) for k in var.ncattrs()}
    cf = {k: attributes[k] for k in CF_ATTRIBUTES if k in attributes}
    if cf:
        row["cf"] = cf
    stored = storage.get(where)
    if stored is not None:
        row["filters"] = stored["filters"] or ["none"]
        row["chunks"] = stored["chunks"]
        row["stored_bytes"] = stored["stored_bytes"]
    else:
        row["filters"] = ["none (netCDF classic stores raw values)"]
        row["stored_bytes"] = raw
    if raw and row.get("stored_bytes"):
        row["ratio"] = round(raw / row["stored_bytes"], 3)
    quantize = [k for k in attributes if k.startswith("_Quantize")]
    if quantize:
        row["quantize"] = {k: attributes[k] for k in quantize}
    return row


def _hdf5_storage(path: Path) -> dict[str, dict[str, Any]]:
    """Per dataset of a netCDF-4 file: its filter pipeline (names and options), chunks and stored bytes."""
    h5py = require("h5py", "netcdf", needed_for="describing netCDF-4 storage")
    found: dict[str, dict[str, Any]] = {}
    with h5py.File(path, "r") as handle:

        def visit(name: str, node: Any) -> None:
            if not isinstance(node, h5py.Dataset):
                return
            plist = node.id.get_create_plist()
            filters = []
            for i in range(plist.get_nfilters()):
                code, _flags, values, _name = plist.get_filter(i)
                label = FILTER_NAMES.get(int(code), f"filter {int(code)}")
                filters.append(f"{label} {list(values)}" if values and label not in ("shuffle",) else label)
            found["/" + name] = {
                "filters": filters,
                "chunks": list(node.chunks) if node.chunks else None,
                "stored_bytes": int(node.id.get_storage_size()),
            }

        handle.visititems(visit)
    return found
