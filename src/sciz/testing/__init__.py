"""Test helpers for sciz and for codecs written for it (needs pytest), as ``zarr.testing`` is for zarr.

- :class:`CodecTests`: the codec contract, one class of tests any codec of the table passes;
- :class:`FormatTests`: the format contract, one class of tests every registered file format passes;
- :func:`read_in_fresh_process`: read back in a fresh interpreter what this process wrote;
- test arrays and comparisons: :func:`sample_array`, :func:`max_error`, :func:`assert_nonfinite_exact`.
"""

from __future__ import annotations

import pytest

# Plain asserts in the contract report their operands as test asserts do.
pytest.register_assert_rewrite(
    "sciz.testing.contracts", "sciz.testing.formats", "sciz.testing.fresh", "sciz.testing.arrays"
)

from .arrays import SHAPES, assert_nonfinite_exact, max_error, psnr, sample_array, with_nonfinite  # noqa: E402
from .contracts import CodecTests, Setting, check_restored, codec_settings, engine_available  # noqa: E402
from .formats import FormatTests, dataset_for, representative_datasets  # noqa: E402
from .fresh import FreshRead, read_in_fresh_process  # noqa: E402

__all__ = [
    "SHAPES",
    "CodecTests",
    "FormatTests",
    "FreshRead",
    "Setting",
    "assert_nonfinite_exact",
    "check_restored",
    "codec_settings",
    "dataset_for",
    "engine_available",
    "max_error",
    "psnr",
    "read_in_fresh_process",
    "representative_datasets",
    "sample_array",
    "with_nonfinite",
]
