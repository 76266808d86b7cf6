"""Codec-specific round trips the contract (test_contract.py) does not reach: engine quirks and parameters."""

from __future__ import annotations

import numpy as np
import pytest

from sciz import codecs
from sciz.testing import sample_array

from ._cases import max_error


def test_sperr_leading_length_one_axis_does_not_crash() -> None:
    # The engine aborts the process on (1, n, m); sciz folds the axis away.
    data = sample_array("smooth", (1, 40, 50), "f4")
    restored = codecs.sperr_decode(codecs.sperr_encode(data, tolerance=1e-3))
    assert restored.shape == (1, 40, 50)
    assert max_error(data, restored) <= 1e-3


def test_szip_bits_per_pixel_below_sample_size() -> None:
    data = np.random.default_rng(1).integers(0, 4096, (64, 64), dtype=np.uint16)
    stream = codecs.szip_encode(data, coding="ec", pixels_per_block=16, bits_per_pixel=12)
    assert np.array_equal(codecs.szip_decode(stream), data)
    with pytest.raises(codecs.SzipError, match="do not fit"):
        codecs.szip_encode(data | 0x8000, bits_per_pixel=12)


@pytest.mark.parametrize(("coding", "pixels_per_block"), [("ec", 8), ("nn", 2), ("nn", 32)])
def test_szip_codings_and_block_sizes(coding: str, pixels_per_block: int) -> None:
    for dtype in ("u1", "i2", "f4", "i8", "f8"):
        data = sample_array("random", (33, 47), dtype, seed=3)
        codec = codecs.get("szip", coding=coding, pixels_per_block=pixels_per_block)
        assert codec.decode(codec.encode(data)).tobytes() == data.tobytes(), dtype


@pytest.mark.parametrize("level", [0, 12])
def test_pcodec_levels(level: int) -> None:
    data = sample_array("smooth", (33, 47), "f8")
    codec = codecs.get("pcodec", level=level)
    assert codec.decode(codec.encode(data)).tobytes() == data.tobytes()
