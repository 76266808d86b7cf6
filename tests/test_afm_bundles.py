"""AFM stack bundles: NPZ / HDF5 / OME-TIFF round trips, layouts, safety, corruption, export naming."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

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
from sciz.afm._safe_npy import read_object_string
from sciz.errors import ArgumentError, FormatError

PROVENANCE = {
    "environment": {"python_version": "3.11", "numpy_version": np.__version__},
    "processing": {
        "steps": [
            {
                "index": 1,
                "name": "remove_plane",
                "params": {},
                "step_type": "filter",
                "processed_key": "step_1_remove_plane",
            },
            {"index": 2, "name": "mask_threshold", "params": {"threshold": 0.5}, "mask_key": "step_2_mask_threshold"},
        ],
        "keys_by_name": {"remove_plane": ["step_1_remove_plane"], "mask_threshold": ["step_2_mask_threshold"]},
    },
    "analysis": {},
}


def make_stack(n: int = 5, h: int = 24, w: int = 40, *, seed: int = 1) -> ImageStack:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    raw = (0.05 * x + 0.02 * y + rng.normal(0, 0.2, (n, h, w))).astype(np.float32)
    flat = (raw - raw.mean(axis=(1, 2), keepdims=True)).astype(np.float32)
    return ImageStack(
        flat,
        pixel_size_nm=1.25,
        channel="height_trace µ",
        frame_metadata=[
            {"timestamp": 0.25 * i if i != 3 else None, "frame_pixel_size_nm": 1.25, "line_rate": 100.0}
            for i in range(n)
        ],
        processed={"raw": raw, "step_1_remove_plane": flat},
        masks={"step_2_mask_threshold": flat > 0.5},
        provenance=PROVENANCE,
        state_backups={"frame_metadata_before_edit": [{"timestamp": float(i)} for i in range(n)]},
        file_path="/data/run_07.asd",
    )


def assert_same_stack(loaded: ImageStack, stack: ImageStack, *, bundle_type: str) -> None:
    np.testing.assert_array_equal(loaded.data, stack.data)
    assert loaded.data.dtype == np.float32
    assert loaded.pixel_size_nm == stack.pixel_size_nm
    assert loaded.channel == stack.channel
    assert loaded.frame_metadata == stack.frame_metadata
    assert set(loaded.processed) == set(stack.processed)
    for key, layer in stack.processed.items():
        np.testing.assert_array_equal(loaded.processed[key], layer)
    assert set(loaded.masks) == set(stack.masks)
    for key, mask in stack.masks.items():
        assert loaded.masks[key].dtype == np.bool_
        np.testing.assert_array_equal(loaded.masks[key], mask)
    expected = dict(stack.provenance)
    assert {k: v for k, v in loaded.provenance.items() if k != "bundle"} == expected
    assert loaded.provenance["bundle"]["bundle_type"] == bundle_type
    assert loaded.provenance["bundle"]["bundle_file"] == str(loaded.file_path)


# ----- NPZ ------------------------------------------------------------------------------------
def test_npz_round_trip_keeps_everything(tmp_path):
    stack = make_stack()
    written = save_npz_bundle(tmp_path / "b.npz", stack)
    assert written == tmp_path / "b.npz"
    loaded = load_npz_bundle(str(written))
    assert_same_stack(loaded, stack, bundle_type="npz")
    assert loaded.state_backups == stack.state_backups
    np.testing.assert_array_equal(loaded.timestamps, [0.0, 0.25, 0.5, np.nan, 1.0])


def test_npz_has_playnano_layout_and_no_pickles(tmp_path):
    path = save_npz_bundle(tmp_path / "b", make_stack())  # suffix added, str-free Path accepted
    assert path.name == "b.npz"
    with np.load(path, allow_pickle=False) as npz:  # would raise on any object array
        keys = set(npz.files)
        assert npz["data"].dtype == np.float32 and npz["data"].shape == (5, 24, 40)
        assert npz["timestamps"].dtype == np.float64
        assert npz["channel"].dtype.kind == "U" and npz["channel"].shape == ()
        assert str(npz["channel"]) == "height_trace µ"
        assert float(npz["pixel_size_nm"]) == 1.25
        assert json.loads(str(npz["provenance_json"])) == PROVENANCE
        assert json.loads(str(npz["state_backups_json"]))["frame_metadata_before_edit"][2] == {"timestamp": 2.0}
        assert npz["masks__step_2_mask_threshold"].dtype == np.bool_
    assert keys == {
        "data", "timestamps", "pixel_size_nm", "channel", "frame_metadata_json", "provenance_json",
        "state_backups_json", "processed__raw", "processed__step_1_remove_plane", "masks__step_2_mask_threshold",
    }  # fmt: skip
    with zipfile.ZipFile(path) as archive:
        assert all(info.compress_type in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED) for info in archive.infolist())
        assert archive.testzip() is None


def test_npz_compresses_quantised_heights(tmp_path):
    # Heights digitised by the instrument (as in raw int16 AFM data) repeat a few float values.
    y, x = np.mgrid[0:128, 0:128]
    levels = np.round(4 * (np.sin(x / 9.0) + np.cos(y / 7.0))) / 4
    heights = np.broadcast_to(levels.astype(np.float32), (8, 128, 128)).copy()
    path = save_npz_bundle(tmp_path / "s.npz", ImageStack(heights, 1.0))
    assert path.stat().st_size < heights.nbytes / 4
    np.testing.assert_array_equal(load_npz_bundle(path).data, heights)


def test_npz_raw_export_writes_snapshot_and_backup_times(tmp_path):
    stack = make_stack()
    loaded = load_npz_bundle(save_npz_bundle(tmp_path / "raw.npz", stack, raw=True))
    np.testing.assert_array_equal(loaded.data, stack.processed["raw"])
    assert loaded.processed == {} and loaded.masks == {}
    assert [f["timestamp"] for f in loaded.frame_metadata] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_npz_reads_real_playnano_files(shared_data):
    stack = load_npz_bundle(shared_data / "playnano" / "processed.npz")
    assert stack.shape == (4, 32, 48) and stack.data.dtype == np.float32
    assert stack.pixel_size_nm == 2.0 and stack.channel == "height_trace"
    assert stack.timestamps.tolist() == [0.0, 0.5, 1.0, 1.5]
    assert sorted(stack.processed) == [
        "raw",
        "step_1_remove_plane",
        "step_3_row_median_align",
        "step_5_gaussian_filter",
    ]
    assert list(stack.masks) == ["step_2_mask_threshold"] and stack.masks["step_2_mask_threshold"].any()
    steps = stack.provenance["processing"]["steps"]
    assert [s["name"] for s in steps] == [
        "remove_plane",
        "mask_threshold",
        "row_median_align",
        "clear",
        "gaussian_filter",
    ]
    assert stack.provenance["environment"]["playnano_version"] == "0.5.0"
    assert stack.provenance["bundle"]["bundle_type"] == "npz"
    np.testing.assert_array_equal(stack.data, stack.processed["step_5_gaussian_filter"])
    raw_only = load_npz_bundle(shared_data / "playnano" / "processed_raw.npz")
    np.testing.assert_array_equal(raw_only.data, stack.processed["raw"])
    assert raw_only.processed == {}


def _npz_with(tmp_path: Path, name: str, **members: bytes) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        for key, payload in members.items():
            archive.writestr(f"{key}.npy", payload)
    return path


def _npy(array: np.ndarray, protocol: int = 4) -> bytes:
    # What numpy.save writes, with a chosen pickle protocol for object arrays.
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, np.lib.format.header_data_from_array_1_0(array))
    if array.dtype.hasobject:
        buffer.write(pickle.dumps(array, protocol=protocol))
    else:
        buffer.write(np.ascontiguousarray(array).tobytes())
    return buffer.getvalue()


def _bundle_members(**overrides: bytes) -> dict[str, bytes]:
    members = {
        "data": _npy(np.zeros((2, 3, 4), np.float32)),
        "pixel_size_nm": _npy(np.array(1.5, np.float32)),
        "channel": _npy(np.array("height", dtype=object)),
        "frame_metadata_json": _npy(np.array('[{"timestamp": 0}, {"timestamp": 1}]', dtype=object)),
        "provenance_json": _npy(np.array(b'{"processing": {"steps": []}}', dtype=object)),
    }
    members.update(overrides)
    return members


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_object_strings_read_for_every_pickle_protocol(tmp_path, protocol):
    path = _npz_with(
        tmp_path,
        "p.npz",
        **_bundle_members(
            channel=_npy(np.array("höhe", dtype=object), protocol),
            provenance_json=_npy(np.array(b'{"a": 1}', dtype=object), protocol),
        ),
    )
    stack = load_npz_bundle(path)
    assert stack.channel == "höhe" and stack.provenance["a"] == 1 and stack.pixel_size_nm == 1.5
    assert stack.timestamps.tolist() == [0.0, 1.0]


class _Opens:
    """Unpickling this would create a file (the kind of thing a hostile file could do)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_hostile_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = _npy(np.array(_Opens(str(marker)), dtype=object))
    path = _npz_with(tmp_path, "evil.npz", **_bundle_members(channel=payload))
    with pytest.raises(FormatError, match=r"evil\.npz.*channel.*names (io|builtins)\.open"):
        load_npz_bundle(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (np.array({"a": 1}, dtype=object), "opcode|dict"),
        (np.array(["a", "b"], dtype=object), r"shape \(2,\)"),
        (np.array(3.5, dtype=object), "FLOAT"),
    ],
)
def test_object_members_other_than_one_string_are_refused(tmp_path, value, why):
    path = _npz_with(tmp_path, "odd.npz", **_bundle_members(frame_metadata_json=_npy(value)))
    with pytest.raises(FormatError, match=why):
        load_npz_bundle(path)


def test_restricted_reader_refuses_raw_pickles():
    with pytest.raises(FormatError, match=r"names (os|posix)\.system"):
        read_object_string(pickle.dumps(__import__("os").system), "x")
    with pytest.raises(FormatError, match="damaged"):
        read_object_string(b"\x80\x04garbage", "x")
    assert read_object_string(_npy(np.array("ok", dtype=object))[128:], "x") == "ok"


def test_npz_missing_key_truncated_and_damaged_files(tmp_path):
    members = _bundle_members()
    del members["provenance_json"]
    with pytest.raises(FormatError, match="missing members provenance_json"):
        load_npz_bundle(_npz_with(tmp_path, "m.npz", **members))
    good = save_npz_bundle(tmp_path / "g.npz", make_stack())
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(FormatError, match=r"t\.npz"):
        load_npz_bundle(truncated)
    damaged = tmp_path / "d.npz"
    blob = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo("data.npy")
    blob[info.header_offset + 30 + len("data.npy") + 40] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    with pytest.raises(FormatError, match=r"d\.npz.*data"):
        load_npz_bundle(damaged)
    not_zip = tmp_path / "n.npz"
    not_zip.write_bytes(b"hello")
    with pytest.raises(FormatError, match="not a readable NPZ"):
        load_npz_bundle(not_zip)
    bad_json = _npz_with(tmp_path, "j.npz", **_bundle_members(provenance_json=_npy(np.array("{oops"))))
    with pytest.raises(FormatError, match=r"provenance_json.*not valid JSON"):
        load_npz_bundle(bad_json)


# ----- HDF5 -----------------------------------------------------------------------------------
def test_h5_round_trip_keeps_everything(tmp_path):
    stack = make_stack()
    written = save_h5_bundle(str(tmp_path / "b.h5"), stack)
    loaded = load_h5_bundle(written)
    assert_same_stack(loaded, stack, bundle_type="h5")
    assert loaded.state_backups == stack.state_backups


def test_h5_layout_chunks_and_compression(tmp_path):
    path = save_h5_bundle(tmp_path / "b", make_stack())
    assert path.name == "b.h5"
    with h5py.File(path, "r") as f:
        assert f.attrs["channel"] == "height_trace µ" and isinstance(f.attrs["channel"], str)
        assert f.attrs["pixel_size_nm"] == 1.25 and f.attrs["pixel_size_nm"].dtype == np.float64
        for name in ("data", "processed/raw", "processed/step_1_remove_plane", "masks/step_2_mask_threshold"):
            dataset = f[name]
            assert dataset.chunks is not None and dataset.compression == "gzip", name
        assert f["data"].shuffle and f["data"].dtype == np.float32
        assert f["masks/step_2_mask_threshold"].dtype == np.bool_
        assert np.isnan(f["timestamps"][3]) and f["timestamps"][1] == 0.25
        assert json.loads(f["provenance_json"][()].decode("utf-8")) == PROVENANCE
        assert json.loads(f["frame_metadata_json"][()].decode("utf-8"))[3]["timestamp"] is None
        assert "state_backups_json" in f


def test_h5_groups_exist_and_backups_only_when_present(tmp_path):
    bare = ImageStack(np.ones((2, 3, 3), np.float32), 3.0)
    path = save_h5_bundle(tmp_path / "bare.h5", bare)
    with h5py.File(path, "r") as f:
        assert len(f["processed"]) == 0 and len(f["masks"]) == 0
        assert "state_backups_json" not in f
    loaded = load_h5_bundle(path)
    assert loaded.processed == {} and loaded.state_backups == {} and loaded.pixel_size_nm == 3.0


@pytest.mark.parametrize("shape", [(3, 700, 500), (7, 300, 300), (1, 1, 1), (4, 2000, 3)])
def test_h5_chunk_edges_round_trip_exactly(tmp_path, shape):
    data = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    data.reshape(-1)[::97] = np.nan
    loaded = load_h5_bundle(save_h5_bundle(tmp_path / "e.h5", ImageStack(data, 1.0)))
    np.testing.assert_array_equal(loaded.data, data)


def test_h5_raw_export(tmp_path):
    stack = make_stack()
    loaded = load_h5_bundle(save_h5_bundle(tmp_path / "r.h5", stack, raw=True))
    np.testing.assert_array_equal(loaded.data, stack.processed["raw"])
    assert loaded.processed == {} and loaded.masks == {}
    assert loaded.timestamps.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(("codec", "filter_id"), [("sz3", 32024), ("zfp", 32013)])
def test_h5_lossy_codec_keeps_bound_and_uses_registered_filter(tmp_path, codec, filter_id):
    stack = make_stack(h=64, w=64)
    path = save_h5_bundle(tmp_path / "c.h5", stack, codec=codec, tolerance=1e-3)
    import hdf5plugin  # noqa: F401  # what any other reader of the file does

    with h5py.File(path, "r") as f:
        plist = f["data"].id.get_create_plist()
        ids = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        assert filter_id in ids
        assert json.loads(f["data"].attrs["sciz_codec"])["id"] == codec
        assert f["masks/step_2_mask_threshold"].compression == "gzip"  # masks stay lossless
        direct = f["data"][()]
    loaded = load_h5_bundle(path)
    np.testing.assert_array_equal(loaded.data, direct)
    assert np.max(np.abs(loaded.data.astype(np.float64) - stack.data)) <= 1e-3
    assert np.max(np.abs(loaded.processed["raw"].astype(np.float64) - stack.processed["raw"])) <= 1e-3
    np.testing.assert_array_equal(loaded.masks["step_2_mask_threshold"], stack.masks["step_2_mask_threshold"])


def test_h5_codec_object_and_argument_errors(tmp_path):
    from sciz import codecs

    stack = make_stack(n=2)
    loaded = load_h5_bundle(save_h5_bundle(tmp_path / "o.h5", stack, codec=codecs.get("sz3", tolerance=1e-2)))
    assert np.max(np.abs(loaded.data.astype(np.float64) - stack.data)) <= 1e-2
    with pytest.raises(ArgumentError, match="no registered HDF5 filter"):
        save_h5_bundle(tmp_path / "l.h5", stack, codec="lerc", tolerance=1e-3)
    with pytest.raises(ArgumentError, match="tolerance"):
        save_h5_bundle(tmp_path / "t.h5", stack, tolerance=1e-3)
    with pytest.raises(ArgumentError, match="compression_level"):
        save_h5_bundle(tmp_path / "t.h5", stack, compression_level=12)
    for level in (2, 9):
        fixed = save_h5_bundle(tmp_path / f"level{level}.h5", stack, compression_level=level)
        with h5py.File(fixed, "r") as f:
            assert f["data"].compression_opts == level
        np.testing.assert_array_equal(load_h5_bundle(fixed).data, stack.data)
    with pytest.raises(ArgumentError, match="codec"):
        save_h5_bundle(tmp_path / "t.h5", stack, codec=3.0)
    assert not list(tmp_path.glob("t.h5*")) and not list(tmp_path.glob("l.h5*"))


def test_h5_reads_real_playnano_files(shared_data):
    stack = load_h5_bundle(shared_data / "playnano" / "processed.h5")
    reference = load_npz_bundle(shared_data / "playnano" / "processed.npz")
    np.testing.assert_array_equal(stack.data, reference.data)
    for key in reference.processed:
        np.testing.assert_array_equal(stack.processed[key], reference.processed[key])
    np.testing.assert_array_equal(stack.masks["step_2_mask_threshold"], reference.masks["step_2_mask_threshold"])
    assert stack.frame_metadata == reference.frame_metadata
    assert stack.provenance["processing"] == reference.provenance["processing"]
    assert stack.channel == "height_trace" and stack.provenance["bundle"]["bundle_type"] == "h5"
    raw_only = load_h5_bundle(shared_data / "playnano" / "processed_raw.h5")
    np.testing.assert_array_equal(raw_only.data, reference.processed["raw"])


def test_h5_bytes_channel_and_vlen_json_load(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((2, 2, 2), np.float32)
        f.attrs["pixel_size_nm"] = 0.5
        f.attrs["channel"] = np.bytes_(b"phase")
        f["frame_metadata_json"] = '[{"timestamp": 1.0}, {"timestamp": 2.0}]'
        f["provenance_json"] = "{}"
    stack = load_h5_bundle(path)
    assert stack.channel == "phase" and stack.timestamps.tolist() == [1.0, 2.0]


def test_h5_damaged_and_foreign_files(tmp_path):
    good = save_h5_bundle(tmp_path / "g.h5", make_stack())
    truncated = tmp_path / "t.h5"
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(FormatError, match=r"t\.h5"):
        load_h5_bundle(truncated)
    foreign = tmp_path / "f.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(FormatError, match="no /data"):
        load_h5_bundle(foreign)
    with pytest.raises(FileNotFoundError):
        load_h5_bundle(tmp_path / "missing.h5")


# ----- OME-TIFF -------------------------------------------------------------------------------
def test_ome_tiff_round_trip_and_metadata(tmp_path):
    stack = make_stack()
    path = save_ome_tiff_stack(tmp_path / "s.ome.tif", stack)
    loaded = load_ome_tiff_stack(str(path))
    np.testing.assert_array_equal(loaded.data, stack.data)
    assert loaded.pixel_size_nm == pytest.approx(1.25) and loaded.channel == "height_trace µ"
    assert loaded.frame_metadata == stack.frame_metadata
    assert {k: v for k, v in loaded.provenance.items() if k != "bundle"} == PROVENANCE
    assert loaded.processed == {} and loaded.masks == {}
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and len(tif.pages) == 5
        page = tif.pages[0]
        assert page.dtype == np.float32 and page.photometric == tifffile.PHOTOMETRIC.MINISBLACK
        assert json.loads(page.tags[65000].value.decode()) == PROVENANCE
        assert json.loads(page.tags[65001].value.decode()) == ["raw", "step_1_remove_plane"]
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.INCH
        x_resolution = page.tags["XResolution"].value
        assert x_resolution[0] / x_resolution[1] == pytest.approx(25_400_000 / 1.25, rel=1e-6)
        np.testing.assert_array_equal(tif.asarray().reshape(5, 24, 40), stack.data)


def test_ome_tiff_validates_against_the_ome_schema(tmp_path):
    import ome_types

    path = save_ome_tiff_stack(tmp_path / "v.ome.tif", make_stack())
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    ome = ome_types.from_xml(xml, validate=True)
    pixels = ome.images[0].pixels
    assert pixels.physical_size_x == pytest.approx(1.25e-3) and pixels.physical_size_x_unit.value == "µm"
    assert pixels.physical_size_y == pytest.approx(1.25e-3)
    assert (pixels.size_t, pixels.size_c, pixels.size_z) == (5, 1, 1)
    assert pixels.channels[0].name == "height_trace µ"
    deltas = {plane.the_t: plane.delta_t for plane in pixels.planes}
    assert deltas == {0: 0.0, 1: 0.25, 2: 0.5, 3: None, 4: 1.0}


def test_single_frame_ome_tiff_round_trips(tmp_path):
    one = ImageStack(np.arange(20, dtype=np.float32).reshape(1, 4, 5), 0.5, "z", [{"timestamp": 3.0}])
    path = save_ome_tiff_stack(tmp_path / "one", one)
    assert path.name == "one.ome.tif"
    loaded = load_ome_tiff_stack(path)
    assert loaded.shape == (1, 4, 5) and loaded.timestamps.tolist() == [3.0]
    np.testing.assert_array_equal(loaded.data, one.data)
    with tifffile.TiffFile(path) as tif:  # OME, and a 5-D array (not squeezed to 2-D) for playNano's loader
        assert tif.is_ome and tif.asarray().shape == (1, 1, 1, 4, 5)


def test_ome_tiff_reads_real_playnano_file_and_generic_ome(tmp_path, shared_data):
    stack = load_ome_tiff_stack(shared_data / "playnano" / "processed.ome.tif")
    reference = load_npz_bundle(shared_data / "playnano" / "processed.npz")
    np.testing.assert_array_equal(stack.data, reference.data)
    assert stack.timestamps.tolist() == [0.0, 0.5, 1.0, 1.5] and stack.pixel_size_nm == pytest.approx(2.0)
    assert stack.provenance["processing"]["steps"][0]["name"] == "remove_plane"
    generic = tmp_path / "generic.ome.tif"
    tifffile.imwrite(generic, np.ones((3, 6, 7), np.uint16), ome=True, metadata={"axes": "ZYX"})
    loaded = load_ome_tiff_stack(generic, channel="fallback")
    assert loaded.shape == (3, 6, 7) and loaded.channel == "fallback" and loaded.pixel_size_nm == 1.0
    multichannel = tmp_path / "c.ome.tif"
    tifffile.imwrite(multichannel, np.ones((2, 3, 6, 7), np.uint8), ome=True, metadata={"axes": "TCYX"})
    with pytest.raises(FormatError, match="T=2, C=3"):
        load_ome_tiff_stack(multichannel)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.ones((6, 7), np.uint8))
    with pytest.raises(FormatError, match="not an OME-TIFF"):
        load_ome_tiff_stack(plain)


def test_ome_tiff_compression_and_raw(tmp_path):
    stack = make_stack()
    path = save_ome_tiff_stack(tmp_path / "z.ome.tif", stack, raw=True, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    loaded = load_ome_tiff_stack(path)
    np.testing.assert_array_equal(loaded.data, stack.processed["raw"])
    assert loaded.timestamps.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


# ----- export_bundles and stack coercion ----------------------------------------------------------
def test_export_bundles_names_like_playnano(tmp_path):
    stack = make_stack()
    written = export_bundles(
        afm_stack=stack, output_folder=tmp_path / "out", base_name="my_stack", formats=["tif", "npz", "hdf5"]
    )
    assert {k: p.name for k, p in written.items()} == {
        "tif": "my_stack_filtered.ome.tif",
        "npz": "my_stack_filtered.npz",
        "h5": "my_stack_filtered.h5",
    }
    assert all(p.exists() for p in written.values())
    raw = export_bundles(stack, str(tmp_path / "out"), None, "npz, h5", raw=True)
    assert {p.name for p in raw.values()} == {"run_07.npz", "run_07.h5"}
    np.testing.assert_array_equal(load_h5_bundle(raw["h5"]).data, stack.processed["raw"])
    unprocessed = ImageStack(np.zeros((2, 3, 3), np.float32), processed={"raw": np.zeros((2, 3, 3))})
    assert export_bundles(unprocessed, tmp_path, "plain", ["npz"])["npz"].name == "plain.npz"


@pytest.mark.parametrize("formats", [["gif"], "tif,png", [], [3]])
def test_export_bundles_rejects_unknown_formats(tmp_path, formats):
    with pytest.raises(ArgumentError, match="formats"):
        export_bundles(make_stack(), tmp_path, "x", formats)


def test_playnano_like_objects_and_arrays_are_accepted(tmp_path):
    class Like:
        def __init__(self) -> None:
            self.data = np.ones((2, 3, 4))
            self.pixel_size_nm = 2
            self.channel = "h"
            self.frame_metadata = [{"timestamp": 0.0}, {"timestamp": 1.0}]
            self.processed = {"raw": np.zeros((2, 3, 4))}
            self.masks = {}
            self.provenance = {"processing": {"steps": []}}
            self.state_backups = {}
            self.file_path = Path("/x/y.jpk")

    loaded = load_npz_bundle(save_npz_bundle(tmp_path / "like.npz", Like()))
    assert loaded.pixel_size_nm == 2.0 and loaded.processed["raw"].dtype == np.float32
    assert load_h5_bundle(save_h5_bundle(tmp_path / "arr.h5", np.zeros((3, 3)))).shape == (1, 3, 3)
    with pytest.raises(ArgumentError, match="stack"):
        save_npz_bundle(tmp_path / "bad.npz", "not a stack")
    with pytest.raises(ArgumentError, match="path"):
        save_npz_bundle(3, make_stack())


# ----- compression planning, sharing and the ZIP layout -------------------------------------------
def quantised_stack(n: int = 8, size: int = 256) -> ImageStack:
    """Digitised heights (like 16-bit instrument data), then a float processing of them."""
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:size, 0:size]
    heights = 0.004 * x + 0.002 * y + 2.0 * np.sin(x / 17.0) + rng.normal(0, 0.05, (n, size, size))
    raw = (np.round(heights / 0.01) * 0.01).astype(np.float32)
    # A filter's output takes continuous values (here: the digitised heights plus a little drift).
    smooth = (raw - raw.mean() + rng.normal(0, 0.003, raw.shape)).astype(np.float32)
    return ImageStack(smooth, 1.0, processed={"raw": raw, "step_1_scaled": smooth.copy()})


def test_npz_is_no_larger_than_numpy_savez_compressed(tmp_path):
    stack = quantised_stack()
    ours = save_npz_bundle(tmp_path / "ours.npz", stack)
    reference = tmp_path / "numpy.npz"
    np.savez_compressed(reference, data=stack.data, **{f"processed__{k}": v for k, v in stack.processed.items()})
    assert ours.stat().st_size <= reference.stat().st_size * 1.005  # + our few metadata members
    loaded = load_npz_bundle(ours)
    np.testing.assert_array_equal(loaded.processed["raw"], stack.processed["raw"])
    np.testing.assert_array_equal(loaded.data, stack.data)


def test_npz_levels_selectable(tmp_path):
    stack = quantised_stack(n=4)
    automatic = save_npz_bundle(tmp_path / "a.npz", stack)
    stored = save_npz_bundle(tmp_path / "s.npz", stack, compression_level=0)
    fast = save_npz_bundle(tmp_path / "f.npz", stack, compression_level=1)
    with zipfile.ZipFile(stored) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    assert automatic.stat().st_size < 0.8 * stored.stat().st_size
    for path in (automatic, stored, fast):
        np.testing.assert_array_equal(load_npz_bundle(path).data, stack.data)
    with pytest.raises(ArgumentError, match="compression_level"):
        save_npz_bundle(tmp_path / "d.npz", stack, compression_level=10)


def test_plan_keeps_total_within_reference():
    from sciz.afm._plan import Estimate, plan

    costs = {1: 1.0, 4: 2.0, 7: 5.0}
    easy = Estimate(reference=100.0, sizes={1: 90.0, 4: 85.0, 7: 84.0})
    hard = Estimate(reference=100.0, sizes={1: 112.0, 4: 101.0, 7: 99.0})
    assert plan([easy, hard, None], costs, 6) == [1, 4, 6]  # 90 + 101 <= 200: the cheapest that fits
    assert plan([easy, hard], costs, 6, margin=0.05) == [4, 4]  # best bytes per work first: 85 + 101 <= 190
    assert plan([hard], costs, 6) == [7]
    worse = Estimate(reference=10.0, sizes={1: 12.0, 4: 12.0, 7: 11.0})
    assert plan([worse], costs, 6) == [7]  # cannot reach the reference: strongest that helps


def test_h5_equal_layers_are_stored_once_as_hard_links(tmp_path):
    stack = quantised_stack(n=4)
    assert stack.processed["step_1_scaled"] is not stack.data
    path = save_h5_bundle(tmp_path / "l.h5", stack)
    with h5py.File(path, "r") as f:
        assert f["data"].id == f["processed/step_1_scaled"].id  # one dataset, two names
        assert f["data"].chunks == (4, 128, 128)
        assert f["processed/raw"].shuffle is False  # digitised heights deflate better unshuffled
        assert f["data"].shuffle is True  # float processing results deflate better shuffled
    loaded = load_h5_bundle(path)
    np.testing.assert_array_equal(loaded.processed["step_1_scaled"], stack.data)
    reference = tmp_path / "h5py.h5"
    with h5py.File(reference, "w") as f:  # what playNano writes: gzip (level 4) of each array
        for name, array in [("data", stack.data), *((f"processed/{k}", v) for k, v in stack.processed.items())]:
            f.create_dataset(name, data=array, compression="gzip")
    assert path.stat().st_size <= reference.stat().st_size


def test_h5_parallel_chunk_reader_matches_h5py_and_falls_back(tmp_path):
    from sciz.formats import _hdf5

    rng = np.random.default_rng(9)
    data = rng.normal(size=(5, 70, 90)).astype(np.float32)
    path = tmp_path / "mixed.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("gzip", data=data, chunks=(2, 32, 32), compression="gzip")
        f.create_dataset("shuffled", data=data, chunks=(3, 64, 50), compression="gzip", shuffle=True)
        f.create_dataset("lzf", data=data, chunks=(2, 32, 32), compression="lzf")
        f.create_dataset("sparse", shape=(4, 40, 40), dtype=np.float32, chunks=(1, 20, 20), compression="gzip")
        f["sparse"][1, :20, :20] = 7.0
        f.create_dataset("mask", data=data > 0, chunks=(5, 70, 90), compression="gzip")
    with h5py.File(path, "r") as f:
        for name in ("gzip", "shuffled", "sparse", "mask"):
            assert _hdf5.chunk_plan(f[name], name) is not None  # decoded by sciz on all cores
            fast = _hdf5.read_dataset(f[name])
            assert fast.dtype == f[name].dtype
            np.testing.assert_array_equal(fast, f[name][()])
            region = (slice(1, 3), slice(5, 39), slice(0, 33))
            np.testing.assert_array_equal(_hdf5.read_dataset(f[name], region), f[name][region])
        assert _hdf5.chunk_plan(f["lzf"], "lzf") is None  # not shuffle/deflate: h5py reads it
        np.testing.assert_array_equal(_hdf5.read_dataset(f["lzf"]), data)


def test_h5_corrupt_chunk_is_a_clear_error(tmp_path):
    path = save_h5_bundle(tmp_path / "c.h5", make_stack())
    with h5py.File(path, "r") as f:
        info = f["data"].id.get_chunk_info(0)
    blob = bytearray(path.read_bytes())
    blob[info.byte_offset + 10 : info.byte_offset + 30] = b"\xff" * 20
    path.write_bytes(bytes(blob))
    with pytest.raises(FormatError, match=r"c\.h5.*/data chunk"):
        load_h5_bundle(path)


def test_h5_hard_linked_layers_load_as_independent_arrays(tmp_path):
    stack = quantised_stack(n=2, size=64)
    loaded = load_h5_bundle(save_h5_bundle(tmp_path / "i.h5", stack))
    assert loaded.processed["step_1_scaled"] is not loaded.data
    loaded.data[0, 0, 0] += 1
    assert loaded.processed["step_1_scaled"][0, 0, 0] == stack.data[0, 0, 0]


def test_npz_members_in_other_zip_methods_read_too(tmp_path):
    path = tmp_path / "bz.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as archive:
        for key, payload in _bundle_members().items():
            archive.writestr(f"{key}.npy", payload)
    stack = load_npz_bundle(path)
    assert stack.shape == (2, 3, 4) and stack.channel == "height"
