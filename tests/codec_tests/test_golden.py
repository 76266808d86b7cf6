"""Committed golden streams must keep decoding to the committed arrays.

An engine upgrade that changes decoding fails here, and so does a sciz that stops reading an older
stream format: ``CASES`` are format 1 streams, ``CASES_V2`` format 2 streams with masked
NaN/Inf/fill values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sciz import codecs
from sciz.codecs import _stream

from .make_golden import CASES, CASES_V2, GOLDEN, case_input


@pytest.mark.parametrize("case", sorted({**CASES, **CASES_V2}))
def test_golden_stream_decodes_identically(case: str) -> None:
    name, params, _dtype = {**CASES, **CASES_V2}[case]
    stream = (GOLDEN / f"{case}.scz").read_bytes()
    assert stream[4] == (1 if case in CASES else 2), "stream format version"
    expected = np.load(GOLDEN / f"{case}.expected.npy", allow_pickle=False)
    decoded = getattr(codecs, f"{name}_decode")(stream)
    assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
    assert decoded.tobytes() == expected.tobytes()
    assert getattr(codecs, f"{name}_check")(stream)
    original = case_input(case)
    codec = codecs.get(name, **params)
    invalid = np.zeros(original.shape, bool) if original.dtype.kind in "iu" else ~np.isfinite(original)
    if codec.fill_value is not None:
        invalid |= original == original.dtype.type(codec.fill_value)
    if case in CASES_V2:
        words = f"u{original.dtype.itemsize}"
        assert np.array_equal(decoded[invalid].view(words), original[invalid].view(words)), "masked bits changed"
        assert _stream.describe_stream(stream)["masked_elements"] == int(invalid.sum())
    bound = codec.tolerance
    if bound is not None:
        assert np.max(np.abs(decoded[~invalid].astype(np.float64) - original[~invalid])) <= bound


def test_golden_fixtures_are_small() -> None:
    assert sum(p.stat().st_size for p in Path(GOLDEN).iterdir()) < 400_000


@pytest.mark.parametrize("case", sorted(CASES_V2))
def test_golden_input_encodes_to_the_committed_stream(case: str) -> None:
    """This sciz writes the committed format 2 streams byte for byte, on one thread or two, into
    ``out=`` or not. A failure means an encoder changed (an engine upgrade, a new chunk layout): old
    streams must still decode (above), and a changed layout needs new golden cases."""
    name, params, _dtype = CASES_V2[case]
    committed = (GOLDEN / f"{case}.scz").read_bytes()
    codec = codecs.get(name, **params)
    data = case_input(case)
    assert codec.encode(data) == committed
    assert codec.encode(data, numthreads=2) == committed
    out = bytearray(len(committed) + 7)
    assert bytes(codec.encode(data, out=out)) == committed and out[len(committed) :] == bytes(7)
