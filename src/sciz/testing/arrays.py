"""Test arrays and the comparisons codec tests make: smooth/random/constant data, exact error, exact NaN/Inf."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "KINDS",
    "SHAPES",
    "assert_nonfinite_exact",
    "has_nonfinite",
    "max_error",
    "psnr",
    "sample_array",
    "with_nonfinite",
]

#: One small shape per number of dimensions (0-6); odd lengths cut across zfp's blocks of 4 and chunk edges.
SHAPES: dict[int, tuple[int, ...]] = {
    0: (),
    1: (257,),
    2: (33, 47),
    3: (9, 17, 21),
    4: (3, 5, 7, 11),
    5: (2, 3, 4, 5, 6),
    6: (2, 3, 4, 5, 6, 2),
}

#: Kinds of data :func:`sample_array` makes.
KINDS = ("smooth", "random", "constant", "nonfinite")


def sample_array(kind: str, shape: tuple[int, ...], dtype: np.dtype | str, seed: int = 0) -> np.ndarray:
    """Test data of ``dtype``: a smooth field, noise, a constant, or (floats) nothing but NaN and +-Inf."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    if kind == "constant":
        return np.full(shape, 7 if dtype.kind in "iu" else 3.25, dtype=dtype)
    if kind == "random":
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
        return rng.normal(0.0, 10.0, size=shape).astype(dtype)
    if kind == "nonfinite":
        if dtype.kind != "f":
            raise ValueError(f"kind='nonfinite' needs a float dtype, got {dtype}")
        values = np.full(shape, np.nan, dtype=dtype)
        values.reshape(-1)[::3] = np.inf
        values.reshape(-1)[1::5] = -np.inf
        return values
    if kind != "smooth":
        raise ValueError(f"kind={kind!r} is not allowed: one of {', '.join(KINDS)}")
    grids = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
    smooth = sum((np.sin(g * (i + 1)) for i, g in enumerate(grids)), np.zeros(shape)) * 100.0
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        scale = min(100.0, (info.max - max(info.min, -info.max)) / 2000.0)
        return (smooth * scale / 100.0 + (0 if info.min < 0 else scale * 3)).astype(dtype)
    return np.asarray(smooth, dtype=dtype)


def with_nonfinite(values: np.ndarray) -> np.ndarray:
    """A copy of a float array with NaN, +Inf, -Inf and NaN at its first, a third, half and last element."""
    marked = np.array(values, copy=True)
    if marked.dtype.kind == "f" and marked.size >= 4:
        flat = marked.reshape(-1)
        flat[[0, flat.size // 3, flat.size // 2, flat.size - 1]] = [np.nan, np.inf, -np.inf, np.nan]
    return marked


def has_nonfinite(values: np.ndarray) -> bool:
    return values.dtype.kind == "f" and not bool(np.isfinite(values).all())


def max_error(original: np.ndarray, restored: np.ndarray) -> float:
    """Largest |difference| over the finite elements of ``original``, exactly (float64 / Python ints)."""
    finite = np.isfinite(original) if original.dtype.kind == "f" else np.ones(original.shape, bool)
    if not finite.any():
        return 0.0
    if original.dtype.kind in "iu":
        diff = np.abs(original[finite].astype(object) - restored[finite].astype(object))
        return float(max(diff))
    return float(np.max(np.abs(original[finite].astype(np.float64) - restored[finite].astype(np.float64))))


def assert_nonfinite_exact(original: np.ndarray, restored: np.ndarray, where: str = "") -> None:
    """NaN, +Inf and -Inf of ``original`` are where they were in ``restored``, and nowhere else."""
    if original.dtype.kind != "f":
        return
    prefix = f"{where}: " if where else ""
    assert np.array_equal(np.isnan(original), np.isnan(restored)), f"{prefix}NaN positions changed"
    infinite = np.isinf(original)
    assert np.array_equal(infinite, np.isinf(restored)), f"{prefix}infinities moved or appeared"
    assert np.array_equal(original[infinite], restored[infinite]), f"{prefix}infinities changed sign"


def psnr(original: np.ndarray, restored: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over the finite elements (inf when exact or constant)."""
    finite = np.isfinite(original)
    if not finite.any():
        return math.inf
    values = original[finite].astype(np.float64)
    span = float(values.max() - values.min())
    mse = float(np.mean((restored[finite].astype(np.float64) - values) ** 2))
    if mse == 0 or span == 0:
        return math.inf
    return 10 * math.log10(span**2 / mse)
