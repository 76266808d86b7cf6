"""Annotated GIF export, checked by reading the files back with Pillow."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

from sciz.afm import ImageStack, export_gif, load_npz_bundle, save_gif
from sciz.afm.gif import z_range
from sciz.errors import ArgumentError


def read_gif(path):
    with Image.open(path) as image:
        frames, durations = [], []
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
            frames.append(np.asarray(image.convert("RGB")))
        return frames, durations, image.size, image.info.get("loop")


def ramp_stack(n: int = 4, h: int = 64, w: int = 128, dt: float = 0.5) -> ImageStack:
    # Left half low, right half high: known colours away from the annotations.
    data = np.zeros((n, h, w), np.float32)
    data[:, :, w // 2 :] = 10.0
    data += np.arange(n, dtype=np.float32)[:, None, None] * 0.01  # frames differ
    return ImageStack(data, 2.0, frame_metadata=[{"timestamp": dt * i} for i in range(n)])


def rgb(cmap: str, value: float) -> tuple[int, ...]:
    colour = np.asarray(matplotlib.colormaps[cmap](value))[:3]
    return tuple(int(c) for c in np.round(colour * 255))


def test_frames_durations_size_and_loop(tmp_path):
    path = save_gif(tmp_path / "a.gif", ramp_stack(), zmin=0.0, zmax=10.0)
    frames, durations, size, loop = read_gif(path)
    assert len(frames) == 4
    assert durations == [500] * 4  # 0.5 s between timestamps
    assert size == (512, 256)  # longer side upscaled to 512, aspect kept
    assert loop == 0


def test_colormap_and_fixed_z_range(tmp_path):
    path = save_gif(tmp_path / "c.gif", ramp_stack(), cmap="viridis", zmin=0.0, zmax=10.0)
    frame = read_gif(path)[0][0]
    assert tuple(frame[128, 100]) == rgb("viridis", 0.0)
    assert tuple(frame[128, 480]) == rgb("viridis", 1.0)
    default = read_gif(save_gif(tmp_path / "d.gif", ramp_stack(), zmin=0.0, zmax=10.0))[0][0]
    assert tuple(default[128, 480]) == rgb("afmhot", 1.0)


def test_fps_overrides_timing_and_default_without_timestamps(tmp_path):
    assert read_gif(save_gif(tmp_path / "f.gif", ramp_stack(), fps=10))[1] == [100] * 4
    untimed = ImageStack(ramp_stack().data)
    assert read_gif(save_gif(tmp_path / "u.gif", untimed))[1] == [200] * 4  # 5 fps
    fast = ramp_stack(dt=0.001)
    assert read_gif(save_gif(tmp_path / "q.gif", fast))[1] == [20] * 4  # GIF's practical minimum


def test_large_frames_are_not_scaled(tmp_path):
    big = ImageStack(np.random.default_rng(0).normal(size=(2, 600, 700)).astype(np.float32), 1.0)
    assert read_gif(save_gif(tmp_path / "b.gif", big))[2] == (700, 600)


def test_scale_bar_length_and_timestamp_drawn(tmp_path):
    stack = ImageStack(np.zeros((2, 100, 100), np.float32), 2.0, frame_metadata=[{"timestamp": 0}, {"timestamp": 1}])
    frame = read_gif(save_gif(tmp_path / "s.gif", stack, scale_bar_nm=50, cmap="gray", zmin=-1, zmax=1))[0][0]
    white = (frame == 255).all(axis=2)
    # 50 nm at 2 nm/px = 25 px, upscaled x5.12 -> 128 px; the bar is the longest white run near the bottom.
    runs = [np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))).max(initial=0) for row in white[-40:]]
    assert max(runs) == 128
    assert white[:40, :120].sum() > 30  # "0.00 s" in the top-left corner
    plain = read_gif(save_gif(tmp_path / "p.gif", stack, draw_ts=False, draw_scale=False, cmap="gray", zmin=-1, zmax=1))
    assert not (plain[0][0] == 255).all(axis=2).any()


def test_scale_bar_too_long_becomes_a_round_length(tmp_path):
    stack = ImageStack(np.zeros((1, 50, 50), np.float32), 1.0)  # 50 nm wide
    frame = read_gif(save_gif(tmp_path / "r.gif", stack, scale_bar_nm=100, cmap="gray", zmin=-1, zmax=1))[0][0]
    white = (frame == 255).all(axis=2)
    runs = [np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))).max(initial=0) for row in white[-40:]]
    assert max(runs) == round(20 * 512 / 50)  # 20 nm, the largest 1-2-5 length within half the width


def test_z_range_modes():
    values = np.stack([np.arange(100, dtype=np.float32), np.arange(100, dtype=np.float32) + 100])
    values = values.reshape(2, 10, 10)
    lows, highs = z_range(values, "auto", "auto")
    assert lows.tolist() == [pytest.approx(np.percentile(values, 1))] * 2
    assert highs.tolist() == [pytest.approx(np.percentile(values, 99))] * 2
    lows, highs = z_range(values, None, None)
    assert lows.tolist() == [0.0, 100.0] and highs.tolist() == [99.0, 199.0]
    lows, highs = z_range(values, "frame", 150)
    assert lows.tolist() == [0.0, 100.0] and highs.tolist() == [150.0, 150.0]
    lows, highs = z_range(values, None, 150.0)
    assert lows.tolist() == [0.0, 0.0]
    assert z_range(values, "3", "4")[0].tolist() == [3.0, 3.0]
    with pytest.raises(ArgumentError, match="zmin"):
        z_range(values, 5.0, 5.0)
    with pytest.raises(ArgumentError, match="zmax"):
        z_range(values, "auto", "sometimes")


def test_per_frame_range_and_nan_pixels(tmp_path):
    stack = ramp_stack(n=2)
    stack.data[1] *= 100
    stack.data[0, 40, 10] = np.nan
    frames = read_gif(save_gif(tmp_path / "n.gif", stack, zmin=None, zmax=None, cmap="viridis"))[0]
    for frame in frames:  # each frame spans the whole colormap
        assert tuple(frame[128, 480]) == rgb("viridis", 1.0)
        assert tuple(frame[128, 100]) == rgb("viridis", 0.0)
    assert tuple(frames[0][40 * 4 + 2, 10 * 4 + 2]) == (0, 0, 0)


def test_export_gif_naming_and_arguments(tmp_path, shared_data):
    stack = load_npz_bundle(shared_data / "playnano" / "processed.npz")
    path = export_gif(stack, make_gif=True, output_folder=tmp_path, output_name="sample", scale_bar_nm=100)
    assert path == tmp_path / "sample_filtered.gif"
    frames, durations, size, _ = read_gif(path)
    assert len(frames) == 4 and durations == [500] * 4 and size == (512, 341)
    raw = export_gif(stack, True, str(tmp_path), None, 20, "magma", raw=True)
    assert raw == tmp_path / "processed.gif"
    assert export_gif(stack, make_gif=False, output_folder=tmp_path) is None
    assert export_gif(stack, output_folder=tmp_path, output_name="c", cmap="gray").name == "c_filtered.gif"
    with pytest.raises(ArgumentError, match="cmap"):
        export_gif(stack, output_folder=tmp_path, cmap="no_such_map")
    with pytest.raises(ArgumentError, match="cmap"):
        export_gif(stack, output_folder=tmp_path, cmap_name="gray", cmap="viridis")
    with pytest.raises(ArgumentError, match="fps"):
        save_gif(tmp_path / "x.gif", stack, fps=0)
    with pytest.raises(ArgumentError, match="scale_bar_nm"):
        save_gif(tmp_path / "x.gif", stack, scale_bar_nm=-5)
    assert not (tmp_path / "x.gif").exists()


def test_identical_frames_stay_separate_frames(tmp_path):
    still = ImageStack(np.zeros((5, 40, 40), np.float32), 1.0, frame_metadata=[{"timestamp": 0.0}] * 5)
    frames, durations, _, _ = read_gif(save_gif(tmp_path / "still.gif", still, fps=4))
    assert len(frames) == 5 and durations == [250] * 5
    assert all(np.array_equal(frames[0], f) for f in frames[1:])  # and they look the same
    bare = read_gif(save_gif(tmp_path / "bare.gif", still, draw_ts=False, draw_scale=False))[0]
    assert len(bare) == 5
