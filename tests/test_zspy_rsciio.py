"""Interoperability with the real RosettaSciIO 0.15 (HyperSpy's reader/writer), both ways, for zspy and hspy.

RosettaSciIO needs zarr 2, which clashes with sciz's zarr 3, so it lives in its own virtual
environment (created once under ``.cache/`` and reused; ``SCIZ_RSCIIO_PYTHON`` may point to an
existing interpreter) and is driven through subprocesses that print JSON.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sciz
from sciz.formats import hspy, zspy

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".cache" / "rsciio-0.15"
REQUIREMENTS = ["rosettasciio[zspy,hdf5]==0.15.*", "zarr>=2.18,<3", "zfpy==1.0.1", "hdf5plugin", "pcodec"]

# Runs inside the RosettaSciIO environment: encodes what RosettaSciIO returns as tagged JSON.
HELPER = textwrap.dedent(
    r"""
    import json, sys, warnings
    import numpy as np
    warnings.simplefilter("ignore")

    def enc(v):
        if isinstance(v, dict):
            return {"dict": {str(k): enc(x) for k, x in v.items()}}
        if isinstance(v, tuple):
            return {"tuple": [enc(x) for x in v]}
        if isinstance(v, list):
            return {"list": [enc(x) for x in v]}
        if hasattr(v, "compute") and hasattr(v, "chunks"):
            v = v.compute()
        if isinstance(v, np.ndarray):
            if v.dtype.kind == "O":
                return {"objarray": [enc(np.asarray(x)) for x in v.ravel()], "shape": list(v.shape)}
            if v.dtype.kind not in "biufcU":
                return {"objarray": [enc(x) for x in v.ravel().tolist()], "shape": list(v.shape)}
            return {"array": v.tolist(), "dtype": v.dtype.str, "shape": list(v.shape)}
        if isinstance(v, bytes):
            return {"bytes": v.hex()}
        if isinstance(v, np.generic):
            return {"np": type(v).__name__, "value": enc(v.item()) if not isinstance(v, np.bytes_) else v.hex()}
        if isinstance(v, float) and v != v:
            return {"nan": True}
        if isinstance(v, complex):
            return {"complex": [v.real, v.imag]}
        return v

    def read(kind, path, lazy):
        if kind == "zspy":
            from rsciio.zspy import file_reader
        else:
            from rsciio.hspy import file_reader
        out = []
        for s in file_reader(path, lazy=lazy):
            out.append(enc({k: s[k] for k in ("data", "axes", "metadata", "original_metadata") if k in s}))
        return out

    def write(kind, path, spec):
        signal = eval(spec, {"np": np})  # trusted: written by the test itself
        signal.setdefault("tmp_parameters", {})
        if kind == "zspy":
            from rsciio.zspy import file_writer
            file_writer(path, signal, show_progressbar=False, **signal.pop("_kw", {}))
        else:
            from rsciio.hspy import file_writer
            file_writer(path, signal, show_progressbar=False)
        return None

    jobs = json.loads(sys.argv[1])
    print(json.dumps([read(*j[1:]) if j[0] == "read" else write(*j[1:]) for j in jobs]))
    """
)


@pytest.fixture(scope="session")
def rsciio_python() -> str:
    """The Python of a virtual environment with RosettaSciIO 0.15 and zarr 2 (made once, reused)."""
    given = os.environ.get("SCIZ_RSCIIO_PYTHON")
    if given:
        return given
    python = VENV / "bin" / "python"
    ready = VENV / ".ready"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with (VENV.parent / "rsciio.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers: one builds, the others wait
        if not ready.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True)
            result = subprocess.run(
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *REQUIREMENTS],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                pytest.fail(f"could not install RosettaSciIO 0.15 for the interop tests:\n{result.stderr[-3000:]}")
            ready.write_text("\n".join(REQUIREMENTS))
    return str(python)


def rsciio(python: str, jobs: list[list[Any]]) -> list[Any]:
    result = subprocess.run([python, "-c", HELPER, json.dumps(jobs)], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"RosettaSciIO failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def dec(value: Any) -> Any:
    """Decode the helper's tagged JSON."""
    if isinstance(value, dict):
        if "dict" in value:
            return {k: dec(v) for k, v in value["dict"].items()}
        if "tuple" in value:
            return tuple(dec(v) for v in value["tuple"])
        if "list" in value:
            return [dec(v) for v in value["list"]]
        if "array" in value:
            return np.array(value["array"], dtype=value["dtype"]).reshape(value["shape"])
        if "objarray" in value:
            out = np.empty(len(value["objarray"]), dtype=object)
            for i, item in enumerate(value["objarray"]):
                out[i] = dec(item)
            return out.reshape(value["shape"])
        if "bytes" in value:
            return bytes.fromhex(value["bytes"])
        if "np" in value:
            return dec(value["value"])
        if "nan" in value:
            return float("nan")
        if "complex" in value:
            return complex(*value["complex"])
    return value


def _signal(data: np.ndarray, title: str = "scan", **metadata: Any) -> dict[str, Any]:
    names = ["t", "y", "x"][-data.ndim :]
    return {
        "data": data,
        "axes": [
            {"name": n, "units": "nm", "scale": 0.5 + i, "offset": -1.0 * i, "size": s, "navigate": i < data.ndim - 2}
            for i, (n, s) in enumerate(zip(names, data.shape, strict=True))
        ],
        "metadata": {"General": {"title": title}, "Signal": {"signal_type": ""}, **metadata},
        "original_metadata": {"instrument": {"voltage": 200.0, "name": "TEM-1"}},
    }


RICH = {
    "Acquisition": {
        "numbers": list(range(12)),  # past ten items (RosettaSciIO sorts item keys as strings)
        "mixed": [{"i": i} if i % 2 else i for i in range(12)],  # stored item by item
        "words": ["alpha", "beta", "gamma"],
        "nested": [[1, 2], {"a": 1}, "x"],
        "empty": [],
        "none": None,
        "text": "Ångström µm",
        "flag": True,
        "count": 7,
        "ratio": 0.25,
        "array": np.arange(6, dtype=np.int16).reshape(2, 3),
    }
}


def test_rsciio_reads_what_sciz_writes(tmp_path: Path, rsciio_python: str) -> None:
    data = np.random.default_rng(1).random((4, 6, 8), dtype=np.float32)
    signal = _signal(data, **RICH)
    zspy.file_writer(tmp_path / "dir.zspy", signal, show_progressbar=False)
    zspy.file_writer(tmp_path / "zip.zspy", signal, store_type="zip", show_progressbar=False)
    zspy.file_writer(tmp_path / "chunked.zspy", signal, chunks=(1, 6, 8), show_progressbar=False)
    hspy.file_writer(tmp_path / "file.hspy", signal, show_progressbar=False)
    jobs = [
        ["read", "zspy", str(tmp_path / "dir.zspy"), False],
        ["read", "zspy", str(tmp_path / "zip.zspy"), True],
        ["read", "zspy", str(tmp_path / "chunked.zspy"), True],
        ["read", "hspy", str(tmp_path / "file.hspy"), False],
    ]
    for result in rsciio(rsciio_python, jobs):
        (read,) = [dec(s) for s in result]
        np.testing.assert_array_equal(read["data"], data)
        assert [a["name"] for a in read["axes"]] == ["t", "y", "x"]
        assert [a["scale"] for a in read["axes"]] == [0.5, 1.5, 2.5]
        assert [a["navigate"] for a in read["axes"]] == [True, False, False]
        meta = read["metadata"]
        assert meta["General"]["title"] == "scan"
        acq = meta["Acquisition"]
        # In order past ten items: item keys are zero-padded for RosettaSciIO's string sort (issue 10).
        assert acq["numbers"] == list(range(12))
        assert acq["mixed"] == [{"i": i} if i % 2 else i for i in range(12)]
        assert acq["words"] == ["alpha", "beta", "gamma"]
        assert acq["text"] == "Ångström µm"
        assert acq["none"] is None and acq["empty"] == [] and acq["flag"] is True
        assert acq["count"] == 7 and acq["ratio"] == 0.25
        np.testing.assert_array_equal(acq["array"], RICH["Acquisition"]["array"])
        assert read["original_metadata"]["instrument"] == {"voltage": 200.0, "name": "TEM-1"}


def test_sciz_reads_what_rsciio_writes_and_fixes_its_faults(tmp_path: Path, rsciio_python: str) -> None:
    spec = (
        "{'data': np.arange(60, dtype=np.uint16).reshape(3, 4, 5), "
        "'axes': [{'name': n, 'units': 'px', 'scale': 2.0, 'offset': 1.0, 'size': s, 'navigate': i == 0} "
        "for i, (n, s) in enumerate(zip('tyx', (3, 4, 5)))], "
        "'metadata': {'General': {'title': 'from/rsciio'}, 'Signal': {'signal_type': ''}, "
        "'Lists': {'long': list(range(13)), 'mixed': [[1, 2], (3, 4), 'z'], "
        "'items': [[i] if i % 2 else i for i in range(12)], 'tup': (5, 6), 'ö': 'ü'}}, "
        "'original_metadata': {'a': {'b': 1.5}}, 'attributes': {'_lazy': False}, 'learning_results': {}, "
        "'models': {}, 'package_info': {'package': '', 'package_version': ''}}"
    )
    rsciio(
        rsciio_python,
        [
            ["write", "zspy", str(tmp_path / "r.zspy"), spec],
            ["write", "hspy", str(tmp_path / "r.hspy"), spec],
        ],
    )
    expected = np.arange(60, dtype=np.uint16).reshape(3, 4, 5)
    for reader, path in ((zspy.file_reader, tmp_path / "r.zspy"), (hspy.file_reader, tmp_path / "r.hspy")):
        for lazy in (False, True):
            (signal,) = reader(path, lazy=lazy)
            np.testing.assert_array_equal(np.asarray(signal["data"]), expected)
            assert type(signal["data"]).__module__.startswith("dask") == lazy
            lists = signal["metadata"]["Lists"]
            assert lists["long"] == list(range(13))  # in order, unlike RosettaSciIO's own reader
            assert lists["mixed"] == [[1, 2], (3, 4), "z"]
            # Item keys "0".."11" (HyperSpy's, and sciz's before zero-padding) read in numeric order.
            assert lists["items"] == [[i] if i % 2 else i for i in range(12)]
            assert lists["tup"] == (5, 6) and lists["ö"] == "ü"
            assert type(lists["long"][0]) is int  # Python scalars from hspy as from zspy
            assert signal["metadata"]["General"]["title"] == "from/rsciio"
            assert signal["original_metadata"] == {"a": {"b": 1.5}}
            assert [a["name"] for a in signal["axes"]] == ["t", "y", "x"]
    dataset = sciz.load(tmp_path / "r.zspy")
    assert dataset.name == "from/rsciio" and dataset.axes[1].scale == 2.0 and dataset.axes[0].navigate is True


def test_rsciio_reads_shared_files_like_sciz(shared_data: Path, rsciio_python: str) -> None:
    files = sorted((shared_data / "zspy").glob("*.zspy")) + sorted((shared_data / "hspy").glob("*"))
    jobs = [["read", "zspy" if f.suffix == ".zspy" else "hspy", str(f), False] for f in files]
    for path, theirs in zip(files, rsciio(rsciio_python, jobs), strict=True):
        reader = zspy.file_reader if path.suffix == ".zspy" else hspy.file_reader
        ours = reader(path)
        assert len(ours) == len(theirs), path.name
        for mine, other in zip(ours, theirs, strict=True):
            other = dec(other)
            if "data" not in other:
                continue
            np.testing.assert_array_equal(mine["data"], other["data"])
            assert mine["metadata"].get("General", {}).get("title") == other["metadata"].get("General", {}).get("title")
            assert [a.get("size") for a in mine["axes"]] == [a.get("size") for a in other["axes"]]
            assert set(mine["metadata"]) == set(other["metadata"]), path.name


def test_rsciio_decodes_standard_lossy_and_lossless_codecs(tmp_path: Path, rsciio_python: str) -> None:
    field = np.sin(np.linspace(0, 20, 4 * 32 * 32, dtype=np.float32)).reshape(4, 32, 32)
    zspy.file_writer(tmp_path / "zfp.zspy", _signal(field), compressor="zfp", tolerance=1e-3, show_progressbar=False)
    zspy.file_writer(tmp_path / "pcodec.zspy", _signal(field), compressor="pcodec", show_progressbar=False)
    hspy.file_writer(tmp_path / "zfp.hspy", _signal(field), compression="zfp", tolerance=1e-3, show_progressbar=False)
    jobs = [
        ["read", "zspy", str(tmp_path / "zfp.zspy"), False],
        ["read", "zspy", str(tmp_path / "pcodec.zspy"), False],
        ["read", "hspy", str(tmp_path / "zfp.hspy"), False],
    ]
    zfp_zspy, pcodec_zspy, zfp_hspy = (dec(r[0])["data"] for r in rsciio(rsciio_python, jobs))
    assert np.abs(zfp_zspy - field).max() <= 1e-3 and not np.array_equal(zfp_zspy, field)
    np.testing.assert_array_equal(pcodec_zspy, field)
    assert np.abs(zfp_hspy - field).max() <= 1e-3
    for path in ("zfp.zspy", "zfp.hspy"):
        ours = sciz.load(tmp_path / path).data
        assert np.abs(ours - field).max() <= 1e-3


def test_metadata_only_rewrite_is_read_by_rsciio(tmp_path: Path, rsciio_python: str) -> None:
    data = np.arange(24.0).reshape(2, 3, 4)
    signal = _signal(data, when=dt.datetime(2024, 5, 6, 7, 8, 9))
    for path, writer in ((tmp_path / "a.zspy", zspy.file_writer), (tmp_path / "a.hspy", hspy.file_writer)):
        writer(path, signal, show_progressbar=False)
        changed = _signal(np.zeros_like(data), note="edited")
        writer(path, changed, write_dataset=False, show_progressbar=False)
    jobs = [["read", "zspy", str(tmp_path / "a.zspy"), False], ["read", "hspy", str(tmp_path / "a.hspy"), False]]
    for result in rsciio(rsciio_python, jobs):
        read = dec(result[0])
        np.testing.assert_array_equal(read["data"], data)  # the data was kept
        assert read["metadata"]["note"] == "edited" and "when" not in read["metadata"]


def test_rsciio_reads_everything_sciz_can_store(tmp_path: Path, rsciio_python: str) -> None:
    # Types HyperSpy's layout cannot hold exactly are stored so that RosettaSciIO still reads the file.
    from test_zspy import rich_metadata, signal

    zspy.file_writer(tmp_path / "rich.zspy", signal(metadata=rich_metadata()), show_progressbar=False)
    hspy.file_writer(tmp_path / "rich.hspy", signal(metadata=rich_metadata()), show_progressbar=False)
    jobs = [["read", "zspy", str(tmp_path / "rich.zspy"), False], ["read", "hspy", str(tmp_path / "rich.hspy"), False]]
    for kind, result in zip(("zspy", "hspy"), rsciio(rsciio_python, jobs), strict=True):
        exact = dec(result[0])["metadata"]["Exact"]
        assert exact["non_ascii"] == "Ångström – µm – 温度"
        assert exact["when"] == "2024-03-01T12:30:05.123456+00:00"
        assert exact["nested_tuple"] == ((1, 2), [3, (4, 5)])
        assert exact["long_list"] == list(range(25))
        assert [d["a"] for d in exact["list_of_dicts"]] == list(range(12))
        assert exact["empty_dict"] == {} and exact["none"] is None
        reference = exact["_sig_reference"]
        np.testing.assert_array_equal(reference["data"], np.linspace(0, 1, 5))
        assert reference["metadata"]["Signal"]["signal_type"] == "EELS"
        if kind == "hspy":
            assert exact["bytes_nul"] == b"\x00\xffraw\x00" and exact["complex"] == 1 + 2j
        else:
            assert bytes(exact["bytes_nul"].astype(np.uint8)) == b"\x00\xffraw\x00" and exact["complex"] == "(1+2j)"


def test_rsciio_reads_files_with_names_longer_than_a_file_system_holds(tmp_path: Path, rsciio_python: str) -> None:
    # sciz stores such names as "~#<sha256>" with the real name in the root group (read back exactly by
    # sciz); RosettaSciIO reads the file, with the stand-in as the key.
    from test_zspy_safety import LONG_KEYS, long_name_signal

    zspy.file_writer(tmp_path / "long.zspy", long_name_signal(), show_progressbar=False)
    hspy.file_writer(tmp_path / "long.hspy", long_name_signal(), show_progressbar=False)
    jobs = [["read", "zspy", str(tmp_path / "long.zspy"), False], ["read", "hspy", str(tmp_path / "long.hspy"), False]]
    for kind, result in zip(("zspy", "hspy"), rsciio(rsciio_python, jobs), strict=True):
        read = dec(result[0])
        np.testing.assert_array_equal(read["data"], long_name_signal()["data"])
        assert read["metadata"]["General"]["title"] == "t" * 400
        nested = read["metadata"]["Nested"]
        if kind == "hspy":  # HDF5 names have no such limit
            assert sorted(nested) == sorted(LONG_KEYS)
        else:
            assert len(nested) == len(LONG_KEYS) and all(k.startswith("~#") for k in nested)
        assert sorted(v["value"] for v in nested.values()) == list(range(len(LONG_KEYS)))
