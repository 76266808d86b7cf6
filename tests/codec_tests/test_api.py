"""The seed-003 API: names, keywords, constants, errors and argument errors.

``*_check``, input buffers, ``out=`` and the unavailable jetraw are checked for every codec by the
contract (test_contract.py)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import sciz
from sciz import codecs, errors

SMOOTH = (np.sin(np.linspace(0, 20, 4096)).reshape(64, 64) * 10).astype(np.float32)


def test_seed_signatures() -> None:
    # The seed's keywords, in its order; every stream codec adds sciz's keyword-only fill_value, zfp its
    # engine accuracy (sciz.codecs.choose tries it; the driver checks the tolerance).
    expected = {
        "zfp_encode": ["data", "rate", "precision", "tolerance", "accuracy", "fill_value", "out"],
        "zfp_decode": ["data", "shape", "dtype", "out"],
        "sperr_encode": ["data", "mode", "quality", "tolerance", "fill_value", "out"],
        "sperr_decode": ["data", "out"],
        "sz3_encode": ["data", "tolerance", "fill_value", "out"],
        "sz3_decode": ["data", "shape", "dtype", "out"],
        "floatpred_encode": ["data", "axis", "dist", "out"],
        "floatpred_decode": ["data", "axis", "dist", "out"],
        "jetraw_encode": ["data", "identifier", "out"],
        "jetraw_decode": ["data", "out"],
        "lerc_encode": ["data", "tolerance", "version", "fill_value", "out"],
        "lerc_decode": ["data", "out"],
        "szip_encode": ["data", "coding", "pixels_per_block", "bits_per_pixel", "fill_value", "out"],
        "szip_decode": ["data", "out"],
        "pcodec_encode": ["data", "level", "fill_value", "out"],
        "pcodec_decode": ["data", "out"],
    }
    for name, params in expected.items():
        signature = inspect.signature(getattr(codecs, name))
        names = [p for p in signature.parameters if p != "numthreads"]
        assert names == params, name
        assert getattr(sciz, name) is getattr(codecs, name), "seed names are importable from sciz too"
    for codec in ("zfp", "sperr", "sz3", "floatpred", "jetraw", "lerc", "szip", "pcodec"):
        assert callable(getattr(codecs, f"{codec}_check"))


def test_constants() -> None:
    assert codecs.ZFP.available is True
    assert (codecs.ZFP.EXEC.SERIAL, codecs.ZFP.EXEC.OMP, codecs.ZFP.EXEC.CUDA) == (0, 1, 2)
    assert (codecs.ZFP.MODE.EXPERT, codecs.ZFP.MODE.FIXED_RATE) == (0, 1)
    assert (codecs.ZFP.MODE.FIXED_PRECISION, codecs.ZFP.MODE.FIXED_ACCURACY) == (2, 3)
    assert codecs.SPERR.available is True
    assert (codecs.SPERR.MODE.RATE, codecs.SPERR.MODE.PSNR, codecs.SPERR.MODE.PWE) == ("rate", "psnr", "pwe")
    for name in ("SZ3", "LERC", "SZIP", "PCODEC", "FLOATPRED"):
        assert getattr(codecs, name).available is True
    assert codecs.JETRAW.available is False


def test_error_classes() -> None:
    for name in (
        "ZfpError",
        "SperrError",
        "Sz3Error",
        "FloatpredError",
        "LercError",
        "SzipError",
        "PcodecError",
        "JetrawError",
    ):
        cls = getattr(codecs, name)
        assert issubclass(cls, errors.CodecError) and issubclass(cls, ValueError) and issubclass(cls, Exception)
        assert getattr(errors, name) is cls


def test_floatpred_check_is_none_and_round_trip_any_axis() -> None:
    assert codecs.floatpred_check(SMOOTH) is None
    data = np.random.default_rng(0).normal(size=(4, 8, 12)).astype(">f8")
    for axis in (0, 1, -1):
        for dist in (1, 2, 4):
            encoded = codecs.floatpred_encode(data, axis=axis, dist=dist)
            assert encoded.shape == data.shape and encoded.dtype == data.dtype
            restored = codecs.floatpred_decode(encoded, axis=axis, dist=dist)
            assert restored.dtype == data.dtype and restored.tobytes() == data.tobytes()
    out = np.empty_like(data)
    assert codecs.floatpred_decode(codecs.floatpred_encode(data), out=out) is out
    with pytest.raises(codecs.FloatpredError, match="dist"):
        codecs.floatpred_encode(data, dist=3)
    with pytest.raises(codecs.FloatpredError, match="axis"):
        codecs.floatpred_encode(data, axis=3)
    with pytest.raises(codecs.FloatpredError, match="multiple of dist"):
        codecs.floatpred_encode(np.zeros((3, 5)), dist=2)
    with pytest.raises(codecs.FloatpredError, match="int32"):
        codecs.floatpred_encode(np.zeros(4, np.int32))


def test_seed_floatpred_example() -> None:
    import imagecodecs

    x = np.linspace(0, 10, 1000)
    X, Y = np.meshgrid(x, x)
    field = (np.sin(X) * np.cos(Y) + 0.1 * np.random.default_rng(1).random((1000, 1000))).astype(np.float32)
    predicted = codecs.floatpred_encode(field, axis=1)
    compressed = imagecodecs.zlib_encode(predicted.tobytes(), level=9)
    assert len(compressed) < len(imagecodecs.zlib_encode(field.tobytes(), level=9))
    restored = np.frombuffer(imagecodecs.zlib_decode(compressed), dtype=np.float32).reshape(field.shape)
    assert np.array_equal(field, codecs.floatpred_decode(restored, axis=1))


def test_shape_and_dtype_are_checked_not_trusted() -> None:
    stream = codecs.sz3_encode(SMOOTH, tolerance=1e-3)
    assert codecs.sz3_decode(stream, SMOOTH.shape, SMOOTH.dtype).shape == SMOOTH.shape
    with pytest.raises(codecs.Sz3Error, match="shape"):
        codecs.sz3_decode(stream, (64, 65), np.float32)
    with pytest.raises(codecs.Sz3Error, match="dtype"):
        codecs.sz3_decode(stream, SMOOTH.shape, np.float64)
    zstream = codecs.zfp_encode(SMOOTH, rate=8)
    with pytest.raises(codecs.ZfpError, match="shape"):
        codecs.zfp_decode(zstream, shape=(4096,))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: codecs.zfp_encode(SMOOTH), codecs.ZfpError, "exactly one"),
        (lambda: codecs.zfp_encode(SMOOTH, rate=8, tolerance=1e-3), codecs.ZfpError, "exactly one"),
        (lambda: codecs.zfp_encode(SMOOTH, tolerance=-1.0), codecs.ZfpError, "tolerance=-1.0"),
        (lambda: codecs.zfp_encode(SMOOTH, tolerance=float("nan")), codecs.ZfpError, "tolerance=nan"),
        (lambda: codecs.zfp_encode(SMOOTH, rate=0), codecs.ZfpError, "rate=0"),
        (lambda: codecs.zfp_encode(SMOOTH, precision=1.5), codecs.ZfpError, "precision=1.5"),
        (lambda: codecs.zfp_encode(np.zeros(4, np.int32), tolerance=1e-3), codecs.ZfpError, "float32/float64"),
        (lambda: codecs.zfp_encode(np.zeros(4, np.uint8), tolerance=0), codecs.ZfpError, "uint8"),
        (lambda: codecs.sz3_encode(SMOOTH), codecs.Sz3Error, "required"),
        (lambda: codecs.sz3_encode(np.zeros(4, complex), tolerance=1), codecs.Sz3Error, "complex128"),
        (lambda: codecs.sz3_encode(np.zeros(4, bool), tolerance=1), codecs.Sz3Error, "bool"),
        (lambda: codecs.sz3_encode(np.array([object()]), tolerance=1), codecs.Sz3Error, "object"),
        (lambda: codecs.sz3_encode(b"bytes", tolerance=1), codecs.Sz3Error, "numpy arrays"),
        (lambda: codecs.sperr_encode(SMOOTH), codecs.SperrError, "tolerance="),
        (lambda: codecs.sperr_encode(SMOOTH, mode="pwe"), codecs.SperrError, "quality="),
        (lambda: codecs.sperr_encode(SMOOTH, mode="fast", quality=1), codecs.SperrError, "mode='fast'"),
        (lambda: codecs.sperr_encode(SMOOTH, mode="psnr", quality=60, tolerance=1), codecs.SperrError, "either"),
        (lambda: codecs.sperr_encode(SMOOTH, tolerance=0), codecs.SperrError, "lossless"),
        (lambda: codecs.lerc_encode(SMOOTH, version=5), codecs.LercError, "version=5"),
        (lambda: codecs.lerc_encode(np.zeros(4, np.int64)), codecs.LercError, "int64"),
        (lambda: codecs.szip_encode(np.zeros(64, np.uint16), coding="xx"), codecs.SzipError, "coding='xx'"),
        (lambda: codecs.szip_encode(np.zeros(64, np.uint16), pixels_per_block=7), codecs.SzipError, "even"),
        (lambda: codecs.szip_encode(np.zeros(64, np.uint16), bits_per_pixel=32), codecs.SzipError, "2-byte"),
        (lambda: codecs.pcodec_encode(SMOOTH, level=13), codecs.PcodecError, "level=13"),
        (lambda: codecs.pcodec_encode(SMOOTH, numthreads=-1), errors.ArgumentError, "numthreads=-1"),
        (lambda: codecs.get("nosuch"), errors.ArgumentError, "known codecs"),
    ],
)
def test_bad_arguments_are_named(call, error, message) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace("[", r"\[")):
        call()


def test_sperr_modes() -> None:
    data = np.random.default_rng(3).normal(size=(32, 32, 8)).cumsum(axis=0).astype(np.float32)
    rate = codecs.sperr_encode(data, mode=codecs.SPERR.MODE.RATE, quality=4.0)
    assert len(rate) < data.nbytes / 4
    psnr = codecs.sperr_decode(codecs.sperr_encode(data, mode="psnr", quality=60.0))
    signal_range = float(data.max() - data.min())
    mse = float(np.mean((psnr.astype(np.float64) - data) ** 2))
    assert 10 * np.log10(signal_range**2 / mse) >= 59.0
