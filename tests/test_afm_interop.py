"""Interoperability with the real playNano 0.5.0, both ways.

playNano runs in its own virtual environment (the ``playnano_python`` fixture in ``conftest.py``),
as a subprocess (``RUNNER``) that loads/saves bundles with playNano's own functions and hands back
arrays in a plain ``.npz`` and everything else as JSON.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sciz.afm import (
    ImageStack,
    export_bundles,
    load_h5_bundle,
    load_npz_bundle,
    load_ome_tiff_stack,
    save_h5_bundle,
    save_npz_bundle,
    save_ome_tiff_stack,
)

RUNNER = r"""
import json, sys
from pathlib import Path
import numpy as np
from playnano.afm_stack import AFMImageStack
from playnano.io import data_loaders, export_data
from playnano.processing.pipeline import ProcessingPipeline

LOADERS = {"npz": data_loaders.load_npz_bundle, "h5": data_loaders.load_h5_bundle,
           "tif": data_loaders.load_ome_tiff_stack}
SAVERS = {"npz": export_data.save_npz_bundle, "h5": export_data.save_h5_bundle,
          "tif": export_data.save_ome_tiff_stack}

def describe(stack, arrays_path):
    arrays = {"data": np.asarray(stack.data)}
    arrays.update({"processed__" + k: np.asarray(v) for k, v in stack.processed.items()})
    arrays.update({"masks__" + k: np.asarray(v) for k, v in stack.masks.items()})
    np.savez(arrays_path, **arrays)
    return {"pixel_size_nm": stack.pixel_size_nm, "channel": stack.channel,
            "frame_metadata": stack.frame_metadata, "provenance": stack.provenance,
            "state_backups": stack.state_backups, "dtype": str(stack.data.dtype)}

job = json.loads(Path(sys.argv[1]).read_text())
result = {"loaded": {}, "errors": {}}
for kind, path, arrays_path in job.get("load", []):
    try:
        result["loaded"][path] = describe(LOADERS[kind](Path(path)), arrays_path)
    except Exception as exc:
        result["errors"][path] = f"{type(exc).__name__}: {exc}"
for kind, source, target_kind, target in job.get("resave", []):
    SAVERS[target_kind](Path(target), LOADERS[kind](Path(source)))
if "make" in job:
    spec = job["make"]
    rng = np.random.default_rng(spec["seed"])
    n, h, w = spec["shape"]
    yy, xx = np.mgrid[0:h, 0:w]
    data = 0.02 * xx + 0.01 * yy + rng.normal(0, 0.1, (n, h, w))
    data[:, h // 3 : h // 2, w // 3 : w // 2] += 3.0
    frames = [{"timestamp": 0.25 * i, "frame_pixel_size_nm": spec["pixel_size_nm"]} for i in range(n)]
    stack = AFMImageStack(data, spec["pixel_size_nm"], "height_trace", Path("made.asd"), frames)
    pipeline = ProcessingPipeline(stack)
    pipeline.add_filter("remove_plane").add_mask("mask_threshold", threshold=1.0)
    pipeline.add_filter("row_median_align").clear_mask().add_filter("gaussian_filter", sigma=1.0)
    pipeline.add_filter("drop_frames", indices_to_drop=[1])
    pipeline.run()
    folder = Path(spec["folder"])
    export_data.export_bundles(stack, folder, "made", ["tif", "npz", "h5"])
    export_data.export_bundles(stack, folder, "made", ["npz", "h5"], raw=True)
    result["made"] = describe(stack, str(folder / "made_reference.npz"))
print(json.dumps(result, default=str))
"""


def run_playnano(python: Path, job: dict, workdir: Path) -> dict:
    job_path = workdir / "job.json"
    job_path.write_text(json.dumps(job))
    done = subprocess.run(
        [str(python), "-c", RUNNER, str(job_path)], capture_output=True, text=True, timeout=600, cwd=workdir
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_stack() -> ImageStack:
    rng = np.random.default_rng(3)
    data = rng.normal(size=(4, 20, 30)).astype(np.float32)
    return ImageStack(
        data,
        0.8,
        "height_trace",
        [{"timestamp": 0.5 * i, "frame_pixel_size_nm": 0.8, "scan_direction": "up"} for i in range(4)],
        processed={"raw": data * 2, "step_1_remove_plane": data - 1},
        masks={"step_2_mask_threshold": data > 0.3},
        provenance={
            "environment": {"sciz": "test"},
            "processing": {
                "steps": [{"index": 1, "name": "remove_plane", "params": {}, "processed_key": "step_1_remove_plane"}],
                "keys_by_name": {"remove_plane": ["step_1_remove_plane"]},
            },
            "analysis": {},
        },
        state_backups={"frame_metadata_before_edit": [{"timestamp": 0.5 * i} for i in range(4)]},
        file_path="/data/sample.asd",
    )


def without_bundle(provenance: dict) -> dict:
    return {k: v for k, v in provenance.items() if k != "bundle"}


def assert_matches_playnano(ours: ImageStack, theirs: dict, arrays: np.lib.npyio.NpzFile, *, full: bool = True) -> None:
    # Bundles hold float32; playNano's in-memory stacks may be float64.
    np.testing.assert_array_equal(ours.data, arrays["data"].astype(np.float32))
    assert ours.pixel_size_nm == pytest.approx(theirs["pixel_size_nm"])
    assert ours.channel == theirs["channel"]
    if full:
        assert ours.frame_metadata == theirs["frame_metadata"]
    else:  # playNano's OME-TIFF loader keeps only the times and pixel size of each frame (sciz keeps all)
        assert ours.timestamps.tolist() == [f["timestamp"] for f in theirs["frame_metadata"]]
    assert without_bundle(ours.provenance) == without_bundle(theirs["provenance"])
    if full:
        assert ours.state_backups == (theirs["state_backups"] or {})
        processed = {k.split("__", 1)[1] for k in arrays.files if k.startswith("processed__")}
        masks = {k.split("__", 1)[1] for k in arrays.files if k.startswith("masks__")}
        assert set(ours.processed) == processed and set(ours.masks) == masks
        for key in processed:
            np.testing.assert_array_equal(ours.processed[key], arrays[f"processed__{key}"].astype(np.float32))
        for key in masks:
            np.testing.assert_array_equal(ours.masks[key], arrays[f"masks__{key}"])


def test_playnano_loads_what_sciz_writes(playnano_python, tmp_path):
    stack = make_stack()
    one = ImageStack(np.ones((1, 5, 6), np.float32), 1.5, "z", [{"timestamp": 2.0}])
    files = {
        "npz": save_npz_bundle(tmp_path / "s.npz", stack),
        "h5": save_h5_bundle(tmp_path / "s.h5", stack),
        "tif": save_ome_tiff_stack(tmp_path / "s.ome.tif", stack),
        "raw-npz": save_npz_bundle(tmp_path / "r.npz", stack, raw=True),
        "raw-h5": save_h5_bundle(tmp_path / "r.h5", stack, raw=True),
        "one-npz": save_npz_bundle(tmp_path / "one.npz", one),
        "one-h5": save_h5_bundle(tmp_path / "one.h5", one),
    }
    job = {
        "load": [[name.split("-")[-1], str(path), str(tmp_path / f"{name}.arrays.npz")] for name, path in files.items()]
    }
    result = run_playnano(playnano_python, job, tmp_path)
    assert result["errors"] == {}
    for name, path in files.items():
        theirs = result["loaded"][str(path)]
        assert theirs["dtype"] == "float32"
        with np.load(tmp_path / f"{name}.arrays.npz", allow_pickle=False) as arrays:
            ours = {"npz": load_npz_bundle, "h5": load_h5_bundle, "tif": load_ome_tiff_stack}[name.split("-")[-1]](path)
            assert_matches_playnano(ours, theirs, arrays, full=not name.endswith("tif"))
            if name in ("npz", "h5"):
                np.testing.assert_array_equal(arrays["data"], stack.data)
                np.testing.assert_array_equal(
                    arrays["masks__step_2_mask_threshold"], stack.masks["step_2_mask_threshold"]
                )
                assert theirs["frame_metadata"] == stack.frame_metadata
                assert theirs["state_backups"] == stack.state_backups
            if name.startswith("raw"):
                np.testing.assert_array_equal(arrays["data"], stack.processed["raw"])
    assert result["loaded"][str(files["tif"])]["channel"] == "height_trace"
    np.testing.assert_array_equal(np.load(tmp_path / "tif.arrays.npz")["data"], stack.data)


def test_sciz_loads_what_playnano_wrote(playnano_python, copy_shared, tmp_path):
    names = ["processed.npz", "processed.h5", "processed.ome.tif", "processed_raw.npz", "processed_raw.h5"]
    paths = {name: copy_shared(f"playnano/{name}") for name in names}
    kinds = {"npz": "npz", "h5": "h5", "tif": "tif"}
    job = {"load": [[kinds[n.rsplit(".", 1)[1]], str(p), str(tmp_path / f"{n}.arrays.npz")] for n, p in paths.items()]}
    result = run_playnano(playnano_python, job, tmp_path)
    assert result["errors"] == {}
    loaders = {"npz": load_npz_bundle, "h5": load_h5_bundle, "tif": load_ome_tiff_stack}
    for name, path in paths.items():
        ours = loaders[kinds[name.rsplit(".", 1)[1]]](path)
        with np.load(tmp_path / f"{name}.arrays.npz", allow_pickle=False) as arrays:
            assert_matches_playnano(ours, result["loaded"][str(path)], arrays, full=not name.endswith(".tif"))


def test_full_cycle_through_playnano_pipeline_and_exports(playnano_python, tmp_path):
    """playNano processes a stack (with a frame drop), exports every bundle; sciz reads them all, and
    files sciz re-exports from them read back in playNano unchanged."""
    folder = tmp_path / "made"
    job = {"make": {"seed": 11, "shape": [5, 24, 36], "pixel_size_nm": 1.5, "folder": str(folder)}}
    made = run_playnano(playnano_python, job, tmp_path)["made"]
    with np.load(folder / "made_reference.npz", allow_pickle=False) as reference:
        for name in ("made_filtered.npz", "made_filtered.h5"):
            ours = (load_npz_bundle if name.endswith(".npz") else load_h5_bundle)(folder / name)
            assert_matches_playnano(ours, made, reference)
            assert ours.n_frames == 4 and len(ours.state_backups["frame_metadata_before_edit"]) == 5
        tif = load_ome_tiff_stack(folder / "made_filtered.ome.tif")
        np.testing.assert_array_equal(tif.data, reference["data"].astype(np.float32))
        assert tif.timestamps.tolist() == [0.0, 0.5, 0.75, 1.0]
        raw = load_h5_bundle(folder / "made.h5")
        np.testing.assert_array_equal(raw.data, reference["processed__raw"].astype(np.float32))
        assert raw.timestamps.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]

    ours = load_npz_bundle(folder / "made_filtered.npz")
    written = export_bundles(ours, tmp_path / "again", "again", ["npz", "h5", "tif"])
    back = {"load": [[k, str(p), str(tmp_path / f"again-{k}.npz")] for k, p in written.items()]}
    result = run_playnano(playnano_python, back, tmp_path)
    assert result["errors"] == {}
    for kind, path in written.items():
        with np.load(tmp_path / f"again-{kind}.npz", allow_pickle=False) as arrays:
            np.testing.assert_array_equal(arrays["data"], ours.data)
            theirs = result["loaded"][str(path)]
            assert theirs["frame_metadata"] == ours.frame_metadata
            if kind != "tif":
                assert without_bundle(theirs["provenance"]) == without_bundle(ours.provenance)
                assert theirs["state_backups"] == ours.state_backups
