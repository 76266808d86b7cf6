"""Big data on dask: lazy reads, streamed writes on the threaded scheduler and on a process cluster, memory bounds."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

import sciz
from sciz.formats import hspy, zspy
from sciz.lazy import convert, synthetic_signal


def lazy_signal(data: da.Array) -> dict:
    return {
        "data": data,
        "axes": [
            {"name": f"a{i}", "units": "", "scale": 1.0, "offset": 0.0, "size": n, "navigate": i == 0}
            for i, n in enumerate(data.shape)
        ],
        "metadata": {"General": {"title": "big"}, "Signal": {}},
    }


def test_synthetic_signal_is_deterministic_and_chunked() -> None:
    a = synthetic_signal((6, 10, 12), (2, 10, 12), seed=3)
    b = synthetic_signal((6, 10, 12), (3, 5, 12), seed=3)
    assert a.chunks == ((2, 2, 2), (10,), (12,))
    np.testing.assert_array_equal(a[:2].compute(), b.rechunk((2, 10, 12))[:2].compute())  # same first block
    assert a.dtype == np.float32 and float(a.std().compute()) > 1.0
    np.testing.assert_array_equal(a.compute(), b.compute())  # values do not depend on the chunking
    assert not np.array_equal(a.compute(), synthetic_signal((6, 10, 12), (2, 10, 12), seed=4).compute())


@pytest.mark.parametrize("target", ["dir.zspy", "zip.zspy", "file.hspy"])
def test_dask_signal_streams_to_file_and_back_threaded(tmp_path: Path, target: str) -> None:
    data = synthetic_signal((12, 32, 40), (3, 32, 40), seed=1)
    expected = data.compute(scheduler="threads")
    path = tmp_path / target
    with dask.config.set(scheduler="threads"):
        if target.endswith(".hspy"):
            hspy.file_writer(path, lazy_signal(data), show_progressbar=True)
            (back,) = hspy.file_reader(path, lazy=True)
        else:
            store_type = "zip" if target.startswith("zip") else None
            zspy.file_writer(path, lazy_signal(data), store_type=store_type, show_progressbar=True)
            (back,) = zspy.file_reader(path, lazy=True)
        assert isinstance(back["data"], da.Array)
        assert back["data"].chunks[0] == (3, 3, 3, 3)  # the dask chunks became the stored chunks
        np.testing.assert_array_equal(back["data"].compute(), expected)
        assert float(back["data"].sum().compute()) == pytest.approx(float(expected.sum(dtype=np.float64)))


QUIET_WRITERS = textwrap.dedent(
    """
    import sys
    import numpy as np
    from sciz.formats import hspy, zspy
    from sciz.lazy import synthetic_signal

    folder = sys.argv[1]
    lazy = synthetic_signal((12, 32, 40), (3, 32, 40), seed=1)
    for name, data in (("numpy", lazy.compute()), ("dask", lazy)):
        signal = {"data": data, "metadata": {"General": {"title": name}}}
        zspy.file_writer(f"{folder}/{name}.zspy", signal, compressor="sz3", tolerance=1e-3, chunks=(3, 32, 40))
        zspy.file_writer(f"{folder}/{name}.zip.zspy", signal, store_type="zip", chunks=(3, 32, 40))
        hspy.file_writer(f"{folder}/{name}.hspy", signal, chunks=(3, 32, 40))
        (back,) = zspy.file_reader(f"{folder}/{name}.zspy", lazy=True)
        assert np.abs(back["data"].compute() - lazy.compute()).max() <= 1e-3
    """
)


def test_writers_print_nothing_into_a_pipe(tmp_path: Path) -> None:
    """Progress bars are for terminals: into a pipe rich printed one blank line per array written
    (a trial user's script that printed CSV got empty lines in it)."""
    done = subprocess.run(
        [sys.executable, "-c", QUIET_WRITERS, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "" and done.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{n}{e}" for n in ("numpy", "dask") for e in (".zspy", ".zip.zspy", ".hspy")
    )


def test_rechunks_irregular_dask_chunks(tmp_path: Path) -> None:
    data = da.from_array(np.arange(7 * 5 * 3, dtype=np.int32).reshape(7, 5, 3), chunks=((3, 4), 5, 3))
    zspy.file_writer(tmp_path / "r.zspy", lazy_signal(data), show_progressbar=False)
    (back,) = zspy.file_reader(tmp_path / "r.zspy")
    np.testing.assert_array_equal(back["data"], data.compute())


def test_distributed_process_cluster(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    data = synthetic_signal((8, 24, 30), (2, 24, 30), seed=2)
    expected = data.compute(scheduler="threads")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        zspy.file_writer(tmp_path / "c.zspy", lazy_signal(data), show_progressbar=False)
        zspy.file_writer(tmp_path / "cz.zspy", lazy_signal(data), store_type="zip", show_progressbar=False)
        hspy.file_writer(tmp_path / "c.hspy", lazy_signal(data), show_progressbar=False)
        for reader, name in ((zspy.file_reader, "c.zspy"), (zspy.file_reader, "cz.zspy"), (hspy.file_reader, "c.hspy")):
            (back,) = reader(tmp_path / name, lazy=True)
            total = client.compute(back["data"].astype(np.float64).sum()).result()  # decoded in the workers
            assert total == pytest.approx(float(expected.sum(dtype=np.float64)))
            np.testing.assert_array_equal(client.compute(back["data"]).result(), expected)
        with pytest.raises(sciz.errors.FormatError, match="cluster"):
            zspy.file_writer({}, lazy_signal(data), show_progressbar=False)


def test_convert_streams_between_formats(tmp_path: Path) -> None:
    data = synthetic_signal((6, 16, 16), (2, 16, 16), seed=4)
    zspy.file_writer(tmp_path / "a.zspy", lazy_signal(data), show_progressbar=False)
    out = convert(tmp_path / "a.zspy", tmp_path / "b.hspy")
    back = convert(out, tmp_path / "c.zspy", compressor="zstd")
    np.testing.assert_array_equal(sciz.load(back).data, data.compute())
    assert sciz.load(back).name == "big"
    npz = convert(tmp_path / "c.zspy", tmp_path / "d.npz")
    np.testing.assert_array_equal(sciz.load(npz).data, data.compute())


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, dask
    import numpy as np
    from sciz.formats import zspy, hspy
    from sciz.lazy import synthetic_signal, current_rss, peak_rss
    path, kind = sys.argv[1], sys.argv[2]
    data = synthetic_signal((128, 256, 1024), (1, 256, 1024), seed=0)  # 128 MiB in 1 MiB chunks
    signal = {"data": data, "metadata": {"General": {"title": "m"}}}
    # A small round trip first, so that the libraries loaded on first use count in the baseline.
    small = {"data": synthetic_signal((4, 8, 8), (2, 8, 8)), "metadata": {"General": {"title": "s"}}}
    writer, reader = (zspy.file_writer, zspy.file_reader) if kind == "zspy" else (hspy.file_writer, hspy.file_reader)
    writer(path + ".small", small, show_progressbar=False)
    float(reader(path + ".small", lazy=True)[0]["data"].sum().compute())
    base = current_rss()
    with dask.config.set(scheduler="threads", num_workers=2):
        if kind == "zspy":
            zspy.file_writer(path, signal, show_progressbar=False)
            back = zspy.file_reader(path, lazy=True)[0]["data"]
        else:
            hspy.file_writer(path, signal, compression="lzf", show_progressbar=False)
            back = hspy.file_reader(path, lazy=True)[0]["data"]
        total = float(back.astype(np.float64).sum().compute())
    peak = peak_rss()
    print(json.dumps({"base": base, "peak": peak, "total": total, "nbytes": int(data.nbytes),
                      "modules": len(sys.modules), "cwd": os.getcwd()}))
    """
)


@pytest.mark.parametrize("kind", ["zspy", "hspy"])
def test_streaming_keeps_memory_bounded(tmp_path: Path, kind: str) -> None:
    result = subprocess.run(
        # -I and a clean working directory: nothing of the test session leaks into the measurement.
        [sys.executable, "-I", "-c", MEMORY_SCRIPT, str(tmp_path / f"m.{kind}"), kind],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["nbytes"] == 128 * 2**20
    assert report["total"] > 0
    # Whole-array processing would need > 128 MiB (plus encoded copies); streaming stays at a few chunks.
    assert report["peak"] - report["base"] < 48 * 2**20, report  # measured: 16 (zspy) and 28 MiB (hspy)
