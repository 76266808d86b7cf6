"""AFM bundle I/O: sciz vs playNano 0.5.0 writing (and reading) the same processed 64x512x512 float32 stack.

The stack is AFM-like: a tilted substrate with moving particles and scan-line offsets, digitised in
0.01 nm steps like 16-bit instrument data, then processed (plane removal, threshold mask, row
median alignment, Gaussian filter) so the bundle holds the raw snapshot, three processed float32
layers, the final data and a mask, as a 5-step playNano pipeline would leave them. A second case
writes the raw stack alone (one array, no layers).

playNano runs in its own interpreter (its dependencies clash with the sciz environment): set
``SCIZ_PLAYNANO_PYTHON``, or run ``pytest tests/test_afm_interop.py`` once, which builds one under
``.pytest_cache``. Both sides write into the same temporary directory; each timing is the best of
``--repeat`` runs. sciz also fsyncs every file it writes (atomic writes); playNano does not.

Usage: python benchmarks/stacks_io.py [--frames 64] [--size 512] [--repeat 3]
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
from scipy import ndimage

from sciz.afm import load_h5_bundle, load_npz_bundle, save_h5_bundle, save_npz_bundle
from sciz.stack import ImageStack

ROOT = Path(__file__).resolve().parents[1]

PLAYNANO_SIDE = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from playnano.afm_stack import AFMImageStack
from playnano.io import data_loaders, export_data

folder, repeat = Path(sys.argv[1]), int(sys.argv[2])
spec = json.loads((folder / "spec.json").read_text())
results = {}
for case in spec["cases"]:
    arrays = np.load(folder / f"{case}.input.npz", allow_pickle=False)
    stack = AFMImageStack(arrays["data"], spec["pixel_size_nm"], "height_trace", Path("bench.asd"), spec["frames"])
    for key in arrays.files:
        if key.startswith("processed__"):
            stack.processed[key[11:]] = arrays[key]
        elif key.startswith("masks__"):
            stack.masks[key[7:]] = arrays[key]
    stack.provenance = spec["provenance"]
    out = {}
    for kind, save, load, suffix in (("npz", export_data.save_npz_bundle, data_loaders.load_npz_bundle, ".npz"),
                                     ("h5", export_data.save_h5_bundle, data_loaders.load_h5_bundle, ".h5")):
        target = folder / f"playnano-{case}{suffix}"
        best = cpu = float("inf")
        for _ in range(repeat):
            target.unlink(missing_ok=True)
            start, start_cpu = time.perf_counter(), time.process_time()
            save(target, stack)
            best = min(best, time.perf_counter() - start)
            cpu = min(cpu, time.process_time() - start_cpu)
        read = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            load(target)
            read = min(read, time.perf_counter() - start)
        out[kind] = {"write_s": best, "write_cpu_s": cpu, "read_s": read, "bytes": target.stat().st_size}
        target.unlink()
    results[case] = out
print(json.dumps(results))
"""


def playnano_python() -> Path:
    candidates = [
        os.environ.get("SCIZ_PLAYNANO_PYTHON"),
        str(ROOT / ".pytest_cache/d/sciz-playnano-0.5.0/venv/bin/python"),
        "/work/venv-playnano/bin/python",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return Path(candidate)
    sys.exit("no playNano interpreter: set SCIZ_PLAYNANO_PYTHON or run pytest tests/test_afm_interop.py once")


def afm_like(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.empty((n, size, size), np.float32)
    centres = rng.uniform(0, size, (12, 2))
    drift = rng.normal(0, 1.5, (12, 2))
    for t in range(n):
        height = 0.004 * x + 0.0025 * y + 0.3 * np.sin(t / 9.0)
        for (cy, cx), (dy, dx) in zip(centres, drift, strict=True):
            py, px = cy + dy * t, cx + dx * t
            height += 4.0 * np.exp(-((y - py) ** 2 + (x - px) ** 2) / (2 * 9.0**2))
        height += rng.normal(0, 0.05, (size, 1)).astype(np.float32)  # scan-line offsets
        height += rng.normal(0, 0.04, (size, size)).astype(np.float32)
        frames[t] = np.round(height / 0.01) * 0.01  # 16-bit ADC steps of 0.01 nm
    return frames


def processed_stack(raw: np.ndarray) -> ImageStack:
    n, h, w = raw.shape
    y, x = np.mgrid[0:h, 0:w]
    basis = np.stack([np.ones(h * w), x.ravel(), y.ravel()], axis=1)
    coefficients, *_ = np.linalg.lstsq(basis, raw.reshape(n, -1).T.astype(np.float64), rcond=None)
    plane = (basis @ coefficients).T.reshape(n, h, w)
    removed = (raw - plane).astype(np.float32)
    mask = removed > 1.0
    aligned = (removed - np.median(removed, axis=2, keepdims=True)).astype(np.float32)
    smooth = ndimage.gaussian_filter(aligned, sigma=(0, 1, 1)).astype(np.float32)
    steps = [
        ("remove_plane", {}, "processed_key", "step_1_remove_plane"),
        ("mask_threshold", {"threshold": 1.0}, "mask_key", "step_2_mask_threshold"),
        ("row_median_align", {}, "processed_key", "step_3_row_median_align"),
        ("clear", {}, None, None),
        ("gaussian_filter", {"sigma": 1.0}, "processed_key", "step_5_gaussian_filter"),
    ]
    records = []
    for index, (name, params, kind, key) in enumerate(steps, start=1):
        record = {"index": index, "name": name, "params": params, "step_type": "filter", "version": "bench"}
        if kind:
            record[kind] = key
        records.append(record)
    return ImageStack(
        smooth,
        2.0,
        "height_trace",
        [{"timestamp": 0.1 * i, "frame_pixel_size_nm": 2.0} for i in range(n)],
        processed={
            "raw": raw,
            "step_1_remove_plane": removed,
            "step_3_row_median_align": aligned,
            "step_5_gaussian_filter": smooth,
        },
        masks={"step_2_mask_threshold": mask},
        provenance={
            "environment": {"benchmark": "stacks_io"},
            "processing": {"steps": records, "keys_by_name": {s[0]: [s[3]] for s in steps if s[3]}},
            "analysis": {},
        },
    )


def best_of(repeat: int, action) -> tuple[float, float]:
    """Best wall time and best CPU time (all threads of this process) of ``repeat`` runs."""
    best = cpu = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        action()
        best = min(best, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return best, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    raw = afm_like(args.frames, args.size)
    full = processed_stack(raw)
    cases = {"processed": full, "raw-only": ImageStack(raw, 2.0, "height_trace", full.frame_metadata)}
    python = playnano_python()
    with tempfile.TemporaryDirectory(prefix="sciz-stacks-io-") as tmp:
        folder = Path(tmp)
        spec = {
            "cases": list(cases),
            "pixel_size_nm": 2.0,
            "frames": full.frame_metadata,
            "provenance": full.provenance,
        }
        (folder / "spec.json").write_text(json.dumps(spec))
        for case, stack in cases.items():
            arrays = {"data": stack.data}
            arrays.update({f"processed__{k}": v for k, v in stack.processed.items()})
            arrays.update({f"masks__{k}": v for k, v in stack.masks.items()})
            np.savez(folder / f"{case}.input.npz", **arrays)

        ours: dict[str, dict[str, dict[str, float]]] = {}
        for case, stack in cases.items():
            ours[case] = {}
            for kind, save, load in (("npz", save_npz_bundle, load_npz_bundle), ("h5", save_h5_bundle, load_h5_bundle)):
                target = folder / f"sciz-{case}.{kind}"
                write_s, write_cpu_s = best_of(
                    args.repeat, lambda save=save, target=target, stack=stack: save(target, stack)
                )
                read_s, _ = best_of(args.repeat, lambda load=load, target=target: load(target))
                ours[case][kind] = {
                    "write_s": write_s,
                    "write_cpu_s": write_cpu_s,
                    "read_s": read_s,
                    "bytes": target.stat().st_size,
                }
                check = load(target)
                assert np.array_equal(check.data, stack.data), "lossless round trip failed"
                target.unlink()

        done = subprocess.run(
            [str(python), "-c", PLAYNANO_SIDE, str(folder), str(args.repeat)], capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.exit(done.stderr[-3000:])
        theirs = json.loads(done.stdout.strip().splitlines()[-1])

    total = sum(a.nbytes for a in [full.data, *full.processed.values(), *full.masks.values()])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"AFM bundles, {args.frames}x{args.size}x{args.size} float32, best of {args.repeat}; ", end="")
    print(f"cores: {os.cpu_count()}, load average at the end: {load:.1f}")
    print(f"'processed' = data + raw + 3 processed layers + 1 mask ({total / 1e6:.0f} MB); 'raw-only' = one array")
    print("write: wall time (and CPU seconds of all threads); ratios are playNano / sciz, size is sciz / playNano")
    header = f"{'case':<10} {'bundle':<6} {'sciz write':>16} {'playNano':>16} {'speed-up':>8} {'CPU':>6} "
    header += f"{'sciz MB':>8} {'playNano MB':>11} {'size':>6} {'sciz read':>9} {'playNano':>9} {'speed-up':>8}"
    print(header)
    for case in cases:
        for kind in ("npz", "h5"):
            a, b = ours[case][kind], theirs[case][kind]
            row = f"{case:<10} {kind:<6} {a['write_s']:>6.2f}s ({a['write_cpu_s']:>6.2f}) "
            row += f"{b['write_s']:>6.2f}s ({b['write_cpu_s']:>6.2f}) {b['write_s'] / a['write_s']:>7.1f}x "
            row += f"{b['write_cpu_s'] / a['write_cpu_s']:>5.1f}x "
            row += f"{a['bytes'] / 1e6:>8.1f} {b['bytes'] / 1e6:>11.1f} {a['bytes'] / b['bytes']:>5.3f}x "
            row += f"{a['read_s']:>8.2f}s {b['read_s']:>8.2f}s {b['read_s'] / a['read_s']:>7.1f}x"
            print(row)


if __name__ == "__main__":
    main()
