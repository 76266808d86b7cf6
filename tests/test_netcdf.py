"""netCDF as a registered format: detection, sciz.load of one variable, sciz info's per-variable report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("xarray")
pytest.importorskip("netCDF4")
pytest.importorskip("h5netcdf")

import sciz
from sciz.errors import FormatError
from sciz.formats import detect_format

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "netcdf"
if not DATA.is_dir():
    DATA = Path("/work/shared/data/netcdf")
TOS = DATA / "tos_O1_2001-2002.nc"
NC4 = DATA / "nc4uvt.nc"
POP = DATA / "pop.nc"
pytestmark = pytest.mark.skipif(not TOS.exists(), reason=f"the shared netCDF files are not at {DATA}")


def _cli(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from sciz.cli.app import _register_commands, app

    _register_commands()
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_detects_classic_and_netcdf4() -> None:
    assert detect_format(TOS).name == "netcdf"
    assert detect_format(NC4).name == "netcdf"


def test_load_one_variable_with_fill_values_and_regular_axes() -> None:
    import netCDF4

    dataset = sciz.load(TOS, variable="tos")
    with netCDF4.Dataset(TOS) as handle:
        handle.set_auto_mask(False)
        raw = handle["tos"][:]
    assert dataset.shape == raw.shape == (24, 170, 180)
    land = raw == np.float32(1e20)
    assert land.sum() > 0 and np.array_equal(np.isnan(dataset.data), land)  # fill values -> NaN, exactly there
    assert np.array_equal(dataset.data[~land], raw[~land])
    assert [a.name for a in dataset.axes] == ["time", "lat", "lon"]
    lon = dataset.axes[2]
    assert (lon.offset, lon.scale, lon.units) == (1.0, 2.0, "degrees_east")
    assert (dataset.axes[1].offset, dataset.axes[1].scale) == (-79.5, 1.0)
    assert dataset.metadata["encoding"]["_FillValue"] == pytest.approx(1e20, rel=1e-6)
    assert dataset.metadata["attributes"]["units"] == "K"
    raw_load = sciz.load(TOS, variable="tos", mask_and_scale=False)
    assert np.array_equal(raw_load.data, raw)  # the stored values, fill values included, bit for bit


def test_load_default_variable_and_unknown_variable() -> None:
    default = sciz.load(NC4)
    assert default.name in ("T", "U", "V")
    assert default.axes[1].name == "lev" and default.axes[1].scale == 1.0
    assert len(default.metadata["coordinates"]["lev"]) == 14  # pressure levels are not evenly spaced
    with pytest.raises(ValueError, match="'nope'"):
        sciz.load(NC4, variable="nope")


def test_info_lists_dimensions_coordinates_filters_and_sizes() -> None:
    code, out = _cli("info", "--json", str(NC4))
    assert code == 0, out
    report = json.loads(out)
    assert report["format"] == "netcdf" and report["kind"] == "netcdf4"
    assert report["dimensions"]["time"] == "1 (unlimited)"
    assert set(report["coordinates"]) == {"time", "lev", "lat", "lon"}
    t = report["data_variables"]["T"]
    assert t["shape"] == [1, 14, 64, 128] and t["dtype"] == "float32"
    assert t["cf"]["_FillValue"] == -999.0 and t["cf"]["units"] == "C"
    assert "shuffle" in t["filters"] and any(f.startswith("deflate") for f in t["filters"])
    assert 0 < t["stored_bytes"] < 14 * 64 * 128 * 4 and t["ratio"] > 1
    code, out = _cli("info", str(POP))
    assert code == 0, out
    assert "lat2d" in out and "missing_value" in out and "none (netCDF classic stores raw values)" in out
    # The text report: one line per variable, its CF attributes below, groups as their own reports.
    code, out = _cli("info", str(NC4))
    lines = out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.strip().startswith("T  (time=1, lev=14, lat=64, lon=128)"))
    assert "float32 stored 256.3 KiB ratio 1.75  shuffle, deflate [2]; chunks 1 x 7 x 32 x 64" in lines[row]
    assert lines[row + 1].strip() == "units=C, long_name=Temperature, _FillValue=-999.0"
    assert "group grp1:" in lines and "group g3: (empty)" in lines


def test_not_netcdf_and_truncated_files_are_refused(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.nc"
    truncated.write_bytes(TOS.read_bytes()[:5000])
    with pytest.raises(FormatError, match=r"cut\.nc"):
        sciz.load(truncated)
    code, out = _cli("info", str(truncated))
    assert code != 0 and "cut.nc" in out
    other = tmp_path / "text.nc"
    other.write_text("hello")
    with pytest.raises(FormatError):
        sciz.load(other)
    copy = tmp_path / "copy.nc"
    shutil.copy(TOS, copy)
    assert sciz.load(copy).name == "tos"


def _classic_file(path: Path) -> bytes:
    import netCDF4

    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as handle:
        handle.createDimension("x", 1000)
        handle.createVariable("v", "f4", ("x",))[:] = np.arange(1000, dtype=np.float32)
    return path.read_bytes()


def test_a_forged_vsize_does_not_hide_a_cut_tail(tmp_path: Path) -> None:
    # Found by attack: the extent check trusted the header's vsize; a file cut by 40 bytes with
    # vsize lowered to match read its tail as zeros.
    raw = bytearray(_classic_file(tmp_path / "base.nc"))
    at = raw.index((4000).to_bytes(4, "big"), 0, 200)  # the variable's vsize in the header
    raw[at : at + 4] = (3960).to_bytes(4, "big")
    (tmp_path / "forged.nc").write_bytes(bytes(raw[:-40]))
    with pytest.raises(FormatError, match="truncated"):
        sciz.load(tmp_path / "forged.nc")


def test_an_undecodable_name_in_a_classic_header_is_a_format_error(tmp_path: Path) -> None:
    raw = bytearray(_classic_file(tmp_path / "base.nc"))
    at = raw.index(b"v\x00\x00\x00", 40)  # the variable's name, padded to 4 bytes
    raw[at] = 0xFF
    (tmp_path / "bad.nc").write_bytes(bytes(raw))
    with pytest.raises(FormatError):
        sciz.load(tmp_path / "bad.nc")
