"""The codec table: the one place that says which codecs exist and what each one is.

Every codec is one row: its name, the number its streams carry, the ``module:Class`` that
implements it (imported on first use, for decoding as much as for encoding), the seed's error
class, the dtypes and bounds it offers, and its engine. The seed functions, ``get`` /
``list_codecs`` / ``from_config``, the stream's codec numbers, the numcodecs adapter and
``sciz codecs list`` are all derived from this table, so a stream written by one process decodes
in any other: nothing depends on which module happened to be imported. Adding a codec means one
module plus one row; third parties add rows through the ``sciz.codecs`` entry point group (an
entry point names a class whose ``spec`` attribute is its :class:`CodecSpec`).
"""

from __future__ import annotations

import functools
import importlib
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from ..errors import (
    ArgumentError,
    CodecError,
    FloatpredError,
    JetrawError,
    LercError,
    PcodecError,
    SperrError,
    Sz3Error,
    SzipError,
    ZfpError,
    argument_error,
)

__all__ = ["CODECS", "CodecSpec", "codec_class", "from_config", "get", "list_codecs", "register_codec", "spec"]

#: Integer, float and every dtype string sciz streams can hold (without byte order).
INTEGERS = ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8")
FLOATS = ("f4", "f8")


@dataclass(frozen=True)
class CodecSpec:
    """One codec: what it is called, how its streams are marked, where it lives and what it offers."""

    #: Registry name, e.g. ``"zfp"``; also the prefix of the seed functions (``zfp_encode``).
    name: str
    #: Number marking this codec's streams and chunks (one byte); None for a transform or a
    #: proprietary pass-through that writes no sciz stream.
    method: int | None
    #: ``"module:Class"`` implementing the codec, imported on first use.
    target: str
    #: The seed's error class.
    error: type[CodecError]
    #: dtype strings without byte order that the codec accepts.
    dtypes: tuple[str, ...]
    #: The bounds it offers: "tolerance" (absolute error), "rate", "precision", "psnr", "lossless".
    bounds: tuple[str, ...] = ()
    #: Whether the engine itself keeps NaN and +-Inf exactly. sciz streams mask them for every codec
    #: (measured: even sz3 and pcodec compress better masked); this says what a raw engine stream,
    #: such as a codec's HDF5 filter, does with them.
    keeps_nonfinite: bool = False
    #: imagecodecs' constants class telling whether the engine is built in (``imagecodecs.ZFP``).
    engine: str = ""
    #: The engine's key in ``imagecodecs.version(dict)``.
    library: str = ""
    #: The registered HDF5 filter id other HDF5 readers decode it with, if any.
    hdf5_filter_id: int | None = None
    #: One line for ``sciz codecs list``.
    summary: str = ""
    #: Whether the seed's ``<name>_decode`` takes ``shape`` and ``dtype`` (zfp and sz3 engines need them).
    decode_takes_shape: bool = False


_ROWS = (
    CodecSpec(
        "zfp", 1, "sciz.codecs.zfp:ZfpCodec", ZfpError, ("f4", "f8", "i4", "i8"),
        bounds=("tolerance", "rate", "precision", "lossless"), keeps_nonfinite=False,
        engine="ZFP", library="zfp", hdf5_filter_id=32013, decode_takes_shape=True,
        summary="rate / precision / tolerance (0 = lossless)",
    ),
    CodecSpec(
        "sperr", 2, "sciz.codecs.sperr:SperrCodec", SperrError, FLOATS,
        bounds=("tolerance", "rate", "psnr"), keeps_nonfinite=False,
        engine="SPERR", library="sperr", hdf5_filter_id=32028,
        summary="rate / psnr / pwe tolerance",
    ),
    CodecSpec(
        "sz3", 3, "sciz.codecs.sz3:Sz3Codec", Sz3Error, FLOATS,
        bounds=("tolerance", "lossless"), keeps_nonfinite=True,
        engine="SZ3", library="sz3", hdf5_filter_id=32024, decode_takes_shape=True,
        summary="absolute tolerance (0 = lossless)",
    ),
    CodecSpec(
        "lerc", 4, "sciz.codecs.lerc:LercCodec", LercError, ("u1", "i1", "u2", "i2", "u4", "i4", *FLOATS),
        bounds=("tolerance", "lossless"), keeps_nonfinite=False,
        engine="LERC", library="lerc",
        summary="tolerance (0 = lossless)",
    ),
    CodecSpec(
        "pcodec", 5, "sciz.codecs.pcodec:PcodecCodec", PcodecError, (*INTEGERS, "f2", *FLOATS),
        bounds=("lossless",), keeps_nonfinite=True,
        engine="PCODEC", library="pcodec",
        summary="lossless, level 0-12",
    ),
    CodecSpec(
        "szip", 6, "sciz.codecs.szip:SzipCodec", SzipError, (*INTEGERS, *FLOATS),
        bounds=("lossless",), keeps_nonfinite=True,
        engine="SZIP", library="libaec", hdf5_filter_id=4,
        summary="lossless, ec / nn coding",
    ),
    CodecSpec(
        "floatpred", None, "sciz.codecs.floatpred:FloatpredCodec", FloatpredError, ("f2", *FLOATS),
        bounds=("lossless",), keeps_nonfinite=True,
        engine="FLOATPRED", library="imcd",
        summary="lossless transform (same shape and dtype)",
    ),
    CodecSpec(
        "jetraw", None, "sciz.codecs.jetraw:JetrawCodec", JetrawError, ("u2",),
        bounds=("lossless",), keeps_nonfinite=True,
        engine="JETRAW", library="jetraw",
        summary="lossless (proprietary Dotphoton library)",
    ),
)  # fmt: skip
#: The codec table, by name.
CODECS: dict[str, CodecSpec] = {row.name: row for row in _ROWS}

_classes: dict[str, Any] = {}
_by_method: dict[int, CodecSpec] = {spec.method: spec for spec in CODECS.values() if spec.method is not None}
_entry_points_loaded = False
_lock = threading.RLock()


def _load_entry_points() -> None:
    """Add third-party codecs (entry point group ``sciz.codecs``) once, on first need."""
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        for entry in entry_points(group="sciz.codecs"):
            if entry.name not in CODECS and entry.name not in _classes:
                register_codec(entry.load(), entry.name)


def register_codec(cls: Any, name: str | None = None) -> None:
    """Make ``cls`` available by ``name`` (default ``cls.name``).

    A class with a ``spec`` (:class:`CodecSpec`) whose ``method`` is set also decodes streams
    marked with that number; the number must not be taken by another codec.
    """
    key = name or getattr(cls, "name", None)
    if not isinstance(key, str) or not key:
        raise argument_error("cls", cls, "needs a non-empty str 'name'")
    codec_spec = getattr(cls, "spec", None)
    with _lock:
        if isinstance(codec_spec, CodecSpec) and codec_spec.method is not None:
            taken = _by_method.get(codec_spec.method)
            if taken is not None and taken.name != key:
                raise argument_error(
                    "cls", cls, f"its stream method {codec_spec.method} is already the {taken.name!r} codec's"
                )
            _by_method[codec_spec.method] = codec_spec
            CODECS.setdefault(key, codec_spec)
        _classes[key] = cls


def codec_class(name: str) -> Any:
    """The class implementing codec ``name``, imported on first use."""
    if name in _classes:
        return _classes[name]
    codec_spec = CODECS.get(name)
    if codec_spec is None:
        _load_entry_points()
        if name in _classes:
            return _classes[name]
        raise argument_error("name", name, f"known codecs are {', '.join(list_codecs())}", cls=ArgumentError)
    module, _, attribute = codec_spec.target.partition(":")
    cls = getattr(importlib.import_module(module), attribute)
    with _lock:
        _classes.setdefault(name, cls)
    return _classes[name]


def spec(name: str) -> CodecSpec:
    """The table row of codec ``name``."""
    if name not in CODECS:
        _load_entry_points()
    try:
        return CODECS[name]
    except KeyError:
        raise argument_error("name", name, f"known codecs are {', '.join(list_codecs())}", cls=ArgumentError) from None


def spec_for_method(method: int) -> CodecSpec | None:
    """The codec whose streams and chunks carry ``method``, or None if no codec here does."""
    if method not in _by_method:
        _load_entry_points()
    return _by_method.get(method)


def list_codecs() -> list[str]:
    """Names of all codecs: the built-in ones, then registered and entry-point ones."""
    _load_entry_points()
    return [*CODECS, *(name for name in _classes if name not in CODECS)]


def get(name: str, **params: Any) -> Any:
    """A codec object by name, e.g. ``get("sz3", tolerance=1e-3)``; ``get("auto", tolerance=1e-3)`` picks
    the best codec for each array it encodes (:class:`sciz.codecs.auto.AutoCodec`).

    The object has ``encode(array)``, ``decode(stream)``, ``get_config()`` (JSON-safe, rebuilds it via
    :func:`from_config`), ``lossless`` and ``tolerance``.
    """
    if not isinstance(name, str):
        raise argument_error("name", name, "must be a codec name (str)")
    key = name.lower()
    if key.startswith("sciz_"):
        key = key[5:]
    if key == "auto":  # chooses a codec of this table for each array it encodes
        return importlib.import_module("sciz.codecs.auto").AutoCodec(**params)
    return build(key, params)


@functools.cache
def _keyword_parameters(cls: type) -> tuple[str, ...]:
    """The keyword-only parameters of a codec class's constructor (read once: 0.07 ms a signature)."""
    import inspect

    try:
        return tuple(p.name for p in inspect.signature(cls).parameters.values() if p.kind is p.KEYWORD_ONLY)
    except (TypeError, ValueError):
        return ()


def build(name: str, params: dict[str, Any]) -> Any:
    """Codec ``name`` made with ``params``; an unknown parameter is the codec's error listing the known ones."""
    cls = codec_class(name)
    accepted = _keyword_parameters(cls)
    unknown = sorted(set(params) - set(accepted)) if accepted else []
    error = getattr(cls, "error", CodecError)
    if unknown:
        known = ", ".join(accepted)
        raise argument_error(unknown[0], params[unknown[0]], f"{name} takes the parameters {known}", cls=error)
    try:
        return cls(**params)
    except TypeError as exc:
        raise error(f"{name}: {exc}") from None


def from_config(config: dict[str, Any]) -> Any:
    """Rebuild a codec from :meth:`get_config` output (``{"id": name, **params}``)."""
    if not isinstance(config, dict) or not isinstance(config.get("id"), str):
        raise argument_error("config", config, "must be a dict with an 'id' naming the codec")
    params = {k: v for k, v in config.items() if k not in ("id", "choice", "order")}
    codec = get(config["id"], **params)
    if "choice" in config:  # why sciz.codecs.choose picked it
        codec.choice = config["choice"]
    if "order" in config:  # the axis order its engine sees
        codec.set_order(config["order"])
    return codec
