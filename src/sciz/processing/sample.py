"""A deterministic synthetic AFM video for demonstrations and tests (no bundled data, no licence question).

The video looks like a real high-speed AFM recording before processing: the sample (diffusing
protein-like particles and a filament) drifts across the field of view, and the instrument adds a
tilted, slightly bowed background, line-to-line offsets (banding) and noise. Every artefact is one
that a step of :mod:`sciz.processing` removes.
"""

from __future__ import annotations

import numpy as np

from ..errors import argument_error
from ..stack import ImageStack

__all__ = ["DEMO_PROCESSING", "sample_stack"]

#: The pipeline ``sciz demo`` runs on :func:`sample_stack`.
DEMO_PROCESSING = (
    "remove_plane; mask_mean_offset:factor=1; row_median_align; polynomial_flatten:order=2; clear; "
    "zero_median; gaussian_filter:sigma=1; align_frames:max_shift=16,mode=crop"
)


def sample_stack(n_frames: int = 24, size: int = 128, seed: int = 2024) -> ImageStack:
    """A synthetic AFM video of ``n_frames`` frames of ``size`` x ``size`` pixels (heights in nm).

    Parameters
    ----------
    n_frames
        Number of frames (0.5 s apart).
    size
        Frame side in pixels; the field of view is ``2 * size`` nm (2 nm per pixel).
    seed
        Seed of the random generator: the same arguments always give the same stack.

    Returns
    -------
    ImageStack
        float32 heights with ``timestamp`` per frame, channel ``height_trace``.

    Example
    -------
    >>> stack = sample_stack(4, 64)
    >>> stack.shape, stack.pixel_size_nm
    ((4, 64, 64), 2.0)
    """
    for name, value, low in (("n_frames", n_frames, 1), ("size", size, 16)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise argument_error(name, value, f"must be an integer >= {low}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # The sample: particles doing a random walk, and one wavy filament, all drifting together.
    n_particles = max(3, size // 20)
    start = rng.uniform(0.15 * size, 0.85 * size, size=(n_particles, 2))
    steps = rng.normal(0.0, 0.6, size=(n_frames, n_particles, 2))
    steps[0] = 0.0
    paths = start + np.cumsum(steps, axis=0)
    heights = rng.uniform(2.0, 4.0, n_particles)
    widths = rng.uniform(0.025, 0.04, n_particles) * size
    drift = np.cumsum(rng.normal((0.3, 0.45), 0.1, size=(n_frames, 2)), axis=0)
    drift -= drift[0]
    t = np.linspace(0.0, 1.0, 60)
    filament = np.stack([0.3 * size + 0.4 * size * t, 0.5 * size + 0.08 * size * np.sin(6.0 * t)], axis=1)
    frames = np.empty((n_frames, size, size), dtype=np.float64)
    for i in range(n_frames):  # a handful of small frames: clarity beats vectorising a generator
        surface = np.zeros((size, size))
        for (py, px), height, width in zip(paths[i] + drift[i], heights, widths, strict=True):
            surface += height * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * width**2))
        for fy, fx in filament + drift[i]:
            surface = np.maximum(surface, 1.8 * np.exp(-((yy - fy) ** 2 + (xx - fx) ** 2) / (2 * 1.5**2)))
        frames[i] = surface
    # The instrument: tilt and bow of the scanner, per-line offsets, and noise.
    tilt = 0.03 * xx + 0.015 * yy + 4e-4 * (xx - size / 2) ** 2
    banding = rng.normal(0.0, 0.35, size=(n_frames, size, 1))
    noise = rng.normal(0.0, 0.12, size=frames.shape)
    data = (frames + tilt + banding + noise).astype(np.float32)
    metadata = [
        {"timestamp": 0.5 * i, "frame_duration_s": 0.5, "frame_pixel_size_nm": 2.0, "line_rate": size / 0.5}
        for i in range(n_frames)
    ]
    return ImageStack(data, 2.0, "height_trace", metadata)
