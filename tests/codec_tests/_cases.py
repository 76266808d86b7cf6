"""Shared test data and codec settings for the codec contract tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from sciz import codecs

#: (codec name, parameters) worth testing, per dtype kind; tolerance None means no bound is promised.
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("zfp", {"tolerance": 1e-3}),
    ("zfp", {"tolerance": 0}),
    ("zfp", {"rate": 16}),
    ("zfp", {"precision": 24}),
    ("sperr", {"tolerance": 1e-3}),
    ("sperr", {"mode": "psnr", "quality": 90}),
    ("sperr", {"mode": "rate", "quality": 12}),
    ("sz3", {"tolerance": 1e-3}),
    ("sz3", {"tolerance": 0.0}),
    ("lerc", {"tolerance": 0.0}),
    ("lerc", {"tolerance": 1e-3}),
    ("lerc", {"tolerance": 3.0}),
    ("pcodec", {}),
    ("pcodec", {"level": 0}),
    ("szip", {}),
    ("szip", {"coding": "ec", "pixels_per_block": 8}),
]

SHAPES = {1: (257,), 2: (33, 47), 3: (9, 17, 21), 4: (3, 5, 7, 11)}


def field(kind: str, shape: tuple[int, ...], dtype: np.dtype, seed: int = 0) -> np.ndarray:
    """Smooth, random or constant test data of ``dtype``."""
    rng = np.random.default_rng(seed)
    if kind == "constant":
        value = 7 if dtype.kind in "iu" else 3.25
        return np.full(shape, value, dtype=dtype)
    if kind == "random":
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
        return rng.normal(0.0, 10.0, size=shape).astype(dtype)
    grids = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
    smooth = sum(np.sin(g * (i + 1)) for i, g in enumerate(grids)) * 100.0
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        scale = min(100.0, (info.max - max(info.min, -info.max)) / 2000.0)
        return (smooth * scale / 100.0 + (0 if info.min < 0 else scale * 3)).astype(dtype)
    return np.asarray(smooth, dtype=dtype)


def codec_dtypes(name: str, params: dict[str, Any]) -> tuple[str, ...]:
    """The dtypes a setting accepts (zfp's tolerance mode is for floats only)."""
    dtypes = tuple(type(codecs.get(name, **params)).dtypes)
    if name == "zfp" and params.get("tolerance"):
        return tuple(d for d in dtypes if d[0] == "f")
    return dtypes


def max_error(original: np.ndarray, restored: np.ndarray) -> float:
    """Largest |difference| over finite elements, computed exactly in float64 / Python ints."""
    finite = np.isfinite(original) if original.dtype.kind == "f" else np.ones(original.shape, bool)
    if not finite.any():
        return 0.0
    if original.dtype.kind in "iu":
        diff = np.abs(original[finite].astype(object) - restored[finite].astype(object))
        return float(max(diff))
    return float(np.max(np.abs(original[finite].astype(np.float64) - restored[finite].astype(np.float64))))


def assert_nonfinite_exact(original: np.ndarray, restored: np.ndarray) -> None:
    if original.dtype.kind != "f":
        return
    nan = np.isnan(original)
    assert np.array_equal(nan, np.isnan(restored)), "NaN positions changed"
    inf = np.isinf(original)
    assert np.array_equal(original[inf], restored[inf]), "infinities changed"
