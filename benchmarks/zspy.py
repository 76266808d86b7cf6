"""Benchmark: sciz's zspy writer/reader against RosettaSciIO 0.15 on the same 1 GiB signal, and a 4 GiB lazy run.

Part 1 writes and reads the same 1 GiB float32 signal (64 x 64 navigation x 256 x 256 signal,
Poisson-like counts, generated once into a .npy file both sides load) with the same compressor
(Blosc zstd level 1 + shuffle, both defaults). RosettaSciIO runs in its own virtual environment
(zarr 2), each side in fresh processes, alternating, best of ``--repeat``; each side's libraries are
imported before its clock starts (RosettaSciIO imports zarr on import, sciz on first use).

Part 2 generates a 4 GiB signal chunk by chunk (never whole in memory), writes it to zspy and reads
it back lazily (a full pass that checks the sum), on dask's threaded scheduler and on a
``dask.distributed`` LocalCluster of 2 worker processes, reporting time and peak memory (RSS of the
whole process tree, sampled). "write s" includes generating the data; "gen s" is a generation-only
pass for reference (generation is slower in distributed workers, whose allocator returns memory
to the system eagerly).

Run: ``python benchmarks/zspy.py [--repeat 3] [--skip-4gb] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".cache" / "rsciio-0.15"
REQUIREMENTS = ["rosettasciio[zspy,hdf5]==0.15.*", "zarr>=2.18,<3", "zfpy==1.0.1", "hdf5plugin", "pcodec"]
SHAPE = (64, 64, 256, 256)

SIDE = textwrap.dedent(
    r"""
    import json, os, resource, shutil, sys, time, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    side, source, target, action = sys.argv[1:5]

    def cpu():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    if side == "sciz":
        from sciz.zspy import file_writer, file_reader
        # sciz imports its engine and zarr on first use; rsciio.zspy imports zarr on import. Both are
        # imported before the clock starts, so the times compare writing and reading, not imports.
        import zarr, sciz.formats.hyperspy_zarr, sciz.formats._zarr_kvstore  # noqa: F401,E401
    elif side == "zarr3":
        import zarr

        def file_writer(target, signal, show_progressbar=False):
            import numcodecs
            from sciz.formats.hyperspy_tree import signal_chunks

            data = signal["data"]
            chunks = signal_chunks(data.shape, data.dtype.itemsize, [2, 3], 1e8)  # the chunks sciz writes
            array = zarr.create_array(target, shape=data.shape, chunks=chunks, dtype=data.dtype, zarr_format=2,
                                      compressors=numcodecs.Blosc("zstd", 1, numcodecs.Blosc.SHUFFLE))
            array[...] = data

        def file_reader(target):
            return [{"data": zarr.open_array(target, mode="r")[...]}]
    else:
        from rsciio.zspy import file_writer, file_reader
    if action == "write":
        data = np.load(source)
        axes = [dict(name=n, units="px", scale=1.0, offset=0.0, size=s, navigate=i < 2)
                for i, (n, s) in enumerate(zip("abcd", data.shape))]
        signal = dict(data=data, axes=axes, metadata={"General": {"title": "bench"}, "Signal": {}},
                      original_metadata={}, attributes={"_lazy": False}, learning_results={}, models={},
                      package_info={"package": "", "package_version": ""}, tmp_parameters={})
        shutil.rmtree(target, ignore_errors=True)
        cpu0 = cpu()
        start = time.perf_counter()
        file_writer(target, signal, show_progressbar=False)
        elapsed = time.perf_counter() - start
        cpu_used = cpu() - cpu0
    else:
        cpu0 = cpu()
        start = time.perf_counter()
        data = file_reader(target)[0]["data"]
        elapsed = time.perf_counter() - start
        reference = np.load(source, mmap_mode="r")
        cpu_used = cpu() - cpu0
        assert data.shape == reference.shape and np.array_equal(data[::7], reference[::7]), "data differs"
    size = sum(f.stat().st_size for f in __import__("pathlib").Path(target).rglob("*") if f.is_file())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    print(json.dumps({"seconds": elapsed, "cpu": cpu_used, "bytes": size, "peak": peak}))
    """
)


def rsciio_python() -> str:
    given = os.environ.get("SCIZ_RSCIIO_PYTHON")  # an existing RosettaSciIO 0.15 environment (as the tests)
    if given:
        return given
    python = VENV / "bin" / "python"
    if not (VENV / ".ready").exists():
        print("creating the RosettaSciIO 0.15 environment ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
        (VENV / ".ready").write_text("\n".join(REQUIREMENTS))
    return str(python)


def make_data(path: Path) -> None:
    """1 GiB of detector-like counts: a moving Gaussian disc with Poisson noise (seed 0)."""
    if path.exists():
        return
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=SHAPE)
    yy, xx = np.mgrid[:256, :256]
    rng = np.random.default_rng(0)
    for i in range(SHAPE[0]):
        centre = 128 + 10 * np.sin(i / 10)
        pattern = 50 * np.exp(-((yy - centre) ** 2 + (xx - 128) ** 2) / (2 * 30**2)) + 2
        out[i] = rng.poisson(np.broadcast_to(pattern, SHAPE[1:])).astype(np.float32)
    out.flush()
    del out


def run_side(python: str, side: str, source: Path, target: Path, action: str) -> dict:
    command = [python, "-c", SIDE, side, str(source), str(target), action]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{side} {action} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


SIDES = ("rsciio", "zarr3", "sciz")
LABELS = {"rsciio": "RosettaSciIO 0.15 (zarr 2)", "zarr3": "zarr-python 3 array[...]", "sciz": "sciz"}


def part_one(workdir: Path, repeat: int) -> None:
    source = workdir / "signal_1gib.npy"
    make_data(source)
    python = rsciio_python()
    best: dict[tuple[str, str, str], float] = {}
    sizes: dict[str, int] = {}
    for _ in range(repeat):
        for side in SIDES:
            exe = python if side == "rsciio" else sys.executable
            target = workdir / f"{side}.zspy"
            written = run_side(exe, side, source, target, "write")
            read = run_side(exe, side, source, target, "read")
            for action, result in (("write", written), ("read", read)):
                for measure in ("seconds", "cpu", "peak"):
                    key = (side, action, measure)
                    best[key] = min(best.get(key, 1e9), result[measure])
            sizes[side] = written["bytes"]
    gib = float(np.prod(SHAPE) * 4) / 2**30
    print(f"\n1 GiB signal {SHAPE} float32, Blosc zstd clevel 1 + shuffle, zarr format 2, best of {repeat}:")
    print(
        f"{'':28}{'write s':>9}{'(cpu s)':>9}{'peak MiB':>10}{'read s':>9}{'(cpu s)':>9}{'peak MiB':>10}{'size MB':>10}"
    )
    for side in SIDES:
        print(
            f"{LABELS[side]:28}{best[(side, 'write', 'seconds')]:9.2f}{best[(side, 'write', 'cpu')]:9.2f}"
            f"{best[(side, 'write', 'peak')]:10.0f}{best[(side, 'read', 'seconds')]:9.2f}"
            f"{best[(side, 'read', 'cpu')]:9.2f}{best[(side, 'read', 'peak')]:10.0f}{sizes[side] / 1e6:10.1f}"
        )

    def ratio(peer: str, action: str, measure: str) -> float:
        return best[(peer, action, measure)] / best[("sciz", action, measure)]

    for peer in ("rsciio", "zarr3"):
        print(
            f"sciz vs {LABELS[peer]}: write {ratio(peer, 'write', 'seconds'):.2f}x faster "
            f"(cpu {ratio(peer, 'write', 'cpu'):.2f}x less), read {ratio(peer, 'read', 'seconds'):.2f}x faster "
            f"(cpu {ratio(peer, 'read', 'cpu'):.2f}x less), size ratio {sizes['sciz'] / sizes[peer]:.3f}"
        )
    print(f"targets vs RosettaSciIO: write >= 1.5x, read >= 3x, size ratio <= 1.0 ({gib:.2f} GiB of data)")


LAZY = textwrap.dedent(
    r"""
    import json, sys, time, threading, os
    import numpy as np, psutil, dask
    from sciz.zspy import file_writer, file_reader
    from sciz.lazy import synthetic_signal
    target, scheduler = sys.argv[1], sys.argv[2]
    shape, chunks = (64, 64, 512, 512), (1, 16, 512, 512)   # 4 GiB in 16 MiB chunks
    peak = {"tree": 0, "client": 0}
    stop = threading.Event()
    def sample():
        me = psutil.Process()
        while not stop.is_set():
            try:
                procs = [me] + me.children(recursive=True)
                rss = [p.memory_info().rss for p in procs if p.is_running()]
                peak["tree"] = max(peak["tree"], sum(rss))
                peak["client"] = max(peak["client"], rss[0])
            except psutil.Error:
                pass
            time.sleep(0.05)
    out = {}
    def run():
        data = synthetic_signal(shape, chunks, seed=0)
        signal = {"data": data, "metadata": {"General": {"title": "big"}}}
        start = time.perf_counter()
        file_writer(target, signal, show_progressbar=False)
        out["write_s"] = time.perf_counter() - start
        start = time.perf_counter()
        back = file_reader(target, lazy=True)[0]["data"]
        total = float(back.astype(np.float64).sum().compute())
        out["read_s"] = time.perf_counter() - start
        start = time.perf_counter()
        expected = float(synthetic_signal(shape, chunks, seed=0).astype(np.float64).sum().compute())
        out["generate_s"] = time.perf_counter() - start  # generation alone: part of write_s
        out["sum_matches"] = abs(total - expected) <= 1e-9 * abs(expected)
        out["gib"] = data.nbytes / 2**30
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if scheduler == "distributed":
        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                          memory_limit="2GiB", silence_logs=40) as cluster, Client(cluster):
            run()
    else:
        with dask.config.set(scheduler="threads"):
            run()
    stop.set(); sampler.join()
    out["peak_tree_mib"] = peak["tree"] / 2**20
    out["peak_client_mib"] = peak["client"] / 2**20
    size = sum(f.stat().st_size for f in __import__("pathlib").Path(target).rglob("*") if f.is_file())
    out["stored_gib"] = size / 2**30
    print(json.dumps(out))
    """
)


def part_two(workdir: Path) -> None:
    print("\n4 GiB lazy signal (64 x 64 x 512 x 512 float32, 16 MiB chunks), generated chunk by chunk:")
    print(f"{'scheduler':14}{'write s':>9}{'(gen s)':>9}{'read s':>9}{'peak RSS MiB':>14}{'stored GiB':>12}  sum ok")
    for scheduler in ("threads", "distributed"):
        target = workdir / f"big-{scheduler}.zspy"
        result = subprocess.run([sys.executable, "-c", LAZY, str(target), scheduler], capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"4 GiB run on {scheduler} failed:\n{result.stderr[-3000:]}")
        report = json.loads(result.stdout.strip().splitlines()[-1])
        shutil.rmtree(target, ignore_errors=True)
        peak = report["peak_tree_mib"]
        print(
            f"{scheduler:14}{report['write_s']:9.1f}{report['generate_s']:9.1f}{report['read_s']:9.1f}{peak:14.0f}"
            f"{report['stored_gib']:12.2f}"
            f"  {report['sum_matches']}  (client process {report['peak_client_mib']:.0f} MiB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-4gb", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sciz-zspy-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work directory: {workdir} ({os.cpu_count()} cores)")
    try:
        part_one(workdir, args.repeat)
        if not args.skip_4gb:
            part_two(workdir)
    finally:
        for name in ("rsciio.zspy", "sciz.zspy"):
            shutil.rmtree(workdir / name, ignore_errors=True)


if __name__ == "__main__":
    main()
