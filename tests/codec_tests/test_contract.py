"""Every codec of the table passes the codec contract (:class:`sciz.testing.CodecTests`).

The codecs come from ``sciz.codecs.list_codecs()`` and the settings from each codec's table row,
so a new codec is checked the moment its row exists: round trips of every dtype and 0-6
dimensions, configuration through JSON, golden streams, ``out=`` buffers, and streams, zspy and
hspy files read back in a fresh process by sciz and by plain zarr / h5py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sciz import codecs
from sciz.codecs import _stream, _trust
from sciz.testing import CodecTests

from .make_golden import ALL_WRITTEN, CASES, CASES_V3, GOLDEN, case_input, small_chunks

ALL_CASES = {**CASES, **ALL_WRITTEN}


class TestCodecContract(CodecTests):
    golden_dir = GOLDEN

    @pytest.fixture(params=codecs.list_codecs())
    def codec_name(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    def golden_case(self, case: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        if case not in ALL_CASES:
            return None
        return case_input(case), ALL_CASES[case][1]


def test_golden_cases_are_committed_and_small() -> None:
    committed = {path.name.split(".")[0] for path in Path(GOLDEN).iterdir()}
    assert committed == set(ALL_CASES), "make_golden.py and the golden folder disagree"
    assert sum(p.stat().st_size for p in Path(GOLDEN).iterdir()) < 450_000


@pytest.mark.parametrize("case", sorted(ALL_CASES))
def test_golden_stream_format_versions_and_masked_bits(case: str) -> None:
    """Format 1 streams stay readable; format 2 and 3 streams give back masked NaN/Inf/fill values bit for bit."""
    name, params, _dtype = ALL_CASES[case]
    stream = (GOLDEN / f"{case}.scz").read_bytes()
    assert stream[4] == (1 if case in CASES else 3 if case in CASES_V3 else 2), "stream format version"
    if case in CASES:
        return
    original, decoded = case_input(case), codecs.decode(stream)
    invalid = np.zeros(original.shape, bool) if original.dtype.kind in "iu" else ~np.isfinite(original)
    fill_value = codecs.get(name, **params).fill_value
    if fill_value is not None:
        invalid |= original == original.dtype.type(fill_value)
    words = f"u{original.dtype.itemsize}"
    assert np.array_equal(decoded[invalid].view(words), original[invalid].view(words)), "masked bits changed"
    assert _stream.describe_stream(stream)["masked_elements"] == int(invalid.sum())


class TestOneCodecByName(CodecTests):
    """The way a third party uses the contract: name the codec (a cheap one here: the transform)."""

    codec = "floatpred"


@pytest.mark.parametrize("case", sorted(ALL_WRITTEN))
def test_golden_input_encodes_to_the_committed_stream(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """This sciz writes the committed format 2 streams byte for byte, on one thread or two, into
    ``out=`` or not, and the format 3 ones (chunks cut along a later axis) on two threads. A failure
    means an encoder changed (an engine upgrade, a new chunk layout): old streams must still decode
    (above), and a changed layout needs new golden cases. Compared with tagging off: an sz3 stream's
    tag depends on the user's key (sciz.codecs._trust); with it on, only the tag differs."""
    name, params, _dtype = ALL_WRITTEN[case]
    committed = (GOLDEN / f"{case}.scz").read_bytes()
    codec = codecs.get(name, **params)
    data = case_input(case)
    tagged = _stream.parse_stream(codec.encode(data), codec.error)
    if tagged.tag is not None:
        untagged = _stream.pack_stream(tagged)  # the parse took the tag out of the parameters
        assert case in CASES_V3 or untagged == committed, "a tagged stream is the committed one plus its tag"
    monkeypatch.setenv("SCIZ_KEY_FILE", "")
    _trust.forget()
    if case in CASES_V3:
        with small_chunks():
            assert codec.encode(data, numthreads=2) == committed
            header = _stream.parse_stream(committed, codec.error)
            assert (header.axis, len(header.chunks)) == (1, 2), "two chunks across the longest axis (16 of 6x16x12)"
            assert codec.encode(data) != committed, "one thread codes the array whole"
        return
    assert codec.encode(data) == committed
    assert codec.encode(data, numthreads=2) == committed
    out = bytearray(len(committed) + 7)
    assert bytes(codec.encode(data, out=out)) == committed and out[len(committed) :] == bytes(7)
