"""sciz.heightmap NumPy export: exact, pickle-free NPY/NPZ round trips and reading other tools' files."""

from __future__ import annotations

import datetime as dt
import json
import math
import pathlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sciz.errors import ArgumentError, FormatError
from sciz.heightmap import apply_gaussian_filter, export_to_npy, export_to_npz, load_from_npy, load_from_npz, load_tmd


def assert_same(got: Any, want: Any, where: str = "value") -> None:
    """Equal value and identical type, recursively; arrays bit-exact with dtype and shape; NaN == NaN."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape, where
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), where
    elif isinstance(want, np.generic):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), where
    elif isinstance(want, dict):
        assert list(got) == list(want), where
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for index, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(want, float):
        same_sign = math.copysign(1, got) == math.copysign(1, want)
        assert (math.isnan(got) and math.isnan(want)) or (got == want and same_sign), where
    elif isinstance(want, complex):
        assert_same(got.real, want.real, where)
        assert_same(got.imag, want.imag, where)
    else:
        assert got == want, where


RICH = {
    "height_map": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
    "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "strided": np.arange(100, dtype=np.int16).reshape(10, 10)[::3, 1::2],
    "empty": np.zeros((0, 5), dtype=np.uint8),
    "mask": np.array([[True, False], [False, True]]),
    "structured": np.array([(1, 2.5), (3, -1.0)], dtype=[("a", "<i2"), ("b", "<f8")]),
    "when_array": np.array(["2020-01-01", "NaT"], dtype="datetime64[s]"),
    "zero_d": np.array(7, dtype=np.uint16),
    "x_length": 10.0,
    "width": 4,
    "huge": 2**80,
    "negative_zero": -0.0,
    "nan": float("nan"),
    "inf": float("-inf"),
    "flag": True,
    "complex": 1 + 2j,
    "comment": "Sample height map é ✓",
    "empty_text": "",
    "nul_tail": "abc\x00",
    "f32": np.float32(2.52),
    "i8": np.int8(-3),
    "u64": np.uint64(2**64 - 1),
    "npbool": np.bool_(False),
    "npstr": np.str_("units"),
    "npbytes": np.bytes_(b"a\x00b"),
    "dt64": np.datetime64("2023-06-15T14:30:00"),
    "none": None,
    "bytes": b"\x00\x01raw",
    "timestamp": dt.datetime(2023, 6, 15, 14, 30, tzinfo=dt.UTC),
    "date": dt.date(2024, 2, 29),
    "duration": dt.timedelta(seconds=1.5),
    "path": pathlib.PurePosixPath("/data/sample.tmd"),
    "metadata": {
        "nested": {"list": [1, 2.5, "x", None, (1, 2)], "tuple": (np.float32(1.5), np.int64(2))},
        "set": {1, 2, 3},
        "array": np.eye(2, dtype=np.float32),
    },
    "odd_keys": {1: "int key", (1, 2): "tuple key", None: "none key"},
}


def test_export_to_npz_round_trips_every_type_exactly(tmp_path: Path) -> None:
    path = export_to_npz(RICH, tmp_path / "deep" / "dir" / "rich.npz")
    assert path == str(tmp_path / "deep" / "dir" / "rich.npz") and Path(path).is_file()
    assert_same(load_from_npz(path), RICH)


@pytest.mark.parametrize("compress", [True, False])
def test_plain_numpy_reads_every_member_without_pickle(tmp_path: Path, compress: bool) -> None:
    path = export_to_npz(RICH, tmp_path / "rich.npz", compress=compress)
    with zipfile.ZipFile(path) as archive:
        methods = {info.compress_type for info in archive.infolist()}
        assert archive.testzip() is None
    assert methods == ({zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED} if compress else {zipfile.ZIP_STORED}) or (
        compress and methods == {zipfile.ZIP_DEFLATED}
    )
    with np.load(path, allow_pickle=False) as plain:
        assert float(plain["x_length"]) == 10.0 and plain["x_length"].shape == ()
        assert int(plain["width"]) == 4 and str(plain["comment"]) == RICH["comment"]
        assert np.array_equal(plain["height_map"], RICH["height_map"])
        assert np.array_equal(plain["strided"], RICH["strided"])
        assert plain["fortran"].flags.f_contiguous and np.array_equal(plain["fortran"], RICH["fortran"])
        # Richer values are JSON text that any tool can parse.
        assert json.loads(str(plain["metadata"]))["nested"]["list"][:3] == [1, 2.5, "x"]
        assert str(plain["__sciz__"]).startswith("{")


def test_export_to_npz_adds_the_extension_and_accepts_a_bare_array(tmp_path: Path) -> None:
    path = export_to_npz(np.ones((2, 2)), tmp_path / "plain")
    assert path.endswith("plain.npz")
    assert list(load_from_npz(path)) == ["height_map"]


def test_export_to_npz_refuses_object_arrays_and_bad_keys(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match=r"object arrays would need pickle"):
        export_to_npz({"bad": np.array([{"a": 1}], dtype=object)}, tmp_path / "x.npz")
    with pytest.raises(ArgumentError, match=r"reserved"):
        export_to_npz({"__sciz__": 1}, tmp_path / "x.npz")
    with pytest.raises(ArgumentError, match=r"key=3"):
        export_to_npz({3: 1}, tmp_path / "x.npz")
    with pytest.raises(ArgumentError, match=r"data\['obj'\].*cannot store"):
        export_to_npz({"obj": object()}, tmp_path / "x.npz")
    with pytest.raises(ArgumentError, match="compress"):
        export_to_npz({"a": 1}, tmp_path / "x.npz", compress="yes")  # type: ignore[arg-type]
    assert not (tmp_path / "x.npz").exists()


class _Boom:
    """Unpickling this would create a file: proof that nothing is ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_object_arrays_from_other_tools_are_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    payload = np.empty(1, dtype=object)
    payload[0] = _Boom(marker)
    path = tmp_path / "hostile.npz"
    np.savez(path, height_map=np.zeros(3), evil=payload)
    with pytest.raises(FormatError, match=r"member 'evil.npy'.*object array.*never unpickles"):
        load_from_npz(path)
    np.save(tmp_path / "hostile.npy", payload, allow_pickle=True)
    with pytest.raises(FormatError, match=r"hostile.npy.*object array"):
        load_from_npy(tmp_path / "hostile.npy")
    assert not marker.exists()
    assert pickle.loads(pickle.dumps(1)) == 1  # pickle itself is fine; sciz just never calls it on files


def test_reads_the_reference_json_metadata_layout(tmp_path: Path) -> None:
    # The TrueMapData exporter: arrays as members, the rest as one JSON string (default=str).
    height_map = np.random.default_rng(0).random((5, 6)).astype(np.float32)
    metadata = {"x_length": 10.0, "units": "mm", "width": np.int64(6), "nested": {"a": 1}, "none": None}
    path = tmp_path / "reference.npz"
    np.savez_compressed(path, height_map=height_map, metadata=json.dumps(metadata, default=str))
    loaded = load_from_npz(path)
    assert np.array_equal(loaded["height_map"], height_map)
    assert loaded["x_length"] == 10.0 and loaded["units"] == "mm" and loaded["nested"] == {"a": 1}
    assert loaded["width"] == "6" and loaded["none"] is None  # what the reference kept; nothing invented
    assert "metadata" not in loaded


def test_reads_plain_numpy_savez_files(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.arange(3), b=np.array("text"), metadata=np.array("not json"))
    loaded = load_from_npz(path)
    assert np.array_equal(loaded["a"], np.arange(3)) and str(loaded["b"]) == "text"
    assert str(loaded["metadata"]) == "not json"


def test_real_playnano_npz_with_object_members_is_refused_clearly(shared_data: Path) -> None:
    with pytest.raises(FormatError, match=r"processed.npz: member .*object array"):
        load_from_npz(shared_data / "playnano" / "processed.npz")


def test_corrupt_and_truncated_npz_raise_naming_the_file(tmp_path: Path) -> None:
    path = Path(export_to_npz({"height_map": np.random.default_rng(1).random((64, 64))}, tmp_path / "a.npz"))
    raw = path.read_bytes()
    (tmp_path / "short.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FormatError, match=r"short.npz"):
        load_from_npz(tmp_path / "short.npz")
    damaged = bytearray(raw)
    damaged[200] ^= 0xFF  # inside the deflated height map
    (tmp_path / "damaged.npz").write_bytes(bytes(damaged))
    with pytest.raises(FormatError, match=r"damaged.npz: member 'height_map.npy'"):
        load_from_npz(tmp_path / "damaged.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(FormatError, match=r"text.npz: not a readable NPZ"):
        load_from_npz(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        load_from_npz(tmp_path / "missing.npz")


def test_export_to_npy_accepts_arrays_and_dicts(tmp_path: Path, shared_data: Path) -> None:
    data = load_tmd(shared_data / "tmd" / "StepHeight.tmd")
    path = export_to_npy(data, tmp_path / "sub" / "step")
    assert path.endswith("step.npy")
    assert np.array_equal(np.load(path, allow_pickle=False), data["height_map"])
    assert export_to_npy(data["height_map"], tmp_path / "direct.npy") == str(tmp_path / "direct.npy")
    with pytest.raises(ArgumentError, match="must hold 'height_map'"):
        export_to_npy({"heights": np.zeros(2)}, tmp_path / "bad.npy")


def test_load_from_npy_memory_maps_on_request(tmp_path: Path) -> None:
    array = np.arange(1000, dtype=np.float64).reshape(10, 100)
    path = export_to_npy(array, tmp_path / "big.npy")
    mapped = load_from_npy(path, mmap=True)
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, array)
    with pytest.raises(ValueError, match="read-only"):
        mapped[0, 0] = 1.0
    copy_on_write = load_from_npy(path, mmap="c")
    copy_on_write[0, 0] = -1.0
    assert load_from_npy(path)[0, 0] == 0.0
    with pytest.raises(ArgumentError, match="mmap"):
        load_from_npy(path, mmap="w+")


def test_truncated_and_oversized_npy_raise(tmp_path: Path) -> None:
    path = Path(export_to_npy(np.zeros((10, 10)), tmp_path / "a.npy"))
    raw = path.read_bytes()
    (tmp_path / "short.npy").write_bytes(raw[:-8])
    with pytest.raises(FormatError, match=r"short.npy: truncated"):
        load_from_npy(tmp_path / "short.npy")
    (tmp_path / "long.npy").write_bytes(raw + b"\x00" * 3)
    with pytest.raises(FormatError, match=r"long.npy: oversized"):
        load_from_npy(tmp_path / "long.npy", mmap=True)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(FormatError, match=r"junk.npy: not a readable .npy"):
        load_from_npy(tmp_path / "junk.npy")


def _usable_key(key: str) -> bool:
    # NPZ keys are zip member names: UTF-8 text without NUL; __sciz__ is the manifest.
    return key != "__sciz__" and "\x00" not in key and not any(0xD800 <= ord(c) <= 0xDFFF for c in key)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.complex_numbers(allow_nan=False),
    st.builds(np.float32, st.floats(width=32)),
    st.builds(np.int16, st.integers(-(2**15), 2**15 - 1)),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(entries=st.dictionaries(st.text(min_size=1, max_size=10).filter(_usable_key), values, max_size=5))
def test_any_metadata_round_trips_exactly(tmp_path_factory: pytest.TempPathFactory, entries: dict[str, Any]) -> None:
    path = export_to_npz(entries, tmp_path_factory.mktemp("h") / "p.npz")
    assert_same(load_from_npz(path), entries)


def test_gaussian_filter_keeps_nodata_from_spreading(shared_data: Path) -> None:
    from scipy import ndimage

    coin = load_tmd(shared_data / "tmd" / "Euro_coin.tmd", nodata_to_nan=True)
    heights, mask = coin["height_map"], coin["nodata_mask"]
    smoothed = apply_gaussian_filter(heights, sigma=1.0)
    assert smoothed.dtype == np.float32 and smoothed.shape == heights.shape
    assert np.isnan(smoothed[mask]).all() and np.isfinite(smoothed[~mask]).all()
    far = ~ndimage.binary_dilation(mask, iterations=6)  # the kernel (4 sigma) never reaches no-data here
    plain = ndimage.gaussian_filter(np.where(mask, 0, heights), sigma=1.0)
    np.testing.assert_allclose(smoothed[far], plain[far], rtol=1e-5, atol=1e-9)
    with pytest.raises(ArgumentError, match="sigma"):
        apply_gaussian_filter(heights, sigma=-1)


def test_export_to_npz_stores_a_dataset_whole(tmp_path: Path, shared_data: Path) -> None:
    import sciz

    surface = sciz.load(shared_data / "tmd" / "v2_Surface.tmd")
    path = export_to_npz(surface, tmp_path / "surface")
    back = sciz.load(path)
    assert back.axes == surface.axes and back.metadata == surface.metadata
    assert np.array_equal(back.data, surface.data)
