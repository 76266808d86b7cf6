"""Compress a netCDF file variable by variable within an error bound, readable by xarray and netCDF-C.

:func:`compress` reads every group of a netCDF file (classic or netCDF-4) with xarray, gives each
variable an encoding (:func:`sciz.xarray.plan`: the data variables lossy within their bound, the
coordinates, bounds, integer, text and 0-d variables lossless), writes the target in one of three
tiers, then reads the written file back as a reader would (xarray, CF decoding) and checks every
element of every lossy variable against its bound and every missing value against its position. A
variable that fails the check is written again with its next encoding (plugin filter -> CF
packing -> lossless deflate), and the report says so.

Tiers (the target's name and ``portable`` decide):

- ``OUT.nc`` (default): netCDF-4 with HDF5 plugin filters (SZ3/ZFP/SPERR, via h5netcdf + hdf5plugin);
  readers need ``import hdf5plugin`` or ``HDF5_PLUGIN_PATH``. Without them, xarray's h5netcdf
  engine fails on the filtered variables with an error naming the missing filter ("can't read
  data (can't open directory...)" / "required filter ... is not registered"), never with wrong data.
- ``OUT.nc`` with ``portable=True``: netCDF-4 written by netCDF-C (xarray's netcdf4 engine) with CF
  packing or BitRound and shuffle + deflate: every netCDF-4 reader decodes it.
- ``OUT.zarr``: a Zarr store (``zarr_format`` 2 or 3) with the portable encodings and Blosc zstd.

What changes and what does not: dimensions (unlimited ones stay unlimited in netCDF-4), attributes,
groups and CF encodings are kept; a classic source becomes netCDF-4 (classic files cannot hold
compressed variables); a missing value comes back as missing (NaN through xarray) at the same
positions: in the plugin tier as the source's own ``_FillValue`` in the file, in packed variables as
the packed fill value. Variables xarray's decoding would change (both ``_FillValue`` and a different
``missing_value``; NaN beside a finite fill value, which decoding would merge) are copied losslessly as
stored. Compound, enum and variable-length types are refused with an error naming the variable.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError, argument_error
from .formats._base import require
from .formats.netcdf import check_complete, netcdf_kind
from .xarray import CHUNK_BYTES, VariablePlan, plan

__all__ = ["CompressReport", "VariableReport", "compress"]

#: Elements compared at once when checking the written file (the variables are checked block by block).
_CHECK_ELEMENTS = CHUNK_BYTES // 4
#: Variables up to this many elements get the climate tests on the whole; larger ones on their first block.
_CLIMATE_ELEMENTS = 1 << 24
_ROUNDS = 3


@dataclass
class VariableReport:
    """One variable of the written file: how it was coded and what the check found."""

    name: str
    group: str
    role: str
    codec: str
    bound: float | None
    original_bytes: int
    stored_bytes: int | None
    ratio: float | None
    max_error: float | None
    missing: int
    climate: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)


@dataclass
class CompressReport:
    """What :func:`compress` wrote: the tier, the sizes and one row per variable."""

    source: str
    target: str
    tier: str
    source_bytes: int
    target_bytes: int
    seconds: float
    variables: list[VariableReport]

    @property
    def ratio(self) -> float:
        return self.source_bytes / max(1, self.target_bytes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = round(self.ratio, 4)
        return json.loads(json.dumps(out, default=_json_default, allow_nan=True).replace("NaN", "null"))

    def table(self) -> str:
        """The per-variable table ``sciz compress`` prints."""
        head = f"{'variable':<24} {'codec':<9} {'bound':>10} {'ratio':>8} {'max error':>11}  climate tests"
        lines = [head, "-" * len(head)]
        for row in self.variables:
            name = row.name if row.group == "/" else f"{row.group.rstrip('/')}/{row.name}"
            bound = "lossless" if not row.bound else f"{row.bound:.4g}"
            ratio = f"{row.ratio:.2f}" if row.ratio else "-"
            error = "-" if row.max_error is None else f"{row.max_error:.4g}"
            lines.append(f"{name:<24} {row.codec:<9} {bound:>10} {ratio:>8} {error:>11}  {_climate_text(row.climate)}")
            lines.extend(f"{'':<26}{note}" for note in row.notes if not note.startswith("bound "))
        lines.append(
            f"{self.source} ({self.source_bytes} B) -> {self.target} ({self.target_bytes} B, {self.tier}): "
            f"{self.ratio:.2f}x in {self.seconds:.1f} s"
        )
        return "\n".join(lines)


def _climate_text(climate: dict[str, Any] | None) -> str:
    if climate is None:
        return "-"
    where = ", first block" if climate.get("partial") else ""
    return (
        f"{'pass' if climate['passes'] else 'FAIL'} (R2 {climate['r2']:.6f}, DSSIM {climate['dssim']:.5f}, "
        f"spatial {climate['spatial_rel_error_share']:.3f}{where})"
    )


def _disk_size(path: Path) -> int:
    """Bytes of a file, or of every file below a directory (a Zarr store)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _scan(source: Path) -> tuple[list[str], dict[str, dict[str, str]], str]:
    """Group paths, per group the variables to copy as stored (and why); refuses types xarray cannot hold."""
    nc4 = require("netCDF4", "netcdf", needed_for="compressing netCDF files")
    kind = netcdf_kind(source)
    try:
        handle = nc4.Dataset(source)
    except OSError as exc:
        raise FormatError(f"{source}: cannot open it as netCDF ({kind}): {exc}") from None
    groups: list[str] = []
    keep: dict[str, dict[str, str]] = {}
    try:
        check_complete(source, handle)

        def walk(group: Any, where: str) -> None:
            groups.append(where)
            keep[where] = {}
            for name, var in group.variables.items():
                if not isinstance(var.dtype, np.dtype) and var.dtype is not str:
                    raise FormatError(
                        f"{source}: variable {where.rstrip('/')}/{name} has a {type(var.dtype).__name__} type "
                        f"({var.dtype}): compound, enum and variable-length types are not compressed by sciz"
                    )
                if isinstance(var.dtype, np.dtype) and var.dtype.kind == "V":
                    raise FormatError(f"{source}: variable {name} has a compound type {var.dtype}: not supported")
                attrs = set(var.ncattrs())
                if {"_FillValue", "missing_value"} <= attrs:
                    fill, missing = np.asarray(var.getncattr("_FillValue")), np.asarray(var.getncattr("missing_value"))
                    if fill.size != missing.size or not np.array_equal(fill, missing, equal_nan=True):
                        keep[where][name] = (
                            f"_FillValue {fill.tolist()} and missing_value {missing.tolist()} differ: copied as "
                            "stored (lossless), each comes back as itself"
                        )
                        continue
                fills = [np.asarray(var.getncattr(a), float) for a in ("_FillValue", "missing_value") if a in attrs]
                # A NaN fill (xarray's default for floats) is what NaN means anyway: nothing to merge.
                nan_fill = bool(fills) and all(f.size and np.isnan(f).all() for f in fills)
                if fills and not nan_fill and isinstance(var.dtype, np.dtype) and var.dtype.kind == "f" and var.size:
                    var.set_auto_maskandscale(False)
                    if _has_nan(var):
                        keep[where][name] = (
                            "NaN beside a fill value (CF decoding would merge them): copied as stored (lossless)"
                        )
            for name, sub in group.groups.items():
                walk(sub, f"{where.rstrip('/')}/{name}")

        walk(handle, "/")
    finally:
        handle.close()
    return groups, keep, kind


def _has_nan(var: Any) -> bool:
    if var.ndim == 0:
        return bool(np.isnan(var[...]))
    step = max(1, _CHECK_ELEMENTS // max(1, math.prod(var.shape[1:])))
    return any(bool(np.isnan(np.asarray(var[i : i + step])).any()) for i in range(0, var.shape[0], step))


def _tier(target: Path, portable: bool) -> tuple[str, str]:
    """(tier, xarray engine) for the target's name."""
    if target.suffix.lower() == ".zarr":
        return "zarr", "zarr"
    if target.suffix.lower() not in (".nc", ".nc4", ".netcdf", ".cdf"):
        raise argument_error("target", os.fspath(target), "must end in .nc (netCDF-4) or .zarr")
    return ("portable", "netcdf4") if portable else ("plugins", "h5netcdf")


def _open(source: Path, group: str, keep: Mapping[str, str], kind: str, big: bool) -> Any:
    xr = require("xarray", "netcdf", needed_for="compressing netCDF files")
    engine = "h5netcdf" if kind == "netcdf4" else "netcdf4"
    if engine == "h5netcdf":
        require("hdf5plugin", "netcdf")
    options: dict[str, Any] = {"decode_times": False, "decode_timedelta": False, "engine": engine}
    if group != "/":
        options["group"] = group
    if keep:
        with xr.open_dataset(source, **options, decode_cf=False) as names:
            every = [str(n) for n in names.variables]
        options["mask_and_scale"] = {n: n not in keep for n in every}
    try:
        ds = xr.open_dataset(source, **options)
        if big:  # dask chunks as the writer's HDF5 chunks, given at opening (rechunking reads whole variables)
            chunks = {str(dim): _leading_chunk(ds, dim) for dim in ds.dims}
            ds.close()
            ds = xr.open_dataset(source, **options, chunks=chunks)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError) as exc:
        raise FormatError(f"{source}: cannot read group {group} with xarray: {type(exc).__name__}: {exc}") from None
    return ds


def _leading_chunk(ds: Any, dim: Any) -> int:
    """Dask chunks along ``dim`` matching the HDF5 chunks the writer uses (first axes split)."""
    from .xarray import _chunks

    size = int(ds.sizes[dim])
    best = size
    for var in ds.data_vars.values():
        if dim in var.dims:
            best = min(best, _chunks(var.shape, var.dtype.itemsize)[var.dims.index(dim)])
    return max(1, best)


def _write(
    ds: Any, path: Path, group: str, engine: str, encodings: dict[str, dict[str, Any]], zarr_format: int, first: bool
) -> None:
    # The first group creates the file or store, the others are added to it.
    where = {"mode": "w" if first else "a", "group": None if group == "/" else group, "encoding": encodings}
    if engine == "zarr":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr v3: "consolidated metadata is not part of the specification"
            ds.to_zarr(path, zarr_format=zarr_format, consolidated=zarr_format == 2, **where)
        return
    if engine == "h5netcdf":
        require("hdf5plugin", "netcdf", needed_for="writing HDF5 plugin filters")
    unlimited = ds.encoding.get("unlimited_dims") or None
    ds.to_netcdf(path, engine=engine, unlimited_dims=unlimited, format="NETCDF4", **where)


def _open_written(path: Path, group: str, engine: str, decode: bool = True, keep: Any = ()) -> Any:
    """The written group as a reader opens it (CF decoding but for the variables in ``keep``, copied as
    stored), or its stored values (``decode=False``)."""
    xr = require("xarray", "netcdf")
    options: dict[str, Any] = {"decode_times": False, "decode_timedelta": False, "decode_cf": decode}
    if decode and keep:
        with _open_written(path, group, engine, decode=False) as stored:
            options["mask_and_scale"] = {str(n): str(n) not in keep for n in stored.variables}
    if group != "/":
        options["group"] = group
    if engine == "zarr":
        return xr.open_zarr(path, consolidated=False, chunks=None, **options)
    options["cache"] = False  # xarray would otherwise keep every block the check reads (the whole file, in the end)
    if engine == "h5netcdf":
        import hdf5plugin  # noqa: F401  (the plugin filters for h5py)
    return xr.open_dataset(path, engine=engine, **options)


def _check(
    original: Any, written: Any, raw: Any, plan_row: VariablePlan
) -> tuple[float, int, list[str], dict[str, Any] | None]:
    """Max |error| of the valid elements, missing count, problems, and the climate tests; block by block."""
    a_var, b_var = original[plan_row.name], written[plan_row.name]
    problems: list[str] = []
    if a_var.shape != b_var.shape:
        return math.inf, 0, [f"shape {b_var.shape} != {a_var.shape}"], None
    bound = plan_row.tolerance or 0.0
    worst, missing = 0.0, 0
    step = max(1, _CHECK_ELEMENTS // max(1, math.prod(a_var.shape[1:]))) if a_var.ndim else 1
    climate = None
    packed = "scale_factor" in plan_row.encoding and plan_row.role == "data"
    for start in range(0, a_var.shape[0] if a_var.ndim else 1, step):
        window = slice(start, start + step)
        a = np.asarray(a_var[window].values if a_var.ndim else a_var.values)
        b = np.asarray(b_var[window].values if b_var.ndim else b_var.values)
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            a_missing, b_missing = np.isnan(a), np.isnan(b.astype(np.float64))
            if not np.array_equal(a_missing, b_missing):
                changed = int(np.count_nonzero(a_missing != b_missing))
                problems.append(f"{changed} missing values moved or appeared")
            valid = ~a_missing & ~b_missing
            missing += int(np.count_nonzero(a_missing))
            if valid.any():
                error = np.abs(b[valid].astype(np.float64) - a[valid].astype(np.float64))
                worst = max(worst, float(error.max()))
            if packed:  # netCDF4-python and netCDF-C unpack in double: check that arithmetic as well
                worst = max(worst, _float64_unpacking_error(a, raw, plan_row, window, valid))
        elif not np.array_equal(a, b):
            problems.append("values differ from the source (a lossless variable)")
        if plan_row.lossy and climate is None and a.ndim >= 2 and a.dtype.kind == "f":
            whole = a_var.size <= _CLIMATE_ELEMENTS
            x = np.asarray(a_var.values) if whole else a
            y = np.asarray(b_var.values).astype(x.dtype) if whole else b.astype(a.dtype)
            climate = _climate(x, y) | {"partial": not whole}
    if worst > bound * (1 + 1e-12) and plan_row.lossy:
        problems.append(f"max error {worst:.6g} exceeds the bound {bound:.6g}")
    elif worst > 0 and not plan_row.lossy:
        problems.append(f"a lossless variable changed by up to {worst:.6g}")
    return worst, missing, problems, climate


def _climate(original: np.ndarray, decoded: np.ndarray) -> dict[str, Any]:
    """The three climate acceptance tests of :mod:`sciz.quality` (only those: the full
    :func:`~sciz.quality.compare` would cost more than the compression)."""
    from .quality import DSSIM_MIN, R2_MIN, SPATIAL_REL_ERROR, SPATIAL_SHARE_MAX, dssim, pearson, valid_mask

    r2 = pearson(original, decoded) ** 2
    structural = dssim(original, decoded)
    valid = valid_mask(original)
    x, y = original[valid].astype(np.float64), decoded[valid].astype(np.float64)
    nonzero = x != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.abs(y[nonzero] - x[nonzero]) / np.abs(x[nonzero])
    share = float(np.count_nonzero(~(relative <= SPATIAL_REL_ERROR))) / max(1, x.size)
    tests = {"r2_pass": r2 > R2_MIN, "dssim_pass": structural >= DSSIM_MIN, "spatial_pass": share < SPATIAL_SHARE_MAX}
    return {"r2": r2, "dssim": structural, "spatial_rel_error_share": share, **tests, "passes": all(tests.values())}


def _float64_unpacking_error(
    a: np.ndarray, raw: Any, plan_row: VariablePlan, window: slice, valid: np.ndarray
) -> float:
    """Max |error| when the stored integers are unpacked in double (netCDF-C, netCDF4-python)."""
    if not valid.any():
        return 0.0
    stored = raw[plan_row.name]
    scale = float(stored.attrs.get("scale_factor", 1.0))
    offset = float(stored.attrs.get("add_offset", 0.0))
    unpacked = np.asarray(stored[window].values).astype(np.float64) * scale + offset
    return float(np.abs(unpacked[valid] - a[valid].astype(np.float64)).max())


def _stored_bytes(path: Path, engine: str, group: str, name: str) -> int | None:
    if engine == "zarr":
        where = path if group == "/" else path / group.strip("/")
        folder = where / name
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else None
    import h5py

    with h5py.File(path, "r") as handle:
        node = handle.get(f"{group.rstrip('/')}/{name}")
        return int(node.id.get_storage_size()) if isinstance(node, h5py.Dataset) else None


def _is_output_kind(path: Path, engine: str) -> bool:
    """Whether ``force`` may replace ``path``: a Zarr store for a Zarr target, a netCDF file (classic or
    HDF5-based) for a netCDF one; never an unrelated file or folder (a trial user's notes file was
    replaced by ``sciz compress ... --force``)."""
    if engine == "zarr":
        return path.is_dir() and any((path / name).is_file() for name in (".zgroup", ".zattrs", "zarr.json"))
    try:
        return path.is_file() and bool(netcdf_kind(path))
    except FormatError:
        return False


def compress(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    tolerance: float | None = None,
    rel_tolerance: float | None = None,
    variables: Mapping[str, float] | None = None,
    codec: str | None = None,
    portable: bool = False,
    zarr_format: int = 3,
    report: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> CompressReport:
    """Compress the netCDF file ``source`` into ``target`` (``.nc`` or ``.zarr``) within the bounds.

    Parameters
    ----------
    source, target
        The netCDF file to read; the netCDF-4 file or Zarr store to write (atomically).
    tolerance, rel_tolerance, variables
        Absolute bound (the variable's units), bound as a share of each variable's valid range, and
        per variable absolute bounds (``{"tos": 0.01}``); none: lossless.
    codec
        Force one method for every data variable (:data:`sciz.xarray.METHODS`); None: per variable.
    portable
        netCDF-4 readable without plugins (CF packing / BitRound, shuffle + deflate).
    zarr_format
        2 or 3 for a ``.zarr`` target.
    report
        Also write the report as JSON to this path.
    force
        Replace an existing ``target``.

    Example
    -------
    >>> import sciz.netcdf
    >>> result = sciz.netcdf.compress("tos.nc", "tos.sz3.nc", rel_tolerance=1e-3)  # doctest: +SKIP
    >>> print(result.table())  # doctest: +SKIP
    """
    from .atomic import atomic_directory, atomic_file

    started = time.perf_counter()
    source, target = Path(os.fspath(source)), Path(os.fspath(target))
    if not source.is_file():
        raise FileNotFoundError(f"no such netCDF file: {source}")
    tier, engine = _tier(target, portable)
    if target.exists() and not force:
        raise FormatError(f"{target} exists; pass force=True (--force) to replace it")
    groups, keep, kind = _scan(source)
    big = source.stat().st_size > 8 * CHUNK_BYTES
    datasets = {g: _open(source, g, keep[g], kind, big) for g in groups}
    try:
        plans = {
            g: plan(
                ds,
                tolerance=tolerance,
                rel_tolerance=rel_tolerance,
                variables=variables if g == "/" else None,
                codec=codec,
                portable=portable,
                engine=engine,
                zarr_format=zarr_format,
                skip=keep[g],
            )
            for g, ds in datasets.items()
        }
        if engine == "zarr":
            with atomic_directory(target, replace_if=lambda p: force and _is_output_kind(p, engine)) as scratch:
                rows = _write_and_check(datasets, plans, scratch, engine, zarr_format)
        else:
            with atomic_file(target, replace_if=lambda p: force and _is_output_kind(p, engine)) as handle:
                rows = _write_and_check(datasets, plans, Path(handle.name), engine, zarr_format)
    finally:
        for ds in datasets.values():
            ds.close()
    result = CompressReport(
        os.fspath(source),
        os.fspath(target),
        tier if kind == "netcdf4" or engine == "zarr" else f"{tier} (netCDF-4 from {kind})",
        _disk_size(source),
        _disk_size(target),
        round(time.perf_counter() - started, 3),
        rows,
    )
    if report is not None:
        Path(os.fspath(report)).write_text(json.dumps(result.to_dict(), indent=2))
    return result


def _write_and_check(
    datasets: dict[str, Any], plans: dict[str, dict[str, VariablePlan]], path: Path, engine: str, zarr_format: int
) -> list[VariableReport]:
    """Write every group, check it, and write again with the next encoding where a check failed."""
    from .xarray import _lossless, _plan_data

    for _round in range(_ROUNDS):
        for i, (group, ds) in enumerate(datasets.items()):
            _write(ds, path, group, engine, {k: p.encoding for k, p in plans[group].items()}, zarr_format, i == 0)
        rows, failed = [], False
        for group, ds in datasets.items():
            written = _open_written(path, group, engine, keep=[n for n, p in plans[group].items() if p.role == "kept"])
            raw = _open_written(path, group, engine, decode=False)
            try:
                for name, entry in plans[group].items():
                    worst, missing, problems, climate = _check(ds, written, raw, entry)
                    if problems and entry.fallbacks:
                        nxt = entry.fallbacks.pop(0)
                        entry.notes.append(f"{entry.method} failed the check ({'; '.join(problems)}): now {nxt}")
                        if nxt == "deflate":
                            entry.method, entry.tolerance = "deflate", 0.0
                            entry.encoding = {
                                k: v for k, v in entry.encoding.items() if k in ("_FillValue", "missing_value")
                            } | _lossless("deflate", ds[name], engine, zarr_format)
                        else:
                            redo = _plan_data(name, ds[name], entry.tolerance, None, {}, nxt, engine, zarr_format)
                            redo.notes = entry.notes + redo.notes[1:]
                            redo.fallbacks = entry.fallbacks
                            plans[group][name] = redo
                        failed = True
                        continue
                    if problems:
                        raise FormatError(f"{path}: variable {name}: {'; '.join(problems)} (no safer encoding left)")
                    stored = _stored_bytes(path, engine, group, name)
                    size = int(ds[name].size * ds[name].dtype.itemsize)
                    rows.append(
                        VariableReport(
                            name, group, entry.role, entry.method, entry.tolerance or None, size, stored,
                            round(size / stored, 3) if stored else None, worst if entry.lossy else 0.0, missing,
                            climate, entry.notes,
                        )
                    )  # fmt: skip
            finally:
                written.close()
                raw.close()
        if not failed:
            return rows
    raise FormatError(f"{path}: the encodings did not pass the check after {_ROUNDS} writes")
