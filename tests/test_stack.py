"""Tests of the AFM image-stack model: validation, timestamp normalisation, Dataset round trips."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from sciz import Axis, Dataset
from sciz.errors import ArgumentError
from sciz.stack import METADATA_KEY, ImageStack, default_provenance, normalize_timestamp


def make_stack(n: int = 4, h: int = 6, w: int = 5) -> ImageStack:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, h, w)).astype(np.float32)
    return ImageStack(
        data,
        pixel_size_nm=2.5,
        channel="height_trace",
        frame_metadata=[{"timestamp": 0.5 * i, "frame_pixel_size_nm": 2.5} for i in range(n)],
        processed={"raw": data.copy(), "step_1_remove_plane": data - 1},
        masks={"step_2_mask_threshold": data > 0},
        provenance={
            "environment": {"python": "3"},
            "processing": {
                "steps": [{"index": 1, "name": "remove_plane", "params": {}, "processed_key": "step_1_remove_plane"}],
                "keys_by_name": {"remove_plane": ["step_1_remove_plane"]},
            },
            "analysis": {},
        },
        state_backups={"frame_metadata_before_edit": [{"timestamp": 0.0}] * n},
        file_path="/tmp/example.asd",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1.0),
        (2.5, 2.5),
        (np.float32(0.25), 0.25),
        (np.int64(7), 7.0),
        (np.array(3.0), 3.0),
        ("4.5", 4.5),
        ("1970-01-01T00:01:00Z", 60.0),
        ("1970-01-01T01:00:00+01:00", 0.0),
        ("1970-01-01T00:00:02", 2.0),  # naive: taken as UTC
        (dt.datetime(1970, 1, 1, 0, 0, 3, tzinfo=dt.UTC), 3.0),
        (dt.datetime(2024, 5, 1, 12, 0, 0), 1714564800.0),
        (dt.timedelta(milliseconds=1500), 1.5),
        (np.datetime64("1970-01-01T00:00:05.5"), 5.5),
        (np.timedelta64(250, "ms"), 0.25),
        (None, None),
        (float("nan"), None),
        (np.datetime64("NaT"), None),
    ],
)
def test_normalize_timestamp_accepts_every_documented_kind(value, expected):
    result = normalize_timestamp(value)
    assert result == expected
    assert result is None or type(result) is float


@pytest.mark.parametrize("value", ["yesterday", True, [1.0], float("inf"), object()])
def test_normalize_timestamp_rejects_with_the_name(value):
    with pytest.raises(ArgumentError, match=r"frame_metadata\[1\]\['timestamp'\]"):
        ImageStack(np.zeros((2, 3, 3)), frame_metadata=[{}, {"timestamp": value}])


def test_frame_metadata_is_normalised_and_copied():
    given = [{"timestamp": "1970-01-01T00:00:10Z", "line_rate": 10.0}, {"timestamp": np.float64(11)}, {}]
    stack = ImageStack(np.zeros((3, 2, 2)), frame_metadata=given)
    assert stack.frame_metadata[0] == {"timestamp": 10.0, "line_rate": 10.0}
    assert given[0]["timestamp"] == "1970-01-01T00:00:10Z"  # the caller's dicts are untouched
    np.testing.assert_array_equal(stack.timestamps, [10.0, 11.0, np.nan])
    assert stack.timestamps.dtype == np.float64
    np.testing.assert_array_equal(stack.frame_times(), [10.0, 11.0, 2.0])


def test_properties_and_defaults():
    stack = ImageStack(np.ones((5, 3, 4), np.float32))
    assert (stack.n_frames, stack.image_shape, stack.shape, len(stack)) == (5, (3, 4), (5, 3, 4), 5)
    assert stack.pixel_size_nm == 1.0 and stack.channel == "height_trace"
    assert stack.frame_metadata == [{}] * 5
    assert np.isnan(stack.timestamps).all()
    assert stack.provenance == default_provenance()
    assert stack.processed == {} and stack.masks == {} and stack.state_backups == {}
    assert stack.file_path is None
    assert "5 frames x 3x4" in repr(stack)


def test_single_2d_frame_becomes_one_frame():
    stack = ImageStack(np.zeros((3, 4)), pixel_size_nm=1)
    assert stack.shape == (1, 3, 4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"data": np.zeros((2, 2, 2, 2))}, "data"),
        ({"data": np.zeros(3)}, "data"),
        ({"pixel_size_nm": 0}, "pixel_size_nm"),
        ({"pixel_size_nm": -1.0}, "pixel_size_nm"),
        ({"pixel_size_nm": float("nan")}, "pixel_size_nm"),
        ({"pixel_size_nm": "2"}, "pixel_size_nm"),
        ({"channel": 3}, "channel"),
        ({"frame_metadata": [{}]}, "frame_metadata"),
        ({"frame_metadata": [{}, 5]}, r"frame_metadata\[1\]"),
        ({"masks": {"m": np.zeros((2, 3, 3))}}, r"masks\['m'\]"),
        ({"processed": {"a/b": np.zeros((2, 3, 3))}}, "processed key"),
        ({"processed": {"x": np.zeros((3, 3, 3, 3))}}, r"processed\['x'\]"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    args = {"data": np.zeros((2, 3, 3))}
    args.update(kwargs)
    with pytest.raises(ArgumentError, match=name):
        ImageStack(**args)


def test_to_dataset_and_back_keeps_everything():
    stack = make_stack()
    ds = stack.to_dataset()
    assert isinstance(ds, Dataset)
    assert ds.data is stack.data
    assert [a.name for a in ds.axes] == ["time", "y", "x"]
    assert (ds.axes[0].units, ds.axes[0].scale, ds.axes[0].offset) == ("s", 0.5, 0.0)
    assert (ds.axes[2].units, ds.axes[2].scale) == ("nm", 2.5)
    assert set(ds.layers) == {"raw", "step_1_remove_plane"}
    assert set(ds.masks) == {"step_2_mask_threshold"}
    assert ds.provenance[0]["name"] == "remove_plane"
    assert ds.metadata[METADATA_KEY]["channel"] == "height_trace"
    assert ds.source == str(Path("/tmp/example.asd"))

    back = ImageStack.from_dataset(ds)
    assert back.pixel_size_nm == 2.5 and back.channel == "height_trace"
    assert back.frame_metadata == stack.frame_metadata
    assert back.provenance == stack.provenance
    assert back.state_backups == stack.state_backups
    assert back.file_path == stack.file_path
    for key in stack.processed:
        np.testing.assert_array_equal(back.processed[key], stack.processed[key])
    np.testing.assert_array_equal(back.masks["step_2_mask_threshold"], stack.masks["step_2_mask_threshold"])


def test_to_dataset_metadata_is_encodable_exactly():
    from sciz.metadata import decode, encode

    ds = make_stack().to_dataset()
    assert decode(encode(ds.metadata)) == ds.metadata


def test_uneven_or_unknown_times_give_a_frame_axis():
    stack = ImageStack(np.zeros((3, 2, 2)), frame_metadata=[{"timestamp": t} for t in (0.0, 1.0, 3.0)])
    assert stack.to_dataset().axes[0].name == "frame"
    stack = ImageStack(np.zeros((3, 2, 2)))
    assert stack.to_dataset().axes[0].units == ""


def test_from_generic_dataset_uses_axis_units():
    ds = Dataset(
        np.zeros((3, 4, 4), np.float32),
        axes=[Axis("t", "ms", 40.0, 0.0), Axis("y", "µm", 0.002), Axis("x", "µm", 0.002)],
        name="Height",
    )
    stack = ImageStack.from_dataset(ds)
    assert stack.pixel_size_nm == pytest.approx(2.0)
    np.testing.assert_allclose(stack.timestamps, [0.0, 0.04, 0.08])
    assert stack.channel == "Height"
    plain = ImageStack.from_dataset(Dataset(np.zeros((4, 4))))
    assert plain.pixel_size_nm == 1.0 and plain.shape == (1, 4, 4)
    assert ImageStack.from_dataset(Dataset(np.zeros((4, 4))), pixel_size_nm=3.0).pixel_size_nm == 3.0
    with pytest.raises(ArgumentError, match="dataset"):
        ImageStack.from_dataset(Dataset(np.zeros((2, 2, 2, 2))))
    with pytest.raises(ArgumentError, match="dataset"):
        ImageStack.from_dataset(np.zeros((2, 2, 2)))  # type: ignore[arg-type]


def test_copy_shallow_and_deep():
    stack = make_stack()
    shallow = stack.copy()
    assert shallow.data is stack.data
    shallow.frame_metadata[0]["timestamp"] = 99.0
    shallow.provenance["processing"]["steps"].append({"name": "x"})
    assert stack.frame_metadata[0]["timestamp"] == 0.0
    assert len(stack.provenance["processing"]["steps"]) == 1
    deep = stack.copy(deep=True)
    assert deep.data is not stack.data and deep.processed["raw"] is not stack.processed["raw"]
    deep.data[0, 0, 0] = 1234.0
    assert stack.data[0, 0, 0] != 1234.0


def test_export_view_raw_uses_snapshot_and_backup_metadata():
    stack = make_stack()
    data, frames = stack.export_view(raw=False)
    assert data is stack.data and frames is stack.frame_metadata
    data, frames = stack.export_view(raw=True)
    assert data is stack.processed["raw"]
    assert [f["timestamp"] for f in frames] == [0.0] * 4
    bare = ImageStack(np.zeros((2, 2, 2)))
    assert bare.export_view(raw=True)[0] is bare.data


def test_data_setter_validates():
    stack = make_stack()
    with pytest.raises(ArgumentError, match="data"):
        stack.data = np.zeros(4)
    with pytest.raises(ArgumentError, match="frame_metadata"):
        stack.data = np.zeros((2, 3, 3))
        stack.validate()
