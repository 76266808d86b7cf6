"""Round trips for every codec x supported dtype x 1-4 dimensions x smooth/random/constant data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sciz import codecs

from ._cases import SETTINGS, SHAPES, assert_nonfinite_exact, codec_dtypes, field, max_error

CASES = [
    pytest.param(
        name, params, dtype, id=f"{name}-{'-'.join(f'{k}{v}' for k, v in params.items()) or 'default'}-{dtype}"
    )
    for name, params in SETTINGS
    for dtype in codec_dtypes(name, params)
]


@pytest.mark.parametrize(("name", "params", "dtype"), CASES)
@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["smooth", "random", "constant"])
def test_round_trip(name: str, params: dict[str, Any], dtype: str, ndim: int, kind: str) -> None:
    data = field(kind, SHAPES[ndim], np.dtype(dtype), seed=ndim)
    codec = codecs.get(name, **params)
    stream = codec.encode(data)
    restored = codec.decode(stream)
    assert restored.shape == data.shape
    assert restored.dtype == data.dtype
    bound = codec.tolerance
    if bound == 0.0:
        assert restored.tobytes() == data.tobytes(), "lossless codec changed bits"
    elif bound is not None:
        assert max_error(data, restored) <= bound
    else:
        assert np.all(np.isfinite(restored))
    if kind == "constant" and bound is not None:
        assert max_error(data, restored) <= bound


@pytest.mark.parametrize(("name", "params"), SETTINGS)
@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_nan_and_inf_come_back_exactly(name: str, params: dict[str, Any], dtype: str) -> None:
    if dtype not in codec_dtypes(name, params):
        pytest.skip(f"{name} does not take {dtype}")
    data = field("smooth", (16, 40), np.dtype(dtype))
    data[3, 5] = np.nan
    data[7, 0] = np.inf
    data[15, 39] = -np.inf
    data[0, :4] = np.nan
    codec = codecs.get(name, **params)
    restored = codec.decode(codec.encode(data))
    assert_nonfinite_exact(data, restored)
    if codec.tolerance is not None:
        assert max_error(data, restored) <= codec.tolerance


@pytest.mark.parametrize(("name", "params"), SETTINGS)
def test_all_nonfinite(name: str, params: dict[str, Any]) -> None:
    data = np.full((8, 8), np.nan, np.float32)
    data[::2] = np.inf
    if "f4" not in codec_dtypes(name, params):
        pytest.skip(f"{name} takes no floats")
    restored = codecs.get(name, **params).decode(codecs.get(name, **params).encode(data))
    assert_nonfinite_exact(data, restored)


@pytest.mark.parametrize(("name", "params"), SETTINGS)
def test_zero_size_and_zero_dim(name: str, params: dict[str, Any]) -> None:
    dtype = np.dtype(codec_dtypes(name, params)[-1])
    codec = codecs.get(name, **params)
    for shape in [(0,), (3, 0, 5), (0, 4)]:
        empty = np.zeros(shape, dtype)
        restored = codec.decode(codec.encode(empty))
        assert restored.shape == shape and restored.dtype == dtype
    scalar = np.array(5, dtype=dtype)
    restored = codec.decode(codec.encode(scalar))
    assert restored.shape == () and restored.dtype == dtype
    if codec.tolerance is not None:
        assert max_error(scalar, restored) <= codec.tolerance


@pytest.mark.parametrize(("name", "params"), SETTINGS)
def test_big_endian_and_noncontiguous_and_readonly(name: str, params: dict[str, Any]) -> None:
    dtype = np.dtype(codec_dtypes(name, params)[-1])
    base = field("smooth", (20, 30), dtype)
    big = base.astype(dtype.newbyteorder(">"))
    strided = base[::2, ::3]
    readonly = base.copy()
    readonly.flags.writeable = False
    codec = codecs.get(name, **params)
    for data in (big, strided, readonly):
        restored = codec.decode(codec.encode(data))
        assert restored.shape == data.shape
        assert restored.dtype == data.dtype, "byte order must be kept"
        if codec.tolerance == 0.0:
            assert np.array_equal(restored, data)
        elif codec.tolerance is not None:
            assert max_error(data.astype(dtype), restored.astype(dtype)) <= codec.tolerance


@pytest.mark.parametrize("ndim", [5, 6])
def test_more_than_four_dimensions(ndim: int) -> None:
    data = field("smooth", (2, 3, 4, 5, 6, 2)[:ndim], np.dtype("f4"))
    for name, params in [
        ("zfp", {"tolerance": 1e-3}),
        ("sz3", {"tolerance": 1e-3}),
        ("sperr", {"tolerance": 1e-3}),
        ("lerc", {"tolerance": 1e-3}),
        ("pcodec", {}),
        ("szip", {}),
    ]:
        codec = codecs.get(name, **params)
        restored = codec.decode(codec.encode(data))
        assert restored.shape == data.shape
        assert max_error(data, restored) <= codec.tolerance


def test_sperr_leading_length_one_axis_does_not_crash() -> None:
    # The engine aborts the process on (1, n, m); sciz folds the axis away.
    data = field("smooth", (1, 40, 50), np.dtype("f4"))
    restored = codecs.sperr_decode(codecs.sperr_encode(data, tolerance=1e-3))
    assert restored.shape == (1, 40, 50)
    assert max_error(data, restored) <= 1e-3


def test_szip_bits_per_pixel_below_sample_size() -> None:
    data = np.random.default_rng(1).integers(0, 4096, (64, 64), dtype=np.uint16)
    stream = codecs.szip_encode(data, coding="ec", pixels_per_block=16, bits_per_pixel=12)
    assert np.array_equal(codecs.szip_decode(stream), data)
    with pytest.raises(codecs.SzipError, match="do not fit"):
        codecs.szip_encode(data | 0x8000, bits_per_pixel=12)
