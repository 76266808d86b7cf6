"""Annotated GIF export, checked by reading the files back with Pillow."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

from sciz.afm import ImageStack, export_gif, load_npz_bundle, save_gif
from sciz.afm.gif import z_range
from sciz.errors import ArgumentError, SciZWarning


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


def longest_white_run(frame: np.ndarray, rows: slice) -> int:
    white = (frame[rows] == 255).all(axis=2)
    return max(np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))).max(initial=0) for row in white)


def test_scale_bar_too_long_is_a_warning_and_a_round_length(tmp_path):
    stack = ImageStack(np.zeros((1, 50, 50), np.float32), 1.0)  # 50 nm wide
    with pytest.warns(SciZWarning, match=r"scale_bar_nm=100 does not fit in the frame \(50 nm wide\); .* 20 nm bar"):
        path = save_gif(tmp_path / "r.gif", stack, scale_bar_nm=100, cmap="gray", zmin=-1, zmax=1)
    # 20 nm, the largest 1-2-5 length within half the width
    assert longest_white_run(read_gif(path)[0][0], slice(-40, None)) == round(20 * 512 / 50)
    # Not asked for: 100 nm where it fits, else the same round length without a warning.
    quiet = read_gif(save_gif(tmp_path / "q.gif", stack, cmap="gray", zmin=-1, zmax=1))[0][0]
    assert longest_white_run(quiet, slice(-40, None)) == round(20 * 512 / 50)
    # A bar of 90% of the frame fits between the margins and is drawn as asked (it used to be shortened).
    fits = read_gif(save_gif(tmp_path / "f.gif", stack, scale_bar_nm=45, cmap="gray", zmin=-1, zmax=1))[0][0]
    assert longest_white_run(fits, slice(-40, None)) == round(45 * 512 / 50)


def test_untimed_images_are_not_stamped_with_a_made_up_time(tmp_path):
    image = ImageStack(np.zeros((1, 100, 100), np.float32), 2.0)  # a still image: timestamp None
    frame = read_gif(save_gif(tmp_path / "i.gif", image, draw_scale=False, cmap="gray", zmin=-1, zmax=1))[0][0]
    assert not (frame == 255).all(axis=2).any()  # nothing drawn at all
    timed = ImageStack(np.zeros((2, 100, 100), np.float32), 2.0, frame_metadata=[{"timestamp": 0}, {"timestamp": 1}])
    untimed = ImageStack(np.zeros((2, 100, 100), np.float32), 2.0)
    options = {"draw_scale": False, "cmap": "gray", "zmin": -1, "zmax": 1}
    stamped = read_gif(save_gif(tmp_path / "t.gif", timed, **options))[0]
    numbered = read_gif(save_gif(tmp_path / "n.gif", untimed, **options))[0]
    corner = (slice(0, 60), slice(0, 250))
    for timed_frame, numbered_frame in zip(stamped, numbered, strict=True):
        text = (numbered_frame[corner] == 255).all(axis=2)
        assert text.sum() > 30  # "frame 0", "frame 1"
        assert not np.array_equal(text, (timed_frame[corner] == 255).all(axis=2))  # not "0.00 s", "1.00 s"
    assert not np.array_equal(numbered[0], numbered[1])


def test_colorbar_shows_the_height_scale(tmp_path):
    path = save_gif(tmp_path / "c.gif", ramp_stack(), cmap="viridis", zmin=0.0, zmax=10.0, colorbar=True)
    frames, _, size, _ = read_gif(path)
    assert size[1] == 256 and size[0] > 512 + 40  # a strip right of the 512 px wide image
    frame = frames[0]
    assert tuple(frame[128, 480]) == rgb("viridis", 1.0)  # the image itself is unchanged
    # The bar: margin 10 px, 10 px wide, from the highest colour at the top to the lowest at the bottom.
    column = frame[10:246, 522 + 5]
    assert tuple(column[0]) == rgb("viridis", 1.0) and tuple(column[-1]) == rgb("viridis", 0.0)
    levels = np.rint(np.linspace(252, 0, 236))  # palette entries 0..252 span the colormap
    assert [tuple(c) for c in column] == [rgb("viridis", level / 252) for level in levels]
    labels = (frame[:, 522 + 10 :] == 255).all(axis=2)
    assert labels[:40].sum() > 20 and labels[-40:].sum() > 20  # "10 nm" at the top, "0 nm" at the bottom
    other = read_gif(save_gif(tmp_path / "o.gif", ramp_stack(), zmin=0.0, zmax=2.5, colorbar=True))[0][0]
    assert not np.array_equal((other[:40, 532:] == 255).all(axis=2), labels[:40, : other.shape[1] - 532])
    plain = read_gif(save_gif(tmp_path / "p.gif", ramp_stack(), zmin=0.0, zmax=10.0))[2]
    assert plain == (512, 256)
    gif = export_gif(ramp_stack(), output_folder=tmp_path, output_name="e", colorbar=True)
    assert read_gif(gif)[2][0] > 512 + 40


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
    path = export_gif(stack, make_gif=True, output_folder=tmp_path, output_name="sample", scale_bar_nm=50)
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


def test_frames_are_written_as_they_are_drawn_with_pillows_bytes(tmp_path):
    """The animation is written frame by frame (only the previous frame held, not all of them as
    Pillow's save_all does), and its bytes are exactly those of Pillow's save_all of the same frames:
    whole first frame, then boxes of change (here a small box, a full frame and a one-pixel change)."""
    import io

    from sciz.afm.gif import _write_animation

    rng = np.random.default_rng(1)
    first = rng.integers(0, 250, size=(24, 40), dtype=np.uint8)
    second = first.copy()
    second[5:9, 10:20] += 1
    third = rng.integers(0, 250, size=(24, 40), dtype=np.uint8)
    fourth = third.copy()
    fourth[23, 39] += 1
    images = []
    for pixels in (first, second, third, fourth):
        image = Image.fromarray(pixels, mode="P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
        images.append(image)
    pillow = io.BytesIO()
    images[0].save(pillow, format="GIF", save_all=True, append_images=images[1:], duration=70, loop=0, optimize=False)
    ours = io.BytesIO()
    _write_animation(ours, iter(images), 70)
    assert ours.getvalue() == pillow.getvalue()
    frames, durations, _, loop = read_gif(save_gif(tmp_path / "a.gif", ramp_stack(n=6), zmin=0.0, zmax=10.0))
    assert len(frames) == 6 and durations == [500] * 6 and loop == 0
