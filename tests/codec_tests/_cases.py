"""Comparisons the codec tests share; they live in :mod:`sciz.testing.arrays` beside the codec contract."""

from __future__ import annotations

from sciz.testing.arrays import assert_nonfinite_exact, max_error

__all__ = ["assert_nonfinite_exact", "max_error"]
