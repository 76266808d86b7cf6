"""The seed-003 functions (``zfp_encode`` ... ``pcodec_check``), made from the codec table.

Each stream codec of :data:`sciz.codecs.registry.CODECS` gets ``<name>_encode`` (the codec class's
keyword parameters plus ``out=`` and ``numthreads=``), ``<name>_decode`` (``shape``/``dtype``
optional and checked against the stream) and ``<name>_check``. The codec class is imported on the
first call or the first look at the signature, never as a side effect of something else.
"""

from __future__ import annotations

import inspect
from typing import Any

from .registry import CODECS, build, codec_class, spec

__all__ = ["SeedFunction", "seed_functions"]


class SeedFunction:
    """One seed function of one codec: ``kind`` is "encode", "decode" or "check"."""

    def __init__(self, codec: str, kind: str) -> None:
        self.codec = codec
        self.kind = kind
        self.__name__ = self.__qualname__ = f"{codec}_{kind}"
        self.__module__ = "sciz.codecs"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "encode":
            return _encode(self.codec, *args, **kwargs)
        if self.kind == "decode":
            return _decode(self.codec, *args, **kwargs)
        return _check(self.codec, *args, **kwargs)

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        row = spec(self.codec)
        if self.kind == "encode":
            cls = codec_class(self.codec)
            what = f"Return {self.codec.upper()} encoded data as a self-describing sciz stream (a bytearray)."
            return f"{what}\n\n{cls.__doc__}"
        if self.kind == "decode":
            return (
                f"Return the array decoded from a sciz {self.codec} stream; ``shape`` and ``dtype`` are optional "
                f"and checked against the stream. Damaged streams raise {row.error.__name__}."
            )
        return f"True if ``data`` is a complete, undamaged sciz {self.codec} stream, else False."

    @property
    def __signature__(self) -> inspect.Signature:
        keyword = inspect.Parameter.KEYWORD_ONLY
        data = inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if self.kind == "check":
            return inspect.Signature([data])
        threads = [
            inspect.Parameter("out", keyword, default=None),
            inspect.Parameter("numthreads", keyword, default=None),
        ]
        if self.kind == "decode":
            names = ("shape", "dtype") if spec(self.codec).decode_takes_shape else ()
            positional = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in names]
            return inspect.Signature([data, *positional, *threads])
        own = inspect.signature(codec_class(self.codec).__init__).parameters.values()
        params = [p.replace(kind=keyword) for p in own if p.name != "self" and p.kind is not p.VAR_KEYWORD]
        return inspect.Signature([data, *params, *threads])

    def __repr__(self) -> str:
        return f"<sciz function {self.__name__}>"


def _encode(codec: str, data: Any, *, out: Any = None, numthreads: int | None = None, **params: Any) -> Any:
    return build(codec, params).encode(data, out=out, numthreads=numthreads)


def _decode(
    codec: str,
    data: Any,
    *args: Any,
    out: Any = None,
    numthreads: int | None = None,
    **kwargs: Any,
) -> Any:
    from .driver import decode_stream

    # Bind exactly as the seed's signature says (shape/dtype only where the seed has them).
    bound = SeedFunction(codec, "decode").__signature__.bind(data, *args, out=out, numthreads=numthreads, **kwargs)
    shape, dtype = bound.arguments.get("shape"), bound.arguments.get("dtype")
    return decode_stream(data, codec, spec(codec).error, out=out, numthreads=numthreads, shape=shape, dtype=dtype)


def _check(codec: str, data: Any) -> bool:
    from . import _stream

    return _stream.is_sciz_stream(data) and _stream.peek_codec(data) == codec


def seed_functions() -> dict[str, SeedFunction]:
    """``{"zfp_encode": ..., "zfp_decode": ..., "zfp_check": ..., ...}`` for every stream codec."""
    return {
        f"{name}_{kind}": SeedFunction(name, kind)
        for name, row in CODECS.items()
        if row.method is not None
        for kind in ("encode", "decode", "check")
    }
