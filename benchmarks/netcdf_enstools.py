"""enstools-compression on the shared netCDF files, for benchmarks/netcdf.py ``--enstools``.

enstools-compression (2023.11.1) does not share sciz's environment: run this in a scratch venv
(``python -m venv /tmp/ens && /tmp/ens/bin/pip install enstools-compression six``). For each file it
writes the compressed netCDF with enstools' own writer (HDF5 filters through hdf5plugin) in three
modes: ``lossy,sz3,rel,<rel>`` and ``lossy,sz,rel,<rel>`` (SZ's relative mode: the bound as a share of
each variable's value range, the same bound as sciz's ``--rel-tolerance``), and ``auto`` (its
automatic mode: ``analyze_dataset`` finds per variable the compressor and parameter by bisection
against its default constraints correlation_I:5, ssim_I:2, then ``compress`` writes with that
specification; its time counts both; the bound it keeps is its own, see the max errors). It reports
the file size, the time and the max absolute error of every data variable over the valid (non-fill)
elements, read back with xarray.

Run: ``/tmp/ens/bin/python benchmarks/netcdf_enstools.py OUT.json [--rel 1e-3] [--modes sz3,sz,auto] FILE.nc ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def _errors(source: Path, written: Path) -> dict[str, Any]:
    import hdf5plugin  # noqa: F401
    import xarray as xr

    out: dict[str, Any] = {}
    b = xr.open_dataset(written, decode_times=False, engine="h5netcdf")  # its HDF5 filters via hdf5plugin
    with xr.open_dataset(source, decode_times=False) as a, b:
        for name, var in a.data_vars.items():
            if var.dtype.kind != "f" or var.ndim < 2 or name not in b:
                continue
            x, y = np.asarray(var.values, np.float64), np.asarray(b[name].values, np.float64)
            valid = np.isfinite(x)
            moved = int(np.count_nonzero(np.isnan(x) != np.isnan(y)))
            out[str(name)] = {
                "max_error": float(np.nanmax(np.abs(y[valid] - x[valid]))) if valid.any() else 0.0,
                "missing_moved": moved,
            }
    return out


def _auto(source: Path, spec: Path) -> dict[str, str]:
    """enstools' analysis (``analyze_files``' core) of ``source``, saved as a compression specification.

    Its SSIM score fails on any variable with a ``time`` dimension (2023.11.1:
    "different number of dimensions on data and dims: 0 vs 1", it wraps one value in a time axis),
    so the analysis sees ``time`` renamed; it then scores the first 2-D slice, as it does for data
    without time. The specification names variables, so it applies to the file as it is.
    """
    import xarray as xr
    from enstools.compression.analyzer.analyzer import save_encoding
    from enstools.compression.api import analyze_dataset

    with xr.open_dataset(source, decode_times=False) as ds:
        analysed = ds.rename({"time": "time_"}) if "time" in ds.dims else ds
        chosen, _metrics = analyze_dataset(analysed)
    save_encoding(chosen, spec, "yaml")
    return {str(k): str(v) for k, v in dict(chosen).items()}


def main() -> None:
    from enstools.compression.api import compress

    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--rel", type=float, default=1e-3)
    parser.add_argument("--modes", default="sz3,sz,auto", help="which of sz3, sz, auto to run")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    result: dict[str, Any] = {}
    for source in args.files:
        rows: dict[str, Any] = {}
        modes = {"sz3": f"lossy,sz3,rel,{args.rel}", "sz": f"lossy,sz,rel,{args.rel}", "auto": "auto"}
        for mode in (modes[m] for m in args.modes.split(",")):
            with tempfile.TemporaryDirectory() as scratch:
                started = time.perf_counter()
                chosen: Any = None
                try:
                    spec = mode
                    if mode == "auto":  # enstools' automatic mode: analyze, then compress with its answer
                        spec = str(Path(scratch) / "auto.yaml")
                        chosen = _auto(source, Path(spec))
                    (Path(scratch) / "out").mkdir()
                    compress([source], Path(scratch) / "out", compression=spec)
                except Exception as exc:  # report what enstools did, whatever it raised
                    rows[mode] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                    continue
                seconds = time.perf_counter() - started
                written = next((Path(scratch) / "out").glob("*.nc"))
                rows[mode] = {
                    "bytes": written.stat().st_size,
                    "seconds": round(seconds, 3),
                    "max_error": _errors(source, written),
                    **({"chosen": chosen} if chosen else {}),
                }
            print(source.name, mode, rows[mode], flush=True)
        result[source.name] = rows
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
