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

Then the peak resident memory of the ``masked`` pipeline with exports is measured as ``sciz
process`` runs it, each run in a fresh interpreter on a synthetic AFM-like stack written to disk
first: memory mode, every layer kept, on each of ``--memory-frames`` (800 x 512 x 512 float32 =
0.84 GB, the issue's stack, and 96 frames) with npz, h5, tif and gif; with ``--out-of-core-gb 8``
also out of core on an 8 GB stack (``--ooc-keep``, default ``none``: the bundles hold the
processed data, the intermediate layers are written over in place) with ``--ooc-exports``, its
sampled frames checked against memory mode. Every file is deleted afterwards. Peak disk use is
the input, the final layer and the mask on scratch (8 + 8 + 2 GB) and the largest export: with
``none`` the NPZ of the data (~7.5 GB, ~26 GB in all); ``final`` adds the final layer to the NPZ
beside ``data`` (measured 14.9 GB, 33 GB in all); ``all`` would need 34 GB of scratch alone.
``--memory-only`` skips the speed runs.

Usage: python benchmarks/stacks.py [--frames 64] [--size 512] [--repeat 2] [--skip-io]
       [--memory-frames 800,96] [--out-of-core-gb 8] [--ooc-exports npz,h5,tif,gif]
       [--ooc-keep none] [--memory-only] [--scratch DIR]
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


#: One processing + export run in a fresh interpreter, as ``sciz process`` runs it (memory mode
#: spills the kept layers but the final one to scratch files), reporting its peak resident memory.
#: Each export is written, measured and deleted before the next (the 8 GB run's files would not
#: all fit on the disk at once). Out of core, sampled frames of every layer, of the mask and of the
#: HDF5 and NPZ exports are compared with memory mode run on those frames alone (every step of the
#: pipeline acts on each frame alone, so the values must be identical).
MEMORY_CHILD = r"""
import json, os, sys, time
import numpy as np
# Imported before the baseline: the libraries' own memory, not the data's.
import scipy.ndimage, h5py, hdf5plugin, tifffile, PIL.Image, PIL.ImageFont, matplotlib
from sciz.afm import export_bundles, export_gif
from sciz.lazy import current_rss, peak_rss
from sciz.processing import Pipeline
from sciz.processing._common import release_free_memory
from sciz.processing.blocks import FrameFile
from sciz.stack import ImageStack

source, folder, mode, processing, formats, keep = sys.argv[1:7]
keep = None if keep == "all" else keep
ooc = mode == "out-of-core"
base = current_rss()
start = time.perf_counter()
data = FrameFile.open(source) if ooc else np.load(source)
stack = ImageStack(data, 2.0, "height_trace", [{"timestamp": 0.1 * i} for i in range(data.shape[0])])
Pipeline(processing).run(stack, out_of_core=ooc, keep=keep, spill=not ooc)
figures = {"base": base, "peak_processing": peak_rss(), "process_s": time.perf_counter() - start, "sizes": {}}
layers = {id(a): a for a in [*stack.processed.values(), *stack.masks.values()] if isinstance(a, FrameFile)}
figures["scratch_bytes"] = sum(a.nbytes for a in layers.values() if a is not data)
exported = time.perf_counter()
for name in formats.split(","):
    if name == "gif":
        path = export_gif(stack, make_gif=True, output_folder=folder, output_name="bench")
    else:
        path = export_bundles(stack, folder, "bench", [name], keep=keep)[name]
    release_free_memory()  # as sciz process does after each export
    figures["sizes"][name] = os.path.getsize(path)
    if ooc and name == "h5":  # sampled frames: memory mode on them alone, the layers, the HDF5 file
        n = int(data.shape[0])
        sample = sorted({0, 1, n // 3, n // 2, n - 2, n - 1})
        memory = Pipeline(processing).run(ImageStack(np.stack([data[i] for i in sample]), 2.0), keep=keep)
        pairs = list(enumerate(sample))
        with h5py.File(path, "r") as f:
            same = all(np.array_equal(f["data"][i], memory.data[j]) for j, i in pairs)
            same &= all(np.array_equal(stack.data[i], memory.data[j]) for j, i in pairs)
            for key, layer in memory.processed.items():
                same &= all(np.array_equal(stack.processed[key][i], layer[j]) for j, i in pairs)
            for key, mask in memory.masks.items():
                same &= all(np.array_equal(stack.masks[key][i], mask[j]) for j, i in pairs)
                if key in f.get("masks", {}):
                    same &= all(np.array_equal(f["masks"][key][i], mask[j]) for j, i in pairs)
        same &= sorted(memory.processed) == sorted(stack.processed) and sorted(memory.masks) == sorted(stack.masks)
        figures["same_as_memory_mode"] = {"frames": sample, "identical": bool(same)}
    os.unlink(path)
figures["peak"] = peak_rss()
figures["export_s"] = time.perf_counter() - exported
print(json.dumps(figures))
"""


def write_synthetic(path: Path, frames: int, size: int) -> int:
    """An AFM-like float32 stack of ``frames`` x ``size`` x ``size`` written to an .npy file block by
    block (never whole in memory, and not through a memory map); returns its bytes."""
    block = max(1, 32 * 2**20 // (4 * size * size))
    pattern = afm_like(min(block, frames), size)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (frames, size, size)}  # fmt: skip
    with path.open("wb") as handle:
        np.lib.format.write_array_header_2_0(handle, header)
        for start in range(0, frames, block):
            stop = min(frames, start + block)
            handle.write((pattern[: stop - start] + np.float32(0.01 * (start // block % 7))).tobytes())
    return frames * size * size * 4


def measure_memory(source: Path, folder: Path, mode: str, formats: str, keep: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(source), str(folder), mode, PIPELINES["masked"], formats, keep],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_report(args: argparse.Namespace) -> None:
    """Peak RSS of the masked pipeline with exports: memory mode and out of core, on stacks on disk."""
    print(f"\nPeak resident memory, '{PIPELINES['masked']}' + exports, each in a fresh process, as sciz process "
          f"runs it (load: {os.getloadavg()[0]:.1f}):")  # fmt: skip
    print(f"{'mode':<12} {'input':>9} {'layers':<10} {'exports':<15} {'peak RSS':>9} {'x input':>8} "
          f"{'processing':>11} {'x input':>8} {'process':>8} {'export':>8}  check")  # fmt: skip
    all_exports = "npz,h5,tif,gif"
    runs = [("memory", frames, all_exports, "all") for frames in args.memory_frames]
    if args.out_of_core_gb > 0:
        frames = max(1, round(args.out_of_core_gb * 1e9 / (4 * args.size * args.size)))
        runs.append(("out-of-core", frames, args.ooc_exports, args.ooc_keep))
    for mode, frames, formats, keep in runs:
        if frames <= 0:
            continue
        with tempfile.TemporaryDirectory(prefix="sciz-stacks-mem-", dir=args.scratch) as tmp:
            source = Path(tmp) / "input.npy"
            nbytes = write_synthetic(source, frames, args.size)
            figures = measure_memory(source, Path(tmp) / "out", mode, formats, keep)
        peak, during = figures["peak"] - figures["base"], figures["peak_processing"] - figures["base"]
        check = figures.get("same_as_memory_mode")
        said = "" if check is None else f"identical to memory mode on frames {check['frames']}: {check['identical']}"
        print(
            f"{mode:<12} {nbytes / 1e9:>7.2f}GB {keep:<10} {formats:<15} "
            f"{peak / 2**30:>6.2f}GiB {peak / nbytes:>7.2f}x "
            f"{during / 2**30:>8.2f}GiB {during / nbytes:>7.2f}x "
            f"{figures['process_s']:>7.0f}s {figures['export_s']:>7.0f}s  {said}"
        )
        sizes = ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in figures["sizes"].items())
        print(f"{'':<12} scratch layers {figures['scratch_bytes'] / 1e9:.2f} GB; exports (each deleted after): {sizes}")
        sys.stdout.flush()
    print("(peak RSS above the interpreter's baseline after imports; memory mode holds the input and the "
          "final layer, the other kept layers and the masks spill to scratch files; out of core: blocks)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-io", action="store_true", help="do not run benchmarks/stacks_io.py afterwards")
    parser.add_argument(
        "--memory-frames", default="800,96", help="frames of the memory-mode RSS runs, comma-separated (0: skip)"
    )
    parser.add_argument(
        "--out-of-core-gb", type=float, default=0.0, help="GB of the out-of-core RSS run (e.g. 8; default 0: skip)"
    )
    parser.add_argument("--ooc-exports", default="npz,h5,tif,gif", help="exports of the out-of-core run")
    parser.add_argument(
        "--ooc-keep", default="none", help="layers the out-of-core bundles keep (all: every one; see the docstring)"
    )
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory runs")
    parser.add_argument("--scratch", default=None, help="folder for the large stacks (default: the system's temp)")
    args = parser.parse_args()
    args.memory_frames = [int(n) for n in str(args.memory_frames).split(",") if n.strip()]
    if args.memory_only:
        memory_report(args)
        return

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
