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

Usage: python benchmarks/stacks.py [--frames 64] [--size 512] [--repeat 2] [--skip-io]
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
    best = float("inf")
    for _ in range(repeat):
        stack = AFMImageStack(raw.copy(), 2.0, "height_trace", Path("bench.asd"), [dict(f) for f in spec["frames"]])
        pipeline = ProcessingPipeline(stack)
        for step, params in steps:
            pipeline.steps.append((step, params))
        start = time.perf_counter()
        pipeline.run()
        best = min(best, time.perf_counter() - start)
    np.save(folder / f"playnano-{name}.npy", np.asarray(stack.data))
    results[name] = {"seconds": best, "layers": len(stack.processed), "masks": len(stack.masks)}
print(json.dumps(results))
"""


def run_sciz(raw: np.ndarray, frames: list[dict], processing: str, repeat: int) -> tuple[float, ImageStack]:
    pipeline = Pipeline(processing)
    best = float("inf")
    stack = ImageStack(raw, 2.0, "height_trace", frames)
    for _ in range(repeat):
        stack = ImageStack(raw.copy(), 2.0, "height_trace", frames)
        start = time.perf_counter()
        pipeline.run(stack)
        best = min(best, time.perf_counter() - start)
    return best, stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-io", action="store_true", help="do not run benchmarks/stacks_io.py afterwards")
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
        ours: dict[str, tuple[float, ImageStack]] = {}
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
            differences[name] = float(np.abs(ours[name][1].data - peer_data).max())

    print(f"AFM stack processing, {args.frames}x{args.size}x{args.size} float32, best of {args.repeat}; "
          f"cores: {os.cpu_count()}")  # fmt: skip
    print(f"{'pipeline':<10} {'sciz':>8} {'playNano':>9} {'speed-up':>8} {'max |diff|':>11}  steps")
    for name, text in PIPELINES.items():
        seconds = ours[name][0]
        peer = theirs[name]["seconds"]
        print(f"{name:<10} {seconds:>7.2f}s {peer:>8.2f}s {peer / seconds:>7.1f}x {differences[name]:>11.2e}  {text}")
    sys.stdout.flush()
    if not args.skip_io:
        print()
        io = [sys.executable, str(Path(__file__).with_name("stacks_io.py")), "--frames", str(args.frames)]
        io += ["--size", str(args.size), "--repeat", str(max(args.repeat, 2))]
        subprocess.run(io, check=True)


if __name__ == "__main__":
    main()
