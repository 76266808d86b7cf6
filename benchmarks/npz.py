"""Benchmark: sciz.heightmap.export_to_npz(compress=True) against numpy.savez_compressed, same data, same run.

Data: a 144 MiB float32 field (smooth surface + noise), a 128 MiB int16 AFM-like stack (tilted
frames, particles, scan-line offsets, noise), a real high-speed AFM video (../shared/data/afm/
asd_sample_0.asd, 32 frames of 200x200, played forward and back and resampled to 64x256x256
float32 heights: 16 MiB) and the real fields in ../shared/data/fields.
Each write runs in a fresh subprocess that builds the data, resets its peak-memory counter
(/proc/self/clear_refs) and then writes, so "peak" is the extra resident memory the writer needed
beyond its input. Both files are checked to load back identically with np.load.

Run: python benchmarks/npz.py [--small] [--repeat N]
Targets (issue 9): >= 3x faster on every array >= 16 MB, <= 1.02x the size; peak memory reported. "CPU s" is the
CPU time of all threads: on a machine shared with other work, wall-clock speed-up from the second core shrinks,
while the CPU-time ratio shows the work each writer needs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FIELDS = DATA / "fields"
ASD = DATA / "afm" / "asd_sample_0.asd"
VIDEO = "AFM video (asd) 64x256x256"
MIB = 1024 * 1024


def smooth_noise_field(side: int) -> np.ndarray:
    """A float32 height field: a few smooth waves plus 1 % Gaussian noise, built row block by row block."""
    rng = np.random.default_rng(42)
    out = np.empty((side, side), dtype=np.float32)
    x = np.linspace(0.0, 6.0, side, dtype=np.float32)
    for start in range(0, side, 512):
        y = np.linspace(0.0, 6.0, side, dtype=np.float32)[start : start + 512, None]
        block = np.sin(1.3 * x) * np.cos(0.7 * y) + 0.3 * np.sin(3.1 * x + 2.0 * y)
        block += rng.standard_normal(block.shape, dtype=np.float32) * np.float32(0.01)
        out[start : start + 512] = block
    return out


def afm_stack(frames: int, side: int) -> np.ndarray:
    """An int16 AFM-like video: tilted background, drifting particles, scan-line offsets, noise."""
    rng = np.random.default_rng(7)
    out = np.empty((frames, side, side), dtype=np.int16)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    centres = rng.uniform(0, side, (40, 2)).astype(np.float32)
    for k in range(frames):
        frame = 0.8 * xx + 0.3 * yy + 200.0
        for cy, cx in centres + k * 0.5:
            frame += 900.0 * np.exp(-((xx - cx % side) ** 2 + (yy - cy % side) ** 2) / 180.0)
        frame += rng.normal(0, 12.0, (side, 1)).astype(np.float32)  # line offsets
        frame += rng.normal(0, 6.0, frame.shape).astype(np.float32)
        out[k] = np.clip(frame, -32768, 32767).astype(np.int16)
    return out


def afm_video() -> np.ndarray:
    """The real .asd video as float32 heights: 64 frames (forward, then back) resampled to 256x256."""
    from scipy.ndimage import zoom

    from sciz.processing.inputs import load_stack

    frames = np.asarray(load_stack(ASD).data)
    frames = np.concatenate([frames, frames[::-1]])
    return zoom(frames, (1, 256 / frames.shape[1], 256 / frames.shape[2]), order=1).astype(np.float32)


def make(name: str, small: bool) -> dict[str, np.ndarray]:
    if name == "float32 field":
        return {"height_map": smooth_noise_field(2048 if small else 6144)}
    if name == "int16 AFM stack":
        return {"stack": afm_stack(8 if small else 64, 1024)}
    if name == VIDEO:
        return {"data": afm_video()}
    return {"data": np.load(FIELDS / name, allow_pickle=False)}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def child(name: str, writer: str, small: bool, out: str) -> None:
    data = make(name, small)
    threads = os.environ.get("SCIZ_BENCH_THREADS")
    np.savez_compressed(out, x=np.zeros(1))  # warm up both writers' imports and code paths
    from sciz.heightmap import export_to_npz

    export_to_npz({"x": np.zeros(1)}, out)
    input_bytes = sum(a.nbytes for a in data.values())
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the peak (VmHWM) to the current resident size
        tracking = "rss"
    except OSError:
        tracking = "none"
    before = _rss_kib("VmRSS")
    cpu_start = time.process_time()  # all threads of this process
    start = time.perf_counter()
    if writer == "sciz":
        export_to_npz(data, out, compress=True, threads=int(threads) if threads else None)
    else:
        np.savez_compressed(out, **data)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    peak = (_rss_kib("VmHWM") - before) * 1024 if tracking == "rss" else -1
    with np.load(out, allow_pickle=False) as loaded:
        for key, value in data.items():
            if not np.array_equal(loaded[key], value):
                raise SystemExit(f"{writer}: {key} does not load back identically")
    report = {"seconds": seconds, "cpu": cpu, "size": os.path.getsize(out), "peak": peak, "input": input_bytes}
    print(json.dumps(report))


def run(name: str, writer: str, small: bool, directory: str) -> dict[str, float]:
    out = os.path.join(directory, f"{writer}.npz")
    result = subprocess.run(
        [sys.executable, __file__, "--child", name, writer, "--out", out] + (["--small"] if small else []),
        check=True,
        capture_output=True,
        text=True,
    )
    os.unlink(out)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="16 MiB synthetic data instead of 256 MiB")
    parser.add_argument("--repeat", type=int, default=1, help="runs per writer; the fastest counts")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.small, args.out)
        return
    names = ["float32 field", "int16 AFM stack", VIDEO, *sorted(p.name for p in FIELDS.glob("*.npy"))]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"numpy {np.__version__}; {os.cpu_count()} cores; load average {load:.1f} at start; best of {args.repeat}")
    header = (
        f"{'data':28} {'MiB':>6} | {'numpy s':>7} {'sciz s':>6} {'speed-up':>8} | {'CPU s numpy':>11} "
        f"{'sciz':>5} {'ratio':>6} | {'size ratio':>10} | {'peak MiB numpy':>14} {'sciz':>5}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCIZ_BENCH_DIR")) as directory:
        for name in names:
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.repeat):
                for writer in ("numpy", "sciz"):
                    result = run(name, writer, args.small, directory)
                    if writer not in best or result["seconds"] < best[writer]["seconds"]:
                        best[writer] = result
            ours, peer = best["sciz"], best["numpy"]
            print(
                f"{name[:28]:28} {ours['input'] / MIB:6.1f} | {peer['seconds']:7.2f} {ours['seconds']:6.2f} "
                f"{peer['seconds'] / ours['seconds']:7.2f}x | {peer['cpu']:11.2f} {ours['cpu']:5.2f} "
                f"{peer['cpu'] / ours['cpu']:5.2f}x | {ours['size'] / peer['size']:9.4f}x | "
                f"{peer['peak'] / MIB:14.1f} {ours['peak'] / MIB:5.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
