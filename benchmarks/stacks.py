"""AFM stack processing: sciz vs playNano 0.5.0 running the same pipelines on the same 64x512x512 float32 stack.

The stack is the AFM-like video of ``benchmarks/stacks_io.py`` (tilted substrate, moving particles,
scan-line offsets, 0.01 nm ADC steps). Two 5-step pipelines run on both sides:

* ``masked``: playNano's typical pipeline (plane, threshold mask, row alignment on the background,
  clear, Gaussian) - the one whose output the bundle benchmark writes;
* ``levelling``: five unmasked levelling/smoothing steps.

playNano runs in its own interpreter (its dependencies clash with the sciz environment): set
``SCIZ_PLAYNANO_PYTHON`` or run ``pytest tests/test_afm_interop.py`` once. Each timing is the best
of ``--repeat`` rounds that alternate the two libraries, each running the whole pipeline and keeping
every layer as both libraries do; the largest difference between the two final stacks is printed
as a check. Afterwards the bundle I/O
benchmark (``benchmarks/stacks_io.py``) runs on the same stack, unless ``--skip-io``.

Then the peak resident memory of the ``masked`` pipeline with exports is measured, each run in a
fresh interpreter on a synthetic AFM-like stack written to disk first: memory mode on
``--memory-frames`` frames (800 x 512 x 512 float32 = 0.84 GB, the issue's stack) with npz, h5,
tif and gif; out-of-core mode on ``--ooc-frames`` frames (8192 = 8.6 GB by default; choose what
the disk and time allow) with ``--ooc-exports``.

Usage: python benchmarks/stacks.py [--frames 64] [--size 512] [--repeat 2] [--skip-io]
       [--memory-frames 800] [--ooc-frames 8192] [--ooc-exports npz,h5,tif] [--scratch DIR]
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

from sciz.processing import Pipeline
from sciz.stack import ImageStack
from stacks_io import afm_like, playnano_python

ROOT = Path(__file__).resolve().parents[1]

PIPELINES = {
    "masked": "remove_plane; mask_threshold:threshold=1; row_median_align; clear; gaussian_filter:sigma=1",
    "levelling": "remove_plane; row_median_align; polynomial_flatten:order=2; zero_median; gaussian_filter:sigma=1",
}

PLAYNANO_SIDE = r"""
import json, logging, sys, time
from pathlib import Path
import numpy as np
logging.disable(logging.CRITICAL)
from playnano.afm_stack import AFMImageStack
from playnano.processing.pipeline import ProcessingPipeline

folder, repeat = Path(sys.argv[1]), int(sys.argv[2])
spec = json.loads((folder / "spec.json").read_text())
raw = np.load(folder / "raw.npy")
results = {}
for name, steps in spec["pipelines"].items():  # warm-up, as on the sciz side: imports and first calls
    small = AFMImageStack(raw[:2, :64, :64].copy(), 2.0, "height_trace", Path("w.asd"), [{}, {}])
    warm = ProcessingPipeline(small)
    warm.steps.extend((step, dict(params)) for step, params in steps)
    warm.run()
for name, steps in spec["pipelines"].items():
    best = cpu = float("inf")
    for _ in range(repeat):
        stack = AFMImageStack(raw.copy(), 2.0, "height_trace", Path("bench.asd"), [dict(f) for f in spec["frames"]])
        pipeline = ProcessingPipeline(stack)
        for step, params in steps:
            pipeline.steps.append((step, params))
        start, start_cpu = time.perf_counter(), time.process_time()
        pipeline.run()
        best = min(best, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    np.save(folder / f"playnano-{name}.npy", np.asarray(stack.data))
    results[name] = {"seconds": best, "cpu": cpu, "layers": len(stack.processed), "masks": len(stack.masks)}
print(json.dumps(results))
"""


def run_sciz(raw: np.ndarray, frames: list[dict], processing: str, repeat: int) -> tuple[float, float, ImageStack]:
    """Best wall and CPU seconds (all threads) of ``repeat`` runs, and the last processed stack."""
    pipeline = Pipeline(processing)
    best = cpu = float("inf")
    stack = ImageStack(raw, 2.0, "height_trace", frames)
    for _ in range(repeat):
        stack = ImageStack(raw.copy(), 2.0, "height_trace", frames)
        start, start_cpu = time.perf_counter(), time.process_time()
        pipeline.run(stack)
        best = min(best, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return best, cpu, stack


#: One processing + export run in a fresh interpreter, reporting its peak resident memory.
MEMORY_CHILD = r"""
import json, sys, time
import numpy as np
import scipy.ndimage, h5py, tifffile, PIL.Image  # imported before the baseline: not the data's memory
from sciz.afm import export_bundles, export_gif
from sciz.lazy import current_rss, peak_rss
from sciz.processing import Pipeline
from sciz.processing.blocks import FrameFile
from sciz.stack import ImageStack

source, folder, mode, processing, formats = sys.argv[1:6]
base = current_rss()
start = time.perf_counter()
data = FrameFile.open(source) if mode == "out-of-core" else np.load(source)
stack = ImageStack(data, 2.0, "height_trace", [{"timestamp": 0.1 * i} for i in range(data.shape[0])])
Pipeline(processing).run(stack, out_of_core=mode == "out-of-core")
processed = time.perf_counter()
peak_processing = peak_rss()
names = formats.split(",")
bundles = [n for n in names if n != "gif"]
if bundles:
    export_bundles(stack, folder, "bench", bundles)
if "gif" in names:
    export_gif(stack, make_gif=True, output_folder=folder, output_name="bench")
print(json.dumps({"base": base, "peak_processing": peak_processing, "peak": peak_rss(),
                  "process_s": processed - start, "export_s": time.perf_counter() - processed}))
"""


def write_synthetic(path: Path, frames: int, size: int) -> int:
    """An AFM-like float32 stack of ``frames`` x ``size`` x ``size`` written to an .npy file block by
    block (never whole in memory); returns its bytes."""
    handle = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(frames, size, size))
    block = max(1, 32 * 2**20 // (4 * size * size))
    pattern = afm_like(min(block, frames), size)
    for start in range(0, frames, block):
        stop = min(frames, start + block)
        handle[start:stop] = pattern[: stop - start] + np.float32(0.01 * (start // block % 7))
    handle.flush()
    nbytes = int(handle.nbytes)
    del handle
    return nbytes


def measure_memory(source: Path, folder: Path, mode: str, formats: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(source), str(folder), mode, PIPELINES["masked"], formats],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_report(args: argparse.Namespace) -> None:
    """Peak RSS of the masked pipeline with exports: memory mode and out of core, on stacks on disk."""
    print(f"\nPeak resident memory, '{PIPELINES['masked']}' + exports, each in a fresh process "
          f"(load: {os.getloadavg()[0]:.1f}):")  # fmt: skip
    print(f"{'mode':<12} {'input':>9} {'exports':<15} {'peak RSS':>9} {'x input':>8} {'processing':>11} "
          f"{'x input':>8} {'process':>8} {'export':>8}")  # fmt: skip
    runs = [("memory", args.memory_frames, "npz,h5,tif,gif"), ("out-of-core", args.ooc_frames, args.ooc_exports)]
    for mode, frames, formats in runs:
        if frames <= 0:
            continue
        with tempfile.TemporaryDirectory(prefix="sciz-stacks-mem-", dir=args.scratch) as tmp:
            source = Path(tmp) / "input.npy"
            nbytes = write_synthetic(source, frames, args.size)
            figures = measure_memory(source, Path(tmp) / "out", mode, formats)
        peak, during = figures["peak"] - figures["base"], figures["peak_processing"] - figures["base"]
        print(
            f"{mode:<12} {nbytes / 2**30:>7.2f}GB {formats:<15} {peak / 2**30:>7.2f}GB {peak / nbytes:>7.2f}x "
            f"{during / 2**30:>9.2f}GB {during / nbytes:>7.2f}x "
            f"{figures['process_s']:>7.0f}s {figures['export_s']:>7.0f}s"
        )
        sys.stdout.flush()
    print("(peak RSS above the interpreter's baseline after imports; memory mode holds the input, three float32 "
          "layers and a mask = 4.25x the input by design)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-io", action="store_true", help="do not run benchmarks/stacks_io.py afterwards")
    parser.add_argument("--memory-frames", type=int, default=800, help="frames of the memory-mode RSS run (0: skip)")
    parser.add_argument("--ooc-frames", type=int, default=8192, help="frames of the out-of-core RSS run (0: skip)")
    parser.add_argument("--ooc-exports", default="npz,h5,tif", help="exports of the out-of-core run")
    parser.add_argument("--scratch", default=None, help="folder for the large stacks (default: the system's temp)")
    args = parser.parse_args()

    raw = afm_like(args.frames, args.size)
    frames = [{"timestamp": 0.1 * i, "frame_pixel_size_nm": 2.0} for i in range(args.frames)]
    python = playnano_python()
    # Warm-up on a small stack: imports (scipy) and cached fit bases are not part of a pipeline's cost.
    Pipeline(PIPELINES["levelling"]).run(ImageStack(raw[:2, :64, :64].copy(), 2.0))
    with tempfile.TemporaryDirectory(prefix="sciz-stacks-", dir=ROOT) as tmp:
        folder = Path(tmp)
        np.save(folder / "raw.npy", raw)
        spec = {"pipelines": {k: Pipeline(v).steps for k, v in PIPELINES.items()}, "frames": frames}
        # playNano gets the parameters exactly as sciz resolved them (defaults filled in).
        for steps in spec["pipelines"].values():
            for _, params in steps:
                for key in [k for k, v in params.items() if v is None]:
                    del params[key]
        (folder / "spec.json").write_text(json.dumps(spec))
        # Rounds alternate sciz and playNano (one run of each pipeline per side per round), so a burst
        # of load from other processes on the machine hits both sides alike; each side keeps its best.
        ours: dict[str, tuple[float, float, ImageStack]] = {}
        theirs: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            for name, text in PIPELINES.items():
                result = run_sciz(raw, frames, text, 1)
                if name not in ours or result[0] < ours[name][0]:
                    ours[name] = result
            done = subprocess.run([str(python), "-c", PLAYNANO_SIDE, str(folder), "1"], capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(done.stderr[-3000:])
            for name, result in json.loads(done.stdout.strip().splitlines()[-1]).items():
                if name not in theirs or result["seconds"] < theirs[name]["seconds"]:
                    theirs[name] = result
        differences = {}
        for name in PIPELINES:
            peer_data = np.load(folder / f"playnano-{name}.npy")
            difference = np.abs(ours[name][2].data.astype(np.float64) - peer_data)
            differences[name] = float(difference.max() / max(np.abs(peer_data).max(), 1e-300))

    print(f"AFM stack processing, {args.frames}x{args.size}x{args.size} float32, best of {args.repeat}; "
          f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f} (CPU times add up all threads)")  # fmt: skip
    print(f"{'pipeline':<10} {'sciz':>8} {'playNano':>9} {'speed-up':>8} {'sciz CPU':>9} {'pN CPU':>8} "
          f"{'CPU ratio':>9} {'max rel diff':>12}  steps")  # fmt: skip
    for name, text in PIPELINES.items():
        seconds, cpu = ours[name][0], ours[name][1]
        peer, peer_cpu = theirs[name]["seconds"], theirs[name]["cpu"]
        print(
            f"{name:<10} {seconds:>7.2f}s {peer:>8.2f}s {peer / seconds:>7.1f}x {cpu:>8.2f}s {peer_cpu:>7.2f}s "
            f"{peer_cpu / cpu:>8.1f}x {differences[name]:>12.2e}  {text}"
        )
    sys.stdout.flush()
    memory_report(args)
    sys.stdout.flush()
    if not args.skip_io:
        print()
        io = [sys.executable, str(Path(__file__).with_name("stacks_io.py")), "--frames", str(args.frames)]
        io += ["--size", str(args.size), "--repeat", str(max(args.repeat, 2))]
        subprocess.run(io, check=True)


if __name__ == "__main__":
    main()
