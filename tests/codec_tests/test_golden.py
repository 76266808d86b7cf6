"""Committed golden streams must keep decoding to the committed arrays.

An engine upgrade that changes decoding fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sciz import codecs

from .make_golden import CASES, GOLDEN, golden_input


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_stream_decodes_identically(case: str) -> None:
    name, params, dtype = CASES[case]
    stream = (GOLDEN / f"{case}.scz").read_bytes()
    expected = np.load(GOLDEN / f"{case}.expected.npy", allow_pickle=False)
    decoded = getattr(codecs, f"{name}_decode")(stream)
    assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
    assert decoded.tobytes() == expected.tobytes()
    assert getattr(codecs, f"{name}_check")(stream)
    original = golden_input(dtype)
    bound = codecs.get(name, **params).tolerance
    if bound is not None:
        finite = np.isfinite(original) if original.dtype.kind == "f" else np.ones(original.shape, bool)
        assert np.max(np.abs(decoded[finite].astype(np.float64) - original[finite])) <= bound


def test_golden_fixtures_are_small() -> None:
    assert sum(p.stat().st_size for p in Path(GOLDEN).iterdir()) < 400_000
