"""Exact, pickle-free metadata encoding: decode(encode(x)) == x with every type kept (proven with hypothesis)."""

from __future__ import annotations

import datetime as dt
import json
import math
import pathlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sciz import metadata
from sciz.errors import ArgumentError, FormatError


def same(a: Any, b: Any) -> bool:
    """Equality that also demands equal types, numpy dtypes, and treats NaN as equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset() and a.fold == b.fold
    return bool(a == b)


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.complex_numbers(allow_nan=False)
    | st.text()
    | st.binary()
    | st.builds(bytearray, st.binary(max_size=20))
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.builds(pathlib.Path, st.text(alphabet="abc/._-", min_size=1, max_size=20))
    | st.builds(pathlib.PurePosixPath, st.text(alphabet="abc/", max_size=10))
    | st.builds(lambda tail: pathlib.PureWindowsPath("C:\\" + tail), st.text(alphabet="abc\\", max_size=10))
    | hnp.from_dtype(np.dtype("f4"))
    | hnp.from_dtype(np.dtype("i8"))
    | hnp.from_dtype(np.dtype("u2"))
    | hnp.from_dtype(np.dtype("c8"))
    | hnp.from_dtype(np.dtype("M8[s]"))
    | hnp.from_dtype(np.dtype("U5"))
    | hnp.from_dtype(np.dtype("?"))
    | hnp.arrays(
        st.sampled_from([np.dtype(t) for t in ("f8", "i4", "u1", "?", "U3", ">f4", "c16", "S4")]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    )
)
hashables = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.binary(max_size=8)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=12)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=8), children, max_size=6)
        | st.dictionaries(hashables, children, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip_keeps_types_and_values(value: Any) -> None:
    text = metadata.encode(value)
    json.loads(text)  # strict JSON: no NaN literals
    assert same(metadata.decode(text), value)


@pytest.mark.parametrize("fold", [0, 1])
def test_named_time_zones_come_back_named(fold: int) -> None:
    import zoneinfo

    # Found by hypothesis: only the offset was kept, so ZoneInfo('Australia/ACT') came back as a fixed offset.
    value = dt.datetime(1991, 3, 3, 2, 0, fold=fold, tzinfo=zoneinfo.ZoneInfo("Australia/ACT"))
    back = metadata.decode(metadata.encode(value))
    assert back == value and back.tzinfo == value.tzinfo and back.utcoffset() == value.utcoffset()
    forged = metadata.encode(value).replace("Australia/ACT", "../../etc/passwd")
    fallback = metadata.decode(forged)  # an unknown zone name falls back to the stored offset
    assert fallback.utcoffset() == value.utcoffset() and fallback.replace(tzinfo=None) == value.replace(tzinfo=None)


def test_reference_example() -> None:
    value = {
        "x_length": np.float32(10.0),
        "width": np.int64(640),
        "comment": "Sample height map",
        "origin": (0.0, -1.5),
        "created": dt.datetime(2023, 6, 15, 14, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "missing": None,
        "nodata": float("nan"),
        "raw_header": b"\x00TMD",
        "source": pathlib.Path("/data/sample.tmd"),
        "calibration": np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32),
        "channels": ["height", "amplitude"],
        1: "integer key",
    }
    assert same(metadata.decode(metadata.encode(value)), value)


def test_user_key_named_like_the_tag_is_kept() -> None:
    value = {"__sciz__": "tuple", "v": [1]}
    assert same(metadata.decode(metadata.encode(value)), value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), "cannot store"),
        ({"a": [1, {"b": object()}]}, r"metadata\['a'\]\[1\]\['b'\]"),
        (np.array([object()]), "object array"),
        (np.zeros(5_000_000), "too large"),
    ],
)
def test_unsupported_values_are_named(value: Any, message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        metadata.encode(value)


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"__sciz__": "pickle", "v": "x"}',
        '{"__sciz__": "ndarray", "dtype": "O", "shape": [1], "b64": "AAAAAAAAAAA="}',
        '{"__sciz__": "ndarray", "dtype": "<f4", "shape": [100], "b64": "AAAA"}',
        '{"__sciz__": "bytes", "b64": "***"}',
        '{"__sciz__": "tuple"}',
        b"\xff\xfe",
    ],
)
def test_malformed_metadata_raises_format_error(text: str | bytes) -> None:
    with pytest.raises(FormatError):
        metadata.decode(text)


def test_foreign_json_with_nan_literals() -> None:
    assert metadata.decode('{"a": NaN, "b": [1, 2]}')["b"] == [1, 2]


def test_plain_form_is_json_for_readers_outside_sciz():
    from sciz.errors import ArgumentError
    from sciz.metadata import decode_text, plain_json, to_plain

    value = {
        1: np.float32(0.5),
        "shape": (3, np.int64(4)),
        "grid": np.arange(4).reshape(2, 2),
        "raw": b"caf\xc3\xa9",
        "when": dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
        "span": dt.timedelta(minutes=2),
        "where": pathlib.PurePosixPath("/data/x.asd"),
        "z": 1 + 2j,
        "tags": frozenset({"a"}),
        "nan": float("nan"),
        "other": object,
    }
    plain = to_plain(value)
    assert plain["1"] == 0.5 and type(plain["1"]) is float
    assert plain["shape"] == [3, 4] and type(plain["shape"][1]) is int
    assert plain["grid"] == [[0, 1], [2, 3]]
    assert plain["raw"] == "café" and plain["when"] == "2024-05-01T12:00:00+00:00"
    assert plain["span"] == 120.0 and plain["where"] == "/data/x.asd" and plain["z"] == [1.0, 2.0]
    assert plain["tags"] == ["a"] and math.isnan(plain["nan"]) and plain["other"] == str(object)
    assert json.loads(plain_json(value))["raw"] == "café"
    with pytest.raises(ArgumentError, match=r"metadata\['other'\]: a builtins.type has no plain JSON form"):
        to_plain(value, strict=True)
    assert decode_text(np.array([b"ab\xff"])) == "ab\ufffd" and decode_text(np.str_("x")) == "x"
