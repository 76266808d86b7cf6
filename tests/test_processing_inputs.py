"""load_stack: real vendor videos through AFMReader, bundles, TIFF, NPY/NPZ and folders, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from sciz.afm import load_h5_bundle, load_npz_bundle, save_h5_bundle, save_npz_bundle, save_ome_tiff_stack
from sciz.errors import DataWarning, FormatError
from sciz.processing import load_stack, run_pipeline
from sciz.stack import ImageStack

#: The real .asd video's frame 28 is blank (one value throughout).
BLANK_28 = r"asd_sample_0\.asd: 1 of 32 frames are blank \(every pixel one value\): frame\(s\) 28;"


def test_real_asd_video(copy_shared):
    path = copy_shared("afm/asd_sample_0.asd")
    with pytest.warns(DataWarning, match=BLANK_28):
        stack = load_stack(path)
    assert stack.shape == (32, 200, 200) and stack.channel == "TP"
    assert stack.pixel_size_nm == 0.5  # 100 nm over 200 pixels
    assert stack.timestamps.tolist() == [float(i) for i in range(32)]  # 1000 ms per frame in the header
    first = stack.frame_metadata[0]
    assert first["frame_duration_s"] == 1.0 and first["line_rate"] == 200.0
    # The header date (2017-11-21 13:12:39 UTC) is when the last frame ended.
    assert first["start_epoch_ms"] == 1511269959000 - 32_000
    assert np.isfinite(stack.data).all() and float(np.ptp(stack.data)) > 10.0
    assert stack.file_path == path


def test_real_asd_processes_end_to_end(copy_shared, tmp_path):
    from sciz.afm import export_bundles

    with pytest.warns(DataWarning, match=BLANK_28):
        stack = load_stack(copy_shared("afm/asd_sample_0.asd"))
    raw = stack.data.copy()
    run_pipeline(
        stack,
        "remove_plane; mask_mean_offset:factor=1; row_median_align; polynomial_flatten:order=2; clear; "
        "gaussian_filter:sigma=1; align_frames:max_shift=10,mode=crop",
    )
    assert stack.n_frames == 32 and np.isfinite(stack.data).all()
    assert stack.height < 200 and stack.width < 200  # cropped to the area common to all aligned frames
    # Levelling worked: each frame's background is flat compared with the raw tilt.
    levelled = stack.processed["step_4_polynomial_flatten"]
    assert np.abs(np.median(levelled, axis=(1, 2))).max() < np.abs(np.median(raw, axis=(1, 2))).max()
    with pytest.warns(DataWarning, match=r"asd_sample_0\.asd: float64 values are stored as float32 in AFM bundles"):
        written = export_bundles(stack, tmp_path, "asd", ["npz"])
    for loader, key in ((load_npz_bundle, "npz"),):
        back = loader(written[key])
        np.testing.assert_array_equal(back.data, stack.data.astype(np.float32))
        assert set(back.processed) == set(stack.processed) and set(back.masks) == set(stack.masks)
        assert [s["name"] for s in back.provenance["processing"]["steps"]][-1] == "align_frames"


def test_real_h5_jpk_video_with_the_files_own_frame_times(copy_shared, tmp_path):
    path = copy_shared("afm/sample_0.h5-jpk")
    stack = load_stack(path)
    assert stack.shape == (4, 128, 128) and stack.channel == "height_trace"
    assert stack.pixel_size_nm == pytest.approx(1.171875)
    # meta-data/start-times: frames start 3.275 s apart (AFMReader's line-rate estimate says 3.2 s).
    np.testing.assert_allclose(stack.timestamps, [0.0, 3.275, 6.55, 9.825])
    assert stack.frame_metadata[1]["start_epoch_ms"] == 1748439721823
    assert stack.frame_metadata[0]["frame_duration_s"] == pytest.approx(3.262)
    assert stack.frame_metadata[0]["line_rate"] == 40.0
    run_pipeline(stack, "remove_plane; row_median_align; gaussian_filter:sigma=1; align_frames:mode=crop")
    assert np.isfinite(stack.data).all()
    back = load_h5_bundle(save_h5_bundle(tmp_path / "jpk.h5", stack))
    np.testing.assert_array_equal(back.data, stack.data.astype(np.float32))
    assert back.timestamps.tolist() == stack.timestamps.tolist()
    phase = load_stack(path, channel="phase_retrace")
    assert phase.channel == "phase_retrace" and not np.array_equal(phase.data, stack.processed["raw"])


def test_vendor_channel_errors_name_the_file_and_the_choices(copy_shared):
    jpk = copy_shared("afm/sample_0.h5-jpk")
    with pytest.raises(FormatError, match=r"no channel 'height'; the file has error_trace, height_trace"):
        load_stack(jpk, channel="height")
    asd = copy_shared("afm/asd_sample_0.asd")
    with pytest.raises(FormatError, match=r"asd_sample_0\.asd: AFMReader could not read it .*'PH' not found"):
        load_stack(asd, channel="PH")


def test_corrupt_vendor_files_raise_format_errors(tmp_path):
    for name in ("broken.asd", "broken.gwy", "broken.h5-jpk", "broken.ibw", "broken.spm", "broken.jpk"):
        path = tmp_path / name
        path.write_bytes(b"\x00\x01not an afm file" * 3)
        with pytest.raises(FormatError, match=name.replace(".", r"\.")):
            load_stack(path)


def test_playnano_bundles(shared_data):
    for name in ("processed.npz", "processed.h5", "processed.ome.tif"):
        stack = load_stack(shared_data / "playnano" / name)
        assert stack.shape == (4, 32, 48) and stack.pixel_size_nm == 2.0
    assert "step_2_mask_threshold" in load_stack(shared_data / "playnano" / "processed.npz").masks


def test_sciz_bundles_and_pixel_size_override(tmp_path):
    data = np.arange(60, dtype=np.float32).reshape(2, 5, 6)
    stack = ImageStack(data, 3.0, "h", [{"timestamp": 0.0}, {"timestamp": 2.0}])
    path = save_npz_bundle(tmp_path / "b.npz", stack)
    assert load_stack(path).pixel_size_nm == 3.0
    assert load_stack(path, pixel_size_nm=4.5).pixel_size_nm == 4.5
    ome = save_ome_tiff_stack(tmp_path / "b.ome.tif", stack)
    back = load_stack(ome)
    assert back.timestamps.tolist() == [0.0, 2.0] and back.pixel_size_nm == pytest.approx(3.0)


def test_plain_arrays(tmp_path):
    data = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    np.save(tmp_path / "s.npy", data)
    stack = load_stack(tmp_path / "s.npy", pixel_size_nm=0.7)
    np.testing.assert_array_equal(stack.data, data)
    assert stack.pixel_size_nm == 0.7 and stack.channel == "height_trace"
    np.savez(tmp_path / "one.npz", frames=data)
    with pytest.warns(DataWarning, match=r"one\.npz: no pixel size found; using 1 nm per pixel"):
        assert load_stack(tmp_path / "one.npz").shape == (3, 4, 5)
    np.savez(tmp_path / "two.npz", a=data, b=data)
    with pytest.raises(FormatError, match=r"several arrays .* none is called 'data'"):
        load_stack(tmp_path / "two.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="never unpickle"):
        load_stack(tmp_path / "obj.npy")
    np.save(tmp_path / "flat.npy", np.zeros(7))
    with pytest.raises(FormatError, match="1-D float64"):
        load_stack(tmp_path / "flat.npy")


def test_plain_tiff_stack_with_imagej_calibration(tmp_path):
    data = np.random.default_rng(0).normal(size=(4, 16, 20)).astype(np.float32)
    path = tmp_path / "stack.tif"
    calibration = {"unit": "micron", "axes": "TYX"}
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.25, 1 / 0.25), metadata=calibration)
    stack = load_stack(path)
    np.testing.assert_array_equal(stack.data, data)
    assert stack.pixel_size_nm == pytest.approx(250.0)
    tifffile.imwrite(tmp_path / "bare.tif", data[0])
    with pytest.warns(DataWarning, match=r"bare\.tif: no pixel size found"):
        assert load_stack(tmp_path / "bare.tif").shape == (1, 16, 20)


def test_folder_of_frames_in_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (10, 2, 1):
        np.save(folder / f"frame_{i}.npy", np.full((6, 7), float(i)))
    (folder / ".hidden.npy").write_bytes(b"junk")
    (folder / "notes.txt").write_text("ignored")
    with pytest.warns(DataWarning) as said:
        stack = load_stack(folder)
    # Once for the folder, not once per file; and the frames (constant here) are blank.
    assert [str(w.message) for w in said] == [
        f"{folder}: no pixel size found in 3 of its 3 frame files; using 1 nm per pixel (give pixel_size_nm=...; "
        "on the command line sciz process --pixel-size-nm, sciz info/convert -r pixel_size_nm=...)",
        f"{folder}: 3 of 3 frames are blank (every pixel one value): frame(s) 0, 1, 2; they carry no image "
        "(align_frames:reference_frame=auto skips them as reference)",
    ]
    with pytest.warns(DataWarning, match="frames are blank") as said:
        assert load_stack(folder, pixel_size_nm=2.0).pixel_size_nm == 2.0
    assert len(said) == 1  # the pixel size was given: only the blank frames are reported
    assert stack.data[:, 0, 0].tolist() == [1.0, 2.0, 10.0]
    assert [f["source_file"] for f in stack.frame_metadata] == ["frame_1.npy", "frame_2.npy", "frame_10.npy"]
    np.save(folder / "frame_11.npy", np.zeros((5, 7)))
    with pytest.raises(FormatError, match=r"frame_11\.npy is 5x7 but frame_1\.npy is 6x7"):
        load_stack(folder)
    (folder / "frame_11.npy").unlink()
    tifffile.imwrite(folder / "frame_12.tif", np.zeros((6, 7), np.float32))
    with pytest.raises(FormatError, match="mixes frame formats"):
        load_stack(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FormatError, match="no frame files"):
        load_stack(empty)


def test_a_dataset_without_length_units_says_so(tmp_path):
    import sciz

    values = np.random.default_rng(1).normal(size=(2, 8, 9))
    sciz.save(sciz.Dataset(values), tmp_path / "plain.zspy")
    with pytest.warns(DataWarning, match=r"plain\.zspy: no pixel size found \(its last axis has no length unit\)"):
        assert load_stack(tmp_path / "plain.zspy").pixel_size_nm == 1.0
    axes = [sciz.Axis("frame"), sciz.Axis("y", scale=0.5, units="nm"), sciz.Axis("x", scale=0.5, units="nm")]
    sciz.save(sciz.Dataset(values, axes=axes), tmp_path / "calibrated.zspy")
    assert load_stack(tmp_path / "calibrated.zspy").pixel_size_nm == 0.5  # no warning (errors here)


def test_a_height_map_in_mm_says_its_heights_are_not_converted(copy_shared):
    # A TMD (heights and lengths in mm) became 14911 nm/px with heights still in mm, and the GIF's
    # colour bar then labelled 6.8e-05 mm of relief "6.757e-05 nm" without a word.
    path = copy_shared("tmd/v2_Surface.tmd")
    with pytest.warns(DataWarning, match=r"v2_Surface\.tmd: its lengths are in mm: .* height values are not"):
        stack = load_stack(path)
    assert stack.pixel_size_nm == pytest.approx(14911.24249068943)
    assert float(np.nanmax(stack.data)) < 1e-3  # the values themselves are unchanged (mm)


def test_missing_and_unknown_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_stack(tmp_path / "nothing.asd")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(FormatError, match=r"cannot read \.csv as an AFM stack"):
        load_stack(tmp_path / "x.csv")


def test_plain_tiff_with_a_forged_shape_is_refused_before_allocating(tmp_path):
    """Six 48x48 pages whose shaped description claims 10**9 frames: tifffile's series asks numpy for
    8 TiB (a MemoryError traceback from sciz process); the declared size is checked against the file first."""
    source = tmp_path / "shaped.tif"
    with tifffile.TiffWriter(source) as writer:
        for index in range(6):
            shaped = '{"shape": [1000000000, 48, 48]}' if index == 0 else None
            writer.write(np.zeros((48, 48), np.float32), description=shaped, metadata=None)
    with pytest.raises(FormatError, match=r"shape \(1000000000, 48, 48\) = 9216000000000 bytes, but the file can hold"):
        load_stack(source, pixel_size_nm=1.0)


def _two_series(path: object) -> None:
    with tifffile.TiffWriter(path) as writer:
        writer.write(np.zeros((32, 32), np.float32))
        writer.write(np.zeros((16, 16), np.float32))


@pytest.mark.parametrize(
    ("write", "why"),
    [
        (lambda p: tifffile.imwrite(p, np.zeros((3, 32, 32, 3), np.uint8), photometric="rgb"), "RGB"),
        (lambda p: tifffile.imwrite(p, np.zeros((32, 32, 3), np.uint8), photometric="rgb"), "RGB"),
        (
            lambda p: tifffile.imwrite(p, np.zeros((4, 2, 32, 32), np.float32), imagej=True, metadata={"axes": "TCYX"}),
            "2 channels",
        ),
        (
            lambda p: tifffile.imwrite(p, np.zeros((4, 3, 32, 32), np.float32), imagej=True, metadata={"axes": "TZYX"}),
            "2 frame axes",
        ),
        (_two_series, "2 image series"),
    ],
)
def test_tiffs_that_are_not_one_stack_of_height_frames_are_refused(tmp_path, write, why) -> None:  # type: ignore[no-untyped-def]
    # Found by a trial user: an RGB stack read as 3x the frames, a TCYX hyperstack's channels as
    # frames, and a second series of another size was dropped without a word.
    path = tmp_path / "odd.tif"
    write(path)
    with pytest.raises(FormatError, match=why):
        load_stack(path)


def test_an_imagej_time_stack_still_reads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    frames = np.random.default_rng(0).random((5, 32, 32)).astype(np.float32)
    tifffile.imwrite(tmp_path / "ok.tif", frames, imagej=True, metadata={"axes": "TYX"})
    assert np.array_equal(load_stack(tmp_path / "ok.tif", pixel_size_nm=2.0).data, frames)


def test_a_tiff_written_frame_by_frame_reads_every_frame(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Found by attack: tifffile's loop idiom writes one series per frame; only the first was read.
    frames = np.random.default_rng(1).random((6, 16, 24)).astype(np.float32)
    with tifffile.TiffWriter(tmp_path / "loop.tif") as writer:
        for frame in frames:
            writer.write(frame)
    assert np.array_equal(load_stack(tmp_path / "loop.tif", pixel_size_nm=1.0).data, frames)


def test_damaged_tiffs_are_format_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Found by attack: struct.error / ImcdError escaped, and empty strips of a large declared LZW
    # page were read as gigabytes of zeros.
    (tmp_path / "magic.tif").write_bytes(b"II*\0")
    tifffile.imwrite(tmp_path / "empty.tif", np.ones((64, 64), np.float32), compression="lzw")
    with tifffile.TiffFile(tmp_path / "empty.tif") as tif:
        tag = tif.pages[0].tags["StripByteCounts"]
        offset, length = tag.valueoffset, tag.valuebytecount
    raw = bytearray((tmp_path / "empty.tif").read_bytes())
    raw[offset : offset + length] = bytes(length)
    (tmp_path / "empty.tif").write_bytes(bytes(raw))
    for name in ("magic.tif", "empty.tif"):
        with pytest.raises(FormatError):
            load_stack(tmp_path / name, pixel_size_nm=1.0)


def test_a_symbolic_link_in_a_folder_of_frames_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Found by attack: a link was followed out of the folder and its file exported as a frame.
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"f{i}.npy", np.full((8, 8), i, np.float32))
    secret = tmp_path / "secret.npy"
    np.save(secret, np.full((8, 8), 42, np.float32))
    (folder / "f3.npy").symlink_to(secret)
    with pytest.raises(FormatError, match="symbolic link"):
        load_stack(folder, pixel_size_nm=1.0)


def test_many_single_page_frames_are_read_page_by_page(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Found by attack: tifffile's series detection is quadratic over many one-page series (20,000
    # pages took 86 s); past _MANY_PAGES uniform pages are read page by page, the same frames.
    from sciz.processing import inputs

    frames = np.random.default_rng(2).random((inputs._MANY_PAGES + 44, 8, 8)).astype(np.float32)
    with tifffile.TiffWriter(tmp_path / "many.tif") as writer:
        for frame in frames:
            writer.write(frame)
    seen = []
    monkeypatch.setattr(inputs, "_uniform_pages", lambda tif, real=inputs._uniform_pages: seen.append(1) or real(tif))
    assert np.array_equal(load_stack(tmp_path / "many.tif", pixel_size_nm=1.0).data, frames)
    assert seen, "read page by page"


def test_frames_of_different_types_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Found by attack: int64 (2**62+1), float32 and uint64 frames were promoted to float64 silently.
    folder = tmp_path / "frames"
    folder.mkdir()
    np.save(folder / "f0.npy", np.full((8, 8), 2**62 + 1, np.int64))
    np.save(folder / "f1.npy", np.zeros((8, 8), np.float32))
    with pytest.raises(FormatError, match="different types"):
        load_stack(folder, pixel_size_nm=1.0)
