"""netCDF compression per tier on the shared netCDF files and a synthetic 1 GB dataset (issue 12).

For each shared file at a relative bound (default 1e-3 of each variable's valid range): the file
size of every tier (plugins, portable, zarr v3) as a ratio to the original and to lossless
shuffle + deflate (xarray's netcdf4 writer, level 4, every variable), compress time (wall and CPU),
read time (xarray opening the written file and loading every variable, in this process), and the
max error per data variable. enstools-compression runs in its own venv
(``benchmarks/netcdf_enstools.py``); pass its JSON with ``--enstools`` to print it beside ours.

The synthetic dataset (``--big-gb``, default 1.0; 0 skips it): a classic CDF-2 file with one smooth
float32 field ``(time, y, x)`` with a 1e20-filled "land" band, compressed in a child process whose
peak RSS is reported (``VmHWM``; ``ru_maxrss`` would carry the parent's peak across exec):
sciz.netcdf.compress streams it chunk by chunk (dask chunks along the first axis, the check block
by block).

Run: ``PYTHONPATH=src python benchmarks/netcdf.py [--rel 1e-3] [--big-gb 1] [--enstools ens.json] [--out r.json]``.
Numbers under load are noisy: the script prints ``uptime``; compare ratios and CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(os.environ.get("SCIZ_NETCDF_DATA", "/work/shared/data/netcdf"))
TIERS = {"plugins": ("nc", False), "portable": ("nc", True), "zarr": ("zarr", False)}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _groups(source: Path) -> list[str]:
    import netCDF4

    found: list[str] = []

    def walk(group: Any) -> None:
        found.append(group.path)
        for sub in group.groups.values():
            walk(sub)

    with netCDF4.Dataset(source) as handle:
        walk(handle)
    return found


def _deflate(source: Path, target: Path) -> float:
    """Every group of ``source`` with shuffle + deflate level 4 on every variable (the lossless baseline;
    the groups too: nc4uvt.nc holds its three fields twice, in / and in /grp1)."""
    import xarray as xr

    started = time.perf_counter()
    for i, group in enumerate(_groups(source)):
        where = None if group == "/" else group
        with xr.open_dataset(source, group=where, decode_times=False, mask_and_scale=False) as ds:
            encoding = {
                name: {"zlib": True, "complevel": 4, "shuffle": True}
                for name, var in ds.variables.items()
                if var.ndim and var.dtype.kind not in "OSU"
            }
            mode = "w" if i == 0 else "a"
            ds.to_netcdf(target, mode=mode, group=where, engine="netcdf4", encoding=encoding, format="NETCDF4")
    return time.perf_counter() - started


def _read_seconds(path: Path) -> float:
    import hdf5plugin  # noqa: F401
    import xarray as xr

    started = time.perf_counter()
    if path.suffix == ".zarr":
        ds = xr.open_zarr(path, consolidated=False, decode_times=False)
    else:
        ds = xr.open_dataset(path, engine="h5netcdf", decode_times=False)
    with ds:
        for var in ds.variables.values():
            np.asarray(var.values)
    return time.perf_counter() - started


def shared_files(rel: float, scratch: Path) -> list[dict[str, Any]]:
    import sciz.netcdf

    rows = []
    for source in sorted(DATA.glob("*.nc")):
        deflated = scratch / f"{source.stem}.deflate.nc"
        deflate_s = _deflate(source, deflated)
        row: dict[str, Any] = {
            "file": source.name,
            "original": _size(source),
            "deflate": _size(deflated),
            "deflate_s": round(deflate_s, 3),
        }
        for tier, (suffix, portable) in TIERS.items():
            target = scratch / f"{source.stem}.{tier}.{suffix}"
            cpu, wall = time.process_time(), time.perf_counter()
            report = sciz.netcdf.compress(source, target, rel_tolerance=rel, portable=portable, force=True)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            size = _size(target)
            row[tier] = {
                "bytes": size,
                "vs_original": round(row["original"] / size, 3),
                "vs_deflate": round(row["deflate"] / size, 3),
                "compress_s": round(wall, 3),
                "compress_cpu_s": round(cpu, 3),
                "read_s": round(_read_seconds(target), 3),
                "variables": {
                    f"{v.group.rstrip('/')}/{v.name}".lstrip("/"): {
                        "codec": v.codec,
                        "bound": v.bound,
                        "max_error": v.max_error,
                        "ratio": v.ratio,
                    }
                    for v in report.variables
                    if v.role == "data"
                },
            }
        rows.append(row)
    return rows


def make_big(path: Path, gigabytes: float) -> tuple[int, ...]:
    """A classic CDF-2 file with one smooth float32 field of about ``gigabytes`` GB, written slice by slice."""
    import netCDF4

    ny, nx = 1024, 1024
    nt = max(1, int(gigabytes * 1e9 / (ny * nx * 4)))
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32)
    rng = np.random.default_rng(1)
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as handle:
        handle.createDimension("time", None)
        handle.createDimension("y", ny)
        handle.createDimension("x", nx)
        handle.createVariable("time", "f8", ("time",))[:] = np.arange(nt)
        handle.createVariable("y", "f4", ("y",))[:] = np.arange(ny)
        handle.createVariable("x", "f4", ("x",))[:] = np.arange(nx)
        field = handle.createVariable("field", "f4", ("time", "y", "x"), fill_value=np.float32(1e20))
        field.units = "K"
        field.set_auto_maskandscale(False)
        for t in range(nt):
            values = 280 + 15 * np.sin(x / 97 + t / 17) * np.cos(y / 61) + rng.normal(0, 0.05, (ny, nx))
            values[400:520, :] = 1e20  # a land band
            field[t] = values.astype(np.float32)
    return (nt, ny, nx)


_CHILD = """
import json, sys, time
import sciz.netcdf

def peak_mb():
    # VmHWM: this process's own peak RSS. ru_maxrss is not: Linux keeps it across exec, so a child
    # started after the parent held 2.4 GB reports 2.4 GB whatever it used.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

started, cpu = time.perf_counter(), time.process_time()
report = sciz.netcdf.compress(sys.argv[1], sys.argv[2], rel_tolerance=float(sys.argv[3]),
                              portable=sys.argv[4] == "1", force=True)
row = next(v for v in report.variables if v.name == "field")
print(json.dumps({"seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
                  "peak_rss_mb": peak_mb(),
                  "codec": row.codec, "max_error": row.max_error, "bound": row.bound, "ratio": row.ratio,
                  "target_bytes": report.target_bytes}))
"""


def big_dataset(gigabytes: float, rel: float, scratch: Path) -> dict[str, Any]:
    source = scratch / "big.nc"
    started = time.perf_counter()
    shape = make_big(source, gigabytes)
    out: dict[str, Any] = {"shape": shape, "bytes": _size(source), "make_s": round(time.perf_counter() - started, 1)}
    for tier, portable in (("plugins", "0"), ("portable", "1")):
        target = scratch / f"big.{tier}.nc"
        run = subprocess.run(
            [sys.executable, "-c", _CHILD, str(source), str(target), str(rel), portable],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode:
            out[tier] = {"error": run.stderr.strip().splitlines()[-1:]}
        else:
            out[tier] = json.loads(run.stdout.strip().splitlines()[-1])
            out[tier]["read_s"] = round(_read_seconds(target), 2)
        target.unlink(missing_ok=True)
    source.unlink(missing_ok=True)
    return out


def _print(rows: list[dict[str, Any]], enstools: dict[str, Any] | None) -> None:
    print(f"{'file':<38} {'tier':<9} {'bytes':>9} {'x orig':>7} {'x defl':>7} {'comp s':>7} {'cpu s':>6} {'read s':>6}")
    for row in rows:
        print(f"{row['file']:<38} {'deflate':<9} {row['deflate']:>9} {row['original'] / row['deflate']:>7.2f}")
        for tier in TIERS:
            t = row[tier]
            print(
                f"{'':<38} {tier:<9} {t['bytes']:>9} {t['vs_original']:>7.2f} {t['vs_deflate']:>7.2f} "
                f"{t['compress_s']:>7.2f} {t['compress_cpu_s']:>6.2f} {t['read_s']:>6.2f}"
            )
            for name, v in t["variables"].items():
                print(f"{'':<48}{name:<12} {v['codec']:<8} bound {v['bound'] or 0:.4g} max error {v['max_error']:.4g}")
        ens = (enstools or {}).get(row["file"])
        if ens:
            for mode, e in ens.items():
                if "bytes" in e:
                    mine = row["plugins"]["bytes"]
                    print(
                        f"{'':<38} {'enstools':<9} {e['bytes']:>9} {row['original'] / e['bytes']:>7.2f} "
                        f"{row['deflate'] / e['bytes']:>7.2f} {e['seconds']:>7.2f}  {mode}: max error per variable "
                        f"{e.get('max_error')}; sciz plugins {e['bytes'] / mine:.2f}x smaller"
                    )
                else:
                    print(f"{'':<38} enstools {mode}: {e}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rel", type=float, default=1e-3)
    parser.add_argument("--big-gb", type=float, default=1.0)
    parser.add_argument("--enstools", type=Path, help="JSON written by benchmarks/netcdf_enstools.py")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    print(os.popen("uptime").read().strip())
    enstools = json.loads(args.enstools.read_text()) if args.enstools else None
    with tempfile.TemporaryDirectory(prefix="sciz-netcdf-bench-") as scratch:
        rows = shared_files(args.rel, Path(scratch))
        _print(rows, enstools)
        result: dict[str, Any] = {"rel": args.rel, "files": rows, "enstools": enstools}
        if args.big_gb > 0:
            result["big"] = big_dataset(args.big_gb, args.rel, Path(scratch))
            print("synthetic:", json.dumps(result["big"]))
    print(os.popen("uptime").read().strip())
    print("this process peak RSS MB:", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
