"""sciz info and sciz convert through the command line (typer's runner and a real subprocess)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import sciz
from sciz.cli.app import COMMAND_MODULES, _register_commands, app
from sciz.heightmap import export_to_npz

_register_commands()
runner = CliRunner()


def test_commands_are_registered() -> None:
    assert {"sciz.cli.info_cmd", "sciz.cli.convert_cmd"} <= set(COMMAND_MODULES)


def test_info_on_a_real_tmd(shared_data: Path) -> None:
    result = runner.invoke(app, ["info", str(shared_data / "tmd" / "v2_Surface.tmd")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "format:   tmd" in out and "169 x 169" in out and "float32" in out and "codec none" in out
    assert "0: y [mm] size 169" in out and "x_length: 2.5199999809265137" in out
    assert "comment: Created by TrueMap v6" in out


def test_info_json_with_reader_options(shared_data: Path) -> None:
    path = shared_data / "tmd" / "Euro_coin.tmd"
    result = runner.invoke(app, ["info", str(path), "--json", "-r", "nodata_to_nan=true"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == "tmd" and report["size_on_disk"] == path.stat().st_size
    arrays = {a["name"]: a for a in report["arrays"]}
    assert arrays["data"]["shape"] == [648, 642] and arrays["data"]["ratio"] == 1.0
    assert arrays["masks/nodata"]["dtype"] == "bool"
    assert report["metadata"]["nodata_count"] == 120_436
    assert [a["name"] for a in report["axes"]] == ["y", "x"]


@pytest.mark.parametrize(
    ("relative", "expected_format"),
    [
        ("fields/sst_tos_O1_2001-2002.npy", "npy"),
        ("tmd/v1_Surface.tmd", "tmd"),
        ("playnano/processed.npz", "afm-npz"),
    ],
)
def test_info_is_generic_over_registered_formats(shared_data: Path, relative: str, expected_format: str) -> None:
    result = runner.invoke(app, ["info", str(shared_data / relative), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == expected_format and report["arrays"][0]["name"] == "data"


def test_info_reports_deflate_ratio_of_npz(tmp_path: Path) -> None:
    field = np.zeros((200, 300), np.float32)
    path = export_to_npz({"height_map": field, "x_length": 3.0, "y_length": 2.0}, tmp_path / "z.npz")
    report = json.loads(runner.invoke(app, ["info", path, "--json"]).stdout)
    data = report["arrays"][0]
    assert data["codec"] == "deflate" and data["ratio"] > 100 and report["metadata"]["x_length"] == 3.0


def test_info_errors(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["info", str(tmp_path / "nope.tmd")])
    assert missing.exit_code == 1 and "error: no such file or directory" in missing.stderr
    (tmp_path / "mystery.bin").write_bytes(b"\x01\x02\x03 nothing known")
    unknown = runner.invoke(app, ["info", str(tmp_path / "mystery.bin")])
    assert unknown.exit_code == 1 and "not a file format sciz recognises" in unknown.stderr
    (tmp_path / "bad.tmd").write_bytes(b"Binary TrueMap Data File v2.0\r\n\x00c\x00" + b"\x05" * 40)
    broken = runner.invoke(app, ["info", str(tmp_path / "bad.tmd")])
    assert broken.exit_code == 1 and "bad.tmd" in broken.stderr and "TMD" in broken.stderr
    wrong_format = runner.invoke(app, ["info", str(tmp_path / "bad.tmd"), "--format", "nosuch"])
    assert wrong_format.exit_code == 1 and "known formats are" in wrong_format.stderr
    bad_option = runner.invoke(app, ["info", str(tmp_path / "bad.tmd"), "-r", "novalue"])
    assert bad_option.exit_code == 2 and "KEY=VALUE" in bad_option.stderr


def test_convert_tmd_to_npz_keeps_everything(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "tmd" / "Euro_coin.tmd"
    target = tmp_path / "out" / "coin.npz"
    result = runner.invoke(app, ["convert", str(source), str(target), "-r", "nodata_to_nan=true"])
    assert result.exit_code == 0, result.output
    assert "(tmd) ->" in result.stdout and "(npz)" in result.stdout
    original, converted = sciz.load(source, nodata_to_nan=True), sciz.load(target)
    assert np.array_equal(converted.data, original.data, equal_nan=True)
    assert converted.metadata == original.metadata and converted.axes == original.axes
    assert np.array_equal(converted.masks["nodata"], original.masks["nodata"])
    back = tmp_path / "back.tmd"
    assert runner.invoke(app, ["convert", str(target), str(back)]).exit_code == 0
    assert back.read_bytes()[56:] == source.read_bytes()[56:]  # same header fields and heights


def test_convert_to_stl_with_writer_options(shared_data: Path, tmp_path: Path) -> None:
    import trimesh

    target = tmp_path / "surface.stl"
    result = runner.invoke(
        app, ["convert", str(shared_data / "tmd" / "v2_Surface.tmd"), str(target), "-w", "base_thickness=0.001"]
    )
    assert result.exit_code == 0, result.output
    assert trimesh.load(target, file_type="stl").is_watertight


def test_convert_refuses_what_the_target_cannot_hold(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "tmd" / "StepHeight.tmd"
    target = tmp_path / "step.npy"
    refused = runner.invoke(app, ["convert", str(source), str(target)])
    assert refused.exit_code == 1 and not target.exists()
    assert "npy cannot hold everything" in refused.stderr and "x_length" in refused.stderr
    assert "--drop-unsupported" in refused.stderr
    dropped = runner.invoke(app, ["convert", str(source), str(target), "--drop-unsupported"])
    assert dropped.exit_code == 0 and "warning: dropped: metadata" in dropped.stderr
    assert np.array_equal(np.load(target), sciz.load(source).data)
    stack = tmp_path / "stack.npz"
    sciz.save(sciz.Dataset(np.zeros((2, 3, 4), np.float32)), stack)
    impossible = runner.invoke(app, ["convert", str(stack), str(tmp_path / "x.tmd"), "--drop-unsupported"])
    assert impossible.exit_code == 1 and "2-D" in impossible.stderr and not (tmp_path / "x.tmd").exists()


def test_convert_errors(shared_data: Path, tmp_path: Path) -> None:
    source = str(shared_data / "tmd" / "v2_Surface.tmd")
    missing = runner.invoke(app, ["convert", str(tmp_path / "none.tmd"), str(tmp_path / "x.npz")])
    assert missing.exit_code == 1 and "no such file" in missing.stderr
    unknown = runner.invoke(app, ["convert", source, str(tmp_path / "x.weird")])
    assert unknown.exit_code == 1 and "cannot tell the format" in unknown.stderr and "npz (.npz)" in unknown.stderr
    named = runner.invoke(app, ["convert", source, str(tmp_path / "x.weird"), "--to", "bogus"])
    assert named.exit_code == 1 and "known formats are" in named.stderr
    (tmp_path / "exists.npz").write_bytes(b"keep me")
    exists = runner.invoke(app, ["convert", source, str(tmp_path / "exists.npz")])
    assert exists.exit_code == 1 and "--force" in exists.stderr and (tmp_path / "exists.npz").read_bytes() == b"keep me"
    forced = runner.invoke(app, ["convert", source, str(tmp_path / "exists.npz"), "--force"])
    assert forced.exit_code == 1 and "not npz" in forced.stderr  # not an NPZ: --force does not replace it
    assert (tmp_path / "exists.npz").read_bytes() == b"keep me"
    bad_write = runner.invoke(app, ["convert", source, str(tmp_path / "y.npz"), "-w", "colour=red"])
    assert bad_write.exit_code == 1 and "colour" in bad_write.stderr
    copy = tmp_path / "copy.tmd"
    copy.write_bytes(Path(source).read_bytes())
    itself = runner.invoke(app, ["convert", str(copy), str(copy), "--force"])
    assert itself.exit_code == 1 and "source file itself" in itself.stderr


def test_real_console_entry_point(shared_data: Path, tmp_path: Path) -> None:
    target = tmp_path / "v.npz"
    command = [sys.executable, "-c", "from sciz.cli import main; main()"]
    done = subprocess.run(
        [*command, "convert", str(shared_data / "tmd" / "v2_Vickers_Indentation.tmd"), str(target)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    info = subprocess.run([*command, "info", str(target)], capture_output=True, text=True)
    assert info.returncode == 0 and "format:   npz" in info.stdout and "400 x 400" in info.stdout
    failed = subprocess.run([*command, "info", str(tmp_path / "absent")], capture_output=True, text=True)
    assert failed.returncode == 1 and failed.stderr.startswith("error: no such file")


def test_convert_and_info_through_other_registered_formats(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "tmd" / "v2_Surface.tmd"
    original = sciz.load(source)
    steps = [source, tmp_path / "s.zspy", tmp_path / "s.hspy", tmp_path / "s.npz"]
    for before, after in itertools.pairwise(steps):
        result = runner.invoke(app, ["convert", str(before), str(after)])
        assert result.exit_code == 0, result.output
        report = json.loads(runner.invoke(app, ["info", str(after), "--json"]).stdout)
        assert report["arrays"][0]["shape"] == [169, 169]
    final = sciz.load(steps[-1])
    assert np.array_equal(final.data, original.data) and final.metadata == original.metadata
    assert [(a.name, a.units, a.scale) for a in final.axes] == [(a.name, a.units, a.scale) for a in original.axes]


def test_a_refused_convert_names_formats_that_hold_everything(shared_data: Path, tmp_path: Path) -> None:
    # The unicode ragged markers (object arrays of strings) fit neither npz nor hspy; the message
    # used to suggest ".npz keeps everything" even when .npz was the refused target, and hspy
    # claimed to hold them, then failed half-way through writing.
    source = shared_data / "zspy" / "signal2d_20x10x10-ragged_markers_unicode.zspy"
    for target in ("m.npz", "m.hspy"):
        result = runner.invoke(app, ["convert", str(source), str(tmp_path / target)])
        assert result.exit_code == 1, result.output
        assert "(.zspy would keep everything)" in result.output and ".npz keeps" not in result.output
        assert not (tmp_path / target).exists()
    assert "ragged string arrays cannot be stored in hspy" in result.output
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "m.zspy")])
    assert result.exit_code == 0, result.output


def test_a_refused_bundle_convert_spells_the_plain_npz_with_to(shared_data: Path, tmp_path: Path) -> None:
    # A float64 vendor video refused as an .h5 bundle used to be told ".npz would keep everything",
    # but a .npz name makes an AFM stack an AFM bundle, which refuses it too: it takes --to npz.
    source = shared_data / "afm" / "asd_sample_0.asd"
    for target in ("v.h5", "v.ome.tif", "v.npz"):
        result = runner.invoke(app, ["convert", str(source), str(tmp_path / target)])
        assert result.exit_code == 1, result.output
        assert "(.zspy, .hspy, --to npz would keep everything)" in result.output, result.output
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "v.npz"), "--to", "npz"])
    assert result.exit_code == 0, result.output
    assert sciz.load(tmp_path / "v.npz").dtype == np.float64


def test_a_writer_advice_is_spelled_as_a_write_option(shared_data: Path, tmp_path: Path) -> None:
    # The zfp filter's advice read "pass fill_value=1e+20", a keyword the command line does not take.
    source = shared_data / "fields" / "sst_tos_O1_2001-2002.npy"
    target = tmp_path / "sst.hspy"
    args = ["convert", str(source), str(target), "-w", "compression=zfp", "-w", "tolerance=0.01"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and not target.exists()
    assert "pass -w fill_value=1e+20" in " ".join(result.output.split()), result.output
    result = runner.invoke(app, [*args, "-w", "fill_value=1e+20"])
    assert result.exit_code == 0, result.output


def test_info_reports_how_an_ome_tiff_is_stored(shared_data: Path, tmp_path: Path) -> None:
    # OME-TIFF arrays used to read "codec ?  stored not reported".
    report = json.loads(
        runner.invoke(app, ["info", str(shared_data / "playnano" / "processed.ome.tif"), "--json"]).stdout
    )
    assert (report["arrays"][0]["codec"], report["arrays"][0]["stored_bytes"]) == ("none", 4 * 32 * 48 * 4)
    target = tmp_path / "z.ome.tif"
    source = shared_data / "playnano" / "processed_raw.npz"
    assert runner.invoke(app, ["convert", str(source), str(target), "-w", "compression=zlib"]).exit_code == 0
    array = json.loads(runner.invoke(app, ["info", str(target), "--json"]).stdout)["arrays"][0]
    assert array["codec"] == "zlib" and 0 < array["stored_bytes"] < array["nbytes"]


def test_a_records_summary_shows_float_ends_apart() -> None:
    from sciz.cli.info_cmd import records_summary

    summary = records_summary([{"t": 1000.0001 + i * 1e-4} for i in range(12)])
    assert summary == {"t": "1000 .. 1000.001, evenly spaced by 0.0001"}, summary  # not "1000 .. 1000"


def test_a_gif_target_points_to_process(shared_data: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", str(shared_data / "playnano" / "processed.npz"), str(tmp_path / "v.gif")])
    assert result.exit_code == 1 and not (tmp_path / "v.gif").exists()
    assert "made by sciz process --make-gif" in " ".join(result.output.split()), result.output


def test_write_options_take_python_spellings_of_booleans() -> None:
    from sciz.cli.info_cmd import parse_options

    # "-w standard_codec=False" used to pass the text "False", a true value: the option was ignored.
    parsed = parse_options(["a=False", "b=TRUE", "c=None", "d=false", "e=2.5", "f=zfp", "g=null"], "-w")
    assert parsed == {"a": False, "b": True, "c": None, "d": False, "e": 2.5, "f": "zfp", "g": None}


#: Run in playNano's own environment (a fresh process): load each file with playNano's loader, and
#: the single-frame OME-TIFF also with tifffile and ome-types (schema validation), as Fiji's
#: Bio-Formats would see it.
PLAYNANO_READS = r"""
import json, sys
from pathlib import Path
import numpy as np
from playnano.io import data_loaders
LOADERS = {".npz": data_loaders.load_npz_bundle, ".h5": data_loaders.load_h5_bundle,
           ".tif": data_loaders.load_ome_tiff_stack}
out = {}
for path in sys.argv[1:]:
    try:
        stack = LOADERS[Path(path).suffix](Path(path))
        out[path] = {"shape": list(stack.data.shape), "dtype": str(stack.data.dtype),
                     "pixel_size_nm": stack.pixel_size_nm, "channel": stack.channel,
                     "processed": sorted(stack.processed), "masks": sorted(stack.masks),
                     "sum": float(np.asarray(stack.data, dtype=np.float64).sum())}
    except Exception as exc:
        out[path] = {"error": f"{type(exc).__name__}: {exc}"}
    if path.endswith(".ome.tif"):
        import ome_types, tifffile
        with tifffile.TiffFile(path) as tif:
            ome = ome_types.from_xml(tif.ome_metadata, validate=True)
            pixels = ome.images[0].pixels
            out[path]["tifffile"] = {"is_ome": tif.is_ome, "shape": list(tif.asarray().shape)}
            out[path]["ome"] = [pixels.size_t, pixels.size_x, pixels.size_y, pixels.physical_size_x,
                                str(pixels.physical_size_x_unit.value), pixels.channels[0].name]
print(json.dumps(out))
"""


def _playnano_reads(python: Path, paths: list[Path], workdir: Path) -> dict:
    done = subprocess.run(
        [str(python), "-c", PLAYNANO_READS, *map(str, paths)], capture_output=True, text=True, timeout=600, cwd=workdir
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_convert_writes_afm_bundles_playnano_loads(playnano_python: Path, shared_data: Path, tmp_path: Path) -> None:
    from sciz.afm import ImageStack

    bundle = shared_data / "playnano" / "processed.npz"
    original = sciz.load(bundle)
    targets = {
        "from-npz.npz": (bundle, []),  # a stack to .npz stays a playNano bundle
        "from-h5.npz": (shared_data / "playnano" / "processed.h5", []),
        "from-npz.h5": (bundle, []),  # .h5: only the AFM bundle writes it
        "explicit.h5": (bundle, ["--to", "afm-h5", "-w", "compression_level=3"]),
    }
    for name, (source, extra) in targets.items():
        result = runner.invoke(app, ["convert", str(source), str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"converted {source} (afm-") and " on disk, ratio " in result.stdout
    # A plain 3-D float32 dataset with nm axes becomes a bundle on request (not by the .npz name).
    plain = sciz.Dataset(
        np.linspace(0, 1, 2 * 6 * 7, dtype=np.float32).reshape(2, 6, 7),
        axes=[sciz.Axis("time", "s", 0.25), sciz.Axis("y", "nm", 1.5), sciz.Axis("x", "nm", 1.5)],
        name="height_trace",
    )
    plain_path = sciz.save(plain, tmp_path / "plain.zspy")
    result = runner.invoke(app, ["convert", str(plain_path), str(tmp_path / "asked.npz"), "--to", "afm-npz"])
    assert result.exit_code == 0, result.output
    generic = runner.invoke(app, ["convert", str(plain_path), str(tmp_path / "generic.npz")])
    assert generic.exit_code == 0 and "(npz)" in generic.stdout
    # One frame as OME-TIFF: playNano reads it (its own one-frame files it cannot), and so do tifffile and ome-types.
    one = ImageStack(np.arange(42, dtype=np.float32).reshape(1, 6, 7), 2.5, "height_trace", [{"timestamp": 4.0}])
    sciz.save(one.to_dataset(), tmp_path / "one.npz", format="afm-npz")
    result = runner.invoke(app, ["convert", str(tmp_path / "one.npz"), str(tmp_path / "one.ome.tif")])
    assert result.exit_code == 0, result.output
    paths = [tmp_path / n for n in [*targets, "asked.npz", "one.ome.tif"]]
    reads = _playnano_reads(playnano_python, paths, tmp_path)
    for name in targets:
        read = reads[str(tmp_path / name)]
        assert "error" not in read, (name, read)
        assert read["shape"] == list(original.shape) and read["dtype"] == "float32"
        assert read["processed"] == sorted(original.layers) and read["masks"] == sorted(original.masks)
        assert read["sum"] == pytest.approx(float(np.asarray(original.data, np.float64).sum()), rel=1e-12)
    asked = reads[str(tmp_path / "asked.npz")]
    assert asked["shape"] == [2, 6, 7] and asked["pixel_size_nm"] == 1.5 and asked["channel"] == "height_trace"
    single = reads[str(tmp_path / "one.ome.tif")]
    assert single["shape"] == [1, 6, 7] and single["pixel_size_nm"] == pytest.approx(2.5)
    assert single["sum"] == float(np.arange(42).sum())
    assert single["tifffile"] == {"is_ome": True, "shape": [1, 1, 1, 6, 7]}
    assert single["ome"] == [1, 7, 6, pytest.approx(0.0025), "µm", "height_trace"]
    back = sciz.load(tmp_path / "one.ome.tif")
    assert back.shape == (1, 6, 7) and np.array_equal(back.data, one.data)


def test_playnano_cannot_read_its_own_single_frame_ome_tiff(playnano_python: Path, tmp_path: Path) -> None:
    # The layout above is needed: playNano's loader squeezes its own one-frame files to 2-D and refuses them.
    script = (
        "import numpy as np, sys; from pathlib import Path\n"
        "from playnano.afm_stack import AFMImageStack\n"
        "from playnano.io import data_loaders, export_data\n"
        "frames = [{'timestamp': 0.0, 'frame_pixel_size_nm': 2.5}]\n"
        "stack = AFMImageStack(np.ones((1, 6, 7)), 2.5, 'height_trace', Path('x.asd'), frames)\n"
        "export_data.save_ome_tiff_stack(Path(sys.argv[1]), stack)\n"
        "try:\n    data_loaders.load_ome_tiff_stack(Path(sys.argv[1]))\n    print('loaded')\n"
        "except ValueError as exc:\n    print('refused', exc)\n"
    )
    target = tmp_path / "theirs.ome.tif"
    done = subprocess.run(
        [str(playnano_python), "-c", script, str(target)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("refused Unexpected OME-TIFF shape: (6, 7)")
    assert sciz.load(target).shape == (1, 6, 7)  # sciz reads it (by the OME sizes)


def _lossy_files(folder: Path) -> dict[str, Path]:
    """One small file per way sciz stores a lossy (or numcodecs-dependent) array."""
    from sciz.afm import ImageStack, save_h5_bundle

    rng = np.random.default_rng(5)
    signal = sciz.Dataset(rng.standard_normal((3, 32, 32)).astype(np.float32), name="t")
    return {
        "hspy-sz3": sciz.save(signal, folder / "sz3.hspy", compression="sz3", tolerance=1e-3),
        "zspy-sciz": sciz.save(signal, folder / "sciz.zspy", compressor="sz3", tolerance=1e-3),
        "zspy-zfpy": sciz.save(signal, folder / "zfpy.zspy", compressor="zfpy", tolerance=1e-3),
        "zspy-pcodec": sciz.save(signal, folder / "pcodec.zspy", compressor="pcodec"),
        "scz-zfp": sciz.save(signal.copy(name=""), folder / "zfp.scz", codec="zfp", tolerance=1e-3),
        "h5-sperr": save_h5_bundle(folder / "b.h5", ImageStack(signal.data, 2.0), codec="sperr", tolerance=1e-3),
    }


def test_info_names_codec_bound_and_what_other_tools_need(tmp_path: Path) -> None:
    files = _lossy_files(tmp_path)
    expected = {  # codec shown, bound, what another tool needs
        "hspy-sz3": ("sz3", "|error| <= 0.001 (absolute)", "`import hdf5plugin` (it registers HDF5 filter 32024"),
        "zspy-sciz": ("sz3 (sciz stream)", "|error| <= 0.001 (absolute)", "numcodecs finds its 'sciz' codec"),
        "zspy-zfpy": ("zfpy", "|error| <= 0.001 (absolute)", "the zfpy package"),
        "zspy-pcodec": ("pcodec", None, "the pcodec package"),
        "scz-zfp": ("zfp", "|error| <= 0.001 (absolute)", "sciz only"),
        "h5-sperr": ("sperr", "|error| <= 0.001 (point-wise)", "`import hdf5plugin` (it registers HDF5 filter 32028"),
    }
    for key, path in files.items():
        codec, bound, needs = expected[key]
        text = runner.invoke(app, ["info", str(path)])
        assert text.exit_code == 0, text.output
        data_line = next(line for line in text.stdout.splitlines() if line.startswith("  data "))
        assert f"codec {codec} " in data_line and "stored" in data_line and "ratio" in data_line, (key, data_line)
        assert (f"lossy: {bound}" in text.stdout) == (bound is not None), (key, text.stdout)
        assert needs in text.stdout, (key, text.stdout)
        row = json.loads(runner.invoke(app, ["info", str(path), "--json"]).stdout)["arrays"][0]
        assert (row["codec_name"], row["bound"], row["lossy"]) == (codec, bound, bound is not None), (key, row)
        assert needs in row["read_with"] and row["stored_bytes"] > 0 and row["ratio"] > 0, (key, row)


def test_other_tools_read_lossy_files_as_info_says(tmp_path: Path) -> None:
    from sciz.testing.fresh import read_in_fresh_process

    files = _lossy_files(tmp_path)
    jobs = {
        "hspy-h5py": [{"key": "sz3", "path": str(files["hspy-sz3"])}],  # h5py + hdf5plugin, no sciz
        "zspy-zarr": [{"key": k, "path": str(files[f"zspy-{k}"])} for k in ("zfpy", "pcodec", "sciz")],  # zarr alone
    }
    reads = read_in_fresh_process(jobs, tmp_path)
    original = sciz.load(files["zspy-pcodec"]).data
    assert np.abs(reads[("hspy-h5py", "sz3")].value() - original).max() <= 1e-3
    assert np.abs(reads[("zspy-zarr", "zfpy")].value() - original).max() <= 1e-3
    assert np.array_equal(reads[("zspy-zarr", "pcodec")].value(), original)
    # The 'sciz' numcodecs id: zarr reads it with nothing imported, through sciz's numcodecs entry point.
    sciz_read = reads[("zspy-zarr", "sciz")]
    assert sciz_read.report["codecs"] == ["sciz"] and np.abs(sciz_read.value() - original).max() <= 1e-3


def test_info_on_afm_bundles_and_vendor_files(shared_data: Path) -> None:
    for name in ("processed.npz", "processed.h5"):
        report = json.loads(runner.invoke(app, ["info", str(shared_data / "playnano" / name), "--json"]).stdout)
        rows = {row["name"]: row for row in report["arrays"]}
        assert set(rows) >= {"data", "layers/raw", "masks/step_2_mask_threshold"}
        assert all(row["stored_bytes"] and row["ratio"] and row["lossy"] is False for row in rows.values()), rows
        assert {row["codec"] for row in rows.values()} == {"deflate" if name.endswith("npz") else "gzip"}
        assert report["provenance_step_names"] == [
            "remove_plane", "mask_threshold", "row_median_align", "clear", "gaussian_filter"
        ]  # fmt: skip
        text = runner.invoke(app, ["info", str(shared_data / "playnano" / name)]).stdout
        assert "provenance: 5 steps: remove_plane, mask_threshold, row_median_align, clear, gaussian_filter" in text
        assert "codec ?" not in text and "stored ?" not in text
    video = runner.invoke(app, ["info", str(shared_data / "afm" / "asd_sample_0.asd")])
    assert video.exit_code == 0, video.output
    lines = video.stdout.splitlines()
    assert len(lines) < 40, video.stdout  # 32 frames of metadata in a few lines, not one block per frame
    assert "      32 records; per key:" in lines and "        timestamp: 0 .. 31, evenly spaced by 1" in lines
    assert "        line_rate: 200.0 (all 32)" in lines
    # Epoch milliseconds used to read "1.51127e+12 .. 1.51127e+12": the ends are told apart.
    assert "        start_epoch_ms: 1511269927000 .. 1511269958000, evenly spaced by 1000" in lines
    jpk = runner.invoke(app, ["info", str(shared_data / "afm" / "sample_0.h5-jpk")]).stdout
    assert "codec h5-jpk vendor data" in jpk and "channels in the file (9): error_trace, height_trace" in jpk
    assert "lossy" not in jpk


def test_info_prints_a_format_s_own_description(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sciz.formats import Format, _registry, list_formats

    class Described(Format):
        name = "described-test"
        extensions = (".dtest",)
        can_write = False

        def sniff(self, path: Path, head: bytes) -> bool:
            return head.startswith(b"DTEST")

        def read(self, path: Path, **options: object) -> sciz.Dataset:
            raise AssertionError("info must use describe(), not read()")

        def describe(self, path: Path, **options: object) -> dict:
            return {"variables": {"t": {"shape": [2, 3], "codec": "zfp"}}, "note": "own report"}

    list_formats()
    monkeypatch.setitem(_registry, "described-test", Described())
    path = tmp_path / "x.dtest"
    path.write_bytes(b"DTEST data")
    report = json.loads(runner.invoke(app, ["info", str(path), "--json"]).stdout)
    assert report["format"] == "described-test" and report["variables"]["t"]["codec"] == "zfp"
    assert report["size_on_disk"] == 10
    text = runner.invoke(app, ["info", str(path)]).stdout
    assert "format:   described-test" in text and "note: own report" in text


def test_convert_error_messages_name_what_the_user_typed(shared_data: Path, tmp_path: Path) -> None:
    source = str(shared_data / "tmd" / "v2_Surface.tmd")
    unwritable = runner.invoke(app, ["convert", source, str(tmp_path / "x.asd")])
    assert unwritable.exit_code == 1 and "sciz cannot write asd files (it only reads them)" in unwritable.stderr
    assert "cannot tell the format" not in unwritable.stderr
    named = runner.invoke(app, ["convert", source, str(tmp_path / "x.bin"), "--to", "h5-jpk"])
    assert named.exit_code == 1 and "sciz cannot write h5-jpk files" in named.stderr
    codec = runner.invoke(app, ["convert", source, str(tmp_path / "x.scz"), "-w", "codec=nosuch", "--drop-unsupported"])
    assert codec.exit_code == 1 and "codec='nosuch'" in codec.stderr and "name=" not in codec.stderr
    assert "known codecs are zfp" in codec.stderr and not (tmp_path / "x.scz").exists()


def test_tmd_to_ome_tiff_keeps_the_physical_pixel_size(shared_data: Path, tmp_path: Path) -> None:
    # The reported bug: calibrations written as PhysicalSize 0.001 um. A TMD (mm axes) refuses to go
    # to OME-TIFF silently (it would drop metadata and become a 1-frame stack); accepted, the pixel
    # size is the TMD's, read back by tifffile and ome-types in a fresh process.
    source = shared_data / "tmd" / "v2_Surface.tmd"
    target = tmp_path / "surface.ome.tif"
    refused = runner.invoke(app, ["convert", str(source), str(target)])
    assert refused.exit_code == 1 and "becomes a stack of one frame" in refused.stderr and not target.exists()
    accepted = runner.invoke(app, ["convert", str(source), str(target), "--drop-unsupported"])
    assert accepted.exit_code == 0, accepted.output
    script = (
        "import sys, tifffile, ome_types\n"
        "with tifffile.TiffFile(sys.argv[1]) as tif:\n"
        "    p = ome_types.from_xml(tif.ome_metadata, validate=True).images[0].pixels\n"
        "    print(p.physical_size_x, p.physical_size_x_unit.value, p.size_x, p.size_y, tif.asarray().dtype)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    size, unit, width, height, dtype = done.stdout.split()
    pitch_mm = sciz.load(source).axes[1].scale
    assert unit == "µm" and float(size) == pytest.approx(pitch_mm * 1000, rel=1e-6)
    assert (int(width), int(height), dtype) == (169, 169, "float32")


@pytest.mark.parametrize("target", ["afm-h5", "afm-npz", "ome-tiff"])
def test_heights_in_mm_are_listed_as_a_loss_for_afm_stacks(shared_data: Path, tmp_path: Path, target: str) -> None:
    # A TMD is calibrated in mm: an AFM stack file would convert its pixel size to nm but keep the
    # heights as stored, which playNano then reads as nm (found by a trial user).
    out = tmp_path / "t.out"
    result = runner.invoke(app, ["convert", str(shared_data / "tmd" / "v2_Surface.tmd"), str(out), "--to", target])
    assert result.exit_code != 0 and not out.exists()
    assert "heights in mm" in result.stderr


def _tiff_stack(path: Path, frames: np.ndarray, pixel_nm: float) -> Path:
    import tifffile

    tifffile.imwrite(path, frames, imagej=True, resolution=(1 / pixel_nm, 1 / pixel_nm), metadata={"unit": "nm"})
    return path


def test_info_and_convert_read_what_process_reads(tmp_path: Path) -> None:
    # Plain TIFF stacks and folders of frames used to be read by sciz process only (its own list of
    # inputs): sciz info/convert said "not a format sciz recognises". One registry now: info, convert
    # and process see the same frames, pixel size and warnings.
    from sciz.processing import load_stack

    frames = np.random.default_rng(3).random((4, 12, 10), dtype=np.float32)
    tif = _tiff_stack(tmp_path / "stack.tif", frames, 0.5)
    report = json.loads(runner.invoke(app, ["info", str(tif), "--json"]).stdout)
    assert report["format"] == "tiff" and report["arrays"][0]["codec"] == "none"
    assert report["afm_stack"]["frames"] == 4 and report["afm_stack"]["pixel_size_nm"] == 0.5
    assert load_stack(tif).pixel_size_nm == report["afm_stack"]["pixel_size_nm"]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"f{i + 1}.npy", frames[i])  # f10 would sort after f2: natural order as process
    shown = runner.invoke(app, ["info", str(folder)])
    assert shown.exit_code == 0, shown.output
    assert "format:   frames" in shown.stdout and "afm stack: 3 frames of 12 x 10 px, 1 nm/px" in shown.stdout
    assert "codec .npy frame files" in shown.stdout and "frame files: 3 (f1.npy .. f3.npy)" in shown.stdout
    assert "lossy" not in shown.stdout
    assert "warning: " in shown.stderr and "no pixel size found in 3 of its 3 frame files" in shown.stderr
    given = runner.invoke(app, ["info", str(folder), "-r", "pixel_size_nm=2", "--json"])
    assert json.loads(given.stdout)["afm_stack"]["pixel_size_nm"] == 2 and "no pixel size" not in given.stderr
    out = tmp_path / "out.zspy"
    converted = runner.invoke(app, ["convert", str(tif), str(out)])
    assert converted.exit_code == 0, converted.output
    assert "(tiff) ->" in converted.stdout
    script = (
        "import sys, numpy as np, sciz\n"
        "ds = sciz.load(sys.argv[1])\n"
        "print(ds.axes[-1].units, ds.axes[-1].scale, np.asarray(ds.data).tobytes().hex())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    units, scale, data = done.stdout.split()
    assert (units, float(scale)) == ("nm", 0.5) and bytes.fromhex(data) == frames.tobytes()
    # A zarr store is never taken for a folder of frames, whatever files it holds.
    (out / "stray.npy").write_bytes((folder / "f1.npy").read_bytes())
    assert sciz.formats.detect_format(out).name == "zspy"


def test_force_replaces_only_a_file_of_the_target_format(tmp_path: Path) -> None:
    # --force used to replace any regular file with the target's name (notes.txt became an NPZ). As
    # for directories (issue 9), it replaces only what sciz reads as the target format or one of the
    # same container (a plain NPZ by an AFM bundle), and names what it refused.
    source = tmp_path / "a.npy"
    np.save(source, np.arange(12.0).reshape(3, 4))
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    refused = runner.invoke(app, ["convert", str(source), str(notes), "--to", "npz", "--force"])
    assert refused.exit_code == 1 and notes.read_text() == "precious"
    assert f"{notes} exists and is a file of no format sciz recognises, not npz" in refused.stderr
    other = tmp_path / "other.npy"
    np.save(other, np.zeros(3))
    kind = runner.invoke(app, ["convert", str(source), str(other), "--to", "npz", "--force"])
    assert kind.exit_code == 1 and "is a npy file, not npz" in kind.stderr and np.load(other).shape == (3,)
    store = tmp_path / "s.zspy"
    sciz.save(sciz.Dataset(np.ones((2, 2), np.float32)), store)
    folder = runner.invoke(app, ["convert", str(source), str(store), "--to", "hspy", "--force"])
    assert folder.exit_code == 1 and "is a zspy folder, not hspy" in folder.stderr and store.is_dir()
    plain = tmp_path / "x.npz"
    runner.invoke(app, ["convert", str(source), str(plain)])
    replaced = runner.invoke(app, ["convert", str(source), str(plain), "--force", "-w", "compress=false"])
    assert replaced.exit_code == 0, replaced.output
    replaced = runner.invoke(app, ["convert", str(store), str(store.with_name("t.zspy"))])
    again = runner.invoke(app, ["convert", str(source), str(store.with_name("t.zspy")), "--force"])
    assert replaced.exit_code == 0 and again.exit_code == 0, again.output
    script = "import sys, numpy as np, sciz\nprint(np.asarray(sciz.load(sys.argv[1]).data).shape)\n"
    done = subprocess.run(
        [sys.executable, "-c", script, str(store.with_name("t.zspy"))], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "(3, 4)", done.stderr


def test_info_shows_the_codec_auto_chose_not_auto(tmp_path: Path) -> None:
    # compressor="auto" chooses per chunk; the zarr config says only {"id": "auto", ...}, so info
    # printed "codec auto" with no bound of the codec actually stored. It reads what the chunks hold.
    rng = np.random.default_rng(5)
    data = np.cumsum(rng.random((8, 48, 48)), axis=2).astype(np.float32)
    store = tmp_path / "auto.zspy"
    sciz.save(sciz.Dataset(data), store, compressor="auto", tolerance=1e-3)
    chosen = sciz.codecs.describe_stream(
        next(p for p in (store / "Experiments").rglob("0") if p.is_file()).read_bytes()
    )
    row = json.loads(runner.invoke(app, ["info", str(store), "--json"]).stdout)["arrays"][0]
    assert row["codec_name"] == f"{chosen['codec']} (sciz stream)" and "auto" not in row["codec_name"]
    assert row["lossy"] and "0.001" in row["bound"]
    assert row["details"]["chosen by"] == "auto (tolerance=0.001)"
    assert row["details"]["chunks by codec"].startswith(chosen["codec"]) and row["details"]["chunks by codec"].endswith(
        ": 1"
    )
    text = runner.invoke(app, ["info", str(store)]).stdout
    assert f"codec {chosen['codec']} (sciz stream)" in text and "codec auto" not in text
    # HDF5 stores the chosen filter already; its choice record is one line, not a dict of candidates.
    hspy = tmp_path / "auto.hspy"
    sciz.save(sciz.Dataset(data), hspy, compression="auto", tolerance=1e-3)
    text = runner.invoke(app, ["info", str(hspy)]).stdout
    assert "chosen by: auto (tolerance=0.001): " in text and "choice=" not in text and "'candidates'" not in text
    # A .scz stream records the chosen codec (writing codec=auto used to be refused as "no stream codec").
    scz = tmp_path / "auto.scz"
    done = runner.invoke(
        app, ["convert", str(hspy), str(scz), "-w", "codec=auto", "-w", "tolerance=1e-3", "--drop-unsupported"]
    )
    assert done.exit_code == 0, done.output
    stored = sciz.codecs.describe_stream(scz.read_bytes())["codec"]
    assert stored != "auto" and f"codec {stored} " in runner.invoke(app, ["info", str(scz)]).stdout


def test_convert_ratio_counts_only_what_was_kept(tmp_path: Path) -> None:
    # The summary's ratio used to divide every array read (layers included) by the size of a file
    # that held only the data: an uncompressed .npy of one layer of four showed "ratio 3.97".
    import re

    data = np.random.default_rng(9).random((4, 16, 16), dtype=np.float32)
    source = tmp_path / "layers.npz"
    sciz.save(sciz.Dataset(data, layers={"raw": data + 1, "flat": data + 2}), source)
    target = tmp_path / "one.npy"
    result = runner.invoke(app, ["convert", str(source), str(target), "--drop-unsupported"])
    assert result.exit_code == 0, result.output
    ratio = float(re.search(r"ratio ([0-9.]+)", result.stdout).group(1))
    assert ratio == pytest.approx(data.nbytes / target.stat().st_size, abs=0.006)
    assert "to the 4.0 KiB of data it holds (of 12.0 KiB read); dropped 1 item(s)" in result.stdout
    # Nothing dropped: one ratio, to everything read.
    whole = runner.invoke(app, ["convert", str(source), str(tmp_path / "all.zspy")])
    assert whole.exit_code == 0 and "of data it holds" not in whole.stdout and "dropped" not in whole.stdout
    size = sum(p.stat().st_size for p in (tmp_path / "all.zspy").rglob("*") if p.is_file())
    ratio = float(re.search(r"ratio ([0-9.]+)", whole.stdout).group(1))
    assert ratio == pytest.approx(3 * data.nbytes / size, abs=0.006)


def test_an_image_in_nm_to_tmd_lists_its_heights_as_a_loss(tmp_path: Path) -> None:
    # The other direction of "heights in mm": a 2-D image on nm axes went to TMD with its axes
    # converted to mm and its heights written as given, which every TMD reader takes as mm (x1e6).
    image = np.linspace(0, 5, 36, dtype=np.float32).reshape(6, 6)  # nm, as the axes
    source = sciz.save(
        sciz.Dataset(image, axes=[sciz.Axis("y", "nm", 0.5), sciz.Axis("x", "nm", 0.5)]), tmp_path / "i.npz"
    )
    target = tmp_path / "i.tmd"
    refused = runner.invoke(app, ["convert", str(source), str(target)])
    assert refused.exit_code == 1 and not target.exists()
    assert "heights in nm (its axes are in nm; TMD converts the axes to mm" in refused.stderr
    # Heights said to be in mm (a TMD read back) are not a loss, whatever the lateral unit was.
    mm = sciz.save(sciz.Dataset(image, axes=[sciz.Axis("y", "mm", 0.5), sciz.Axis("x", "mm", 0.5)]), tmp_path / "m.npz")
    assert runner.invoke(app, ["convert", str(mm), str(tmp_path / "m.tmd")]).exit_code == 0


def test_a_truncated_tiff_stack_is_an_error_not_fewer_frames(tmp_path: Path) -> None:
    # tifffile logs "invalid page offset" / "corrupted file" and returns the frames before the break:
    # a 3-frame stack cut in half came back as 1 frame (the hostile corpus' truncated OME-TIFF too).
    import tifffile

    from sciz.errors import FormatError
    from sciz.processing import load_stack

    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, np.random.default_rng(2).random((3, 8, 9), dtype=np.float32), imagej=True)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(FormatError, match=r"cut\.tif: damaged TIFF"):
        load_stack(cut, pixel_size_nm=1.0)
    result = runner.invoke(app, ["info", str(cut)])
    assert result.exit_code == 1 and "damaged TIFF" in result.stderr
    assert sciz.load(whole, pixel_size_nm=1.0).shape == (3, 8, 9)
