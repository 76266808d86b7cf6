"""align_frames on a real high-speed AFM video with blank frames, against playNano 0.5.0 itself.

The video is the shared ``asd_sample_0.asd`` (32 frames of 200x200, frame 28 is blank in the file)
with frames 0-2 made blank as well, as at the start of many HS-AFM recordings. playNano runs in
its own interpreter (the ``playnano_python`` fixture) on the same float32 array.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from sciz.errors import ArgumentError, DataWarning
from sciz.processing import align_frames, load_stack, run_pipeline
from sciz.stack import ImageStack

CASES = [
    {"reference_frame": 0, "mode": "pad", "max_shift": 20},
    {"reference_frame": 3, "mode": "pad", "max_shift": 20},
    {"reference_frame": 5, "mode": "crop", "max_shift": 20, "max_jump": 2, "pre_filter_sigma": 1.0},
    {"reference_frame": 12, "mode": "pad", "max_shift": None, "max_jump": 3},
    {"reference_frame": 30, "mode": "crop", "max_shift": 8},
]

RUNNER = r"""
import json, logging, sys
import numpy as np
logging.disable(logging.CRITICAL)
from playnano.processing.video_processing import align_frames

job = json.loads(open(sys.argv[1]).read())
data = np.load(job["input"])
out = {}
for i, kwargs in enumerate(job["cases"]):
    aligned, meta = align_frames(data, **kwargs)
    out[f"aligned_{i}"] = aligned
    out[f"shifts_{i}"] = np.asarray(meta["shifts"])
np.savez(job["output"], **out)
"""


@pytest.fixture(scope="module")
def video(shared_data) -> np.ndarray:
    with pytest.warns(DataWarning, match=r"1 of 32 frames are blank .*frame\(s\) 28;"):
        frames = np.asarray(load_stack(shared_data / "afm" / "asd_sample_0.asd").data, dtype=np.float32).copy()
    frames[:3] = -220.0  # blank frames (a whole number of nm: playNano's float32 mean of it is exact)
    return frames


@pytest.fixture(scope="module")
def theirs(playnano_python, video, tmp_path_factory) -> dict[str, np.ndarray]:
    work = tmp_path_factory.mktemp("playnano_align")
    np.save(work / "input.npy", video)
    job = {"input": str(work / "input.npy"), "output": str(work / "output.npz"), "cases": CASES}
    (work / "job.json").write_text(json.dumps(job))
    done = subprocess.run(
        [str(playnano_python), "-c", RUNNER, str(work / "job.json")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(work / "output.npz") as result:
        return {key: result[key] for key in result.files}


def test_blank_reference_shift_and_canvas_agree_with_playnano(video, theirs):
    with pytest.warns(DataWarning, match=r"reference frame 0 is blank .*4 of 32 frames are blank"):
        aligned, meta = align_frames(video, reference_frame=0, mode="pad", max_shift=20)
    assert meta["shifts"][0] == [0, 0] and meta["shifts"][1] == [-20, -20]  # the reference is not moved
    assert aligned.shape == (32, 220, 220) == theirs["aligned_0"].shape
    np.testing.assert_array_equal(np.asarray(meta["shifts"]), theirs["shifts_0"])
    np.testing.assert_array_equal(aligned, theirs["aligned_0"])
    assert meta["blank_frames"] == [0, 1, 2, 28]


@pytest.mark.parametrize("case", range(1, len(CASES)))
def test_explicit_references_agree_with_playnano(video, theirs, case):
    aligned, meta = align_frames(video, **CASES[case])
    np.testing.assert_array_equal(np.asarray(meta["shifts"]), theirs[f"shifts_{case}"])
    assert aligned.shape == theirs[f"aligned_{case}"].shape
    np.testing.assert_array_equal(aligned, theirs[f"aligned_{case}"])


def test_auto_reference_is_the_first_frame_with_content(video, theirs):
    aligned, meta = align_frames(video, reference_frame="auto", mode="pad", max_shift=20)
    assert meta["reference_frame"] == 3
    np.testing.assert_array_equal(np.asarray(meta["shifts"]), theirs["shifts_1"])  # playNano with reference 3
    np.testing.assert_array_equal(aligned, theirs["aligned_1"])
    stack = ImageStack(video.copy(), 0.5)
    run_pipeline(stack, "align_frames:reference_frame=auto,max_shift=20")
    step = stack.provenance["processing"]["steps"][-1]
    assert step["params"]["reference_frame"] == "auto"
    np.testing.assert_array_equal(stack.data, aligned)


def test_blank_stacks_and_bad_references():
    blank = np.zeros((3, 16, 16), np.float32)
    with pytest.warns(DataWarning, match=r"3 of 3 frames are blank\)"):
        _, meta = align_frames(blank, reference_frame="auto")  # nothing usable: frame 0, with the warning
    assert meta["reference_frame"] == 0
    for bad in ("first", 3, -4, 1.0, True):
        with pytest.raises(ArgumentError, match=r"reference_frame=.* must be a frame index in 0\.\.2 or 'auto'"):
            align_frames(blank + np.arange(16), reference_frame=bad)
    with pytest.raises(ArgumentError, match=r"align_frames:reference_frame='first' is not allowed: .*or 'auto'"):
        run_pipeline(ImageStack(blank), "align_frames:reference_frame=first")
