"""Regressions from a new user's trial of the codec layer: ratios, integer LERC, out=, messages, fill hints."""

from __future__ import annotations

import warnings
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from typer.testing import CliRunner

from sciz import codecs
from sciz.errors import LercError, PcodecError, SciZWarning, Sz3Error


def test_zfp_keeps_the_raw_ratio_at_a_power_of_two_tolerance(shared_data: Path) -> None:
    # Tightening 0.5 for float rounding used to drop zfp a whole bit plane: 4.91 instead of 5.81.
    field = np.load(shared_data / "fields" / "ccsm_trefht_1890-1999.npy")
    for tolerance in (0.5, 1.0, 0.25):
        stream = codecs.zfp_encode(field, tolerance=tolerance)
        raw = imagecodecs.zfp_encode(field, tolerance, mode="a")
        assert len(stream) <= len(raw) * 1.01, f"tolerance {tolerance}: {len(stream)} vs raw {len(raw)}"
        assert np.abs(codecs.zfp_decode(stream).astype(np.float64) - field).max() <= tolerance


@pytest.mark.parametrize("dtype", ["u1", "u2", "i2", "i4"])
@pytest.mark.parametrize("tolerance", [1.0, 1.5, 3.0])
def test_lerc_integer_tolerance_of_one_unit_or_more_is_bounded(dtype: str, tolerance: float) -> None:
    rng = np.random.default_rng(7)
    scan = np.cumsum(rng.integers(-2, 3, (32, 64, 48)), axis=2).clip(0, 120).astype(dtype)
    lossy = codecs.lerc_encode(scan, tolerance=tolerance)
    error = np.abs(codecs.lerc_decode(lossy).astype(np.int64) - scan.astype(np.int64)).max()
    assert error <= tolerance


def test_lerc_on_a_ct_like_scan_gains_from_a_one_unit_tolerance() -> None:
    # The seed's medical-imaging example printed the same size for lossless and tolerance=1.
    scan = np.random.default_rng(0).integers(0, 4096, (16, 256, 128), dtype=np.uint16)
    assert len(codecs.lerc_encode(scan, tolerance=1.0)) < 0.95 * len(codecs.lerc_encode(scan, tolerance=0.0))


def test_decode_returns_the_out_buffer_itself() -> None:
    data = np.linspace(0, 1, 600, dtype=np.float32).reshape(20, 30)
    out = np.empty_like(data)
    assert codecs.sz3_decode(codecs.sz3_encode(data, tolerance=1e-3), out=out) is out


def test_unknown_parameters_are_the_codecs_error_listing_the_known_ones() -> None:
    data = np.zeros((4, 4), np.float32)
    with pytest.raises(Sz3Error, match=r"mode='rel' is not allowed: sz3 takes the parameters tolerance, fill_value"):
        codecs.sz3_encode(data, tolerance=0.1, mode="rel")
    with pytest.raises(PcodecError, match="pcodec takes the parameters level, fill_value"):
        codecs.get("pcodec", tolerance=0.1)
    with pytest.raises(LercError, match="version"):
        codecs.get("lerc", version=9)


def test_rate_modes_hint_at_fill_values_once(shared_data: Path) -> None:
    sst = np.load(shared_data / "fields" / "sst_tos_O1_2001-2002.npy")
    with pytest.warns(SciZWarning, match=r"pass fill_value=1e\+20") as caught:
        codecs.zfp_encode(sst, rate=8, numthreads=2)
    assert len([w for w in caught if issubclass(w.category, SciZWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream = codecs.zfp_encode(sst, rate=8, fill_value=1e20)  # marked: no hint
        codecs.zfp_encode(np.linspace(-1e30, 1e30, 1000).reshape(10, 100), rate=16)  # a symmetric range: data
    ocean = sst < 1e20
    restored = codecs.zfp_decode(stream)
    assert np.array_equal(restored[~ocean], sst[~ocean]) and np.abs(restored[ocean] - sst[ocean]).max() < 1


def test_codecs_demo_refuses_a_bad_tolerance_cleanly() -> None:
    from sciz.cli.app import _register_commands, app

    _register_commands()
    for value in ("-1", "nan", "inf", "0"):
        result = CliRunner().invoke(app, ["codecs", "demo", "--tolerance", value, "--frames", "1"])
        assert result.exit_code == 2 and "--tolerance" in result.output and "Traceback" not in result.output


def test_zspy_takes_a_fill_value_and_keeps_land_exact(shared_data: Path, tmp_path: Path) -> None:
    import sciz.zspy

    sst = np.load(shared_data / "fields" / "sst_tos_O1_2001-2002.npy")
    signal = {"data": sst, "axes": [{"size": n} for n in sst.shape], "metadata": {}, "original_metadata": {}}
    path = tmp_path / "sst.zspy"
    sciz.zspy.file_writer(path, signal, compressor="zfp", tolerance=0.01, fill_value=1e20)
    restored = sciz.zspy.file_reader(path)[0]["data"]
    land = sst == np.float32(1e20)
    assert np.array_equal(restored[land], sst[land])
    assert np.abs(restored[~land] - sst[~land]).max() <= 0.01


def test_scz_refuses_a_tolerance_without_a_lossy_codec(tmp_path: Path) -> None:
    import sciz
    from sciz.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"tolerance=0.01 is not allowed: needs a lossy codec, e.g. codec='sz3'"):
        sciz.save(sciz.Dataset(np.zeros((4, 4), np.float32)), tmp_path / "x.scz", tolerance=0.01)
