"""Exact, pickle-free encoding of nested metadata as JSON.

Plain JSON loses types: tuples become lists, numpy float32 becomes a Python float, bytes and
datetimes cannot be stored at all, NaN is not even valid JSON. This module stores everything JSON
cannot express as a small tagged object ``{"__sciz__": <tag>, ...}`` so that
``decode(encode(x)) == x`` holds with the types kept, and nothing is ever unpickled.

Supported: ``None``, ``bool``, ``int``, ``float`` (NaN, +-inf, -0.0), ``complex``, ``str``,
``bytes``, ``bytearray``, ``list``, ``tuple``, ``set``, ``frozenset``, ``dict`` (any supported
hashable keys), numpy scalars (dtype kept, bit-exact), numpy arrays (non-object dtypes, up to
``MAX_ARRAY_BYTES``), ``datetime.datetime``/``date``/``time``/``timedelta`` and ``pathlib`` paths.

Where a reader outside sciz takes the metadata (playNano's ``json.loads``, HyperSpy's attributes),
:func:`to_plain` gives the *plain* form instead: numbers, text, lists and dicts only, types lost.

Example
-------
>>> import numpy as np
>>> from sciz.metadata import encode, decode
>>> value = {"x_length": np.float32(10.0), "shape": (3, 4), "when": None}
>>> decode(encode(value)) == value
True
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ArgumentError, FormatError

__all__ = [
    "MAX_ARRAY_BYTES",
    "TAG",
    "decode",
    "decode_text",
    "encode",
    "from_jsonable",
    "plain_json",
    "to_jsonable",
    "to_plain",
]

TAG = "__sciz__"
#: Arrays larger than this belong in a dataset layer, not in metadata.
MAX_ARRAY_BYTES = 16 * 1024 * 1024

_PATH_TYPES: dict[str, type[pathlib.PurePath]] = {
    "Path": pathlib.Path,
    "PurePath": pathlib.PurePath,
    "PurePosixPath": pathlib.PurePosixPath,
    "PureWindowsPath": pathlib.PureWindowsPath,
}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"metadata at {where}: expected base64 text, got {type(text).__name__}")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise FormatError(f"metadata at {where}: invalid base64 data ({exc})") from None


def _dtype_to_json(dtype: np.dtype) -> Any:
    if dtype.hasobject:
        raise TypeError("object dtype")
    if dtype.fields is not None:
        return [list(item) for item in dtype.descr]
    return dtype.str


def _dtype_from_json(spec: Any, where: str) -> np.dtype:
    try:
        if isinstance(spec, str):
            dtype = np.dtype(spec)
        elif isinstance(spec, list):
            dtype = np.dtype([tuple(_listify_descr(item)) for item in spec])
        else:
            raise TypeError(type(spec).__name__)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"metadata at {where}: invalid dtype {spec!r} ({exc})") from None
    if dtype.hasobject:
        raise FormatError(f"metadata at {where}: object dtype {spec!r} refused (it would need pickle)")
    return dtype


def _listify_descr(item: Any) -> list[Any]:
    # JSON turns descr tuples into lists; nested structured fields need tuples again.
    out = list(item)
    if len(out) >= 2 and isinstance(out[1], list):
        out[1] = [tuple(_listify_descr(sub)) for sub in out[1]]
    if len(out) == 3 and isinstance(out[2], list):
        out[2] = tuple(out[2])
    return out


def _float_to_json(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {TAG: "float", "v": repr(value)}  # 'nan', 'inf', '-inf'


def _zone_key(tzinfo: Any) -> str | None:
    """The IANA name of a named time zone (``zoneinfo.ZoneInfo``), kept so the zone, not just the offset, returns."""
    import zoneinfo

    return tzinfo.key if isinstance(tzinfo, zoneinfo.ZoneInfo) and isinstance(tzinfo.key, str) else None


def _in_zone(value: dt.datetime, key: Any, where: str) -> dt.datetime:
    """``value`` (stored with its UTC offset) as the same instant in the named zone ``key``."""
    import zoneinfo

    try:
        zone = zoneinfo.ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        # The zone is unknown here (or a forged name): the stored offset still gives the right instant.
        return value
    named = value.replace(tzinfo=zone)  # the same wall time and fold, as stored
    # Where this machine's zone database disagrees with the stored offset, the instant wins.
    return named if named.utcoffset() == value.utcoffset() else value.astimezone(zone)


def to_jsonable(value: Any, where: str = "metadata") -> Any:
    """Return a JSON-serialisable structure that :func:`from_jsonable` turns back into ``value``.

    Raises :class:`~sciz.errors.ArgumentError` naming the path of any value that cannot be stored.
    """
    # Exact type checks: numpy scalars subclass float/int/str but must keep their dtype.
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        return _float_to_json(value)
    if type(value) is list:
        return [to_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if type(value) is tuple:
        return {TAG: "tuple", "v": [to_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]}
    if type(value) is dict:
        if all(type(key) is str for key in value) and TAG not in value:
            return {key: to_jsonable(item, f"{where}[{key!r}]") for key, item in value.items()}
        return {
            TAG: "dict",
            "items": [
                [to_jsonable(key, f"{where} key {key!r}"), to_jsonable(item, f"{where}[{key!r}]")]
                for key, item in value.items()
            ],
        }
    if isinstance(value, np.ndarray):
        return _array_to_json(value, where)
    if isinstance(value, np.generic):
        # Through a 0-d array: an empty np.str_ has dtype <U0 but occupies one character.
        scalar = np.asarray(value)
        try:
            dtype = _dtype_to_json(scalar.dtype)
        except TypeError:
            raise ArgumentError(f"{where}: numpy scalar of object dtype cannot be stored exactly") from None
        return {TAG: "npscalar", "dtype": dtype, "b64": _b64(scalar.tobytes())}
    if type(value) is bytes:
        return {TAG: "bytes", "b64": _b64(value)}
    if type(value) is bytearray:
        return {TAG: "bytearray", "b64": _b64(bytes(value))}
    if type(value) is complex:
        return {TAG: "complex", "re": _float_to_json(value.real), "im": _float_to_json(value.imag)}
    if type(value) in (set, frozenset):
        return {
            TAG: type(value).__name__,
            "v": [to_jsonable(item, f"{where} item") for item in value],
        }
    if type(value) is dt.datetime:
        record = {TAG: "datetime", "v": value.isoformat(), "fold": value.fold}
        zone = _zone_key(value.tzinfo)
        return record if zone is None else {**record, "zone": zone}
    if type(value) is dt.date:
        return {TAG: "date", "v": value.isoformat()}
    if type(value) is dt.time:
        return {TAG: "time", "v": value.isoformat(), "fold": value.fold}
    if type(value) is dt.timedelta:
        return {TAG: "timedelta", "d": value.days, "s": value.seconds, "us": value.microseconds}
    if isinstance(value, pathlib.PurePath):
        kind = next(
            (name for name, cls in _PATH_TYPES.items() if cls is type(value) or _is_concrete(value, name)),
            None,
        )
        if kind is None:
            kind = "PureWindowsPath" if isinstance(value, pathlib.PureWindowsPath) else "PurePosixPath"
        return {TAG: "path", "type": kind, "v": str(value)}
    raise ArgumentError(
        f"{where}: cannot store a {type(value).__module__}.{type(value).__qualname__} exactly; supported are "
        "None, bool, int, float, complex, str, bytes, list, tuple, set, dict, numpy scalars and arrays, "
        "datetime/date/time/timedelta and pathlib paths"
    )


def _is_concrete(value: pathlib.PurePath, name: str) -> bool:
    # PosixPath / WindowsPath are the concrete Path of this platform.
    return name == "Path" and isinstance(value, pathlib.Path)


def _array_to_json(array: np.ndarray, where: str) -> dict[str, Any]:
    try:
        dtype = _dtype_to_json(array.dtype)
    except TypeError:
        raise ArgumentError(
            f"{where}: an object array cannot be stored without pickle; convert it to a numeric or string array"
        ) from None
    if array.nbytes > MAX_ARRAY_BYTES:
        raise ArgumentError(
            f"{where}: array of {array.nbytes} bytes is too large for metadata (at most {MAX_ARRAY_BYTES}); "
            "store it as a dataset layer instead"
        )
    return {
        TAG: "ndarray",
        "dtype": dtype,
        "shape": list(array.shape),
        "b64": _b64(np.ascontiguousarray(array).tobytes()),
    }


def _float_from_json(obj: Any, where: str) -> float:
    if type(obj) in (int, float):
        return float(obj)
    if isinstance(obj, dict) and obj.get(TAG) == "float" and obj.get("v") in ("nan", "inf", "-inf"):
        return float(obj["v"])
    raise FormatError(f"metadata at {where}: expected a float, got {obj!r}")


def from_jsonable(obj: Any, where: str = "metadata") -> Any:
    """Rebuild the value that :func:`to_jsonable` encoded; never executes or unpickles anything."""
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if type(obj) is list:
        return [from_jsonable(item, f"{where}[{i}]") for i, item in enumerate(obj)]
    if type(obj) is not dict:
        raise FormatError(f"metadata at {where}: unexpected JSON value of type {type(obj).__name__}")
    tag = obj.get(TAG)
    if tag is None:
        return {key: from_jsonable(item, f"{where}[{key!r}]") for key, item in obj.items()}
    try:
        return _decode_tagged(tag, obj, where)
    except FormatError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise FormatError(f"metadata at {where}: malformed {tag!r} entry ({type(exc).__name__}: {exc})") from None


def _decode_tagged(tag: Any, obj: dict[str, Any], where: str) -> Any:
    if tag == "float":
        return _float_from_json(obj, where)
    if tag == "tuple":
        return tuple(from_jsonable(item, f"{where}[{i}]") for i, item in enumerate(obj["v"]))
    if tag == "dict":
        return {
            _hashable(from_jsonable(key, f"{where} key"), where): from_jsonable(item, f"{where}[{i}]")
            for i, (key, item) in enumerate(obj["items"])
        }
    if tag in ("set", "frozenset"):
        items = [_hashable(from_jsonable(item, f"{where} item"), where) for item in obj["v"]]
        return set(items) if tag == "set" else frozenset(items)
    if tag == "bytes":
        return _unb64(obj["b64"], where)
    if tag == "bytearray":
        return bytearray(_unb64(obj["b64"], where))
    if tag == "complex":
        return complex(_float_from_json(obj["re"], where), _float_from_json(obj["im"], where))
    if tag == "npscalar":
        dtype = _dtype_from_json(obj["dtype"], where)
        raw = _unb64(obj["b64"], where)
        if len(raw) != dtype.itemsize:
            raise FormatError(f"metadata at {where}: {len(raw)} bytes for a {dtype} scalar")
        return np.frombuffer(raw, dtype=dtype)[0]
    if tag == "ndarray":
        dtype = _dtype_from_json(obj["dtype"], where)
        shape = tuple(int(n) for n in obj["shape"])
        if any(n < 0 for n in shape):
            raise FormatError(f"metadata at {where}: negative array shape {shape}")
        raw = _unb64(obj["b64"], where)
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise FormatError(f"metadata at {where}: {len(raw)} bytes do not fit shape {shape} of {dtype}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if tag == "datetime":
        value = dt.datetime.fromisoformat(obj["v"]).replace(fold=int(obj.get("fold", 0)))
        return value if "zone" not in obj else _in_zone(value, obj["zone"], where)
    if tag == "date":
        return dt.date.fromisoformat(obj["v"])
    if tag == "time":
        return dt.time.fromisoformat(obj["v"]).replace(fold=int(obj.get("fold", 0)))
    if tag == "timedelta":
        return dt.timedelta(days=obj["d"], seconds=obj["s"], microseconds=obj["us"])
    if tag == "path":
        cls = _PATH_TYPES.get(obj["type"])
        if cls is None:
            raise FormatError(f"metadata at {where}: unknown path type {obj['type']!r}")
        return cls(obj["v"])
    raise FormatError(f"metadata at {where}: unknown tag {tag!r} (written by a newer sciz?)")


def _hashable(value: Any, where: str) -> Any:
    try:
        hash(value)
    except TypeError:
        raise FormatError(f"metadata at {where}: a {type(value).__name__} cannot be a key or set item") from None
    return value


def encode(value: Any) -> str:
    """Encode ``value`` as compact JSON text (ASCII-safe, strict JSON: no NaN literals)."""
    return json.dumps(to_jsonable(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def decode(text: str | bytes) -> Any:
    """Decode text written by :func:`encode`; plain JSON (even with NaN literals) decodes as JSON."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"metadata is not UTF-8 text ({exc})") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"metadata is not valid JSON ({exc})") from None
    return from_jsonable(obj)


# -- the plain form: for readers that take JSON as they find it -----------------------------------
def decode_text(value: Any) -> str:
    """A str from a stored text value: str, bytes (UTF-8, undecodable bytes replaced), a numpy string
    scalar or a one-element array of one."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, bytes | bytearray | np.bytes_):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def to_plain(value: Any, where: str = "metadata", *, strict: bool = False) -> Any:
    """``value`` as plain JSON data (None, bool, int, float, str, list, dict with str keys); types are lost.

    numpy scalars become Python numbers, arrays and tuples/sets lists, bytes UTF-8 text, dates and
    times ISO text, time spans seconds, paths text, complex numbers ``[re, im]``. Anything else
    becomes ``str(value)``, or with ``strict`` an :class:`~sciz.errors.ArgumentError` naming
    ``where``. NaN and infinities stay floats (Python's JSON writes them as ``NaN``/``Infinity``).

    Example
    -------
    >>> import numpy as np
    >>> to_plain({"size": np.float32(0.5), "shape": (3, 4)})
    {'size': 0.5, 'shape': [3, 4]}
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return to_plain(value.item(), where, strict=strict)
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist(), where, strict=strict)
    if isinstance(value, Mapping):
        return {str(k): to_plain(v, f"{where}[{k!r}]", strict=strict) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v, f"{where}[{i}]", strict=strict) for i, v in enumerate(value)]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, pathlib.PurePath):
        return str(value)
    if isinstance(value, complex):
        return [value.real, value.imag]
    if strict:
        raise ArgumentError(f"{where}: a {type(value).__module__}.{type(value).__qualname__} has no plain JSON form")
    return str(value)


def plain_json(value: Any) -> str:
    """:func:`to_plain` as JSON text (UTF-8 kept; NaN written as Python's JSON does)."""
    return json.dumps(to_plain(value), ensure_ascii=False)
