"""Regressions from an adversarial review of the codec layer: each case once broke a promise."""

from __future__ import annotations

import numpy as np
import pytest

from sciz import codecs
from sciz.codecs import _stream
from sciz.errors import LosslessFallbackWarning

from ._cases import assert_nonfinite_exact, max_error


@pytest.mark.parametrize(
    ("value", "tolerance", "dtype"),
    [(1e-36, 1e-36, "f4"), (2.04e-38, 1.2e-38, "f4"), (1e-300, 1e-300, "f8"), (3e-31, 1e-30, "f4")],
)
def test_zfp_tiny_tolerances_keep_the_bound(value: float, tolerance: float, dtype: str) -> None:
    data = np.full((4, 4), value, dtype) * np.linspace(0.5, 1.5, 16, dtype=dtype).reshape(4, 4)
    with pytest.warns(LosslessFallbackWarning, match="missed the bound"):
        stream = codecs.zfp_encode(data, tolerance=tolerance)
    assert max_error(data, codecs.zfp_decode(stream)) <= tolerance


def test_sperr_subnormal_tolerance_in_float64() -> None:
    data = np.random.default_rng(1).normal(size=(8, 8)) * 1e-310
    with pytest.warns(LosslessFallbackWarning, match="subnormal"):
        restored = codecs.sperr_decode(codecs.sperr_encode(data, tolerance=1e-320))
    assert max_error(data, restored) <= 1e-320


@pytest.mark.parametrize(
    ("data", "encode", "falls_back"),
    [
        (
            np.linspace(-1e160, 1e160, 1000).reshape(10, 100),
            lambda a: codecs.sperr_encode(a, mode="psnr", quality=60),
            True,
        ),
        (np.array(3e38, "f4"), lambda a: codecs.zfp_encode(a, rate=4), True),
        (np.linspace(-1, 1, 1000, dtype="f4") * np.float32(3.4e38), lambda a: codecs.zfp_encode(a, precision=8), False),
    ],
)
def test_unbounded_modes_keep_finite_values_finite(data: np.ndarray, encode, falls_back: bool) -> None:
    if falls_back:
        with pytest.warns(LosslessFallbackWarning, match="returned NaN/Inf"):
            stream = encode(data)
    else:
        stream = encode(data)
    restored = codecs.decode(stream)
    assert np.isfinite(restored).all()


def test_sperr_engine_refusal_falls_back_to_lossless() -> None:
    data = np.linspace(-1e300, 1e300, 1000).reshape(10, 100)
    with pytest.warns(LosslessFallbackWarning, match="engine refused"):
        restored = codecs.sperr_decode(codecs.sperr_encode(data, tolerance=1e296))
    assert max_error(data, restored) <= 1e296


def test_huge_tolerance_near_overflow_warns_only_of_the_fallback() -> None:
    # No numpy overflow warning; the exact storage is announced (any other warning fails the test).
    data = np.ones(10, "f4")
    with pytest.warns(LosslessFallbackWarning, match="overflow"):
        restored = codecs.zfp_decode(codecs.zfp_encode(data, tolerance=1e39))
    assert max_error(data, restored) <= 1e39


def _forged(params_raw: bytes | None = None, shape: tuple[int, ...] = (1,)) -> bytes:
    stream = codecs.pcodec_encode(np.zeros(1, "f4"))
    header = _stream.parse_stream(stream, codecs.PcodecError)
    header.shape = shape
    if 0 in shape:
        header.chunks = []
    raw = _stream.pack_stream(header)
    if params_raw is None:
        return raw
    # Swap the parameters JSON for a deeply nested one and re-seal the header checksum.
    import json
    import struct

    old = json.dumps(header.params, separators=(",", ":")).encode()
    fixed = _stream._FIXED.size + 8 * len(shape)
    body = raw[:fixed] + params_raw + raw[fixed + len(old) :]
    body = body[:12] + struct.pack("<I", len(params_raw)) + body[16:]
    head_end = fixed + len(params_raw) + 12 + _stream._CHUNK.size * len(header.chunks)
    return body[:head_end] + struct.pack("<I", _stream.crc32(body[:head_end])) + body[head_end + 4 :]


def test_deeply_nested_parameters_are_a_codec_error() -> None:
    stream = _forged(b"[" * 60000)
    with pytest.raises(codecs.PcodecError, match="JSON"):
        codecs.pcodec_decode(stream)
    assert codecs.pcodec_check(stream) is False
    with pytest.raises(codecs.PcodecError):
        codecs.decode(stream, isolated=True)


def test_absurd_axis_length_is_a_codec_error() -> None:
    stream = _forged(shape=(0, 2**62))
    with pytest.raises(codecs.PcodecError, match="impossible"):
        codecs.pcodec_decode(stream)
    assert codecs.pcodec_check(stream) is False


def test_argument_types() -> None:
    data = np.linspace(0, 1, 64, dtype="f4").reshape(8, 8)
    assert codecs.zfp_decode(codecs.zfp_encode(data, rate=np.int64(8))).shape == (8, 8)
    stream = codecs.zfp_encode(data, rate=8)
    with pytest.raises(codecs.ZfpError, match="shape"):
        codecs.zfp_decode(stream, shape=(8.5, 8))
    with pytest.raises(codecs.FloatpredError, match=r"dist=2\.0"):
        codecs.floatpred_encode(data, dist=2.0)
    big = codecs.pcodec_encode(data.astype(">f4"))
    native_out = np.empty((8, 8), "<f4")
    codecs.pcodec_decode(big, out=native_out)
    assert np.array_equal(native_out, data)
    assert codecs.sz3_encode(data, tolerance=-0.0) is not None


def test_one_long_row_is_cut_into_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_stream, "CHUNK_BYTES", 4096)
    data = np.sin(np.linspace(0, 50, 20000, dtype="f4")).reshape(1, 20000)
    data[0, 5] = np.nan
    stream = codecs.sz3_encode(data, tolerance=1e-3, numthreads=2)
    assert len(_stream.parse_stream(stream, codecs.Sz3Error).chunks) > 10
    restored = codecs.sz3_decode(stream, numthreads=2)
    assert restored.shape == (1, 20000)
    assert_nonfinite_exact(data, restored)
    assert max_error(data, restored) <= 1e-3


def test_isolated_error_message_is_not_doubled() -> None:
    stream = bytearray(codecs.szip_encode(np.arange(100, dtype="u2")))
    with pytest.raises(codecs.SzipError) as info:
        codecs.decode(bytes(stream[:-3]), isolated=True)
    assert "SzipError: SzipError" not in str(info.value)
