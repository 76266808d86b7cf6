"""Scientific codecs with the API of seed 003: ``zfp_encode`` ... ``pcodec_check``, constants and errors.

Every ``*_encode`` returns a self-describing sciz stream (shape, dtype, parameters and checksums
inside), so every ``*_decode`` works from the stream alone; ``shape``/``dtype`` arguments are
optional and checked. Absolute-error modes keep their bound for every element, NaN, +-Inf and
``fill_value=`` elements come back bit for bit (kept apart from the engine in a compressed mask),
damaged and forged streams raise the codec's error instead of crashing (checksums, engine headers
checked against the sciz header, SZ3 decoded in a child process), and large arrays can be coded on
several cores with ``numthreads=``. The engines are imagecodecs' native libraries.

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
from typing import Any

from ..errors import (
    CodecError,
    FloatpredError,
    JetrawError,
    LercError,
    PcodecError,
    SperrError,
    Sz3Error,
    SzipError,
    ZfpError,
)
from ._stream import describe_stream
from .api import seed_functions
from .auto import AutoCodec, choose
from .driver import decode_stream
from .floatpred import floatpred_decode, floatpred_encode
from .jetraw import jetraw_check, jetraw_decode, jetraw_encode
from .registry import CODECS, from_config, get, list_codecs, register_codec

_SEED_FUNCTIONS = seed_functions()
globals().update(_SEED_FUNCTIONS)


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


def _constants(engine: str, **extra: Any) -> Any:
    """The seed's constants class of one codec: ``available`` plus any nested constants."""
    return type(engine, (), {"available": _Available(engine), "__module__": __name__, **extra})


class _ZfpExec:
    SERIAL = 0
    OMP = 1  # OpenMP parallel execution
    CUDA = 2  # CUDA GPU execution (not in the engines installable here)


class _ZfpMode:
    EXPERT = 0
    FIXED_RATE = 1
    FIXED_PRECISION = 2
    FIXED_ACCURACY = 3
    REVERSIBLE = 4


class _SperrMode:
    RATE = "rate"
    PSNR = "psnr"
    PWE = "pwe"


_EXTRA_CONSTANTS: dict[str, dict[str, Any]] = {
    "ZFP": {"EXEC": _ZfpExec, "MODE": _ZfpMode},
    "SPERR": {"MODE": _SperrMode},
}
_CONSTANTS = {row.engine: _constants(row.engine, **_EXTRA_CONSTANTS.get(row.engine, {})) for row in CODECS.values()}
globals().update(_CONSTANTS)
ZFP: Any = _CONSTANTS["ZFP"]
SPERR: Any = _CONSTANTS["SPERR"]


def floatpred_check(data: Any) -> None:
    """Always None: the predictor is a transform, not a format."""
    return None


def numcodecs_codec(codec: Any) -> Any:
    """Wrap a sciz codec as a numcodecs codec (id ``"sciz"``) for zarr and other numcodecs users."""
    from .numcodecs_compat import SciZNumcodec

    return SciZNumcodec(codec=codec.get_config())


def decode(
    data: Any, *, out: Any = None, numthreads: int | None = None, isolated: bool | None = None, timeout: float = 600.0
) -> Any:
    """Decode any sciz codec stream, whichever codec wrote it (read from the stream's header).

    Safe for untrusted streams by default: every engine payload's header is checked against the
    stream's header, and payloads of engines no check can make safe (SZ3) are decoded in a forked
    child, so a stream forged to crash an engine only raises the codec's error (a hang after
    ``timeout`` seconds too). ``isolated=True`` decodes every stream in a child; ``isolated=False``
    never does (trusted streams only).
    """
    return decode_stream(data, None, CodecError, out=out, numthreads=numthreads, isolated=isolated, timeout=timeout)


__all__ = [
    "AutoCodec",
    "CodecError",
    "FloatpredError",
    "JetrawError",
    "LercError",
    "PcodecError",
    "SperrError",
    "Sz3Error",
    "SzipError",
    "ZfpError",
    "choose",
    "decode",
    "describe_stream",
    "floatpred_check",
    "floatpred_decode",
    "floatpred_encode",
    "from_config",
    "get",
    "jetraw_check",
    "jetraw_decode",
    "jetraw_encode",
    "list_codecs",
    "numcodecs_codec",
    "register_codec",
]
__all__ += [*_SEED_FUNCTIONS, *_CONSTANTS]
