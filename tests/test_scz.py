"""``.scz`` files (a sciz codec stream on disk) as a registered format: load, info, convert, fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import sciz
from sciz import codecs
from sciz.cli.app import _register_commands, app
from sciz.errors import FormatError
from sciz.formats import detect_format, get_format

_register_commands()
runner = CliRunner()


def field() -> np.ndarray:
    grid = np.meshgrid(np.linspace(0, 3, 20), np.linspace(0, 2, 64), np.linspace(0, 1, 48), indexing="ij")
    data = (np.sin(grid[0] * 2) * np.cos(grid[1] * 3) * 50 + grid[2] * 7 + 280).astype(np.float32)
    data[0, 0, :3] = [np.nan, np.inf, -np.inf]
    return data


def test_seed_stream_written_to_disk_loads_as_a_dataset(tmp_path: Path) -> None:
    data = field()
    path = tmp_path / "field.scz"
    path.write_bytes(codecs.zfp_encode(data, tolerance=0.01))
    assert detect_format(path).name == "scz"
    dataset = sciz.load(path)
    assert dataset.shape == data.shape and dataset.data.dtype == data.dtype
    finite = np.isfinite(data)
    assert np.array_equal(np.isfinite(dataset.data), finite)
    assert np.abs(dataset.data[finite] - data[finite]).max() <= 0.01
    stored = dataset.storage["data"]
    assert stored.codec == "zfp" and stored.parameters == {"tolerance": 0.01}
    assert stored.stored_bytes == path.stat().st_size and stored.details["chunks"] == 1


def test_detected_by_magic_whatever_the_name(tmp_path: Path) -> None:
    path = tmp_path / "stream.bin"
    path.write_bytes(codecs.pcodec_encode(np.arange(100, dtype=np.int16)))
    assert detect_format(path).name == "scz"
    assert np.array_equal(sciz.load(path).data, np.arange(100, dtype=np.int16))


def test_info_reports_codec_parameters_chunks_size_and_ratio(tmp_path: Path) -> None:
    data = field()
    path = tmp_path / "field.scz"
    path.write_bytes(codecs.sz3_encode(data, tolerance=0.5, numthreads=2))
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "format:   scz" in result.stdout and "codec sz3" in result.stdout
    assert "tolerance=0.5" in result.stdout and "chunks: 1" in result.stdout
    report = json.loads(runner.invoke(app, ["info", str(path), "--json"]).stdout)
    (array,) = report["arrays"]
    assert array["codec"] == "sz3" and array["parameters"] == {"tolerance": 0.5}
    assert array["stored_bytes"] == path.stat().st_size
    assert array["ratio"] == pytest.approx(data.nbytes / path.stat().st_size)


def test_info_tells_chunks_stored_losslessly(tmp_path: Path) -> None:
    # sz3 stores chunks too small for its engine (under 8 elements) exactly, with pcodec.
    path = tmp_path / "tiny.scz"
    path.write_bytes(codecs.sz3_encode(np.array([1.5, 2.5, 3.5], dtype=np.float32), tolerance=0.1))
    stored = sciz.load(path).storage["data"]
    assert stored.details["chunks stored losslessly"] == 1
    result = runner.invoke(app, ["info", str(path)])
    assert "chunks stored losslessly: 1" in result.stdout


def test_convert_scz_to_npz_and_back_keeps_values(tmp_path: Path) -> None:
    data = field()
    source = tmp_path / "in.scz"
    source.write_bytes(codecs.lerc_encode(data, tolerance=0.01))
    decoded = codecs.lerc_decode(source.read_bytes())
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "mid.npz")])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.load(tmp_path / "mid.npz")["data"], decoded, equal_nan=True)
    # back to .scz: lossless pcodec by default, or any codec with its parameters
    assert runner.invoke(app, ["convert", str(tmp_path / "mid.npz"), str(tmp_path / "back.scz")]).exit_code == 0
    assert codecs.pcodec_decode((tmp_path / "back.scz").read_bytes()).tobytes() == decoded.tobytes()
    args = ["convert", str(tmp_path / "mid.npz"), str(tmp_path / "sz3.scz"), "-w", "codec=sz3", "-w", "tolerance=0.1"]
    assert runner.invoke(app, args).exit_code == 0
    restored = codecs.sz3_decode((tmp_path / "sz3.scz").read_bytes())
    finite = np.isfinite(decoded)
    assert np.array_equal(np.isfinite(restored), finite)
    assert np.abs(restored[finite] - decoded[finite]).max() <= 0.1


def test_metadata_loss_is_refused_unless_accepted(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "tmd" / "v2_Surface.tmd"
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "s.scz")])
    assert result.exit_code != 0 and "metadata" in result.output and not (tmp_path / "s.scz").exists()
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "s.scz"), "--drop-unsupported"])
    assert result.exit_code == 0, result.output
    assert np.array_equal(sciz.load(tmp_path / "s.scz").data, sciz.load(source).data)


def test_write_refuses_what_writes_no_stream(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="codec"):
        get_format("scz").write(sciz.Dataset(np.zeros((4, 4), np.float32)), tmp_path / "x.scz", codec="floatpred")
    with pytest.raises(ValueError, match="codec"):
        get_format("scz").write(sciz.Dataset(np.zeros(4, np.float32)), tmp_path / "x.scz", codec=3)
    assert not (tmp_path / "x.scz").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "foreign"])
def test_damaged_files_raise_a_format_error(tmp_path: Path, damage: str) -> None:
    stream = bytearray(codecs.sz3_encode(field(), tolerance=0.01))
    if damage == "truncate":
        stream = stream[: len(stream) // 2]
    elif damage == "flip":
        stream[len(stream) // 2] ^= 0x10
    elif damage == "empty":
        stream = bytearray()
    else:
        stream = bytearray(b"\x89SZC" + bytes(range(256)) * 4)
    path = tmp_path / "bad.scz"
    path.write_bytes(stream)
    with pytest.raises(FormatError, match=r"bad\.scz"):
        get_format("scz").read(path)


def test_written_file_reads_in_a_fresh_process(tmp_path: Path) -> None:
    data = field()
    path = tmp_path / "field.scz"
    sciz.save(sciz.Dataset(data), path, codec="sperr", tolerance=0.05)
    script = (
        "import sys, numpy as np, sciz; d = sciz.load(sys.argv[1]); np.save(sys.argv[2], d.data); "
        "import sciz.codecs as C; np.save(sys.argv[3], C.sperr_decode(open(sys.argv[1], 'rb').read()))"
    )
    out1, out2 = tmp_path / "a.npy", tmp_path / "b.npy"
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, str(path), str(out1), str(out2)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    loaded, decoded = np.load(out1), np.load(out2)
    assert loaded.tobytes() == decoded.tobytes()
    finite = np.isfinite(data)
    assert np.array_equal(np.isfinite(loaded), finite) and np.abs(loaded[finite] - data[finite]).max() <= 0.05
