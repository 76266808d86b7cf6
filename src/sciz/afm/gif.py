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
from pathlib import Path
from typing import Any

import numpy as np

from .._util import require
from ..atomic import atomic_file
from ..errors import argument_error
from ..processing.blocks import block_frames, iter_frame_blocks, percentile
from ..stack import ImageStack
from ._common import as_image_stack, sanitize_name, target_path

__all__ = ["DEFAULT_FPS", "MIN_SIZE", "export_gif", "save_gif", "z_range"]

#: Frames whose longer side is below this are upscaled (aspect kept), so annotations stay legible.
MIN_SIZE = 512
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


def _indices(values: Any, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    # Palette indices block by block of frames: the float64 temporaries stay a few MB.
    out = np.empty(values.shape, dtype=np.uint8)
    step = block_frames(tuple(values.shape), 8, 4 << 20)
    for start, block in iter_frame_blocks(values, step):
        stop = start + len(block)
        out[start:stop] = _block_indices(block, lows[start:stop], highs[start:stop])
    return out


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
    scale_bar_nm: float | None = 100,
    draw_ts: bool = True,
    draw_scale: bool = True,
    font_scale: float = 1.0,
    min_size: int = MIN_SIZE,
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
        Scale bar length in nm (``None``: 100). A bar longer than the frame is replaced by the
        longest 1-2-5 length that fits.
    draw_ts, draw_scale
        Draw the ``12.00 s`` timestamp (top left) and the scale bar with its ``N nm`` label
        (bottom left).
    font_scale
        Multiplies the annotation size.
    min_size
        Frames whose longer side is smaller are upscaled to it (nearest neighbour, aspect kept).
    """
    require("PIL", "image")
    from PIL import Image, ImageDraw

    image_stack = as_image_stack(stack)
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0):
        raise argument_error("fps", fps, "must be a positive number or None (from the timestamps)")
    if isinstance(font_scale, bool) or not isinstance(font_scale, int | float) or not font_scale > 0:
        raise argument_error("font_scale", font_scale, "must be a positive number")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise argument_error("min_size", min_size, "must be a positive int")
    bar_nm = 100.0 if scale_bar_nm is None else scale_bar_nm
    if isinstance(bar_nm, bool) or not isinstance(bar_nm, int | float) or not bar_nm > 0:
        raise argument_error("scale_bar_nm", scale_bar_nm, "must be a positive length in nm")
    target = target_path(path, (".gif",))
    data, frames = image_stack.export_view(raw)
    values = np.asarray(data, dtype=np.float32) if isinstance(data, np.ndarray) else data
    n_frames, height, width = values.shape
    lows, highs = z_range(values, zmin, zmax)
    indices = _indices(values, lows, highs)
    palette = _palette(cmap)

    times = np.array([np.nan if f.get("timestamp") is None else float(f["timestamp"]) for f in frames])
    interval = _frame_interval(times)
    rate = float(fps) if fps is not None else (1.0 / interval if interval else DEFAULT_FPS)
    delay_ms = max(_GIF_MIN_DELAY_MS, round(100.0 / rate) * 10)

    scale = max(1.0, min_size / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    text_px = max(10, round(0.055 * size[1] * font_scale))
    font = _font(text_px)
    margin = max(4, round(0.02 * size[0]))
    stroke = max(1, text_px // 12)
    thickness = max(2, round(0.012 * size[1] * font_scale))

    images = []
    previous: np.ndarray | None = None
    for index in range(n_frames):
        image = Image.fromarray(indices[index], mode="P")
        image.putpalette(palette)
        if scale != 1.0:
            image = image.resize(size, Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(image)
        if draw_ts:
            stamp = times[index] if np.isfinite(times[index]) else float(index)
            draw.text(
                (margin, margin), f"{stamp:.2f} s", font=font, fill=_WHITE, stroke_width=stroke, stroke_fill=_BLACK
            )
        if draw_scale:
            pixel_nm = float(frames[index].get("frame_pixel_size_nm") or image_stack.pixel_size_nm)
            shown_nm = float(bar_nm)
            if shown_nm / pixel_nm * scale > 0.8 * size[0]:
                shown_nm = _nice_length(0.5 * size[0] / scale * pixel_nm)
            bar_px = max(1, round(shown_nm / pixel_nm * scale))
            bottom = size[1] - margin
            draw.rectangle(
                (margin - 1, bottom - thickness - 1, margin + bar_px, bottom + 1), fill=_BLACK
            )  # outline keeps the bar visible on bright frames
            draw.rectangle((margin, bottom - thickness, margin + bar_px - 1, bottom), fill=_WHITE)
            label = _label(shown_nm)
            box = draw.textbbox((0, 0), label, font=font, stroke_width=stroke)
            top = bottom - thickness - max(2, margin // 2) - (box[3] - box[1]) - box[1]
            draw.text((margin, top), label, font=font, fill=_WHITE, stroke_width=stroke, stroke_fill=_BLACK)
        pixels = np.asarray(image)
        if previous is not None and np.array_equal(pixels, previous):
            blacks = np.flatnonzero(pixels == _BLACK)
            where = int(blacks[0]) if blacks.size else 0
            image.putpixel((where % size[0], where // size[0]), _TWIN_BLACK)
            pixels = np.asarray(image)
        previous = pixels
        images.append(image)
    with atomic_file(target) as handle:
        images[0].save(
            handle,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=delay_ms,
            loop=0,
            optimize=False,
        )
    return target


def export_gif(
    afm_stack: Any,
    make_gif: bool = True,
    output_folder: str | os.PathLike[str] | None = "output",
    output_name: str | None = None,
    scale_bar_nm: float | None = 100,
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
) -> Path | None:
    """Export an AFM stack as an annotated GIF named like playNano does (``<name>[_filtered].gif``).

    The arguments follow playNano's ``playnano.io.gif_export.export_gif``; see :func:`save_gif` for
    their meaning. ``cmap`` is an alias of ``cmap_name``.

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
    stem = sanitize_name(output_name, _default_stem(stack))
    if _is_filtered(stack, raw):
        stem += "_filtered"
    return save_gif(
        folder / f"{stem}.gif",
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
    )


def _default_stem(stack: ImageStack) -> str:
    return stack.file_path.name.split(".")[0] if stack.file_path is not None else "sciz_export"


def _is_filtered(stack: ImageStack, raw: bool) -> bool:
    return not raw and any(key != "raw" for key in stack.processed)
