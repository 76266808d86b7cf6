"""Scientific codecs with the API of seed 003: ``zfp_encode`` ... ``pcodec_check``, constants and errors.

Every ``*_encode`` returns a self-describing sciz stream (shape, dtype, parameters and checksums
inside), so every ``*_decode`` works from the stream alone; ``shape``/``dtype`` arguments are
optional and checked. Absolute-error modes keep their bound for every element, NaN and +-Inf come
back exactly, damaged streams raise the codec's error instead of crashing, and large arrays can be
coded on several cores with ``numthreads=``. The engines are imagecodecs' native libraries.

Example
-------
>>> import numpy as np
>>> from sciz.codecs import sz3_encode, sz3_decode
>>> field = np.linspace(0, 1, 1000, dtype=np.float32).reshape(10, 100)
>>> restored = sz3_decode(sz3_encode(field, tolerance=1e-3))
>>> bool(np.abs(restored - field).max() <= 1e-3)
True
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from ..errors import (
    FloatpredError,
    JetrawError,
    LercError,
    PcodecError,
    SperrError,
    Sz3Error,
    SzipError,
    ZfpError,
)
from ._base import decode_stream
from ._registry import from_config, get, list_codecs, register_codec
from .floatpred import floatpred_decode, floatpred_encode
from .jetraw import jetraw_check, jetraw_decode, jetraw_encode

__all__ = [
    "FLOATPRED",
    "JETRAW",
    "LERC",
    "PCODEC",
    "SPERR",
    "SZ3",
    "SZIP",
    "ZFP",
    "FloatpredError",
    "JetrawError",
    "LercError",
    "PcodecError",
    "SperrError",
    "Sz3Error",
    "SzipError",
    "ZfpError",
    "decode",
    "floatpred_check",
    "floatpred_decode",
    "floatpred_encode",
    "from_config",
    "get",
    "jetraw_check",
    "jetraw_decode",
    "jetraw_encode",
    "lerc_check",
    "lerc_decode",
    "lerc_encode",
    "list_codecs",
    "numcodecs_codec",
    "pcodec_check",
    "pcodec_decode",
    "pcodec_encode",
    "register_codec",
    "sperr_check",
    "sperr_decode",
    "sperr_encode",
    "sz3_check",
    "sz3_decode",
    "sz3_encode",
    "szip_check",
    "szip_decode",
    "szip_encode",
    "zfp_check",
    "zfp_decode",
    "zfp_encode",
]


class _Available:
    """Class attribute that asks the engine on first access (keeps ``import sciz`` free of imagecodecs)."""

    def __init__(self, engine: str) -> None:
        self.engine = engine

    def __get__(self, instance: object, owner: type) -> bool:
        return _engine_available(self.engine)


@functools.cache
def _engine_available(engine: str) -> bool:
    if engine == "JETRAW":
        from .jetraw import available

        return available()
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(getattr(getattr(imagecodecs, engine, None), "available", False))


class ZFP:
    """ZFP constants (values as in seed 003)."""

    available = _Available("ZFP")

    class EXEC:
        SERIAL = 0
        OMP = 1  # OpenMP parallel execution
        CUDA = 2  # CUDA GPU execution (not in the engines installable here)

    class MODE:
        EXPERT = 0
        FIXED_RATE = 1
        FIXED_PRECISION = 2
        FIXED_ACCURACY = 3
        REVERSIBLE = 4


class SPERR:
    """SPERR constants."""

    available = _Available("SPERR")

    class MODE:
        RATE = "rate"
        PSNR = "psnr"
        PWE = "pwe"


class SZ3:
    available = _Available("SZ3")


class LERC:
    available = _Available("LERC")


class SZIP:
    available = _Available("SZIP")


class PCODEC:
    available = _Available("PCODEC")


class FLOATPRED:
    available = _Available("FLOATPRED")


class JETRAW:
    available = _Available("JETRAW")


def _check_stream(data: Any, codec: str) -> bool:
    from . import _stream

    return _stream.is_sciz_stream(data) and _stream.peek_codec(data) == codec


# ----- zfp --------------------------------------------------------------------------------------
def zfp_encode(
    data: Any,
    *,
    rate: float | None = None,
    precision: int | None = None,
    tolerance: float | None = None,
    out: Any = None,
    numthreads: int | None = None,
) -> Any:
    """Return ZFP encoded data; exactly one of ``rate``, ``precision`` or ``tolerance`` (0 = lossless)."""
    return get("zfp", rate=rate, precision=precision, tolerance=tolerance).encode(data, out=out, numthreads=numthreads)


def zfp_decode(
    data: Any,
    shape: Sequence[int] | None = None,
    dtype: Any = None,
    *,
    out: Any = None,
    numthreads: int | None = None,
) -> Any:
    """Return the decoded array; ``shape`` and ``dtype`` are optional and checked against the stream."""
    return decode_stream(data, "zfp", ZfpError, out=out, numthreads=numthreads, shape=shape, dtype=dtype)


def zfp_check(data: Any) -> bool:
    """True if ``data`` is a sciz ZFP stream, else False."""
    return _check_stream(data, "zfp")


# ----- sperr ------------------------------------------------------------------------------------
def sperr_encode(
    data: Any,
    *,
    mode: str | None = None,
    quality: float | None = None,
    tolerance: float | None = None,
    out: Any = None,
    numthreads: int | None = None,
) -> Any:
    """Return SPERR encoded data: ``mode`` ('rate', 'psnr', 'pwe') with ``quality``, or ``tolerance``."""
    return get("sperr", mode=mode, quality=quality, tolerance=tolerance).encode(data, out=out, numthreads=numthreads)


def sperr_decode(data: Any, *, out: Any = None, numthreads: int | None = None) -> Any:
    """Return decoded SPERR data."""
    return decode_stream(data, "sperr", SperrError, out=out, numthreads=numthreads)


def sperr_check(data: Any) -> bool:
    """True if ``data`` is a sciz SPERR stream, else False."""
    return _check_stream(data, "sperr")


# ----- sz3 --------------------------------------------------------------------------------------
def sz3_encode(data: Any, *, tolerance: float | None = None, out: Any = None, numthreads: int | None = None) -> Any:
    """Return SZ3 encoded data with absolute error bound ``tolerance`` (required)."""
    return get("sz3", tolerance=tolerance).encode(data, out=out, numthreads=numthreads)


def sz3_decode(
    data: Any,
    shape: Sequence[int] | None = None,
    dtype: Any = None,
    *,
    out: Any = None,
    numthreads: int | None = None,
) -> Any:
    """Return the decoded array; ``shape`` and ``dtype`` are optional and checked against the stream."""
    return decode_stream(data, "sz3", Sz3Error, out=out, numthreads=numthreads, shape=shape, dtype=dtype)


def sz3_check(data: Any) -> bool:
    """True if ``data`` is a sciz SZ3 stream, else False."""
    return _check_stream(data, "sz3")


# ----- floatpred --------------------------------------------------------------------------------
def floatpred_check(data: Any) -> None:
    """Always None: the predictor is a transform, not a format."""
    return None


# ----- lerc -------------------------------------------------------------------------------------
def lerc_encode(
    data: Any,
    *,
    tolerance: float | None = None,
    version: int | None = None,
    out: Any = None,
    numthreads: int | None = None,
) -> Any:
    """Return LERC encoded data; ``tolerance`` 0.0 (default) is lossless; ``version`` 2, 3 or 4 (default)."""
    return get("lerc", tolerance=tolerance, version=version).encode(data, out=out, numthreads=numthreads)


def lerc_decode(data: Any, *, out: Any = None, numthreads: int | None = None) -> Any:
    """Return decoded LERC data."""
    return decode_stream(data, "lerc", LercError, out=out, numthreads=numthreads)


def lerc_check(data: Any) -> bool:
    """True if ``data`` is a sciz LERC stream, else False."""
    return _check_stream(data, "lerc")


# ----- szip -------------------------------------------------------------------------------------
def szip_encode(
    data: Any,
    *,
    coding: str | None = None,
    pixels_per_block: int | None = None,
    bits_per_pixel: int | None = None,
    out: Any = None,
    numthreads: int | None = None,
) -> Any:
    """Return SZIP encoded data (``coding`` 'ec' or 'nn', ``pixels_per_block`` even 2-32, ``bits_per_pixel``)."""
    codec = get("szip", coding=coding, pixels_per_block=pixels_per_block, bits_per_pixel=bits_per_pixel)
    return codec.encode(data, out=out, numthreads=numthreads)


def szip_decode(data: Any, *, out: Any = None, numthreads: int | None = None) -> Any:
    """Return decoded SZIP data."""
    return decode_stream(data, "szip", SzipError, out=out, numthreads=numthreads)


def szip_check(data: Any) -> bool:
    """True if ``data`` is a sciz SZIP stream, else False."""
    return _check_stream(data, "szip")


# ----- pcodec -----------------------------------------------------------------------------------
def pcodec_encode(data: Any, *, level: int | None = None, out: Any = None, numthreads: int | None = None) -> Any:
    """Return PCODEC encoded data; ``level`` 0-12 (default 8); lossless."""
    return get("pcodec", level=level).encode(data, out=out, numthreads=numthreads)


def pcodec_decode(data: Any, *, out: Any = None, numthreads: int | None = None) -> Any:
    """Return decoded PCODEC data."""
    return decode_stream(data, "pcodec", PcodecError, out=out, numthreads=numthreads)


def pcodec_check(data: Any) -> bool:
    """True if ``data`` is a sciz PCODEC stream, else False."""
    return _check_stream(data, "pcodec")


def numcodecs_codec(codec: Any) -> Any:
    """Wrap a sciz codec as a numcodecs codec (id ``"sciz"``) for zarr and other numcodecs users."""
    from .numcodecs_compat import SciZNumcodec

    return SciZNumcodec(codec=codec.get_config())


def decode(
    data: Any, *, out: Any = None, numthreads: int | None = None, isolated: bool = False, timeout: float = 600.0
) -> Any:
    """Decode any sciz codec stream, whichever codec wrote it (read from the stream's header).

    ``isolated=True`` decodes in a forked child process: use it for streams from untrusted sources,
    so that even a payload crafted to crash an engine only raises the codec's error.
    """
    from ..errors import CodecError

    return decode_stream(data, None, CodecError, out=out, numthreads=numthreads, isolated=isolated, timeout=timeout)
