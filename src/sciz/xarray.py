"""Error-bounded encodings for xarray: the ``encoding`` dict for ``Dataset.to_netcdf`` / ``to_zarr``.

:func:`encoding` gives every variable of an :class:`xarray.Dataset` (opened with CF decoding, as
``xarray.open_dataset`` does by default) an encoding that keeps an absolute error bound on its data:

- **plugins** (``portable=False``, engine ``h5netcdf``): HDF5 filters from hdf5plugin — SZ3
  (32024), SZ2 (32017), ZFP (32013), SPERR (32028), Blosc2 — per variable the one that stores the
  variable (or a sample of whole chunks) smallest, whole or in 2-D slices: :func:`sciz.codecs.choose`
  ranks SZ3/ZFP/SPERR by the bytes their filters store (``container="hdf5"``, ``measure``), SZ2's
  filter and CF packing are measured beside its winner (see :func:`_plugin`). Readers need
  ``import hdf5plugin`` (xarray, h5py) or ``HDF5_PLUGIN_PATH`` (netCDF-C >= 4.9). Fill values stay
  in the data the filter codes: SZ3 keeps the bound on every element, and a fill value whose float
  spacing exceeds twice the bound (1e20, 9.97e36) can only come back exactly; ZFP and SPERR would
  spread a 1e20 over its neighbours, so variables with missing values use SZ3 or SZ2 only. :func:`sciz.netcdf.compress`
  verifies the result and falls back where a fill did not come back exactly.
- **portable** (``portable=True``, engine ``netcdf4``): what every netCDF reader decodes without
  plugins — CF packing (``scale_factor``/``add_offset`` into int16 or int32, the step chosen so the
  bound holds after the reader's float arithmetic, see :func:`packing`) or netCDF-C's BitRound
  quantisation (``quantize_mode``), each with shuffle + deflate.
- **zarr** (``engine="zarr"``): the portable encodings with a Blosc zstd compressor (numcodecs for
  Zarr v2, zarr's ``BloscCodec`` for v3).

Coordinates, bounds, integer, text and 0-d variables are lossless (shuffle + deflate, or the zarr
default). A variable already packed in the source keeps its packing, losslessly. Every decision is
explained in :class:`VariablePlan` (:func:`plan`); :func:`sciz.netcdf.compress` writes, reads back and
checks each element against the bound.

Example
-------
>>> import xarray as xr, sciz.xarray  # doctest: +SKIP
>>> ds = xr.open_dataset("tos_O1_2001-2002.nc")  # doctest: +SKIP
>>> ds.to_netcdf("tos.nc", engine="h5netcdf", encoding=sciz.xarray.encoding(ds, tolerance=0.01))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ArgumentError, argument_error

__all__ = [
    "ENGINES",
    "LOSSLESS_METHODS",
    "METHODS",
    "VariablePlan",
    "bitround_keepbits",
    "encoding",
    "packing",
    "plan",
]

#: Where an encoding is for: the writers of the netCDF tiers and zarr.
ENGINES = ("h5netcdf", "netcdf4", "zarr")
#: The per-variable methods, by the engines that write them.
METHODS = {
    "sz3": ("h5netcdf",),
    "sz": ("h5netcdf",),
    "zfp": ("h5netcdf",),
    "sperr": ("h5netcdf",),
    "blosc2": ("h5netcdf",),
    "pack": ("h5netcdf", "netcdf4", "zarr"),
    "bitround": ("netcdf4", "zarr"),
    "deflate": ("h5netcdf", "netcdf4", "zarr"),
}
LOSSLESS_METHODS = ("blosc2", "deflate")
_PLUGIN_CODECS = ("sz3", "zfp", "sperr")
#: CF keys of a variable's decoding that its encoding must carry on (an explicit encoding replaces it).
_CF_KEYS = ("_FillValue", "missing_value", "dtype", "scale_factor", "add_offset", "units", "calendar")
#: Largest uncompressed chunk the plugin filters are given (one SZ3 call codes one chunk).
CHUNK_BYTES = 16 << 20
#: Elements of a variable :func:`sciz.codecs.choose` and the size estimates look at.
SAMPLE_ELEMENTS = 1 << 22
_DEFLATE_LEVEL = 4
#: Deflate level of packed and bit-rounded data (measured on the shared files' packed int16: 1-5 % smaller
#: than level 4 at about the same speed; level 9 a further 0-3 % at a fifth of the speed).
_LOSSY_LEVEL = 6


@dataclass
class VariablePlan:
    """How one variable is encoded and why."""

    name: str
    role: str  # data, coordinate, bounds, integer, text, scalar, packed
    method: str
    tolerance: float | None = None
    encoding: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)

    @property
    def lossy(self) -> bool:
        return self.method not in LOSSLESS_METHODS and self.role == "data"


def _roles(ds: Any) -> dict[str, str]:
    bounds = {str(v.attrs.get("bounds", "")) for v in ds.variables.values()} - {""}
    for v in ds.variables.values():
        bounds.update(str(v.encoding.get("coordinates", v.attrs.get("coordinates", ""))).split())
    roles = {}
    for name, var in ds.variables.items():
        key = str(name)
        kind = var.dtype.kind
        if name in ds.coords or name in ds.dims:
            roles[key] = "coordinate"
        elif key in bounds:
            roles[key] = "bounds"
        elif kind in "OSUa":
            roles[key] = "text"
        elif kind not in "f":
            roles[key] = "integer"
        elif var.ndim == 0:
            roles[key] = "scalar"
        elif "scale_factor" in var.encoding or "add_offset" in var.encoding:
            roles[key] = "packed"
        else:
            roles[key] = "data"
    return roles


def _sample(values: Any, limit: int = SAMPLE_ELEMENTS) -> np.ndarray:
    """Up to ``limit`` elements as whole slices along the first axis, evenly spread (a lazy array is
    loaded only there)."""
    shape = values.shape
    if math.prod(shape) <= limit or len(shape) < 2:
        return np.asarray(values)
    per_slice = math.prod(shape[1:])
    count = max(1, min(shape[0], limit // max(1, per_slice)))
    picks = np.unique(np.linspace(0, shape[0] - 1, count).round().astype(int))
    return np.asarray(values[picks.tolist()])


def _finite_range(var: Any) -> tuple[float, float] | None:
    """min, max of the valid (finite) values, chunk by chunk along the first axis."""
    low, high = math.inf, -math.inf
    step = max(1, SAMPLE_ELEMENTS // max(1, math.prod(var.shape[1:]))) if var.ndim else 1
    for start in range(0, var.shape[0] if var.ndim else 1, step):
        block = np.asarray(var[start : start + step].values if var.ndim else var.values)
        finite = block[np.isfinite(block)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    return None if low > high else (low, high)


def packing(low: float, high: float, tolerance: float, dtype: Any) -> dict[str, Any] | None:
    """CF packing of values in ``[low, high]`` that keeps ``tolerance`` after the reader unpacks.

    A reader computes ``packed * scale_factor + add_offset`` in the float type of ``scale_factor``
    (the data's). A plain ``scale_factor = 2 * tolerance`` overshoots by the rounding of that
    arithmetic (measured 0.0100012 for 0.01 on TREFHT), so the step leaves four float spacings of
    the largest magnitude as margin. int16 when the levels fit, else int32; None when the bound is
    below the float precision of the values or the levels overflow int32.
    """
    ftype = np.dtype(dtype).type
    magnitude = max(abs(low), abs(high))
    margin = 4.0 * float(np.spacing(ftype(magnitude)))
    usable = tolerance - margin
    if usable <= tolerance / 4:
        return None
    scale = ftype(2.0 * usable)
    offset = ftype((low + high) / 2.0)
    half_levels = math.ceil((high - low) / 2.0 / float(scale)) + 1
    for packed, fill in (("int16", -32767), ("int32", -2147483647)):
        if half_levels < -fill:
            return {
                "dtype": packed,
                "scale_factor": scale,
                "add_offset": offset,
                "_FillValue": np.dtype(packed).type(fill),
            }
    return None


def bitround_keepbits(high_magnitude: float, tolerance: float, dtype: Any) -> int | None:
    """Mantissa bits BitRound keeps so its error (half a spacing at the largest magnitude) is within
    ``tolerance``; None when every bit is needed (lossless)."""
    mantissa = 23 if np.dtype(dtype).itemsize == 4 else 52
    if high_magnitude == 0:
        return 1
    exponent = math.floor(math.log2(high_magnitude))
    keep = max(1, math.ceil(exponent - 1 - math.log2(tolerance)))
    return None if keep >= mantissa else keep


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks of at most :data:`CHUNK_BYTES`: whole trailing axes, split along the leading ones."""
    chunks = list(shape)
    for axis in range(len(shape)):
        rest = math.prod(chunks[axis + 1 :]) * itemsize
        if math.prod(chunks) * itemsize <= CHUNK_BYTES:
            break
        chunks[axis] = max(1, CHUNK_BYTES // max(1, rest))
    return tuple(max(1, c) for c in chunks)


def _lossless(method: str, var: Any, engine: str, zarr_format: int) -> dict[str, Any]:
    if engine == "zarr":
        return _zarr_compressor(zarr_format)
    if var.ndim == 0 or var.dtype.kind in "OSUa":
        return {}  # HDF5 filters need chunks; variable-length strings take none
    if method == "blosc2":
        import hdf5plugin

        return {**dict(hdf5plugin.Blosc2(cname="zstd", clevel=5, filters=hdf5plugin.Blosc2.SHUFFLE))}
    return {"zlib": True, "complevel": _DEFLATE_LEVEL, "shuffle": True}


def _zarr_compressor(zarr_format: int) -> dict[str, Any]:
    if zarr_format == 2:
        import numcodecs

        return {"compressors": [numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)]}
    from zarr.codecs import BloscCodec

    return {"compressors": [BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")]}


def _cf(var: Any) -> dict[str, Any]:
    found = {k: var.encoding[k] for k in _CF_KEYS if k in var.encoding}
    if var.dtype.kind == "f" and "_FillValue" not in found and "_FillValue" not in var.attrs:
        found["_FillValue"] = None  # xarray would add a NaN _FillValue the source did not have
    return found


def _bound_for(
    name: str, var: Any, tolerance: float | None, rel_tolerance: float | None, overrides: Mapping[str, float]
) -> tuple[float | None, tuple[float, float] | None, str]:
    """The absolute bound of one variable, its valid range, and how the bound was given."""
    span = _finite_range(var)
    if name in overrides:
        return float(overrides[name]), span, f"--var {name}={overrides[name]:g}"
    if tolerance is not None:
        return float(tolerance), span, f"absolute {tolerance:g}"
    if rel_tolerance is not None:
        if span is None:
            return None, span, "no valid values"
        return float(rel_tolerance) * (span[1] - span[0]), span, f"{rel_tolerance:g} of range"
    return None, span, "lossless"


def _check_args(engine: str, zarr_format: int, codec: str | None, tolerance: Any, rel_tolerance: Any) -> None:
    if engine not in ENGINES:
        raise argument_error("engine", engine, f"must be one of {', '.join(ENGINES)}")
    if zarr_format not in (2, 3):
        raise argument_error("zarr_format", zarr_format, "must be 2 or 3")
    if codec is not None and (codec not in METHODS or engine not in METHODS[codec]):
        allowed = [m for m, engines in METHODS.items() if engine in engines]
        hint = " (bitround is netCDF-C's quantisation: use portable=True, --portable)" if codec == "bitround" else ""
        raise argument_error("codec", codec, f"for engine {engine} one of {', '.join(allowed)}{hint}")
    if tolerance is not None and rel_tolerance is not None:
        raise argument_error("tolerance", tolerance, "give tolerance or rel_tolerance, not both")
    for label, value in (("tolerance", tolerance), ("rel_tolerance", rel_tolerance)):
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise argument_error(label, value, "must be a finite number >= 0")


def plan(
    ds: Any,
    *,
    tolerance: float | None = None,
    rel_tolerance: float | None = None,
    variables: Mapping[str, float] | None = None,
    codec: str | None = None,
    portable: bool = False,
    engine: str | None = None,
    zarr_format: int = 3,
    skip: Mapping[str, str] | None = None,
) -> dict[str, VariablePlan]:
    """The encoding of every variable of ``ds`` and why (see :func:`encoding` for the arguments).

    ``skip`` maps variable names to a reason to keep them lossless (used by :func:`sciz.netcdf.compress`
    for variables xarray's decoding would change).
    """
    engine = engine or ("netcdf4" if portable else "h5netcdf")
    _check_args(engine, zarr_format, codec, tolerance, rel_tolerance)
    overrides = dict(variables or {})
    unknown = sorted(set(overrides) - {str(n) for n in ds.variables})
    if unknown:
        raise argument_error("variables", unknown, f"the dataset holds {', '.join(map(str, ds.variables))}")
    roles = _roles(ds)
    plans: dict[str, VariablePlan] = {}
    for name, var in ds.variables.items():
        key = str(name)
        role = roles[key]
        if key in (skip or {}):
            role = "kept"
        if role != "data":
            lossless = "blosc2" if codec == "blosc2" and role == "packed" else "deflate"
            entry = VariablePlan(
                key, role, lossless, 0.0, {**_cf(var), **_lossless(lossless, var, engine, zarr_format)}
            )
            if role == "packed":
                entry.notes.append("already packed in the source: its packing kept, losslessly")
            if role == "kept":
                entry.notes.append((skip or {})[key])
            if key in overrides:
                entry.notes.append(f"{role} variables stay lossless: --var {key} ignored")
            plans[key] = entry
            continue
        plans[key] = _plan_data(key, var, tolerance, rel_tolerance, overrides, codec, engine, zarr_format)
    return plans


def _plan_data(
    name: str,
    var: Any,
    tolerance: float | None,
    rel_tolerance: float | None,
    overrides: Mapping[str, float],
    codec: str | None,
    engine: str,
    zarr_format: int,
) -> VariablePlan:
    bound, span, how = _bound_for(name, var, tolerance, rel_tolerance, overrides)
    cf = _cf(var)
    if bound is None or bound == 0 or span is None:
        method = codec if codec in LOSSLESS_METHODS else "deflate"
        entry = VariablePlan(name, "data", method, 0.0, {**cf, **_lossless(method, var, engine, zarr_format)})
        entry.notes.append("no valid values: lossless" if span is None and bound else f"{how}: lossless")
        return entry
    entry = VariablePlan(name, "data", "", bound)
    entry.notes.append(f"bound {bound:.4g} ({how})")
    sample = _sample(var)
    if codec in LOSSLESS_METHODS:
        entry.method, entry.tolerance = codec, 0.0
        entry.encoding = {**cf, **_lossless(codec, var, engine, zarr_format)}
        return entry
    order = _method_order(engine, codec, sample, cf)
    for method in order:
        made = _encode_method(method, var, sample, bound, span, cf, engine, zarr_format, entry)
        if made is not None:
            entry.method, entry.encoding = entry.method or method, made
            entry.fallbacks = [m for m in order[order.index(method) + 1 :] if m != method] + ["deflate"]
            return entry
    entry.method, entry.tolerance = "deflate", 0.0
    entry.encoding = {**cf, **_lossless("deflate", var, engine, zarr_format)}
    entry.notes.append("no lossy encoding holds this bound: lossless deflate")
    return entry


def _method_order(engine: str, codec: str | None, sample: np.ndarray, cf: dict[str, Any]) -> list[str]:
    """The lossy methods to try, best first (a forced ``codec`` first, the portable ones after)."""
    portable = ["pack", "bitround"] if engine != "h5netcdf" else ["pack"]
    if engine == "zarr" and "_FillValue" in cf:
        portable = ["pack"]  # numcodecs' BitRound would round the fill value itself
    if codec is not None:
        return [codec, *[m for m in portable if m != codec]]
    if engine == "h5netcdf":
        return ["plugin", *portable]
    return portable


def _encode_method(
    method: str,
    var: Any,
    sample: np.ndarray,
    bound: float,
    span: tuple[float, float],
    cf: dict[str, Any],
    engine: str,
    zarr_format: int,
    entry: VariablePlan,
) -> dict[str, Any] | None:
    keep_cf = {k: v for k, v in cf.items() if k in ("_FillValue", "missing_value", "units", "calendar")}
    if method in ("plugin", "sz", *_PLUGIN_CODECS):
        chosen = _plugin(method, var, sample, bound, span, keep_cf, entry)
        if chosen is None:
            return None
        entry.method = chosen[0]
        return chosen[1]
    if method == "pack":
        packed = packing(span[0], span[1], bound, var.dtype)
        if packed is None:
            entry.notes.append(
                f"CF packing cannot hold {bound:.4g} on {span[0]:.6g}..{span[1]:.6g} (the levels overflow int32 "
                "or the bound is below the float precision)"
            )
            return None
        if engine == "zarr":
            return {**packed, **_zarr_compressor(zarr_format)}
        chunks = {"chunksizes": _chunks(var.shape, np.dtype(packed["dtype"]).itemsize)} if var.ndim else {}
        return {**packed, "zlib": True, "complevel": _LOSSY_LEVEL, "shuffle": True, **chunks}
    if method == "bitround":
        keep = bitround_keepbits(max(abs(span[0]), abs(span[1])), bound, var.dtype)
        if keep is None:
            entry.notes.append(f"BitRound needs every mantissa bit for {bound:.4g}")
            return None
        entry.notes.append(f"BitRound keeps {keep} mantissa bits")
        if engine == "zarr":
            return _zarr_bitround(keep, zarr_format, keep_cf)
        return {**keep_cf, "quantize_mode": "BitRound", "significant_digits": keep, "zlib": True,
                "complevel": _LOSSY_LEVEL, "shuffle": True}  # fmt: skip
    raise argument_error("codec", method, f"one of {', '.join(METHODS)}")


def _zarr_bitround(keep: int, zarr_format: int, cf: dict[str, Any]) -> dict[str, Any]:
    if zarr_format == 2:
        import numcodecs

        return {**cf, "filters": [numcodecs.BitRound(keepbits=keep)], **_zarr_compressor(2)}
    from numcodecs.zarr3 import BitRound

    return {**cf, "filters": [BitRound(keepbits=keep)], **_zarr_compressor(3)}


def _stored_bytes(values: np.ndarray, options: dict[str, Any]) -> int:
    """Bytes HDF5 stores for ``values`` through the filter ``options``, in chunks as the real write's."""
    from .formats._hdf5 import stored_size

    return stored_size(values, _chunks(values.shape, values.dtype.itemsize) if values.ndim else None, options)


def _packed(sample: np.ndarray, packed: dict[str, Any]) -> np.ndarray:
    scale, offset = float(packed["scale_factor"]), float(packed["add_offset"])
    with np.errstate(invalid="ignore"):
        levels = np.round((sample.astype(np.float64) - offset) / scale)
    return np.where(np.isnan(levels), packed["_FillValue"], levels).astype(packed["dtype"])


def _plugin(
    method: str,
    var: Any,
    sample: np.ndarray,
    bound: float,
    span: tuple[float, float],
    cf: dict[str, Any],
    entry: VariablePlan,
) -> tuple[str, dict[str, Any]] | None:
    """The plugin filter (or CF packing) that stores the sample smallest, or ``method``'s filter.

    The sciz codecs with an HDF5 filter (SZ3, ZFP, SPERR) are ranked by :func:`sciz.codecs.choose`
    with ``container="hdf5"``: it writes the sample's chunks (chunked as the variable will be; a
    variable of up to :data:`SAMPLE_ELEMENTS` values is one chunk, so it writes the whole variable)
    through each filter with :func:`_measure`, the bytes the netCDF file will hold. The filters code
    differently from sciz's streams (SZ3's filter 13.5x on TREFHT at 1e-3 of its range where its
    stream is 9.9x), so only such a measure ranks them right. SZ2's filter (32017, no sciz codec)
    and CF packing are written on the same sample beside the winner.
    """
    import hdf5plugin

    from . import codecs
    from .errors import CodecError
    from .formats._hdf5 import stored_size

    missing = bool(np.isnan(sample).any()) if sample.dtype.kind == "f" else False
    fill = cf.get("_FillValue", cf.get("missing_value"))
    if missing and (fill is None or not np.isfinite(fill)):
        entry.notes.append("NaN without a finite fill value: the plugin filters cannot hold NaN")
        return None
    filled = missing or (
        fill is not None and sample.dtype.kind == "f" and np.isfinite(fill) and bool((sample == fill).any())
    )
    # Variables with missing values: SZ3 and SZ2 keep a far-off fill value exactly (ZFP and SPERR spread
    # it, and the SPERR filter crashes the process on 9.97e36).
    names = ["sz3"] if filled else [n for n in _PLUGIN_CODECS if _engine_here(n)]
    if method != "plugin":
        names = [method] if method in _PLUGIN_CODECS else []
        if filled and method in ("zfp", "sperr"):
            # found by a trial user: the error advised fill_value=, which the netCDF path does not take
            entry.notes.append(
                f"the {method} filter cannot keep this variable's fill values ({fill:g}) exactly: "
                "--codec sz3 or the default choice can"
            )
            return None
    coded = np.where(np.isnan(sample), sample.dtype.type(fill), sample) if missing else sample
    # (bytes on the sample, encoding) per "codec" or "codec in chunks of 2-D slices"
    sizes: dict[str, tuple[float, dict[str, Any]]] = {}
    losers: dict[str, float] = {}
    for layout, chunks in _layouts(var.shape, var.dtype.itemsize).items():
        in_sample = tuple(min(c, n) for c, n in zip(chunks, coded.shape, strict=True))
        label = "" if layout == "whole" else f" ({layout})"
        if names and coded.ndim:
            try:
                chosen = codecs.choose(
                    coded, tolerance=bound, candidates=names, container="hdf5", chunks=in_sample, measure=_measure
                )
            except (CodecError, ArgumentError, ValueError) as exc:
                entry.notes.append(f"{', '.join(names)}{label}: {exc}")
            else:
                ratios = {r["codec"] + label: r["predicted_ratio"] for r in chosen.choice["candidates"]}
                options = chosen.hdf5_filter(coded)
                if options is not None:
                    ratio = ratios.pop(chosen.name + label)
                    made = {**cf, "dtype": var.dtype, **options, "chunksizes": chunks}
                    sizes[chosen.name + label] = (coded.nbytes / ratio, made)
                losers |= ratios
        if method in ("plugin", "sz") and coded.ndim:
            options = dict(hdf5plugin.SZ(absolute=bound))
            sizes["sz" + label] = (
                stored_size(coded, in_sample, options),
                {**cf, "dtype": var.dtype, **options, "chunksizes": chunks},
            )
    packed = packing(span[0], span[1], bound, var.dtype) if method == "plugin" else None
    if packed is not None:
        deflate = {"compression": "gzip", "compression_opts": _LOSSY_LEVEL, "shuffle": True}
        encoded = {**packed, "zlib": True, "complevel": _LOSSY_LEVEL, "shuffle": True}
        sizes["pack"] = (_stored_bytes(_packed(sample, packed), deflate), encoded)
    if not sizes:
        return None
    best = min(sizes, key=lambda n: sizes[n][0])
    if len(sizes) + len(losers) > 1:
        ratios = {n: sample.nbytes / max(1.0, b) for n, (b, _) in sizes.items()} | losers
        ranked = sorted(ratios.items(), key=lambda item: -item[1])
        listed = ", ".join(f"{n} {r:.2f}x" for n, r in ranked[:4]) + (", ..." if len(ranked) > 4 else "")
        entry.notes.append(f"chose {best} on a {sample.size}-element sample ({listed})")
    elif missing:
        entry.notes.append(f"{best} (the variable has missing values)")
    return best.split(" ")[0], sizes[best][1]


def _layouts(shape: tuple[int, ...], itemsize: int) -> dict[str, tuple[int, ...]]:
    """The chunk shapes the plugin filters are tried in: the variable whole (up to :data:`CHUNK_BYTES`,
    see :func:`_chunks`), and, for 3-D and 4-D variables, 2-D slices of the last two axes.

    Measured at 1e-3 of each range: the whole variable wins on TREFHT (SPERR 15.3x, 8.5x in slices),
    nc4uvt and the ECHAM5 temperature; slices win on ECHAM5's rhumidity (SPERR 6.9x, 6.4x whole).
    The SPERR filter codes only chunks whose longer axes have at least 9 values, so slices are tried
    where both last axes do.
    """
    whole = _chunks(shape, itemsize)
    out = {"whole": whole}
    if len(shape) >= 3 and math.prod(shape[:-2]) > 1 and min(shape[-2:]) >= 9:
        slices = (1,) * (len(shape) - 2) + tuple(shape[-2:])
        if slices != whole:
            out["2-D slices"] = slices
    return out


def _measure(codec: Any, block: np.ndarray, chunks: tuple[int, ...]) -> int:
    """Bytes the netCDF file holds for ``block`` through ``codec``'s HDF5 filter, in ``chunks`` (the
    ``measure`` of :func:`sciz.codecs.choose`): the filter is given the values as they are, fill values
    included, as the written variable will be."""
    from .formats._hdf5 import stored_size

    options = codec.hdf5_filter(block)
    if options is None:
        raise ValueError(f"{codec.name} has no HDF5 filter for this block")
    shape = {"maxshape": chunks} if tuple(chunks) != block.shape else {}
    return stored_size(block, tuple(chunks), {**options, **shape})


def _engine_here(name: str) -> bool:
    from .codecs import _engine_available
    from .codecs.registry import CODECS

    row = CODECS[name]
    return not row.engine or bool(_engine_available(row.engine))


def encoding(
    ds: Any,
    *,
    tolerance: float | None = None,
    rel_tolerance: float | None = None,
    variables: Mapping[str, float] | None = None,
    codec: str | None = None,
    portable: bool = False,
    engine: str | None = None,
    zarr_format: int = 3,
) -> dict[str, dict[str, Any]]:
    """The ``encoding`` dict for ``ds.to_netcdf(..., engine=...)`` or ``ds.to_zarr(...)``.

    Parameters
    ----------
    ds
        An :class:`xarray.Dataset` opened with CF decoding (fill values as NaN).
    tolerance, rel_tolerance
        The absolute bound of every data variable, in its units, or the bound as a share of each
        variable's valid range. Neither: lossless.
    variables
        Per variable absolute bounds, overriding the others (``{"tos": 0.01}``).
    codec
        Force one method for every data variable: ``sz3``, ``sz``, ``zfp``, ``sperr``, ``blosc2`` (plugins),
        ``pack``, ``bitround``, ``deflate``. None: chosen per variable.
    portable
        Only encodings every netCDF reader decodes without plugins (engine ``netcdf4``).
    engine
        ``h5netcdf`` (default; plugins), ``netcdf4`` (default with ``portable``) or ``zarr``: the
        encoding keys differ between xarray's writers.
    zarr_format
        2 or 3, for ``engine="zarr"``.

    Returns
    -------
    dict
        ``{variable: {encoding keys}}``; pass the same ``engine`` to ``to_netcdf``.
    """
    made = plan(
        ds,
        tolerance=tolerance,
        rel_tolerance=rel_tolerance,
        variables=variables,
        codec=codec,
        portable=portable,
        engine=engine,
        zarr_format=zarr_format,
    )
    return {name: entry.encoding for name, entry in made.items()}
