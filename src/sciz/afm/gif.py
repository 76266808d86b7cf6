"""Annotated animated GIFs of AFM stacks: colormap, z-range, timestamps, scale bar, real frame rate.

Frames are turned into palette images directly: heights map to 254 colormap entries and two more
entries hold the annotation colours (black outline, white text), so there is no colour quantising,
every frame shares one exact palette, and the whole stack is normalised in one vectorised step.

Pillow merges a frame that is identical to the one before it into that one (adding up their
delays), which would change the frame count of a still video. Such a frame gets one black pixel
swapped for a second palette entry of the same black, so it stays a frame of its own and looks
the same (without annotations or NaN there is no black pixel, and the corner pixel turns black).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._util import require
from ..atomic import atomic_file
from ..errors import SciZWarning, argument_error
from ..processing.blocks import block_frames, iter_frame_blocks, percentile
from ..stack import ImageStack
from ._common import as_image_stack, sanitize_name, target_path

__all__ = ["DEFAULT_FPS", "DEFAULT_SCALE_BAR_NM", "MIN_SIZE", "export_gif", "save_gif", "z_range"]

#: Frames whose longer side is below this are upscaled (aspect kept), so annotations stay legible.
MIN_SIZE = 512
#: Scale bar length (nm) when none is asked for and it fits (as playNano's default).
DEFAULT_SCALE_BAR_NM = 100.0
#: Frame rate when the stack has no timing metadata and ``fps`` is not given (playNano's default).
DEFAULT_FPS = 5.0
_LEVELS = 253  # palette entries for heights; then a second black, outline black and text white
_TWIN_BLACK, _BLACK, _WHITE = 253, 254, 255
_GIF_MIN_DELAY_MS = 20  # browsers slow down anything faster than 2 centiseconds


def _bound(value: Any, name: str) -> float | str | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "frame"):
            return text
        try:
            value = float(text)
        except ValueError:
            raise argument_error(name, value, "must be a number, 'auto', 'frame' or None") from None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise argument_error(name, value, "must be a number, 'auto', 'frame' or None")
    number = float(value)
    if not math.isfinite(number):
        raise argument_error(name, value, "must be finite")
    return number


def z_range(values: np.ndarray, zmin: Any = "auto", zmax: Any = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Per-frame lower and upper colour limits for a (frames, H, W) stack.

    Each bound is a number (fixed), ``"auto"`` (1st / 99th percentile of the whole stack),
    ``"frame"`` (each frame's own min / max) or ``None``: per frame when both are ``None`` (as
    playNano does), else the stack's min / max.
    """
    low, high = _bound(zmin, "zmin"), _bound(zmax, "zmax")
    n = values.shape[0]
    per_frame_default = low is None and high is None
    # Frame blocks throughout: no stack-sized temporaries, and stacks on disk work too.
    step = block_frames(tuple(values.shape), 8, 4 << 20)

    def per_frame(which: str) -> np.ndarray:
        reduce = np.nanmin if which == "low" else np.nanmax
        out = np.empty(n)
        with np.errstate(all="ignore"):
            for start, block in iter_frame_blocks(values, step):
                all_nan = np.isnan(block).reshape(len(block), -1).all(axis=1)
                safe = np.where(all_nan[:, None, None], 0.0, block)
                out[start : start + len(block)] = reduce(safe, axis=(1, 2))
        return out

    def resolve(bound: float | str | None, which: str) -> np.ndarray:
        if isinstance(bound, float):
            return np.full(n, bound)
        if bound == "frame" or (bound is None and per_frame_default):
            return per_frame(which)
        value = percentile(
            values, (1.0 if which == "low" else 99.0) if bound == "auto" else (0.0 if which == "low" else 100.0)
        )
        return np.zeros(n) if np.isnan(value) else np.full(n, value)

    lows, highs = resolve(low, "low"), resolve(high, "high")
    if isinstance(low, float) and isinstance(high, float) and low >= high:
        raise argument_error("zmin", zmin, f"must be below zmax={zmax!r}")
    return lows, highs


def _palette(cmap_name: str) -> list[int]:
    matplotlib = require("matplotlib", "image")
    try:
        cmap = matplotlib.colormaps[cmap_name]
    except KeyError:
        known = ", ".join(sorted(n for n in matplotlib.colormaps if not n.endswith("_r"))[:12])
        raise argument_error("cmap", cmap_name, f"must be a matplotlib colormap name (e.g. {known}, ...)") from None
    colours = (np.asarray(cmap(np.linspace(0.0, 1.0, _LEVELS)))[:, :3] * 255.0).round().astype(np.uint8)
    return [*colours.reshape(-1).tolist(), 0, 0, 0, 0, 0, 0, 255, 255, 255]


class _Float32Frames:
    """A (frames, H, W) stack on disk whose frames read as float32: an in-memory stack is drawn from
    float32 values, so a float64 layer on disk drawn as it was gave some pixels one colour level
    apart (found by a trial user comparing --in-memory and --out-of-core GIFs)."""

    def __init__(self, values: Any) -> None:
        self.values = values
        self.shape = tuple(int(n) for n in values.shape)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.values[key], dtype=np.float32)


def _frame_indices(values: Any, lows: np.ndarray, highs: np.ndarray) -> Iterator[np.ndarray]:
    """Each frame's palette indices, made block by block of frames as the GIF is drawn: neither the
    float64 temporaries nor the indices of the whole stack are ever held (a quarter of a float32
    layer, the same again as the palette frames the GIF writer keeps)."""
    step = block_frames(tuple(values.shape), 8, 4 << 20)
    for start, block in iter_frame_blocks(values, step):
        stop = start + len(block)
        yield from _block_indices(block, lows[start:stop], highs[start:stop])


def _block_indices(values: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    span = highs - lows
    scale = np.where(span > 0, (_LEVELS - 1) / np.where(span > 0, span, 1.0), 0.0)
    with np.errstate(invalid="ignore"):
        scaled = (values - lows[:, None, None]) * scale[:, None, None]
    scaled = np.where(span[:, None, None] > 0, scaled, (_LEVELS - 1) / 2.0)
    out = np.clip(np.rint(np.nan_to_num(scaled, nan=0.0)), 0, _LEVELS - 1).astype(np.uint8)
    out[~np.isfinite(values)] = _BLACK
    return out


def _frame_interval(times: np.ndarray) -> float | None:
    finite = times[np.isfinite(times)]
    if finite.size < 2:
        return None
    steps = np.diff(finite)
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else None


def _nice_length(limit_nm: float) -> float:
    # The largest 1-2-5 x 10^k length that fits.
    exponent = math.floor(math.log10(limit_nm))
    for mantissa in (5.0, 2.0, 1.0):
        value = mantissa * 10.0**exponent
        if value <= limit_nm:
            return value
    return 10.0 ** (exponent - 1)


def _label(length_nm: float) -> str:
    return f"{round(length_nm)} nm" if abs(length_nm - round(length_nm)) < 1e-9 else f"{length_nm:g} nm"


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def save_gif(
    path: str | os.PathLike[str],
    stack: Any,
    *,
    raw: bool = False,
    fps: float | None = None,
    cmap: str = "afmhot",
    zmin: Any = "auto",
    zmax: Any = "auto",
    scale_bar_nm: float | None = None,
    draw_ts: bool = True,
    draw_scale: bool = True,
    font_scale: float = 1.0,
    min_size: int = MIN_SIZE,
    colorbar: bool = False,
) -> Path:
    """Write an annotated animated GIF of ``stack`` to ``path`` and return the path.

    Parameters
    ----------
    path
        Destination; ``.gif`` is appended when missing.
    stack
        A :class:`~sciz.stack.ImageStack` (or a Dataset, array or playNano ``AFMImageStack``).
    raw
        Animate the ``processed['raw']`` snapshot instead of the current data.
    fps
        Frames per second; ``None`` takes it from the frame timestamps (median interval), or
        :data:`DEFAULT_FPS` without timing. GIF delays are whole centiseconds of at least 20 ms.
    cmap
        Any matplotlib colormap name.
    zmin, zmax
        Colour limits; see :func:`z_range`.
    scale_bar_nm
        Scale bar length in nm. A bar that does not fit in the frame is replaced by the longest
        1-2-5 length within half the frame, with a :class:`~sciz.errors.SciZWarning`. ``None``
        (default): 100 nm where it fits, else that shorter length without a warning.
    draw_ts, draw_scale
        Draw the ``12.00 s`` timestamp (top left) and the scale bar with its ``N nm`` label
        (bottom left). A frame without a timestamp is labelled ``frame 3`` instead (a single
        image without one is not labelled).
    font_scale
        Multiplies the annotation size.
    min_size
        Frames whose longer side is smaller are upscaled to it (nearest neighbour, aspect kept).
    colorbar
        Add a colour bar right of the image, labelled with the heights (nm) of its two ends.
    """
    require("PIL", "image")
    from PIL import Image

    image_stack = as_image_stack(stack)
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0):
        raise argument_error("fps", fps, "must be a positive number or None (from the timestamps)")
    if isinstance(font_scale, bool) or not isinstance(font_scale, int | float) or not font_scale > 0:
        raise argument_error("font_scale", font_scale, "must be a positive number")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise argument_error("min_size", min_size, "must be a positive int")
    bar_nm = DEFAULT_SCALE_BAR_NM if scale_bar_nm is None else scale_bar_nm
    if isinstance(bar_nm, bool) or not isinstance(bar_nm, int | float) or not bar_nm > 0:
        raise argument_error("scale_bar_nm", scale_bar_nm, "must be a positive length in nm")
    target = target_path(path, (".gif",))
    data, frames = image_stack.export_view(raw)
    if isinstance(data, np.ndarray):
        values: Any = np.asarray(data, dtype=np.float32)
    else:  # a layer on disk: drawn from float32 frames as well, so both modes give the same GIF
        values = data if np.dtype(data.dtype) == np.float32 else _Float32Frames(data)
    lows, highs = z_range(values, zmin, zmax)
    palette = _palette(cmap)

    times = np.array([np.nan if f.get("timestamp") is None else float(f["timestamp"]) for f in frames])
    interval = _frame_interval(times)
    rate = float(fps) if fps is not None else (1.0 / interval if interval else DEFAULT_FPS)
    delay_ms = max(_GIF_MIN_DELAY_MS, round(100.0 / rate) * 10)

    layout = _Layout.of(values.shape[1:], min_size, font_scale)
    pixel_nm = [float(f.get("frame_pixel_size_nm") or image_stack.pixel_size_nm) for f in frames]
    bars = _scale_bars(float(bar_nm), pixel_nm, layout, warn=scale_bar_nm is not None) if draw_scale else None
    bar_labels = [(_height_label(high), _height_label(low)) for low, high in zip(lows, highs, strict=True)]
    strip = _colorbar_width(layout, bar_labels) if colorbar else 0

    def drawn() -> Iterator[Any]:
        previous: np.ndarray | None = None
        for index, frame_indices in enumerate(_frame_indices(values, lows, highs)):
            frame = Image.fromarray(frame_indices, mode="P")
            if layout.scale != 1.0:
                frame = frame.resize(layout.size, Image.Resampling.NEAREST)
            image = Image.new("P", (layout.size[0] + strip, layout.size[1]), _BLACK)
            image.putpalette(palette)
            image.paste(frame, (0, 0))
            if draw_ts:
                _draw_stamp(image, layout, _stamp(times, index))
            if bars is not None:
                _draw_scale_bar(image, layout, *bars[index])
            if colorbar:
                _draw_colorbar(image, layout, *bar_labels[index])
            pixels = np.asarray(image)
            if previous is not None and np.array_equal(pixels, previous):
                blacks = np.flatnonzero(pixels == _BLACK)
                where = int(blacks[0]) if blacks.size else 0
                image.putpixel((where % image.size[0], where // image.size[0]), _TWIN_BLACK)
                pixels = np.asarray(image)
            previous = pixels
            yield image

    with atomic_file(target) as handle:
        if int(values.shape[0]) > 1:
            _write_animation(handle, drawn(), delay_ms)
        else:  # one frame: Pillow writes a still image (one frame is no memory to save)
            first = list(drawn())
            first[0].save(handle, format="GIF", save_all=True, duration=delay_ms, loop=0, optimize=False)
    return target


def _write_animation(handle: Any, frames: Iterator[Any], delay_ms: int) -> None:
    """Write the palette images ``frames`` (two or more, one palette) as a looping GIF, frame by
    frame as they come: only the previous frame is held, where Pillow's ``save_all`` holds every
    frame until the end (the GIF of an 8000-frame 512x512 video would be 2 GiB in memory).

    The bytes are those of Pillow's ``save(save_all=True, loop=0, optimize=False)``: the global
    header and the first frame whole, then each frame cropped to the box where it differs from the
    one before, with its palette as a local table (Pillow's public ``getheader``/``getdata``).
    """
    from PIL import GifImagePlugin

    options = {"duration": delay_ms, "loop": 0, "optimize": False}
    previous: np.ndarray | None = None
    for image in frames:
        pixels = np.asarray(image)
        if previous is None:
            header, _ = GifImagePlugin.getheader(image, None, dict(options))
            handle.writelines(header)
            handle.writelines(GifImagePlugin.getdata(image, (0, 0), **options))
        else:
            changed = pixels != previous
            rows, columns = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
            if not rows.size:  # never: export_gif makes every frame differ from the one before
                raise ValueError("two identical consecutive GIF frames")
            box = (int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1)
            part = image if box == (0, 0, *image.size) else image.crop(box)
            handle.writelines(GifImagePlugin.getdata(part, box[:2], **options, include_color_table=True))
        previous = pixels
    handle.write(b";")


class _Layout:
    """Sizes of one annotated frame: the upscaled image, text, margins and line widths (pixels)."""

    def __init__(self, size: tuple[int, int], scale: float, font_scale: float) -> None:
        self.size = size
        self.scale = scale
        self.text_px = max(10, round(0.055 * size[1] * font_scale))
        self.font = _font(self.text_px)
        self.margin = max(4, round(0.02 * size[0]))
        self.stroke = max(1, self.text_px // 12)
        self.thickness = max(2, round(0.012 * size[1] * font_scale))

    @classmethod
    def of(cls, shape: tuple[int, ...], min_size: int, font_scale: float) -> _Layout:
        height, width = int(shape[0]), int(shape[1])
        scale = max(1.0, min_size / max(height, width))
        return cls((max(1, round(width * scale)), max(1, round(height * scale))), scale, font_scale)

    def text(self, draw: Any, xy: tuple[int, int], text: str) -> None:
        draw.text(xy, text, font=self.font, fill=_WHITE, stroke_width=self.stroke, stroke_fill=_BLACK)

    def text_box(self, draw: Any, text: str) -> tuple[int, int, int, int]:
        return tuple(draw.textbbox((0, 0), text, font=self.font, stroke_width=self.stroke))


def _stamp(times: np.ndarray, index: int) -> str | None:
    """``12.00 s``; ``frame 3`` for a frame of a video without a timestamp; nothing for an untimed image."""
    if np.isfinite(times[index]):
        return f"{times[index]:.2f} s"
    return f"frame {index}" if times.size > 1 else None


def _draw_stamp(image: Any, layout: _Layout, stamp: str | None) -> None:
    from PIL import ImageDraw

    if stamp is not None:
        layout.text(ImageDraw.Draw(image), (layout.margin, layout.margin), stamp)


def _scale_bars(bar_nm: float, pixel_nm: list[float], layout: _Layout, *, warn: bool) -> list[tuple[float, int]]:
    """(length in nm, length in pixels) of each frame's scale bar. A bar that does not fit between the
    margins becomes the longest 1-2-5 length within half the frame, with one warning for the stack
    when the length was asked for (``warn``)."""
    room = layout.size[0] - 2 * layout.margin
    bars, shortened = [], []
    for size_nm in pixel_nm:
        shown = bar_nm
        if bar_nm / size_nm * layout.scale > room:
            shown = _nice_length(0.5 * layout.size[0] / layout.scale * size_nm)
            shortened.append((size_nm, shown))
        bars.append((shown, max(1, round(shown / size_nm * layout.scale))))
    if shortened and warn:
        size_nm, shown = shortened[0]
        wide, longest = (extent / layout.scale * size_nm for extent in (layout.size[0], room))
        warnings.warn(
            SciZWarning(
                f"scale_bar_nm={bar_nm:g} does not fit in the frame ({wide:.4g} nm wide); the GIF shows a "
                f"{_label(shown)} bar instead (give at most {math.floor(longest * 100) / 100:g} nm)"
            ),
            stacklevel=3,
        )
    return bars


def _draw_scale_bar(image: Any, layout: _Layout, shown_nm: float, bar_px: int) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    margin, thickness = layout.margin, layout.thickness
    bottom = layout.size[1] - margin
    # The black outline keeps the bar visible on bright frames.
    draw.rectangle((margin - 1, bottom - thickness - 1, margin + bar_px, bottom + 1), fill=_BLACK)
    draw.rectangle((margin, bottom - thickness, margin + bar_px - 1, bottom), fill=_WHITE)
    label = _label(shown_nm)
    box = layout.text_box(draw, label)
    top = bottom - thickness - max(2, margin // 2) - (box[3] - box[1]) - box[1]
    layout.text(draw, (margin, top), label)


def _height_label(value: float) -> str:
    return f"{value:.4g} nm"


def _colorbar_width(layout: _Layout, labels: list[tuple[str, str]]) -> int:
    """Width of the strip holding the colour bar and its widest label."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("P", (1, 1)))
    widest = max(layout.text_box(draw, text)[2] for pair in labels for text in pair)
    return 3 * layout.margin + _colorbar_bar_width(layout) + widest


def _colorbar_bar_width(layout: _Layout) -> int:
    return max(6, round(0.04 * layout.size[1]))


def _draw_colorbar(image: Any, layout: _Layout, top_label: str, bottom_label: str) -> None:
    """The colormap from the lowest (bottom) to the highest colour (top), right of the frame, with
    the heights of both ends beside it."""
    from PIL import Image, ImageDraw

    margin = layout.margin
    width = _colorbar_bar_width(layout)
    height = max(2, layout.size[1] - 2 * margin)
    ramp = np.rint(np.linspace(_LEVELS - 1, 0, height)).astype(np.uint8)
    bar = Image.fromarray(np.repeat(ramp[:, None], width, axis=1), mode="P")
    left = layout.size[0] + margin
    image.paste(bar, (left, margin))
    draw = ImageDraw.Draw(image)
    text_left = left + width + margin
    top_box = layout.text_box(draw, top_label)
    layout.text(draw, (text_left, margin - top_box[1]), top_label)
    bottom_box = layout.text_box(draw, bottom_label)
    layout.text(draw, (text_left, margin + height - bottom_box[3]), bottom_label)


def export_gif(
    afm_stack: Any,
    make_gif: bool = True,
    output_folder: str | os.PathLike[str] | None = "output",
    output_name: str | None = None,
    scale_bar_nm: float | None = None,
    cmap_name: str = "afmhot",
    raw: bool = False,
    fps: float | None = None,
    zmin: Any = "auto",
    zmax: Any = "auto",
    draw_ts: bool = True,
    draw_scale: bool = True,
    font_scale: float = 1.0,
    *,
    cmap: str | None = None,
    colorbar: bool = False,
) -> Path | None:
    """Export an AFM stack as an annotated GIF named like playNano does (``<name>[_filtered].gif``).

    The arguments follow playNano's ``playnano.io.gif_export.export_gif``; see :func:`save_gif` for
    their meaning. ``cmap`` is an alias of ``cmap_name``; ``colorbar`` (not in playNano) adds the
    height scale.

    Returns
    -------
    Path or None
        The GIF written, or ``None`` when ``make_gif`` is false.

    Example
    -------
    >>> export_gif(stack, make_gif=True, output_folder="exports", output_name="sample",
    ...            scale_bar_nm=100, zmin="auto", zmax="auto", draw_ts=True)  # doctest: +SKIP
    """
    if not make_gif:
        return None
    if cmap is not None and cmap_name not in ("afmhot", cmap):
        raise argument_error("cmap", cmap, f"conflicts with cmap_name={cmap_name!r}; give only one")
    stack = as_image_stack(afm_stack, "afm_stack")
    folder = Path(os.fspath(output_folder)) if output_folder is not None else Path("output")
    return save_gif(
        folder / f"{export_stem(stack, output_name, raw)}.gif",
        stack,
        raw=raw,
        fps=fps,
        cmap=cmap or cmap_name,
        zmin=zmin,
        zmax=zmax,
        scale_bar_nm=scale_bar_nm,
        draw_ts=draw_ts,
        draw_scale=draw_scale,
        font_scale=font_scale,
        colorbar=colorbar,
    )


def export_stem(stack: ImageStack, base_name: str | None, raw: bool = False) -> str:
    """The file stem an export of ``stack`` gets, as playNano names it: ``base_name`` (default: the
    source file's stem), plus ``_filtered`` when processed data (not ``raw``) is written."""
    stem = sanitize_name(base_name, _default_stem(stack))
    return f"{stem}_filtered" if _is_filtered(stack, raw) else stem


def _default_stem(stack: ImageStack) -> str:
    return stack.file_path.name.split(".")[0] if stack.file_path is not None else "sciz_export"


def _is_filtered(stack: ImageStack, raw: bool) -> bool:
    return not raw and any(key != "raw" for key in stack.processed)
