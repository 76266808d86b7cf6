"""AFM bundles in the format registry: detection by content, sciz.load, and not hijacking generic writes."""

from __future__ import annotations

import contextlib
import os

import h5py
import numpy as np
import pytest

import sciz
from sciz.afm import ImageStack, save_h5_bundle, save_npz_bundle, save_ome_tiff_stack
from sciz.errors import FormatError, UnknownFormatError
from sciz.formats import detect_format, format_for_writing, get_format
from sciz.stack import METADATA_KEY


def small_stack() -> ImageStack:
    data = np.arange(2 * 6 * 7, dtype=np.float32).reshape(2, 6, 7)
    return ImageStack(
        data,
        0.75,
        "amplitude",
        [{"timestamp": 0.0}, {"timestamp": 2.0}],
        processed={"raw": data + 1, "step_1_zero_mean": data - data.mean()},
        masks={"step_2_mask_threshold": data > 40},
    )


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("playnano/processed.npz", "afm-npz"),
        ("playnano/processed_raw.npz", "afm-npz"),
        ("playnano/processed.h5", "afm-h5"),
        ("playnano/processed_raw.h5", "afm-h5"),
        ("playnano/processed.ome.tif", "ome-tiff"),
    ],
)
def test_real_playnano_files_are_detected_and_load(copy_shared, name, fmt):
    path = copy_shared(name)
    assert detect_format(path).name == fmt
    dataset = sciz.load(path)
    assert dataset.shape == (4, 32, 48)
    assert [a.name for a in dataset.axes] == ["time", "y", "x"]
    assert (dataset.axes[0].scale, dataset.axes[2].units, dataset.axes[2].scale) == (0.5, "nm", 2.0)
    assert dataset.metadata[METADATA_KEY]["channel"] == "height_trace"
    stack = ImageStack.from_dataset(dataset)
    assert stack.timestamps.tolist() == [0.0, 0.5, 1.0, 1.5]


def test_sciz_written_bundles_load_through_the_registry(tmp_path):
    stack = small_stack()
    for path, fmt in [
        (save_npz_bundle(tmp_path / "s.npz", stack), "afm-npz"),
        (save_h5_bundle(tmp_path / "s.h5", stack), "afm-h5"),
        (save_ome_tiff_stack(tmp_path / "s.ome.tif", stack), "ome-tiff"),
    ]:
        assert detect_format(path).name == fmt
        dataset = sciz.load(path)
        np.testing.assert_array_equal(dataset.data, stack.data)
        assert dataset.metadata[METADATA_KEY]["pixel_size_nm"] == 0.75
        if fmt != "ome-tiff":
            assert set(dataset.layers) == {"raw", "step_1_zero_mean"}
            np.testing.assert_array_equal(dataset.masks["step_2_mask_threshold"], stack.masks["step_2_mask_threshold"])


def test_generic_npz_and_hdf5_files_are_not_claimed(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, data=np.zeros((2, 3, 3)), other=np.ones(3))
    with contextlib.suppress(UnknownFormatError):
        assert detect_format(plain).name != "afm-npz"
    assert not get_format("afm-npz").sniff(plain, plain.read_bytes()[:512])
    generic = tmp_path / "plain.h5"
    with h5py.File(generic, "w") as f:
        f["data"] = np.zeros((2, 3, 3))
    assert not get_format("afm-h5").sniff(generic, generic.read_bytes()[:512])


def test_bundle_formats_do_not_take_over_generic_writes(tmp_path):
    # The bundles write (convert --to afm-npz/afm-h5) but are not generic: x.npz stays a plain NPZ.
    assert get_format("afm-npz").can_write and not get_format("afm-npz").generic
    assert format_for_writing(tmp_path / "x.npz").name == "npz"
    assert format_for_writing(tmp_path / "x.h5").name == "afm-h5"  # no generic format writes .h5
    path = sciz.save(small_stack().to_dataset(), tmp_path / "x.npz", format="afm-npz")
    assert detect_format(path).name == "afm-npz"


def test_ome_tiff_format_writes_stacks_and_refuses_what_it_cannot_hold(tmp_path):
    assert format_for_writing(tmp_path / "x.ome.tif").name == "ome-tiff"
    plain = ImageStack(np.ones((3, 4, 5), np.float32), 2.0, "h", [{"timestamp": t} for t in (0, 1, 2)])
    path = sciz.save(plain.to_dataset(), tmp_path / "x.ome.tif")
    back = ImageStack.from_dataset(sciz.load(path))
    assert back.pixel_size_nm == pytest.approx(2.0) and back.timestamps.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(FormatError, match="keeps no layers or masks"):
        sciz.save(small_stack().to_dataset(), tmp_path / "y.ome.tif")
    with pytest.raises(FormatError, match=r"shape \(2, 2, 2, 2\)"):
        sciz.save(sciz.Dataset(np.zeros((2, 2, 2, 2))), tmp_path / "z.ome.tif")


def test_ome_tiff_refuses_metadata_dtype_and_calibration_it_would_drop(tmp_path):
    # A HyperSpy signal (int32 counts, 1/nm axes with offsets, microscope metadata) used to be
    # written as a float32 stack with 1 nm pixels and none of its metadata, without a word.
    signal = sciz.Dataset(
        np.arange(2 * 16 * 16, dtype=np.int64).reshape(2, 16, 16) * 12345679,
        axes=[sciz.Axis("t"), sciz.Axis("y", "1/nm", 0.17, 131.8), sciz.Axis("x", "1/nm", 0.17, 137.1)],
        metadata={"General": {"title": "diffraction"}},
    )
    with pytest.raises(FormatError) as caught:
        sciz.save(signal, tmp_path / "x.ome.tif")
    message = str(caught.value)
    assert "metadata ['General']" in message and "dtype int64" in message and "['y', 'x']" in message
    assert not (tmp_path / "x.ome.tif").exists()
    # float64 values that float32 holds exactly still change dtype: refused, saying the values are kept;
    # nm/s calibration fits.
    exact = sciz.Dataset(
        np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 4,
        axes=[sciz.Axis("time", "s", 0.5), sciz.Axis("y", "nm", 2.0), sciz.Axis("x", "nm", 2.0)],
    )
    assert get_format("ome-tiff").problems(exact) == [
        "data of dtype float64 (OME-TIFF stores float32; the values are kept)"
    ]
    back = sciz.load(sciz.save(exact.copy(data=exact.data.astype(np.float32)), tmp_path / "exact.ome.tif"))
    assert np.array_equal(back.data, exact.data) and back.axes[2].scale == pytest.approx(2.0)


@pytest.mark.parametrize("name", ["x\x00y", "x\x01y", "x\ud800y", "tab\there", "line\nbreak"])
def test_ome_tiff_refuses_channel_names_its_xml_cannot_give_back(tmp_path, name):
    # A NUL or control character wrote a file that could not be read back, a lone surrogate escaped as
    # a raw UnicodeEncodeError, and tabs and newlines came back as spaces.
    stack = ImageStack(np.ones((2, 4, 5), np.float32), 2.0, name, [{"timestamp": t} for t in (0, 1)])
    with pytest.raises(FormatError, match="OME-XML cannot give back"):
        sciz.save(stack.to_dataset(), tmp_path / "x.ome.tif")
    assert list(tmp_path.iterdir()) == []
    fine = ImageStack(np.ones((2, 4, 5), np.float32), 2.0, "height µm", [{"timestamp": t} for t in (0, 1)])
    assert sciz.load(sciz.save(fine.to_dataset(), tmp_path / "y.ome.tif")).name == "height µm"


def _hostile_jpk(path, how):
    os.chmod(path, 0o644)
    secret = path.parent / "secret.bin"
    with h5py.File(path, "r+") as handle:
        group = handle["Measurement_000/Channel_001"]
        del group["Height"]
        if how == "external storage":
            secret.write_bytes(b"SECRET!!" * (16384 * 4 * 4 // 8))
            group.create_dataset("Height", shape=(16384, 4), dtype="i4", external=[(str(secret), 0, 16384 * 16)])
        elif how == "fifo storage":
            os.mkfifo(secret)
            group.create_dataset("Height", shape=(16384, 4), dtype="i4", external=[(str(secret), 0, 16384 * 16)])
        else:
            with h5py.File(secret, "w") as other:
                other.create_dataset("x", data=np.full((16384, 4), 7, "i4"))
            group["Height"] = h5py.ExternalLink(str(secret), "/x")


@pytest.mark.parametrize("how", ["external storage", "fifo storage", "external link"])
def test_h5_jpk_reads_nothing_outside_the_file(copy_shared, how):
    # AFMReader opens the file with plain h5py: another file's bytes came back as heights, and a FIFO
    # named as external storage blocked forever.
    path = copy_shared("afm/sample_0.h5-jpk")
    _hostile_jpk(path, how)
    with pytest.raises(FormatError, match="outside the file"):
        sciz.load(path, channel="height_trace")


@pytest.mark.parametrize(("offset", "patch"), [(685, "9d05daa1c127b43b"), (884, "569f1eb619f4917b"), (684, "ffffff7f")])
def test_damaged_h5_jpk_files_are_format_errors(copy_shared, offset, patch):
    # Mutants of the real file whose link tables are damaged raised h5py's raw RuntimeError/KeyError.
    path = copy_shared("afm/sample_0.h5-jpk")
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset : offset + len(patch) // 2] = bytes.fromhex(patch)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError):
        sciz.load(path)


def test_ome_tiff_declaring_more_planes_than_pages_is_refused_before_tifffile_builds_them(tmp_path):
    """A 6-page file whose OME-XML says SizeT=1000000000 made tifffile allocate 15 GB for 80 s (an
    entry per declared plane) before failing; it is refused at once, naming the sizes and pages."""
    import re

    import tifffile

    from sciz.afm import load_ome_tiff_stack

    stack = ImageStack(np.arange(6 * 8 * 8, dtype=np.float32).reshape(6, 8, 8), 2.0)
    source = save_ome_tiff_stack(tmp_path / "s.ome.tif", stack)
    with tifffile.TiffFile(source) as tif:
        xml = tif.pages[0].description
        data = tif.asarray()
    forged = tmp_path / "forged.ome.tif"
    for size_t in ("7", "1000000000"):  # 7 first: were the check gone, it fails before 10**9 is tried
        tifffile.imwrite(
            forged, data, description=re.sub(r'SizeT="\d+"', f'SizeT="{size_t}"', xml).encode(), metadata=None
        )
        with pytest.raises(FormatError, match=rf"SizeT={size_t} \({size_t} planes\), but the file holds 6 pages"):
            load_ome_tiff_stack(forged)
    assert load_ome_tiff_stack(source).n_frames == 6
