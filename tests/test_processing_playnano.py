"""Numerical agreement with playNano 0.5.0's own processing on the same input.

playNano runs in its own interpreter (the ``playnano_python`` fixture of ``test_afm_interop``, which
builds and caches a virtual environment with playNano, or honours ``SCIZ_PLAYNANO_PYTHON``); it
processes the same arrays frame by frame with its functions and hands the results back in an
``.npz``. sciz must give the same numbers (to float64 rounding), with all frames at once.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from scipy import ndimage

from sciz import processing
from sciz.stack import ImageStack

FILTERS = ("remove_plane", "row_median_align", "zero_mean", "zero_median")
PIPELINE = [
    ("remove_plane", {}),
    ("mask_threshold", {"threshold": 1.0}),
    ("row_median_align", {}),
    ("polynomial_flatten", {"order": 2}),
    ("mask_mean_offset", {"factor": 1.5}),
    ("zero_mean", {}),
    ("clear", {}),
    ("gaussian_filter", {"sigma": 1.5}),
    ("zero_median", {}),
    ("drop_frames", {"indices_to_drop": [1]}),
]

RUNNER = r"""
import json, logging, sys
from pathlib import Path
import numpy as np
logging.disable(logging.CRITICAL)
from playnano.afm_stack import AFMImageStack
from playnano.processing import filters as F, masked_filters as MF, mask_generators as MG
from playnano.processing import video_processing as V
from playnano.processing.pipeline import ProcessingPipeline

job = json.loads(Path(sys.argv[1]).read_text())
given = np.load(job["input"])
data, mask, drifted = given["data"], given["mask"], given["drifted"]
out = {}
for name in job["filters"]:
    out[name] = np.stack([getattr(F, name)(f) for f in data])
    out[name + "_masked"] = np.stack([getattr(MF, name + "_masked")(f, m) for f, m in zip(data, mask)])
for order in (1, 2, 3):
    out[f"poly{order}"] = np.stack([F.polynomial_flatten(f, order=order) for f in data])
    out[f"poly{order}_masked"] = np.stack([MF.polynomial_flatten_masked(f, m, order=order) for f, m in zip(data, mask)])
out["gaussian"] = np.stack([F.gaussian_filter(f, sigma=2.0) for f in data])
out["mask_threshold"] = np.stack([MG.mask_threshold(f, threshold=0.5) for f in data])
out["mask_below_threshold"] = np.stack([MG.mask_below_threshold(f, threshold=-0.5) for f in data])
out["mask_mean_offset"] = np.stack([MG.mask_mean_offset(f, factor=1.2) for f in data])
out["mask_morphological"] = np.stack([MG.mask_morphological(f, threshold=0.8, structure_size=4) for f in data])
out["mask_adaptive"] = np.stack([MG.mask_adaptive(f, block_size=7, offset=0.1) for f in data])
aligned, meta = V.align_frames(drifted, mode="pad")
out["aligned"], out["shifts"] = aligned, np.asarray(meta["shifts"])
out["aligned_limited_shifts"] = np.asarray(V.align_frames(drifted, max_shift=2, pre_filter_sigma=1.0)[1]["shifts"])
out["cropped"] = V.intersection_crop(aligned)[0]
for mode in ("zero", "mean", "median", "global_mean"):
    out["nan_" + mode] = V.replace_nan(aligned, mode=mode)[0]
frames = [{"timestamp": float(i)} for i in range(len(data))]
stack = AFMImageStack(data.copy(), 1.0, "height_trace", Path("x.npz"), frames)
pipeline = ProcessingPipeline(stack)
for name, params in job["pipeline"]:
    pipeline.steps.append((name, params))
pipeline.run()
for key, value in stack.processed.items():
    out["processed__" + key] = value
for key, value in stack.masks.items():
    out["masks__" + key] = value
np.savez(job["output"], **out)
print(json.dumps({"timestamps": [f["timestamp"] for f in stack.frame_metadata]}))
"""


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(8)
    n, h, w = 5, 40, 52
    yy, xx = np.mgrid[0:h, 0:w]
    data = 0.04 * xx - 0.02 * yy + 3e-4 * xx * yy + rng.normal(0, 0.3, (n, h, w)) + rng.normal(0, 0.5, (n, h, 1))
    data[:, 12:22, 20:34] += 2.5
    mask = data - data.mean(axis=(1, 2), keepdims=True) > 0.8
    scene = ndimage.gaussian_filter(rng.normal(size=(70, 80)), 1.2)
    offsets = [(0, 0), (2, -1), (3, 2), (-2, 4)]
    drifted = np.stack([scene[10 + dy : 50 + dy, 10 + dx : 60 + dx] for dy, dx in offsets]).astype(np.float32)
    return {"data": data, "mask": mask, "drifted": drifted}


@pytest.fixture(scope="module")
def theirs(playnano_python, inputs, tmp_path_factory) -> dict[str, np.ndarray]:
    work = tmp_path_factory.mktemp("playnano_processing")
    np.savez(work / "input.npz", **inputs)
    job = {
        "input": str(work / "input.npz"),
        "output": str(work / "output.npz"),
        "filters": FILTERS,
        "pipeline": PIPELINE,
    }
    (work / "job.json").write_text(json.dumps(job))
    done = subprocess.run(
        [str(playnano_python), "-c", RUNNER, str(work / "job.json")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=work,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(work / "output.npz") as result:
        out = {key: result[key] for key in result.files}
    out["__timestamps__"] = np.array(json.loads(done.stdout.strip().splitlines()[-1])["timestamps"])
    return out


@pytest.mark.parametrize("name", FILTERS)
def test_filters_agree(inputs, theirs, name):
    function = getattr(processing, name)
    np.testing.assert_allclose(function(inputs["data"]), theirs[name], rtol=0, atol=1e-9)
    np.testing.assert_allclose(function(inputs["data"], mask=inputs["mask"]), theirs[name + "_masked"], atol=1e-9)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_polynomial_flatten_agrees(inputs, theirs, order):
    ours = processing.polynomial_flatten(inputs["data"], order=order)
    np.testing.assert_allclose(ours, theirs[f"poly{order}"], atol=1e-8)
    masked = processing.polynomial_flatten(inputs["data"], order=order, mask=inputs["mask"])
    np.testing.assert_allclose(masked, theirs[f"poly{order}_masked"], atol=1e-8)


def test_gaussian_and_masks_agree(inputs, theirs):
    data = inputs["data"]
    np.testing.assert_array_equal(processing.gaussian_filter(data, sigma=2.0), theirs["gaussian"])
    np.testing.assert_array_equal(processing.mask_threshold(data, threshold=0.5), theirs["mask_threshold"])
    np.testing.assert_array_equal(processing.mask_below_threshold(data, threshold=-0.5), theirs["mask_below_threshold"])
    np.testing.assert_array_equal(processing.mask_mean_offset(data, factor=1.2), theirs["mask_mean_offset"])
    np.testing.assert_array_equal(
        processing.mask_morphological(data, threshold=0.8, structure_size=4), theirs["mask_morphological"]
    )
    np.testing.assert_array_equal(processing.mask_adaptive(data, block_size=7, offset=0.1), theirs["mask_adaptive"])


def test_video_steps_agree(inputs, theirs):
    aligned, meta = processing.align_frames(inputs["drifted"], mode="pad")
    np.testing.assert_array_equal(np.asarray(meta["shifts"]), theirs["shifts"])
    np.testing.assert_array_equal(aligned, theirs["aligned"])
    _, limited = processing.align_frames(inputs["drifted"], max_shift=2, pre_filter_sigma=1.0)
    np.testing.assert_array_equal(np.asarray(limited["shifts"]), theirs["aligned_limited_shifts"])
    np.testing.assert_array_equal(processing.intersection_crop(aligned)[0], theirs["cropped"])
    for mode in ("zero", "mean", "median", "global_mean"):
        np.testing.assert_allclose(processing.replace_nan(aligned, mode=mode)[0], theirs["nan_" + mode], rtol=1e-6)


def test_pipeline_agrees_layer_by_layer(inputs, theirs):
    data = inputs["data"]
    stack = ImageStack(data.copy(), 1.0, "height_trace", [{"timestamp": float(i)} for i in range(len(data))])
    processing.run_pipeline(stack, PIPELINE)
    their_layers = {k.removeprefix("processed__"): v for k, v in theirs.items() if k.startswith("processed__")}
    their_masks = {k.removeprefix("masks__"): v for k, v in theirs.items() if k.startswith("masks__")}
    # playNano names every frame edit's layer step_<i>_drop_frames, as sciz does for drop_frames.
    assert list(stack.processed) == list(their_layers)
    assert list(stack.masks) == list(their_masks)
    for key, value in their_layers.items():
        np.testing.assert_allclose(stack.processed[key], value, atol=1e-9, err_msg=key)
    for key, value in their_masks.items():
        np.testing.assert_array_equal(stack.masks[key], value, err_msg=key)
    np.testing.assert_array_equal(stack.timestamps, theirs["__timestamps__"])
