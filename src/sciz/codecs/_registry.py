"""The codec registry: names to codec classes, configs back to codecs, and third-party codecs via entry points."""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import entry_points
from typing import Any

from ..errors import ArgumentError, CodecError, argument_error

__all__ = ["from_config", "get", "list_codecs", "register_codec"]

_BUILTIN = {
    "zfp": "sciz.codecs.zfp:ZfpCodec",
    "sperr": "sciz.codecs.sperr:SperrCodec",
    "sz3": "sciz.codecs.sz3:Sz3Codec",
    "lerc": "sciz.codecs.lerc:LercCodec",
    "pcodec": "sciz.codecs.pcodec:PcodecCodec",
    "szip": "sciz.codecs.szip:SzipCodec",
    "floatpred": "sciz.codecs.floatpred:FloatpredCodec",
}
_registry: dict[str, Any] = {}
_entry_points_loaded = False
_lock = threading.Lock()


def register_codec(cls: Any, name: str | None = None) -> None:
    """Make ``cls`` (with ``name``, ``params()``, ``encode``, ``decode``, ``get_config``) available by name."""
    key = name or getattr(cls, "name", None)
    if not isinstance(key, str) or not key:
        raise argument_error("cls", cls, "needs a non-empty str 'name'")
    _registry[key] = cls


def _resolve(name: str) -> Any:
    global _entry_points_loaded
    if name in _registry:
        return _registry[name]
    if name in _BUILTIN:
        module, _, attr = _BUILTIN[name].partition(":")
        register_codec(getattr(importlib.import_module(module), attr), name)
        return _registry[name]
    with _lock:
        if not _entry_points_loaded:
            for entry in entry_points(group="sciz.codecs"):
                _registry.setdefault(entry.name, entry.load())
            _entry_points_loaded = True
    if name in _registry:
        return _registry[name]
    raise argument_error("name", name, f"known codecs are {', '.join(list_codecs())}", cls=ArgumentError)


def list_codecs() -> list[str]:
    """Names of all codecs: the built-in ones, then registered and entry-point ones."""
    names = list(_BUILTIN)
    names += [n for n in _registry if n not in names]
    names += [e.name for e in entry_points(group="sciz.codecs") if e.name not in names]
    return names


def get(name: str, **params: Any) -> Any:
    """A codec object by name, e.g. ``get("sz3", tolerance=1e-3)``.

    The object has ``encode(array)``, ``decode(stream)``, ``get_config()`` (JSON-safe, rebuilds it via
    :func:`from_config`), ``lossless`` and ``tolerance``.
    """
    if not isinstance(name, str):
        raise argument_error("name", name, "must be a codec name (str)")
    key = name.lower()
    if key.startswith("sciz_"):
        key = key[5:]
    if key == "jetraw":
        from .jetraw import _MISSING, available

        if not available():
            from ..errors import JetrawError

            raise JetrawError(_MISSING)
    cls = _resolve(key)
    try:
        return cls(**params)
    except TypeError as exc:
        raise CodecError(f"{key}: {exc}; its parameters are those of {cls.__name__}") from None


def from_config(config: dict[str, Any]) -> Any:
    """Rebuild a codec from :meth:`get_config` output (``{"id": name, **params}``)."""
    if not isinstance(config, dict) or not isinstance(config.get("id"), str):
        raise argument_error("config", config, "must be a dict with an 'id' naming the codec")
    params = {k: v for k, v in config.items() if k != "id"}
    return get(config["id"], **params)
