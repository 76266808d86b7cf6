"""``sciz process`` and ``sciz demo`` through typer's CliRunner: files written, summaries, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sciz.afm import load_h5_bundle, load_npz_bundle, load_ome_tiff_stack
from sciz.cli.app import _register_commands, app
from sciz.stack import ImageStack

_register_commands()
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def small_npz(tmp_path):
    from sciz.afm import save_npz_bundle
    from sciz.processing.sample import sample_stack

    stack = sample_stack(6, 48)
    stack.file_path = None
    return save_npz_bundle(tmp_path / "small.npz", stack)


def test_process_real_h5_jpk_with_space_separated_exports(copy_shared, tmp_path):
    source = copy_shared("afm/sample_0.h5-jpk")
    out = tmp_path / "out"
    result = invoke(
        "process", source, "--processing", "remove_plane; gaussian_filter:sigma=1",
        "--export", "npz", "hdf5", "--make-gif", "--output-folder", out, "--output-name", "jpk",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("jpk_filtered.npz", "jpk_filtered.h5", "jpk_filtered.gif"):
        assert (out / name).is_file() and name in result.output
    assert "4 frames of 128x128 px" in result.output and "remove_plane -> gaussian_filter" in result.output
    stack = load_h5_bundle(out / "jpk_filtered.h5")
    assert list(stack.processed) == ["raw", "step_1_remove_plane", "step_2_gaussian_filter"]
    np.testing.assert_allclose(stack.timestamps, [0.0, 3.275, 6.55, 9.825])
    with Image.open(out / "jpk_filtered.gif") as gif:
        assert gif.n_frames == 4


def test_process_real_asd_with_comma_list_raw_and_yaml_file(copy_shared, tmp_path):
    source = copy_shared("afm/asd_sample_0.asd")
    steps = tmp_path / "steps.yaml"
    steps.write_text("filters:\n  - name: remove_plane\n  - name: drop_frames\n    indices_to_drop: [0, 1]\n")
    out = tmp_path / "asd"
    result = invoke("process", source, "--processing-file", steps, "--export", "npz,tif", "--raw", "-o", out)
    assert result.exit_code == 0, result.output
    processed = load_npz_bundle(out / "asd_sample_0_filtered.npz")
    raw = load_npz_bundle(out / "asd_sample_0.npz")
    assert processed.n_frames == 30 and raw.n_frames == 32
    assert processed.timestamps[0] == 2.0 and raw.timestamps[0] == 0.0
    assert load_ome_tiff_stack(out / "asd_sample_0_filtered.ome.tif").n_frames == 30
    assert (out / "asd_sample_0.ome.tif").is_file()


def test_process_gif_options(small_npz, tmp_path):
    out = tmp_path / "gif"
    result = invoke(
        "process", small_npz, "--make-gif", "--fps", "4", "--cmap", "viridis", "--zmin", "-1", "--zmax", "3",
        "--scale-bar-nm", "20", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with Image.open(out / "small.gif") as gif:  # no steps ran: no _filtered suffix
        assert gif.n_frames == 6 and gif.info["duration"] == 250


def test_process_with_a_lossy_codec_keeps_the_bound(small_npz, tmp_path):
    result = invoke(
        "process", small_npz, "-p", "zero_mean", "--export", "h5", "--codec", "zfp", "--tolerance", "0.01",
        "-o", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stack = load_h5_bundle(tmp_path / "small_filtered.h5")
    exact = load_npz_bundle(small_npz)
    from sciz.processing import zero_mean

    assert np.abs(stack.data - zero_mean(exact.data)).max() <= 0.01


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-p", "remove_plane; blur"], 2, "unknown processing step 'blur'; available steps are filter: remove_plane"),
        (["-p", "gaussian_filter:radius=2"], 2, "has no parameter 'radius'; its parameters are: sigma=1.0"),
        (["-p", "zero_mean", "--processing-file", "x.yaml"], 2, "either --processing or --processing-file"),
        (["--export", "png"], 2, "known formats are"),
        (["--codec", "zfp"], 2, "--codec applies to the HDF5 bundle"),
        (["--export", "h5", "--tolerance", "0.1"], 2, "--tolerance needs --codec"),
        (["--make-gif", "--zmin", "low"], 2, "--zmin='low' is not allowed"),
        (["-p", "mask_below_threshold:threshold=1e9; zero_mean"], 1, "step 2 'zero_mean' failed on frame 0"),
        (["--processing-file", "missing.yaml"], 1, "processing file not found"),
    ],
)
def test_process_errors(small_npz, tmp_path, args, code, message):
    result = invoke("process", small_npz, *args, "-o", tmp_path / "never")
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "never").exists()


def test_process_missing_and_unreadable_inputs(tmp_path):
    result = invoke("process", tmp_path / "nothing.asd", "--export", "npz")
    assert result.exit_code == 1 and "no such file or folder" in result.output
    broken = tmp_path / "broken.asd"
    broken.write_bytes(b"garbage!" * 4)
    result = invoke("process", broken, "--export", "npz", "-o", tmp_path)
    assert result.exit_code == 1
    assert "cannot read" in result.output and "does not start like a .asd file" in result.output
    result = invoke("process", broken, "other.asd")
    assert result.exit_code == 2 and "exactly one INPUT" in result.output
    result = invoke("process", tmp_path / "nothing.asd", "npz")
    assert result.exit_code == 2 and "export formats follow --export" in result.output


def test_process_without_outputs_says_so(small_npz):
    result = invoke("process", small_npz, "-p", "remove_plane")
    assert result.exit_code == 0 and "nothing written" in result.output


def test_demo_writes_every_export(tmp_path):
    folder = tmp_path / "demo"
    result = invoke("demo", folder, "--frames", "5", "--size", "48")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        f"sciz_demo{suffix}{ext}" for suffix in ("", "_filtered") for ext in (".ome.tif", ".npz", ".h5", ".gif")
    )
    assert str(folder.resolve()) in " ".join(result.output.split()).replace(" ", "") or folder.name in result.output
    stack = load_npz_bundle(folder / "sciz_demo_filtered.npz")
    steps = [s["name"] for s in stack.provenance["processing"]["steps"]]
    assert steps[0] == "remove_plane" and steps[-1] == "align_frames"
    assert isinstance(stack, ImageStack) and np.isfinite(stack.data).all()
    with Image.open(folder / "sciz_demo_filtered.gif") as gif:
        assert gif.n_frames == 5 and gif.info["duration"] == 500  # frames 0.5 s apart


def test_sciz_demo_runs_as_a_console_command(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "from sciz.cli import main; main()", "demo", str(tmp_path / "d"), "--frames", "3",
         "--size", "32"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "d" / "sciz_demo_filtered.h5").is_file()
    assert "written to" in done.stdout
