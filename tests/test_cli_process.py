"""``sciz process`` and ``sciz demo`` through typer's CliRunner: files written, summaries, and clear errors."""

from __future__ import annotations

import re
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
    text = " ".join(result.output.split())
    assert "32 frames of 200x200 px, 0.5 nm/px" in text and "(result: 30 frames of 200x200 px)" in text
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
        (["--export", "h5", "--codec", "zfp", "--tolerance", "-1"], 2, "--tolerance=-1 is not allowed: give a finite"),
        (["--export", "h5", "--codec", "zfp", "--tolerance", "nan"], 2, "--tolerance=nan is not allowed"),
        (["-p", "zero_mean", "--keep", "raw"], 2, "--keep chooses the layers of the bundles; add --export"),
        (["-p", "zero_mean", "--export", "npz", "--keep", "raw,blur"], 2, "--keep='blur' is not allowed: give all"),
        (["--export", "npz", "--keep", "raw,blur"], 1, "keep='blur' is not allowed: must be one of all"),
        (["--export", "npz", "--keep", ","], 2, "--keep=',' is not allowed: name the layers"),
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
    result = invoke("process", tmp_path / "none*.asd")
    assert result.exit_code == 2 and "no file or folder matches" in result.output
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
    # No terminal: one line per stage instead of a progress bar that shows nothing in a log.
    lines = done.stderr.splitlines()
    assert lines[0] == "processing in memory (chosen by the memory budget)", done.stderr
    assert lines[1] == "[1/16] step 1/8: remove_plane" and "[16/16] writing gif (raw)" in lines, done.stderr
    assert len([line for line in lines if line.startswith("[")]) == 16


def test_existing_outputs_are_refused_unless_force(small_npz, tmp_path):
    out = tmp_path / "out"
    first = invoke("process", small_npz, "-p", "zero_mean", "--export", "npz", "--make-gif", "-o", out)
    assert first.exit_code == 0, first.output
    before = (out / "small_filtered.npz").read_bytes()
    again = invoke("process", small_npz, "-p", "remove_plane", "--export", "npz", "--make-gif", "-o", out)
    assert again.exit_code == 1
    message = " ".join(again.output.split())
    assert f"would overwrite {out / 'small_filtered.npz'}, {out / 'small_filtered.gif'}" in message
    assert "pass --force" in message
    assert (out / "small_filtered.npz").read_bytes() == before  # untouched
    forced = invoke("process", small_npz, "-p", "remove_plane", "--export", "npz", "-o", out, "--force")
    assert forced.exit_code == 0, forced.output
    steps = load_npz_bundle(out / "small_filtered.npz").provenance["processing"]["steps"]
    assert [s["name"] for s in steps] == ["remove_plane"]
    # Names known only after the steps ran (no step -> no _filtered suffix) are checked too.
    (out / "small.npz").write_bytes(b"precious")
    plain = invoke("process", small_npz, "--export", "npz", "-o", out)
    assert plain.exit_code == 1 and "would overwrite" in plain.output
    assert (out / "small.npz").read_bytes() == b"precious"


def test_an_output_folder_that_cannot_be_made_is_refused_before_the_steps(small_npz, tmp_path):
    # Used to run every step, then end in "[Errno 17] File exists: 'afile'" (no option named).
    blocker = tmp_path / "afile"
    blocker.write_bytes(b"x")
    for folder in (blocker, blocker / "sub"):
        result = invoke("process", small_npz, "-p", "zero_mean", "--export", "npz", "-o", folder)
        assert result.exit_code == 1
        message = " ".join(result.output.split())
        assert f"--output-folder {folder}: {blocker} is a file, not a folder" in message, message
        assert "step 1/1" not in message  # refused before processing
    assert blocker.read_bytes() == b"x"


def _inputs(tmp_path):
    from sciz.afm import save_npz_bundle
    from sciz.processing.sample import sample_stack

    folder = tmp_path / "in"
    folder.mkdir()
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        stack = sample_stack(3, 32, seed=seed)
        stack.file_path = None
        save_npz_bundle(folder / f"{name}.npz", stack)
    (folder / "broken.asd").write_bytes(b"garbage!" * 4)
    return folder


def test_several_inputs_and_globs_run_as_a_batch(tmp_path):
    folder = _inputs(tmp_path)
    out = tmp_path / "out"
    result = invoke(
        "process", folder / "a.npz", folder / "broken.asd", str(folder / "[bc].npz"), "-p", "remove_plane",
        "--export", "npz", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # one input failed: the exit code says so
    text = " ".join(result.output.split())
    assert sorted(p.name for p in out.iterdir()) == ["a_filtered.npz", "b_filtered.npz", "c_filtered.npz"]
    for name in "abc":  # each input went to its own file
        raw = load_npz_bundle(out / f"{name}_filtered.npz").processed["raw"]
        np.testing.assert_array_equal(raw, load_npz_bundle(folder / f"{name}.npz").data)
    assert "[2/4]" in text and "does not start like a .asd file" in text
    assert "4 inputs: 3 processed, 1 failed" in text
    again = invoke("process", str(folder / "*.npz"), "-p", "remove_plane", "--export", "npz", "-o", out)
    assert again.exit_code == 1 and "3 inputs: 0 processed, 3 failed" in " ".join(again.output.split())
    forced = invoke("process", str(folder / "*.npz"), "-p", "remove_plane", "--export", "npz", "-o", out, "--force")
    assert forced.exit_code == 0 and "3 inputs: 3 processed, 0 failed" in " ".join(forced.output.split())


def test_batch_names_must_not_collide(tmp_path):
    folder = _inputs(tmp_path)
    (folder / "sub").mkdir()
    (folder / "sub" / "a.npz").write_bytes((folder / "a.npz").read_bytes())
    result = invoke("process", folder / "a.npz", folder / "sub" / "a.npz", "--export", "npz", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "would both write a*" in " ".join(result.output.split())
    result = invoke("process", folder / "a.npz", folder / "b.npz", "-n", "run", "--export", "npz")
    assert result.exit_code == 2 and "--output-name names the files of one input" in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


def test_warnings_are_printed(copy_shared, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        np.save(frames / f"f{i}.npy", np.random.default_rng(i).normal(size=(16, 16)).astype(np.float32))
    np.save(frames / "f3.npy", np.zeros((16, 16), np.float32))
    result = invoke("process", frames, "--export", "npz", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"warning: {frames}: no pixel size found in 4 of its 4 frame files; using 1 nm per pixel" in text
    assert f"read {frames}: 4 frames of 16x16 px, 1 nm/px" in text
    assert "1 of 4 frames are blank (every pixel one value): frame(s) 3" in text
    asd = copy_shared("afm/asd_sample_0.asd")
    result = invoke("process", asd, "--export", "npz", "--make-gif", "--scale-bar-nm", "500", "-o", tmp_path / "a")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: " in text and "float64 values are stored as float32 in AFM bundles" in text
    assert "scale_bar_nm=500 does not fit in the frame (100 nm wide)" in text
    assert "frame(s) 28" in text


def test_lossless_fallback_is_printed_once(capsys):
    from sciz import codecs
    from sciz.cli.process_cmd import shown_warnings

    field = np.random.default_rng(0).normal(size=(8, 64, 64)).astype(np.float32)
    with shown_warnings() as said:
        codecs.get("zfp", tolerance=1e-12).encode(field)  # below float32 precision: stored exactly
        codecs.get("zfp", tolerance=1e-12).encode(field)
        np.log(np.zeros(1))  # not a sciz warning: its kind is named
    err = " ".join(capsys.readouterr().err.split())
    assert len(said) == 2 and err.count("warning: ") == 2
    assert "chunks exactly (losslessly) instead" in err and "LosslessFallbackWarning" not in err  # sciz's: no kind
    assert "warning: RuntimeWarning: divide by zero" in err


def test_keep_and_colorbar(small_npz, tmp_path):
    out = tmp_path / "k"
    result = invoke(
        "process", small_npz, "-p", "remove_plane; mask_threshold:threshold=0; row_median_align; zero_mean",
        "--export", "npz,h5", "--keep", "raw,final", "--make-gif", "--colorbar", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for back in (load_npz_bundle(out / "small_filtered.npz"), load_h5_bundle(out / "small_filtered.h5")):
        assert list(back.processed) == ["raw", "step_4_zero_mean"] and back.masks == {}
    with Image.open(out / "small_filtered.gif") as gif:
        assert gif.size[0] > 512 + 40 and gif.size[1] == 512  # 48x48 upscaled, plus the colour bar strip


def test_process_help_matches_behaviour():
    result = invoke("process", "--help")
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert "[OPTIONS] {INPUT}..." in text and "Several inputs run as a batch" in text
    assert "exit code 1 if any failed" in text
    for option in ("--force", "--keep", "--colorbar"):
        assert option in text
    # playNano failed on a --codec zfp bundle ("can't open directory (/usr/local/lib/plugin)") unwarned.
    assert "files need `import hdf5plugin` before h5py or playNano can read them" in text


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
def test_codecs_demo_rejects_bad_tolerances_without_a_traceback(value):
    result = runner.invoke(app, ["codecs", "demo", "--frames", "1", "--tolerance", value])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert f"error: --tolerance={float(value):g} is not allowed: must be a positive finite number" in result.output
    assert "Traceback" not in result.output


def test_demo_rejects_a_negative_tolerance(tmp_path):
    result = invoke("demo", tmp_path / "d", "--codec", "zfp", "--tolerance", "-0.5", "--frames", "2", "--size", "32")
    assert result.exit_code == 2 and "--tolerance=-0.5 is not allowed" in result.output
    assert not (tmp_path / "d").exists()


def test_running_out_of_memory_is_a_clear_error(small_npz, tmp_path, monkeypatch):
    """A MemoryError (an allocation the budget did not foresee, e.g. under RLIMIT_AS) ends in an error
    line that says what to do, not a traceback; the input of a batch fails alone."""
    import sciz.afm

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(sciz.afm, "export_gif", exhausted)
    result = runner.invoke(app, ["process", str(small_npz), "--make-gif", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and not isinstance(result.exception, MemoryError), result.output
    assert f"ran out of memory processing {small_npz}: process it with --out-of-core" in result.output
    assert not (tmp_path / "out" / "small.gif").exists()


def test_outputs_never_replace_an_input_of_the_run(small_npz, tmp_path):
    """With --force too: b.npz links to the file a.npz's output would replace, so b would be read from
    a's result (and the user's file lost); an input named as its own output is refused the same way."""
    out = tmp_path / "out"
    out.mkdir()
    original = small_npz.read_bytes()
    (out / "a_filtered.npz").write_bytes(original)
    a = tmp_path / "a.npz"
    a.write_bytes(original)
    (tmp_path / "b.npz").symlink_to(out / "a_filtered.npz")
    result = invoke("process", a, tmp_path / "b.npz", "-p", "remove_plane", "-e", "npz", "-o", out, "--force")
    assert result.exit_code == 1, result.output
    assert f"{out / 'a_filtered.npz'} is an input of this run (or a link to one)" in result.output
    assert (out / "a_filtered.npz").read_bytes() == original  # untouched
    assert list(load_npz_bundle(out / "b_filtered.npz").processed) == ["raw", "step_1_remove_plane"]
    result = invoke(
        "process", out / "a_filtered.npz", "-p", "remove_plane", "-e", "npz", "-o", out, "-n", "a", "--force"
    )
    assert result.exit_code == 1 and "is an input of this run" in result.output, result.output
    assert (out / "a_filtered.npz").read_bytes() == original


def test_outputs_are_not_written_among_the_frames_of_an_input_folder(tmp_path):
    """The 3-frame result written into a folder of 3 one-frame OME-TIFFs was read back as frames by
    the next run (6 frames, silently); it is refused, and another --output-folder works."""
    import tifffile

    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(3):
        tifffile.imwrite(folder / f"f{index}.ome.tif", np.full((16, 16), index, np.float32), metadata={"axes": "YX"})
    result = invoke("process", folder, "--pixel-size-nm", "1", "-p", "remove_plane", "-e", "tif", "-o", folder)
    assert result.exit_code == 1, result.output
    assert "would be written among the frames of the input folder" in result.output
    assert sorted(p.name for p in folder.iterdir()) == ["f0.ome.tif", "f1.ome.tif", "f2.ome.tif"]
    out = folder / "out"
    result = invoke("process", folder, "--pixel-size-nm", "1", "-p", "remove_plane", "-e", "tif", "-o", out)
    assert result.exit_code == 0, result.output
    assert load_ome_tiff_stack(out / "frames_filtered.ome.tif").n_frames == 3


def test_a_second_run_into_the_same_folder_waits_and_then_sees_the_first_runs_files(tmp_path):
    # Two runs into one folder without --force used to both pass the 'exists?' check and then
    # overwrite each other file by file (found by attack). The folder is locked from that check
    # to the last file written: the second run waits, then refuses.
    import time

    source = tmp_path / "v.npy"
    np.save(source, np.random.default_rng(0).normal(size=(3, 16, 16)).astype(np.float32))
    out = tmp_path / "out"
    out.mkdir()
    from sciz.cli.process_cmd import _folder_lock

    lock = _folder_lock(out)
    lock.__enter__()  # as another sciz process writing there holds it
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", "from sciz.cli import main; main()", "process", str(source), "-p", "zero_mean",
             "--export", "npz", "-o", str(out), "--pixel-size-nm", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert child.stderr is not None
        for line in child.stderr:
            if "step 1/1" in line:
                break
        time.sleep(2.0)
        assert child.poll() is None, "the second run did not wait for the folder"
        (out / "v_filtered.npz").write_bytes(b"the other run's result")
    finally:
        lock.__exit__(None, None, None)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 1, err
    assert "would overwrite" in err and (out / "v_filtered.npz").read_bytes() == b"the other run's result"


def test_force_replaces_only_earlier_outputs(small_npz, tmp_path):
    # Found by a trial user: --force replaced a text file that had an output's name (convert refused it).
    out = tmp_path / "out"
    out.mkdir()
    (out / "small_filtered.npz").write_bytes(b"my notes")
    (out / "small_filtered.gif").write_bytes(b"not a gif")
    forced = invoke("process", small_npz, "-p", "zero_mean", "--export", "npz", "-o", out, "--force")
    assert forced.exit_code == 1
    assert "no format sciz recognises" in " ".join(forced.output.split())
    assert (out / "small_filtered.npz").read_bytes() == b"my notes"
    gif = invoke("process", small_npz, "-p", "zero_mean", "--make-gif", "-o", out, "--force")
    assert gif.exit_code == 1 and "is not a GIF" in " ".join(gif.output.split())
    (out / "small_filtered.npz").unlink()
    (out / "small_filtered.gif").unlink()
    first = invoke("process", small_npz, "-p", "zero_mean", "--export", "npz", "--make-gif", "-o", out)
    assert first.exit_code == 0, first.output
    again = invoke("process", small_npz, "-p", "remove_plane", "--export", "npz", "--make-gif", "-o", out, "--force")
    assert again.exit_code == 0, again.output  # earlier outputs are replaced
