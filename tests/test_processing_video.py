"""Video steps (drift correction, cropping, NaN filling) and frame edits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from sciz.errors import ArgumentError
from sciz.processing import (
    ProcessingError,
    align_frames,
    crop_square,
    drop_final_frames,
    drop_frame_range,
    drop_frames,
    intersection_crop,
    replace_nan,
    select_frames,
)

RNG = np.random.default_rng(5)


def drifting(shifts: list[tuple[int, int]], size: int = 48, margin: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Frames cut from one textured scene at the given (dy, dx) offsets, and the scene."""
    scene = ndimage.gaussian_filter(RNG.normal(size=(size + 2 * margin, size + 2 * margin)), 1.5)
    frames = np.stack([scene[margin + dy : margin + dy + size, margin + dx : margin + dx + size] for dy, dx in shifts])
    return frames, scene


def test_align_frames_recovers_known_drift():
    offsets = [(0, 0), (2, -3), (4, -5), (-1, 6), (3, 3)]
    frames, _ = drifting(offsets)
    aligned, meta = align_frames(frames)
    # The content at (y, x) in frame i sits at (y + dy, x + dx) of the scene: moving the frame
    # by +offset puts it onto the reference.
    assert meta["shifts"] == [[dy, dx] for dy, dx in offsets]
    assert meta["aligned_shape"] == [48 + 5, 48 + 11]
    assert aligned.shape == (5, 53, 59)
    json.dumps(meta)  # provenance-ready
    # Every aligned frame agrees with the reference wherever both have data.
    both = np.isfinite(aligned).all(axis=0)
    for i in range(1, 5):
        np.testing.assert_allclose(aligned[i][both], aligned[0][both])


def test_align_frames_crop_keeps_only_the_common_area():
    frames, _ = drifting([(0, 0), (3, -2), (5, 4)])
    cropped, meta = align_frames(frames, mode="crop")
    assert np.isfinite(cropped).all()
    assert cropped.shape == (3, 48 - 5, 48 - 6)
    assert meta["crop"]["bounds"] == [5, 48, 6, 48]  # canvas x runs from the smallest shift (-2)
    square, meta = align_frames(frames, mode="crop_square")
    assert square.shape == (3, 42, 42) and np.isfinite(square).all()


def test_align_frames_options():
    frames, _ = drifting([(0, 0), (6, 0), (6, 1)])
    _, meta = align_frames(frames, max_shift=3)
    assert all(abs(v) <= 3 for shift in meta["shifts"] for v in shift)
    _, meta = align_frames(frames, reference_frame=-1, pre_filter_sigma=1.0)
    assert meta["reference_frame"] == 2 and meta["shifts"][2] == [0, 0]
    assert meta["shifts"][0] == [-6, -1]
    _, meta = align_frames(frames, max_jump=2)
    assert meta["shifts"][1] == [2, 0]  # 6 px in one step is clipped to the allowed jump


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"mode": "wrap"}, "mode"), ({"reference_frame": 9}, "reference_frame"), ({"max_shift": -1}, "max_shift")],
)
def test_align_frames_rejects_bad_arguments(kwargs, name):
    frames, _ = drifting([(0, 0), (1, 1)])
    with pytest.raises(ArgumentError, match=name):
        align_frames(frames, **kwargs)


def test_align_frames_refuses_nan_and_names_the_frame():
    frames, _ = drifting([(0, 0), (1, 1), (2, 2)])
    frames[2, 0, 0] = np.nan
    with pytest.raises(ProcessingError, match="frame 2: has NaN"):
        align_frames(frames)


def test_intersection_crop_with_padding():
    stack = np.full((2, 10, 12), np.nan)
    stack[0, 2:9, 1:11] = 1.0
    stack[1, 3:10, 0:10] = 2.0
    cropped, meta = intersection_crop(stack)
    assert meta["bounds"] == [3, 9, 1, 10] and cropped.shape == (2, 6, 9) and np.isfinite(cropped).all()
    padded, meta = intersection_crop(stack, pad=(1, 2))
    assert padded.shape == (2, 8, 13)
    assert np.isnan(padded[:, :, 0]).all()  # beyond the data on the left (x0 - 2 < 0)
    with pytest.raises(ArgumentError, match="pad"):
        intersection_crop(stack, pad=-1)
    with pytest.raises(ProcessingError, match="no pixel is finite in every frame"):
        intersection_crop(np.full((2, 3, 3), np.nan))


def test_crop_square_is_centred():
    stack = np.ones((1, 10, 16))
    cropped, meta = crop_square(stack)
    assert cropped.shape == (1, 10, 10) and meta["bounds"] == [0, 10, 3, 13]


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("zero", None, [0.0, 0.0]), ("constant", -7.0, [-7.0, -7.0]), ("mean", None, [2.0, 11.0])],
)
def test_replace_nan_modes(mode, value, expected):
    stack = np.array([[[1.0, np.nan], [3.0, 2.0]], [[10.0, 12.0], [np.nan, 11.0]]])
    out, meta = replace_nan(stack, mode=mode, value=value)
    assert out[0, 0, 1] == expected[0] and out[1, 1, 0] == expected[1]
    assert meta["nans_filled"] == 2 and not np.isnan(out).any()
    assert np.isnan(stack).sum() == 2  # the input is not modified


def test_replace_nan_median_and_global_mean():
    stack = np.array([[[1.0, np.nan, 5.0, 100.0]], [[np.nan, 2.0, 2.0, 2.0]]])
    out, _ = replace_nan(stack, mode="median")
    assert out[0, 0, 1] == 5.0 and out[1, 0, 0] == 2.0
    out, _ = replace_nan(stack, mode="global_mean")
    assert out[0, 0, 1] == pytest.approx(np.nanmean(stack))


def test_replace_nan_errors():
    with pytest.raises(ArgumentError, match="value"):
        replace_nan(np.zeros((1, 2, 2)), mode="constant")
    with pytest.raises(ArgumentError, match="mode"):
        replace_nan(np.zeros((1, 2, 2)), mode="nearest")
    stack = np.zeros((2, 2, 2))
    stack[1] = np.nan
    with pytest.raises(ProcessingError, match="frame 1: every pixel is NaN"):
        replace_nan(stack, mode="mean")


def test_frame_edits_return_kept_indices():
    stack = np.arange(6)[:, None, None] * np.ones((6, 2, 3))
    out, kept = drop_frames(stack, indices_to_drop=[4, 1, 1])
    assert kept == [0, 2, 3, 5] and out[:, 0, 0].tolist() == kept
    out, kept = select_frames(stack, keep_indices=[5, 0])
    assert kept == [0, 5] and out.shape == (2, 2, 3)
    assert drop_frame_range(stack, start=1, end=4)[1] == [0, 4, 5]
    assert drop_final_frames(stack, n_frames_to_drop=2)[1] == [0, 1, 2, 3]
    assert drop_frames(stack, indices_to_drop=3)[1] == [0, 1, 2, 4, 5]


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda s: drop_frames(s, indices_to_drop=[6]), "indices_to_drop"),
        (lambda s: drop_frames(s, indices_to_drop=[0, 1, 2, 3, 4, 5]), "at least one frame"),
        (lambda s: select_frames(s, keep_indices=["a"]), "keep_indices"),
        (lambda s: drop_frame_range(s, start=3, end=3), "end"),
        (lambda s: drop_final_frames(s, n_frames_to_drop=6), "n_frames_to_drop"),
    ],
)
def test_frame_edit_errors(call, name):
    with pytest.raises(ArgumentError, match=name):
        call(np.zeros((6, 2, 2)))
