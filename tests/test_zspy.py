"""zspy and hspy in sciz: exact metadata, stores, formats 2 and 3, metadata-only rewrites, errors, real files."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import pathlib
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest

import sciz
from sciz.errors import ArgumentError, FormatError
from sciz.formats import hspy, zspy
from sciz.formats.hyperspy_tree import signal_chunks


def stored_codec(zarray: dict[str, Any]) -> dict[str, Any]:
    """The codec of a zarr 2 array, looking through sciz's CRC-32 around it."""
    if zarray["compressor"] == {"id": "crc32"}:
        (codec,) = zarray["filters"]
        return dict(codec)
    return dict(zarray["compressor"])


WRITERS = {"zspy": zspy.file_writer, "hspy": hspy.file_writer}
READERS = {"zspy": zspy.file_reader, "hspy": hspy.file_reader}


def rich_metadata() -> dict[str, Any]:
    """Everything RosettaSciIO gets wrong, in one tree."""
    return {
        "General": {"title": "a/b scan", "date": dt.date(2024, 3, 1), "time": dt.time(12, 30, 5)},
        "Signal": {"signal_type": "", "quantity": "Intensity (counts)"},
        "Exact": {
            "long_list": list(range(25)),
            "tuple": (1, 2.5, "three"),
            "nested_tuple": ((1, 2), [3, (4, 5)]),
            "bytes_nul": b"\x00\xffraw\x00",
            "bytes_text": b"plain",
            "non_ascii": "Ångström – µm – 温度",
            "non_ascii_array": np.array(["α", "βγ", "δ"]),
            "when": dt.datetime(2024, 3, 1, 12, 30, 5, 123456, tzinfo=dt.UTC),
            "span": dt.timedelta(seconds=90),
            "py_int": 7,
            "py_float": 0.1,
            "py_bool": False,
            "np_float32": np.float32(1.25),
            "np_int16": np.int16(-3),
            "none": None,
            "empty_list": [],
            "empty_tuple": (),
            "empty_dict": {},
            "nan": float("nan"),
            "complex": 1 + 2j,
            "path": pathlib.PurePosixPath("/data/run1"),
            "set": {1, 2},
            "mixed": [1, "two", 3.0],
            "array": np.arange(12, dtype=np.uint16).reshape(3, 4),
            "list_of_dicts": [{"a": i} for i in range(12)],
            "_sig_reference": {
                "data": np.linspace(0, 1, 5),
                "axes": [{"name": "e", "units": "eV", "scale": 0.1, "offset": 1.0, "size": 5, "navigate": False}],
                "metadata": {"General": {"title": "ref"}, "Signal": {"signal_type": "EELS"}},
                "original_metadata": {},
            },
        },
    }


def signal(data: Any = None, **extra: Any) -> dict[str, Any]:
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) if data is None else data
    out = {
        "data": data,
        "axes": [
            {"name": n, "units": "nm", "scale": 0.5, "offset": 1.0, "size": s, "navigate": i == 0}
            for i, (n, s) in enumerate(zip("tyx", data.shape, strict=False))
        ],
        "metadata": {"General": {"title": "scan"}, "Signal": {"signal_type": ""}},
        "original_metadata": {"vendor": {"key": "value"}},
    }
    out.update(extra)
    return out


def computed(value: Any) -> Any:
    """Lazy (dask) arrays inside a nested structure replaced by their values."""
    if isinstance(value, dict):
        return {k: computed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(computed(v) for v in value)
    if type(value).__module__.startswith("dask"):
        return value.compute()
    return value


def same(a: Any, b: Any) -> bool:
    """Deep equality that also compares types, arrays (dtype and values) and NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, float) and np.isnan(a):
        return bool(np.isnan(b))
    return bool(a == b)


@pytest.mark.parametrize("kind", ["zspy", "hspy"])
@pytest.mark.parametrize("lazy", [False, True])
def test_metadata_round_trips_exactly(tmp_path: Path, kind: str, lazy: bool) -> None:
    path = tmp_path / f"rich.{kind}"
    metadata = rich_metadata()
    WRITERS[kind](path, signal(metadata=metadata), show_progressbar=False)
    (back,) = READERS[kind](path, lazy=lazy)
    if lazy:
        assert type(back["metadata"]["Exact"]["array"]).__module__.startswith("dask")
        back["metadata"] = computed(back["metadata"])
    reference = back["metadata"]["Exact"].pop("_sig_reference")
    expected = rich_metadata()
    expected_reference = expected["Exact"].pop("_sig_reference")
    assert same(back["metadata"], expected)
    assert type(back["metadata"]["Exact"]["np_float32"]) is np.float32
    assert back["metadata"]["Exact"]["long_list"] == list(range(25))
    np.testing.assert_array_equal(np.asarray(reference["data"]), expected_reference["data"])
    assert reference["axes"] == expected_reference["axes"]
    assert reference["metadata"] == expected_reference["metadata"]
    np.testing.assert_array_equal(np.asarray(back["data"]), signal()["data"])
    assert back["original_metadata"] == {"vendor": {"key": "value"}}
    assert back["attributes"]["_lazy"] is lazy


@pytest.mark.parametrize("kind", ["zspy", "hspy"])
def test_layout_alone_is_what_hyperspy_sees(tmp_path: Path, kind: str) -> None:
    # exact=False reads only HyperSpy's layout: still ordered, Python scalars, but lossy for tuples etc.
    path = tmp_path / f"rich.{kind}"
    WRITERS[kind](path, signal(metadata=rich_metadata()), show_progressbar=False)
    (back,) = READERS[kind](path, exact=False)
    exact = back["metadata"]["Exact"]
    assert exact["long_list"] == list(range(25))
    assert [d["a"] for d in exact["list_of_dicts"]] == list(range(12))
    assert exact["when"] == "2024-03-01T12:30:05.123456+00:00"
    assert type(exact["py_int"]) is int and type(exact["np_float32"]) is float
    assert exact["mixed"] == ["1", "two", "3.0"]  # HyperSpy's homogenised array
    assert back["metadata"]["General"]["title"] == "a/b scan"


@pytest.mark.parametrize("kind", ["zspy", "hspy"])
def test_stale_record_is_ignored(tmp_path: Path, kind: str) -> None:
    # Another program edits the metadata in HyperSpy's layout: sciz must not return the old exact record.
    path = tmp_path / f"edit.{kind}"
    WRITERS[kind](
        path,
        signal(metadata={"General": {"title": "scan"}, "Signal": {}, "Run": {"n": (1, 2)}}),
        show_progressbar=False,
    )
    if kind == "zspy":
        attrs = path / "Experiments" / "scan" / "metadata" / "Run" / ".zattrs"
        attrs.write_text(json.dumps({"operator": "someone else"}))
        for array in (path / "Experiments" / "scan" / "metadata" / "Run").iterdir():
            if array.is_dir():
                shutil.rmtree(array)
    else:
        import h5py

        with h5py.File(path, "r+") as handle:
            run = handle["Experiments/scan/metadata/Run"]
            for key in list(run):
                del run[key]
            run.attrs["operator"] = "someone else"
    (back,) = READERS[kind](path)
    assert back["metadata"]["Run"] == {"operator": "someone else"}


def test_hyperspy_layout_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "layout.zspy"
    zspy.file_writer(
        path,
        signal(metadata={"General": {"title": "x/y"}, "L": {"v": [1, 2], "e": [], "n": None}}),
        show_progressbar=False,
    )
    root = json.loads((path / ".zattrs").read_text())
    assert root == {"file_format": "ZSpy", "file_format_version": "3.3"}
    experiment = path / "Experiments" / "x-y"
    zarray = json.loads((experiment / "data" / ".zarray").read_text())
    assert zarray["zarr_format"] == 2 and zarray["dimension_separator"] == "/"
    # Blosc zstd inside a CRC-32 (checksum=True, the default), which HyperSpy's zarr reads and checks.
    assert zarray["compressor"] == {"id": "crc32"}
    assert zarray["filters"] == [{"id": "blosc", "cname": "zstd", "clevel": 1, "shuffle": 1, "blocksize": 0}]
    assert (experiment / "data" / "0" / "0" / "0").is_file()
    axis = json.loads((experiment / "axis-1" / ".zattrs").read_text())
    assert axis == {"name": "y", "units": "nm", "scale": 0.5, "offset": 1.0, "size": 3, "navigate": False}
    attrs = json.loads((experiment / "metadata" / "L" / ".zattrs").read_text())
    assert attrs == {"_list_empty_e": "_None_", "n": "_None_"}
    assert (experiment / "metadata" / "L" / "_list_v" / ".zarray").is_file()
    assert "_sciz" in json.loads((experiment / ".zattrs").read_text())


@pytest.mark.parametrize(
    "name",
    ["signal1d_10x10-DirectoryStore.zspy", "signal1d_10x10-NestedDirectoryStore.zspy", "signal1d_10x10-ZipStore.zspy"],
)
def test_shared_10x10_files(shared_data: Path, name: str) -> None:
    for lazy in (False, True):
        (s,) = zspy.file_reader(shared_data / "zspy" / name, lazy=lazy)
        np.testing.assert_array_equal(np.asarray(s["data"]), np.arange(100).reshape(10, 10))
        assert [a["navigate"] for a in s["axes"]] == [True, False]
        assert s["axes"][0]["name"] is None and s["axes"][0]["_type"] == "UniformDataAxis"
        assert s["metadata"]["General"] == {
            "title": "",
            "FileIO": {
                "0": {
                    "hyperspy_version": "2.4.0.dev36+gc59c9f5a5",
                    "io_plugin": "rsciio.zspy",
                    "operation": "save",
                    "timestamp": s["metadata"]["General"]["FileIO"]["0"]["timestamp"],
                }
            },
        }
        assert s["package_info"]["package"] == "hyperspy"
    dataset = sciz.load(shared_data / "zspy" / name)
    assert dataset.shape == (10, 10) and dataset.name == ""


def test_shared_model_and_ragged_files(shared_data: Path) -> None:
    (model,) = zspy.file_reader(shared_data / "zspy" / "signal1d_10x100-model.zspy")
    assert list(model["models"]) == ["a"]
    components = model["models"]["a"]["_dict"]["components"]
    parameters = components[0]["parameters"]
    assert [p["name"] for p in parameters] == ["a", "b"]
    assert parameters[0]["map"].dtype.names == ("values", "std", "is_set")
    assert parameters[0]["_bounds"] == (None, None)
    (points,) = zspy.file_reader(shared_data / "zspy" / "signal2d_20x10x10-ragged_markers.zspy")
    offsets = points["metadata"]["Markers"]["Points"]["kwargs"]["offsets"]
    assert offsets.dtype == object and offsets.shape == (20,)
    np.testing.assert_array_equal(offsets[3], [[1.5, 1.5]] if offsets[3].ndim == 2 else [1.5, 1.5])
    (texts,) = zspy.file_reader(shared_data / "zspy" / "signal2d_20x10x10-ragged_markers_unicode.zspy", lazy=True)
    words = texts["metadata"]["Markers"]["Texts"]["kwargs"]["texts"]
    assert [list(w) for w in words] == [["a" * i, "b"] for i in range(1, 6)]


def test_shared_hspy_files(shared_data: Path) -> None:
    (example,) = hspy.file_reader(shared_data / "hspy" / "example2_v3.1.hspy")
    assert example["data"].shape == (16, 16) and example["data"].dtype == np.int32
    assert example["metadata"]["General"]["title"] == "test_diffraction_pattern"
    assert example["metadata"]["Acquisition_instrument"]["TEM"]["beam_energy"] == 200.0
    assert example["axes"][0]["units"] == "1/nm" and example["axes"][1]["scale"] == pytest.approx(0.17443285882472992)
    (lists,) = hspy.file_reader(shared_data / "hspy" / "with_lists_etc.hdf5")
    test = lists["metadata"]["test"]
    assert test["tuple"] == (1, 2) and test["list"] == [42]
    assert test["list_inside_list"] == [42, 137, [0, 1]] and test["tuple_inside_tuple"] == (137, (123, 44))
    assert test["empty_list"] == [] and test["empty_tuple"] == ()
    assert test["binary_string"].startswith(b"\x80\x03cdill") and isinstance(test["binary_string"], bytes)
    variance = lists["metadata"]["Signal"]["Noise_properties"]["_sig_variance"]
    np.testing.assert_array_equal(variance["data"], np.arange(10))
    (old,) = hspy.file_reader(shared_data / "hspy" / "none_metadata.hdf5")
    assert old["metadata"]["should_be_None"] is None
    assert old["metadata"]["_HyperSpy"]["Folding"]["unfolded"] is False
    assert old["metadata"]["Signal"]["record_by"] == "spectrum"


def test_zip_store_detected_and_overwritten_atomically(tmp_path: Path) -> None:
    path = tmp_path / "data.zspy"
    zspy.file_writer(path, signal(), store_type="zip", show_progressbar=False)
    assert zipfile.is_zipfile(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert len(names) == len(set(names))  # each key once (zarr 2's ZipStore appends duplicates)
    second = signal(np.full((2, 3, 4), 7.0, np.float32))
    zspy.file_writer(path, second, store_type="zip", show_progressbar=False)
    np.testing.assert_array_equal(zspy.file_reader(path)[0]["data"], second["data"])
    assert sciz.load(path).shape == (2, 3, 4)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    original = zspy.file_writer.__globals__["_write_zip"]
    try:
        zspy.file_writer.__globals__["_write_zip"] = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full"))
        with pytest.raises(FormatError, match="disk full"):
            zspy.file_writer(path, signal(), store_type="zip", show_progressbar=False)
    finally:
        zspy.file_writer.__globals__["_write_zip"] = original
    np.testing.assert_array_equal(zspy.file_reader(path)[0]["data"], second["data"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.zspy"]


def test_failed_write_leaves_old_directory(tmp_path: Path) -> None:
    path = tmp_path / "keep.zspy"
    zspy.file_writer(path, signal(), show_progressbar=False)
    with pytest.raises(ArgumentError):
        zspy.file_writer(path, signal(metadata={"General": {"title": "scan"}, "bad": object()}), show_progressbar=False)
    np.testing.assert_array_equal(zspy.file_reader(path)[0]["data"], signal()["data"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.zspy"]


@pytest.mark.parametrize("store_kind", ["dict", "memory", "local", "zip"])
def test_any_store_object(tmp_path: Path, store_kind: str) -> None:
    import zarr

    store: Any
    if store_kind == "dict":
        store = {}
    elif store_kind == "memory":
        store = zarr.storage.MemoryStore()
    elif store_kind == "local":
        store = zarr.storage.LocalStore(tmp_path / "local.zspy")
    else:
        store = zarr.storage.ZipStore(tmp_path / "store.zspy", mode="w")
    data = np.random.default_rng(0).random((3, 5, 7))
    zspy.file_writer(store, signal(data), close_file=store_kind == "zip", show_progressbar=False)
    if store_kind == "zip":
        store = zarr.storage.ZipStore(tmp_path / "store.zspy", mode="r")
    (back,) = zspy.file_reader(store)
    np.testing.assert_array_equal(back["data"], data)
    with pytest.raises(ArgumentError, match=r"store_type"):
        zspy.file_writer({}, signal(data), store_type="zip", show_progressbar=False)


def test_zarr_format_3_is_read_by_zarr_python(tmp_path: Path) -> None:
    import zarr

    data = np.random.default_rng(2).random((4, 6, 5)).astype(np.float32)
    path = tmp_path / "v3.zspy"
    metadata = {"General": {"title": "v3"}, "Signal": {}, "words": ["a", "b"], "t": (1, 2)}
    zspy.file_writer(path, signal(data, metadata=metadata), zarr_format=3, chunks=(1, 6, 5), show_progressbar=False)
    group = zarr.open_group(path, mode="r")
    assert group.metadata.zarr_format == 3 and group.attrs["file_format"] == "ZSpy"
    np.testing.assert_array_equal(zarr.open_array(path / "Experiments" / "v3" / "data", mode="r")[:], data)
    (back,) = zspy.file_reader(path)
    np.testing.assert_array_equal(back["data"], data)
    assert back["metadata"]["t"] == (1, 2) and back["metadata"]["words"] == ["a", "b"]
    (lazy,) = zspy.file_reader(path, lazy=True)
    np.testing.assert_array_equal(lazy["data"].compute(), data)


def test_zarr_format_3_sciz_streams_are_read_and_written_by_zarr_python(tmp_path: Path) -> None:
    # sciz wrote "numcodecs.sciz" into zarr 3 stores but registered it only with numcodecs (zarr 2):
    # zarr-python failed with "Unknown codec: 'numcodecs.sciz'" even after importing sciz.
    import subprocess
    import sys

    data = np.random.default_rng(3).random((4, 6, 5)).astype(np.float32)
    data[0, 0, :2] = [np.nan, np.inf]
    path = tmp_path / "v3.zspy"
    zspy.file_writer(
        path, signal(data), zarr_format=3, compressor="sz3", tolerance=1e-3, chunks=(2, 6, 5), show_progressbar=False
    )
    check = (
        "import sys, warnings, numpy as np, zarr; warnings.simplefilter('ignore'); "
        "import sciz.codecs.numcodecs_compat as n; "
        "a = zarr.open_array(sys.argv[1] + '/Experiments/scan/data', mode='r')[...]; "
        "np.save(sys.argv[2], a); "
        "z = zarr.create_array(sys.argv[3], shape=a.shape, chunks=(2, 6, 5), dtype='f4', "
        "compressors=[n.SciZZarr3Codec(codec={'id': 'sz3', 'tolerance': 1e-3})]); z[...] = a"
    )
    out, written = tmp_path / "read.npy", tmp_path / "written.zarr"
    run = subprocess.run(
        [sys.executable, "-c", check, str(path), str(out), str(written)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    read = np.load(out)
    finite = np.isfinite(data)
    assert np.array_equal(np.isnan(read), np.isnan(data)) and read[0, 0, 1] == np.inf
    assert np.abs(read[finite] - data[finite]).max() <= 1e-3
    import warnings

    import zarr

    with warnings.catch_warnings():  # zarr: "Numcodecs codecs are not in the Zarr version 3 specification"
        warnings.simplefilter("ignore")
        again = zarr.open_array(written, mode="r")[...]
    assert np.array_equal(np.isnan(again), np.isnan(data)) and np.abs(again[finite] - data[finite]).max() <= 2e-3


def test_zarr_python_written_v3_array_is_read(tmp_path: Path) -> None:
    # A zarr 3 feature sciz's engine leaves to zarr-python (sharding) still reads.
    import zarr

    path = tmp_path / "sharded.zspy"
    zspy.file_writer(path, signal(), zarr_format=3, show_progressbar=False)
    data = np.arange(64.0).reshape(8, 8)
    shutil.rmtree(path / "Experiments" / "scan" / "data")
    array = zarr.create_array(
        path / "Experiments" / "scan" / "data", shape=(8, 8), chunks=(2, 2), shards=(4, 4), dtype="f8", zarr_format=3
    )
    array[:] = data
    (back,) = zspy.file_reader(path, exact=False)
    np.testing.assert_array_equal(back["data"], data)


@pytest.mark.parametrize("kind", ["zspy", "hspy"])
def test_write_dataset_false_rewrites_only_metadata(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"meta.{kind}"
    data = np.arange(60.0).reshape(3, 4, 5)
    WRITERS[kind](path, signal(data), show_progressbar=False)
    if kind == "zspy":
        chunk = path / "Experiments" / "scan" / "data" / "0" / "0" / "0"
        before = chunk.stat().st_ino
    changed = signal(np.zeros_like(data), metadata={"General": {"title": "scan"}, "Signal": {}, "note": (1, "x")})
    changed["axes"][2]["units"] = "µm"
    WRITERS[kind](path, changed, write_dataset=False, show_progressbar=False)
    (back,) = READERS[kind](path)
    np.testing.assert_array_equal(back["data"], data)
    assert back["metadata"]["note"] == (1, "x") and back["axes"][2]["units"] == "µm"
    if kind == "zspy":
        assert chunk.stat().st_ino == before  # linked, not rewritten
    with pytest.raises(FormatError, match="shape"):
        WRITERS[kind](path, signal(np.zeros((2, 2, 2))), write_dataset=False, show_progressbar=False)
    with pytest.raises(FormatError):
        WRITERS[kind](tmp_path / f"missing.{kind}", changed, write_dataset=False, show_progressbar=False)


def test_write_dataset_false_on_zip(tmp_path: Path) -> None:
    path = tmp_path / "meta.zspy"
    data = np.arange(24.0).reshape(2, 3, 4)
    zspy.file_writer(path, signal(data), store_type="zip", show_progressbar=False)
    zspy.file_writer(
        path,
        signal(np.zeros_like(data), metadata={"General": {"title": "scan"}, "x": 1}),
        store_type="zip",
        write_dataset=False,
        show_progressbar=False,
    )
    (back,) = zspy.file_reader(path)
    np.testing.assert_array_equal(back["data"], data)
    assert back["metadata"]["x"] == 1


def test_compressors(tmp_path: Path) -> None:
    data = np.random.default_rng(3).integers(0, 50, size=(4, 16, 16)).astype(np.uint16)
    cases = {
        "zstd-name": ("zstd", {"level": 3}, "zstd"),
        "object": (numcodecs.LZ4(), {}, "lz4"),
        "config": ({"id": "gzip", "level": 2}, {}, "gzip"),
    }
    for name, (compressor, params, codec_id) in cases.items():
        path = tmp_path / f"{name}.zspy"
        zspy.file_writer(path, signal(data), compressor=compressor, show_progressbar=False, **params)
        zarray = json.loads((path / "Experiments" / "scan" / "data" / ".zarray").read_text())
        assert stored_codec(zarray)["id"] == codec_id
        np.testing.assert_array_equal(zspy.file_reader(path)[0]["data"], data)
        # Metadata arrays always stay lossless with the default compressor.
    with pytest.raises(ArgumentError, match="compressor"):
        zspy.file_writer(tmp_path / "bad.zspy", signal(data), compressor="no-such-codec", show_progressbar=False)
    with pytest.raises(ArgumentError, match="compressor"):
        zspy.file_writer(tmp_path / "bad.zspy", signal(data), compressor=3.5, show_progressbar=False)


def test_hspy_compression_options(tmp_path: Path) -> None:
    import h5py

    data = np.random.default_rng(4).integers(0, 9, size=(3, 8, 8)).astype(np.int32)
    for compression, expected in (("gzip", "gzip"), ("lzf", "lzf"), (None, None), (4, "gzip")):
        path = tmp_path / f"c{expected}.hspy"
        hspy.file_writer(path, signal(data), compression=compression, show_progressbar=False)
        with h5py.File(path) as handle:
            dataset = handle["Experiments/scan/data"]
            assert dataset.compression == expected
            assert dataset.shuffle == (expected is not None)
        np.testing.assert_array_equal(hspy.file_reader(path)[0]["data"], data)
    with pytest.raises(ArgumentError, match="compression"):
        hspy.file_writer(tmp_path / "x.hspy", signal(data), compression="nope", show_progressbar=False)


def test_signal_chunks_hold_whole_signals() -> None:
    assert signal_chunks((64, 64, 256, 256), 4, [2, 3], 1e8) == (5, 64, 256, 256)
    assert signal_chunks((64, 64, 256, 256), 4, [2, 3], 1e6) == (1, 3, 256, 256)
    assert signal_chunks((10, 10), 8, [1], 1e8) == (10, 10)
    assert signal_chunks((2000, 4096), 8, [1], 1e6) == (30, 4096)
    assert signal_chunks((0, 5), 4, [1], 1e6) == (1, 5)
    for shape in [(7, 9, 11), (100, 3), (1,)]:
        chunks = signal_chunks(shape, 8, [len(shape) - 1], 1000)
        assert chunks[-1] == shape[-1] and all(1 <= c <= n for c, n in zip(chunks, shape, strict=True))


def test_default_chunks_and_parallel_numpy_write(tmp_path: Path) -> None:
    data = np.random.default_rng(5).random((40, 20, 30)).astype(np.float32)
    path = tmp_path / "chunks.zspy"
    zspy.file_writer(path, signal(data), chunks=(7, 20, 30), show_progressbar=True, threads=2)
    zarray = json.loads((path / "Experiments" / "scan" / "data" / ".zarray").read_text())
    assert zarray["chunks"] == [7, 20, 30]
    # 6 chunk rows + .zarray + .zattrs (zarr-python writes it, empty)
    assert len(list((path / "Experiments" / "scan" / "data").iterdir())) == 6 + 2
    np.testing.assert_array_equal(zspy.file_reader(path, threads=2)[0]["data"], data)
    np.testing.assert_array_equal(
        zspy.file_reader(path, lazy=True)[0]["data"][3:17, 5, ::3].compute(), data[3:17, 5, ::3]
    )


@pytest.mark.parametrize("ext", [".zspy", ".hspy"])
def test_dataset_round_trip_through_save_and_load(tmp_path: Path, ext: str) -> None:
    dataset = sciz.Dataset(
        np.random.default_rng(6).random((3, 4, 5)).astype(np.float32),
        axes=[sciz.Axis("t", "s", 0.5), sciz.Axis("y", "nm", 2.0, 1.0), sciz.Axis("x", "nm", 2.0)],
        layers={"smooth": np.ones((3, 4, 5))},
        masks={"bad": np.zeros((3, 4, 5), bool)},
        metadata={"operator": "ö", "settings": (1, 2), "General": {"notes": b"\x00"}},
        name="run/1",
    )
    dataset.add_provenance("acquire", {"gain": 2})
    back = sciz.load(sciz.save(dataset, tmp_path / f"d{ext}"))
    assert back.name == "run/1" and back.axes == dataset.axes
    assert same(back.metadata, dataset.metadata) and back.provenance == dataset.provenance
    np.testing.assert_array_equal(back.data, dataset.data)
    np.testing.assert_array_equal(back.layers["smooth"], dataset.layers["smooth"])
    np.testing.assert_array_equal(back.masks["bad"], dataset.masks["bad"])
    lazy = sciz.load(tmp_path / f"d{ext}", lazy=True)
    assert type(lazy.data).__module__.startswith("dask")
    zipped = sciz.save(dataset, tmp_path / "z.zspy", store_type="zip")
    assert sciz.formats.detect_format(zipped).name == "zspy-zip"
    assert sciz.load(zipped).name == "run/1"


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        zspy.file_reader(tmp_path / "missing.zspy")
    with pytest.raises(FileNotFoundError):
        hspy.file_reader(tmp_path / "missing.hspy")
    (tmp_path / "empty.zspy").mkdir()
    with pytest.raises(FormatError, match=r"empty\.zspy"):
        zspy.file_reader(tmp_path / "empty.zspy")
    (tmp_path / "junk.hspy").write_bytes(b"\x89HDF\r\n\x1a\nthis is not hdf5")
    with pytest.raises(FormatError, match=r"junk\.hspy"):
        hspy.file_reader(tmp_path / "junk.hspy")
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FormatError):
        zspy.file_reader(tmp_path / "junk.zip")
    good = tmp_path / "good.zspy"
    zspy.file_writer(good, signal(), show_progressbar=False)
    (good / "Experiments" / "scan" / "data" / "0" / "0" / "0").write_bytes(b"garbage")
    with pytest.raises(FormatError, match="cannot be decoded"):
        zspy.file_reader(good)
    (good / "Experiments" / "scan" / "data" / ".zarray").write_text("{not json")
    with pytest.raises(FormatError, match="JSON"):
        zspy.file_reader(good)
    for bad in (
        {"write_dataset": "yes"},
        {"store_type": "s3"},
        {"zarr_format": 4},
        {"chunks": (1, 2)},
        {"unknown_option": 1},
    ):
        with pytest.raises(ArgumentError):
            zspy.file_writer(tmp_path / "x.zspy", signal(), show_progressbar=False, **bad)
    with pytest.raises(ArgumentError, match="data"):
        zspy.file_writer(tmp_path / "x.zspy", {"metadata": {}}, show_progressbar=False)
    with pytest.raises(ArgumentError, match="axes"):
        zspy.file_writer(tmp_path / "x.zspy", {"data": np.zeros((2, 2)), "axes": [{}]}, show_progressbar=False)
    with pytest.raises(ArgumentError, match="lazy"):
        zspy.file_reader(good, lazy="yes")


def smooth_field() -> np.ndarray:
    t = np.linspace(0, 6, 24 * 32 * 32, dtype=np.float32).reshape(24, 32, 32)
    return np.sin(t) + 0.01 * np.cos(7 * t)


@pytest.mark.parametrize(
    ("compressor", "params", "codec_id"),
    [
        ("zfp", {"tolerance": 1e-3}, "zfpy"),  # standard numcodecs codec, bound checked per chunk
        ("zfp", {"tolerance": 1e-3, "standard_codec": False}, "sciz"),
        ("sz3", {"tolerance": 1e-3}, "sciz"),
        ("lerc", {"tolerance": 1e-3}, "sciz"),
        ("pcodec", {}, "pcodec"),
    ],
)
def test_sciz_codecs_keep_their_bound_in_zspy(tmp_path: Path, compressor: str, params: dict, codec_id: str) -> None:
    field = smooth_field()
    path = tmp_path / f"{compressor}.zspy"
    zspy.file_writer(path, signal(field), compressor=compressor, chunks=(8, 32, 32), show_progressbar=False, **params)
    zarray = json.loads((path / "Experiments" / "scan" / "data" / ".zarray").read_text())
    assert stored_codec(zarray)["id"] == codec_id
    back = zspy.file_reader(path)[0]["data"]
    tolerance = params.get("tolerance", 0.0)
    assert np.abs(back.astype(np.float64) - field).max() <= tolerance
    lazy = zspy.file_reader(path, lazy=True)[0]["data"].compute()
    np.testing.assert_array_equal(lazy, back)
    if tolerance:
        assert not np.array_equal(back, field)  # really lossy, and smaller than lossless
        lossless = tmp_path / "lossless.zspy"
        zspy.file_writer(lossless, signal(field), show_progressbar=False)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        assert size < sum(f.stat().st_size for f in lossless.rglob("*") if f.is_file())


def test_sciz_codec_object_and_nonfinite_values(tmp_path: Path) -> None:
    field = smooth_field()
    field[3, 4, 5] = np.nan
    field[7, 1, 2] = np.inf
    with pytest.raises(sciz.errors.CodecError, match="standard_codec=False"):
        zspy.file_writer(tmp_path / "std.zspy", signal(field), compressor="zfp", tolerance=1e-3, show_progressbar=False)
    codec = sciz.codecs.get("zfp", tolerance=1e-3)
    zspy.file_writer(
        tmp_path / "obj.zspy", signal(field), compressor=codec, standard_codec=False, show_progressbar=False
    )
    back = zspy.file_reader(tmp_path / "obj.zspy")[0]["data"]
    assert np.isnan(back[3, 4, 5]) and back[7, 1, 2] == np.inf
    finite = np.isfinite(field)
    assert np.abs(back[finite] - field[finite]).max() <= 1e-3


def test_sciz_codecs_in_hspy(tmp_path: Path) -> None:
    import h5py

    field = smooth_field()
    hspy.file_writer(tmp_path / "sz3.hspy", signal(field), compression="sz3", tolerance=1e-3, show_progressbar=False)
    with h5py.File(tmp_path / "sz3.hspy") as handle:
        assert "32024" in handle["Experiments/scan/data"]._filters  # the registered SZ3 filter
    back = hspy.file_reader(tmp_path / "sz3.hspy")[0]["data"]
    assert np.abs(back.astype(np.float64) - field).max() <= 1e-3
    with pytest.raises(sciz.errors.CodecError, match="HDF5 filter"):
        hspy.file_writer(
            tmp_path / "lerc.hspy", signal(field), compression="lerc", tolerance=1e-3, show_progressbar=False
        )
    assert not (tmp_path / "lerc.hspy").exists()


def test_fast_blosc_streams_are_standard_blosc() -> None:
    from sciz.formats.hyperspy_zarr import FastBlosc, get_codec

    data = smooth_field()
    for config in (
        {"id": "blosc", "cname": "zstd", "clevel": 1, "shuffle": 1, "blocksize": 0},
        {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": -1, "blocksize": 0},
        {"id": "blosc", "cname": "zlib", "clevel": 3, "shuffle": 2, "blocksize": 8192},
    ):
        fast = get_codec(config, fast=True)
        assert isinstance(fast, FastBlosc) and fast.get_config() == numcodecs.get_codec(config).get_config()
        reference = numcodecs.get_codec(config)
        encoded = bytes(fast.encode(data))
        if config["blocksize"]:
            assert encoded == reference.encode(data)  # explicit block size: byte-identical to numcodecs
        # automatic block size: a standard Blosc stream numcodecs decodes
        np.testing.assert_array_equal(np.frombuffer(reference.decode(encoded), np.float32), data.ravel())
        np.testing.assert_array_equal(np.frombuffer(fast.decode(reference.encode(data)), np.float32), data.ravel())
    # FastBlosc encodes into one reused buffer per thread: what ArrayMeta.encode returns is a copy of its own.
    from sciz.formats.hyperspy_zarr import ArrayMeta

    config = {"id": "blosc", "cname": "zstd", "clevel": 1, "shuffle": 1, "blocksize": 0}
    meta = ArrayMeta(path="a", shape=data.shape, chunks=data.shape, dtype=data.dtype, compressor=config)
    first = meta.encode(data)
    second = meta.encode(data[::-1].copy())
    assert isinstance(first, bytes) and first != second
    np.testing.assert_array_equal(meta.decode(first), data)


def test_load_reports_storage(tmp_path: Path) -> None:
    data = np.zeros((8, 64, 64), np.float32)
    for name, options in (("d.zspy", {}), ("z.zspy", {"store_type": "zip"})):
        dataset = sciz.load(sciz.save(sciz.Dataset(data, name="s"), tmp_path / name, **options))
        stored = dataset.storage["data"]
        assert stored.codec == "blosc" and stored.chunks == (8, 64, 64)
        assert stored.stored_bytes is not None and 0 < stored.stored_bytes < data.nbytes / 50
    stored = sciz.load(sciz.save(sciz.Dataset(data, name="s"), tmp_path / "h.hspy")).storage["data"]
    assert stored.codec == "gzip" and stored.stored_bytes is not None and 0 < stored.stored_bytes < data.nbytes / 50


@pytest.mark.parametrize("kind", ["zspy", "hspy"])
def test_ragged_signal_and_metadata(tmp_path: Path, kind: str) -> None:
    ragged = np.empty((4,), dtype=object)
    for i in range(4):
        ragged[i] = np.arange(i * 2, dtype=float).reshape(-1, 2)
    words = np.empty((3,), dtype=object)
    for i in range(3):
        words[i] = np.array(["a" * (i + 1), "ü"])
    metadata = {"General": {"title": "rag"}, "Markers": {"w": words} if kind == "zspy" else {"o": ragged}}
    value = {
        "data": ragged,
        "axes": [{"name": "n", "size": 4, "navigate": True, "scale": 1.0, "offset": 0.0, "units": ""}],
        "metadata": metadata,
        "attributes": {"ragged": True},
    }
    path = tmp_path / f"rag.{kind}"
    WRITERS[kind](path, value, show_progressbar=False)
    for exact in (True, False):
        (back,) = READERS[kind](path, exact=exact)
        assert back["data"].dtype == object and [b.shape for b in back["data"]] == [(0, 2), (1, 2), (2, 2), (3, 2)]
        np.testing.assert_array_equal(back["data"][3], ragged[3])
        if kind == "zspy":
            assert [list(w) for w in back["metadata"]["Markers"]["w"]] == [["a", "ü"], ["aa", "ü"], ["aaa", "ü"]]
        else:
            np.testing.assert_array_equal(back["metadata"]["Markers"]["o"][2], ragged[2])


def test_lazy_hspy_never_reads_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "lazy.hspy"
    hspy.file_writer(path, signal(np.ones((2, 3, 4))), show_progressbar=False)
    (first,) = hspy.file_reader(path, lazy=True)
    np.testing.assert_array_equal(first["data"].compute(), np.ones((2, 3, 4)))
    hspy.file_writer(path, signal(np.full((2, 3, 4), 5.0)), show_progressbar=False)
    (second,) = hspy.file_reader(path, lazy=True)
    np.testing.assert_array_equal(second["data"].compute(), np.full((2, 3, 4), 5.0))
    with pytest.raises(FormatError, match="replaced"):
        first["data"].compute()


def test_lazy_zspy_never_mixes_a_replaced_directory(tmp_path: Path) -> None:
    path = tmp_path / "lazy.zspy"
    zspy.file_writer(path, signal(np.ones((2, 3, 4))), show_progressbar=False)
    (first,) = zspy.file_reader(path, lazy=True)
    zspy.file_writer(path, signal(np.full((2, 3, 4), 5.0)), show_progressbar=False)
    with pytest.raises(FormatError, match="replaced"):
        first["data"].compute()
    np.testing.assert_array_equal(zspy.file_reader(path, lazy=True)[0]["data"].compute(), np.full((2, 3, 4), 5.0))


@pytest.mark.parametrize("ext", [".zspy", ".hspy"])
def test_lazy_dataset_saved_over_its_own_file(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"same{ext}"
    sciz.save(sciz.Dataset(np.arange(60.0).reshape(3, 4, 5), name="a"), path)
    dataset = sciz.load(path, lazy=True)
    dataset.metadata["edited"] = True
    sciz.save(dataset, path)  # streams from the old file into a new one, then replaces it
    back = sciz.load(path)
    assert back.metadata == {"edited": True}
    np.testing.assert_array_equal(back.data, np.arange(60.0).reshape(3, 4, 5))


def _stored_lazy_attribute(path: Path) -> Any:
    """The ``_lazy`` attribute a zspy/hspy file stores (read from disk by zarr / h5py, not by sciz)."""
    if path.suffix == ".hspy":
        import h5py

        with h5py.File(path, "r") as handle:
            (name,) = handle["Experiments"]
            return handle[f"Experiments/{name}/attributes"].attrs["_lazy"]
    import zarr

    group = zarr.open_group(str(path), mode="r")
    (name,) = group["Experiments"].group_keys()
    return group[f"Experiments/{name}/attributes"].attrs["_lazy"]


@pytest.mark.parametrize("saved_lazy", [False, True])
def test_lazy_convert_keeps_the_stored_lazy_attribute(tmp_path: Path, saved_lazy: bool) -> None:
    # A trial user's finding: `sciz convert` streams zspy/hspy lazily, and the written file said
    # _lazy=True for a signal HyperSpy had saved eagerly. The file's own value is carried over.
    import subprocess
    import sys

    source = tmp_path / "source.zspy"
    zspy.file_writer(source, {**signal(), "attributes": {"_lazy": saved_lazy}}, show_progressbar=False)
    assert bool(_stored_lazy_attribute(source)) is saved_lazy
    chain = [source, tmp_path / "a.hspy", tmp_path / "b.zspy"]
    for src, dst in itertools.pairwise(chain):
        command = [sys.executable, "-c", "from sciz.cli import main; main()", "convert", str(src), str(dst)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert bool(_stored_lazy_attribute(dst)) is saved_lazy, (src.name, dst.name)
    # A Dataset made in memory is no lazy HyperSpy signal, whether its data is dask or numpy.
    import dask.array as da

    sciz.save(sciz.Dataset(da.zeros((4, 4), chunks=2)), tmp_path / "mem.zspy")
    assert _stored_lazy_attribute(tmp_path / "mem.zspy") is False
