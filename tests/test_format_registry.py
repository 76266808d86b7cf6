"""The one format registry: capability flags over list_formats(), vendor AFM formats, and the layering rule."""

from __future__ import annotations

import ast
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import sciz
from sciz.afm.export import export_formats, parse_formats
from sciz.cli.app import _register_commands, app
from sciz.errors import ArgumentError, DataWarning, FormatError, MissingDependencyError, UnknownFormatError
from sciz.formats import CAPABILITIES, Format, detect_format, get_format, list_formats
from sciz.processing import DEFAULT_CHANNELS, load_stack
from sciz.processing.inputs import input_suffixes

SRC = Path(sciz.__file__).resolve().parent
_register_commands()


def _overrides(plugin: Format, method: str) -> bool:
    return getattr(type(plugin), method) is not getattr(Format, method)


# -- capability flags --------------------------------------------------------------------------------
@pytest.mark.parametrize("plugin", list_formats(), ids=lambda f: f.name)
def test_each_format_implements_what_its_flags_promise(plugin):
    held = plugin.capabilities()
    assert held <= set(CAPABILITIES)
    # A folder of frames has no extension: a directory format may be found by its content alone.
    assert plugin.extensions or (plugin.directory and _overrides(plugin, "sniff"))
    assert all(e.startswith(".") and e == e.lower() for e in plugin.extensions)
    assert ("write" in held) == _overrides(plugin, "write")
    assert ("afm-stack" in held) == _overrides(plugin, "read_stack")
    assert ("afm-export" in held) == _overrides(plugin, "write_stack")
    if "lazy" in held:
        assert {"read", "write"} <= held
    if "afm-export" in held:
        assert "afm-stack" in held  # what export_bundles writes, load_stack reads back
    assert get_format(plugin.name) is plugin


def test_capability_queries_name_the_formats():
    assert sorted(f.name for f in list_formats("lazy")) == ["hspy", "zspy", "zspy-zip"]
    assert sorted(f.name for f in list_formats("afm-export")) == ["afm-h5", "afm-npz", "ome-tiff"]
    vendor = {"asd", "h5-jpk", "spm", "jpk", "ibw", "gwy"}
    readers = {f.name for f in list_formats("read")}
    writers = {f.name for f in list_formats("write")}
    assert vendor <= {f.name for f in list_formats("afm-stack")} and vendor <= readers and not vendor & writers
    assert {f.extra for f in list_formats() if f.name in vendor} == {"afm"}
    with pytest.raises(ArgumentError, match=r"capability.*'streams'.*read, write, lazy"):
        list_formats("streams")


def test_afm_tables_are_derived_from_the_registry():
    names = export_formats()
    assert list(names) == ["tif", "tiff", "ome-tiff", "ome.tif", "npz", "h5", "hdf5"]
    assert {n: f.name for n, f in names.items() if n in ("tif", "npz", "hdf5")} == {
        "tif": "ome-tiff",
        "npz": "afm-npz",
        "hdf5": "afm-h5",
    }
    assert parse_formats("hdf5, ome-tiff npz h5") == ["h5", "tif", "npz"]
    with pytest.raises(ArgumentError, match="known formats are tif, tiff"):
        parse_formats("gif")
    suffixes = input_suffixes()
    for plugin in list_formats("afm-stack"):
        assert set(plugin.extensions) <= set(suffixes), plugin.name
    assert DEFAULT_CHANNELS == {".asd": "TP", ".h5-jpk": "height_trace", ".spm": "Height", ".jpk": "height_trace"} | {
        ".ibw": "HeightTracee",
        ".gwy": "ZSensor",
    }


def test_sciz_formats_lists_the_registry():
    runner = CliRunner()
    result = runner.invoke(app, ["formats", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert list(rows) == [f.name for f in list_formats()]
    assert rows["asd"]["capabilities"] == ["afm-stack", "read"] and rows["asd"]["extra"] == "afm"
    assert rows["afm-h5"]["export_names"] == ["h5", "hdf5"]
    result = runner.invoke(app, ["formats", "--can", "lazy", "--json"])
    assert [row["name"] for row in json.loads(result.output)] == ["zspy", "zspy-zip", "hspy"]
    table = runner.invoke(app, ["formats", "--can", "afm-stack"], terminal_width=200)
    assert "h5-jpk" in table.output and "sciz[afm]" in table.output and "zspy" not in table.output
    bad = runner.invoke(app, ["formats", "--can", "fly"])
    assert bad.exit_code == 2 and "known capabilities are read, write, lazy" in bad.output


def test_lazy_convert_streams_only_between_lazy_formats(tmp_path, monkeypatch):
    from sciz.lazy import convert

    seen: list[dict] = []
    original = type(get_format("npz")).read

    def spy(self, path, **options):
        seen.append(options)
        return original(self, path, **options)

    monkeypatch.setattr(type(get_format("npz")), "read", spy)
    sciz.save(sciz.Dataset(np.arange(12.0).reshape(3, 4)), tmp_path / "a.npz")
    convert(tmp_path / "a.npz", tmp_path / "b.zspy")  # npz does not stream: read whole
    assert seen == [{}]
    assert np.array_equal(np.asarray(sciz.load(tmp_path / "b.zspy").data), np.arange(12.0).reshape(3, 4))


def test_load_stack_reads_any_registered_format_with_frames(tmp_path):
    frames = np.random.default_rng(1).normal(size=(3, 8, 10)).astype(np.float32)
    axes = [sciz.Axis("time", "s", 0.5), sciz.Axis("y", "um", 0.002), sciz.Axis("x", "um", 0.002)]
    path = sciz.save(sciz.Dataset(frames, axes=axes), tmp_path / "scan.zspy")
    with pytest.warns(DataWarning, match=r"scan\.zspy: its lengths are in um: .* height values are not"):
        stack = load_stack(path)
    assert np.array_equal(np.asarray(stack.data), frames)
    assert stack.pixel_size_nm == pytest.approx(2.0) and stack.timestamps.tolist() == [0.0, 0.5, 1.0]
    with pytest.warns(DataWarning, match=r"its lengths are in um"):
        assert load_stack(path, "phase", pixel_size_nm=3.0).pixel_size_nm == 3.0
    cube = sciz.save(sciz.Dataset(np.zeros((2, 3, 4, 5), np.float32)), tmp_path / "cube.zspy")
    with pytest.raises(FormatError, match=r"cube\.zspy: holds 4-D float32 data \(zspy\)"):
        load_stack(cube)


def test_a_fresh_process_finds_every_format_by_name_alone(copy_shared, tmp_path):
    # Registration by import side effect would leave formats out of a process that imported only sciz.
    import subprocess

    asd = copy_shared("afm/asd_sample_0.asd")
    code = (
        "import json, sys, sciz\n"
        "from sciz.formats import list_formats\n"
        "ds = sciz.load(sys.argv[1])\n"
        "flags = {f.name: sorted(f.capabilities()) for f in list_formats()}\n"
        "afm = sorted(m for m in sys.modules if m.startswith('sciz.afm'))\n"
        "print(json.dumps({'shape': list(ds.shape), 'formats': flags, 'afm': afm}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(asd)], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert report["shape"] == [32, 200, 200]
    assert report["formats"] == {f.name: sorted(f.capabilities()) for f in list_formats()}
    assert "sciz.afm.bundle_formats" in report["afm"]  # loaded from its BUILTIN_FORMATS string


# -- vendor AFM files ----------------------------------------------------------------------------------
def test_asd_video_loads_as_a_dataset(copy_shared):
    path = copy_shared("afm/asd_sample_0.asd")
    assert detect_format(path).name == "asd"
    dataset = sciz.load(path)
    assert dataset.shape == (32, 200, 200)
    assert [a.name for a in dataset.axes] == ["time", "y", "x"]
    assert dataset.axes[1].units == "nm" and dataset.axes[1].scale == pytest.approx(0.5)
    saved = dataset.metadata["afm_stack"]
    assert saved["channel"] == "TP" and saved["channels"] == ["TP"]
    assert [f["timestamp"] for f in saved["frame_metadata"][:3]] == [0.0, 1.0, 2.0]
    with pytest.warns(DataWarning, match=r"frame\(s\) 28"):  # load_stack says the file has a blank frame
        stack = load_stack(path)  # the same reader behind both doors
    assert np.array_equal(np.asarray(stack.data), np.asarray(dataset.data))


def test_sciz_info_lists_channels_frames_pixel_size_and_times(copy_shared):
    runner = CliRunner()
    asd = copy_shared("afm/asd_sample_0.asd")
    result = runner.invoke(app, ["info", str(asd)])
    assert result.exit_code == 0, result.output
    assert "format:   asd - high-speed AFM video" in result.output
    assert "afm stack: 32 frames of 200 x 200 px, 0.5 nm/px, channel TP (in the file: TP)" in result.output
    assert "timestamps [s]: 0, 1, 2, ... 31" in result.output
    assert "32 records; per key:" in result.output  # per-frame metadata is not dumped whole

    from sciz.afm import save_npz_bundle
    from sciz.stack import ImageStack

    bundle = save_npz_bundle(asd.with_name("b.npz"), ImageStack(np.zeros((2, 4, 5), np.float32), 1.5, "phase"))
    result = runner.invoke(app, ["info", str(bundle)])
    assert "afm stack: 2 frames of 4 x 5 px, 1.5 nm/px, channel phase\n" in result.output  # channels unknown
    assert "timestamps: none" in result.output

    jpk = copy_shared("afm/sample_0.h5-jpk")
    result = runner.invoke(app, ["info", "--json", str(jpk)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["format"] == "h5-jpk" and report["capabilities"] == ["afm-stack", "read"]
    stack = report["afm_stack"]
    assert (stack["frames"], stack["height"], stack["width"]) == (4, 128, 128)
    assert stack["channel"] == "height_trace" and len(stack["channels"]) == 9 and "phase_retrace" in stack["channels"]
    assert stack["pixel_size_nm"] == pytest.approx(1.171875)
    assert stack["timestamps_s"] == pytest.approx([0.0, 3.275, 6.55, 9.825])


def _gwy_component(name: str, kind: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + kind.encode() + value


def _gwy_object(name: str, components: list[bytes]) -> bytes:
    body = b"".join(components)
    return name.encode() + b"\0" + struct.pack("<I", len(body)) + body


def _write_gwy(path: Path, image: np.ndarray, width_m: float, title: str = "ZSensor") -> Path:
    """A Gwyddion GWYP file (the documented serialisation) holding one data field in metres."""
    rows, cols = image.shape
    field = _gwy_object(
        "GwyDataField",
        [
            _gwy_component("xres", "i", struct.pack("<i", cols)),
            _gwy_component("yres", "i", struct.pack("<i", rows)),
            _gwy_component("xreal", "d", struct.pack("<d", width_m)),
            _gwy_component("yreal", "d", struct.pack("<d", width_m * rows / cols)),
            _gwy_component("si_unit_xy", "o", _gwy_object("GwySIUnit", [_gwy_component("unitstr", "s", b"m\0")])),
            _gwy_component("data", "D", struct.pack("<I", image.size) + image.astype("<f8").tobytes()),
        ],
    )
    container = _gwy_object(
        "GwyContainer",
        [_gwy_component("/0/data/title", "s", title.encode() + b"\0"), _gwy_component("/0/data", "o", field)],
    )
    path.write_bytes(b"GWYP" + container)
    return path


def test_single_vendor_images_and_folders_of_them(tmp_path):
    image = np.arange(36, dtype=np.float64).reshape(6, 6) * 1e-9  # heights in m
    (tmp_path / "frames").mkdir()
    first = _write_gwy(tmp_path / "frames" / "f1.gwy", image, 3e-9)
    _write_gwy(tmp_path / "frames" / "f2.gwy", image * 2, 3e-9)
    dataset = sciz.load(first)
    assert detect_format(first).name == "gwy" and dataset.shape == (1, 6, 6)
    assert np.allclose(np.asarray(dataset.data)[0], image * 1e9)  # AFMReader gives nm
    assert dataset.axes[2].scale == pytest.approx(0.5) and dataset.metadata["afm_stack"]["channel"] == "ZSensor"
    result = CliRunner().invoke(app, ["info", str(first)])
    assert "afm stack: 1 frame of 6 x 6 px, 0.5 nm/px, channel ZSensor\n" in result.output, result.output
    stack = load_stack(tmp_path / "frames")
    assert stack.n_frames == 2 and np.allclose(np.asarray(stack.data)[1], image * 2e9)
    assert [f["source_file"] for f in stack.frame_metadata] == ["f1.gwy", "f2.gwy"]
    with pytest.raises(FormatError, match=r"f1\.gwy: AFMReader could not read it .*'Height' not found.*ZSensor"):
        sciz.load(first, channel="Height")


def test_vendor_read_options_and_wrong_content(copy_shared, tmp_path):
    jpk = copy_shared("afm/sample_0.h5-jpk")
    phase = sciz.load(jpk, channel="phase_trace", pixel_size_nm=2.0)
    assert phase.metadata["afm_stack"]["channel"] == "phase_trace" and phase.axes[2].scale == 2.0
    with pytest.raises(FormatError, match="no channel 'nope'; the file has error_trace"):
        sciz.load(jpk, channel="nope")
    with pytest.raises(ArgumentError, match="takes 'channel' and 'pixel_size_nm'"):
        sciz.load(jpk, lazy=True)
    fake = tmp_path / "video.asd"
    fake.write_bytes(b"GIF89a" + bytes(100))
    for options in ({}, {"format": "asd"}):  # found by its extension, refused by its content
        with pytest.raises(FormatError, match=r"video\.asd: does not start like a \.asd file"):
            sciz.load(fake, **options)
    with pytest.raises(UnknownFormatError):
        sciz.load(fake.rename(tmp_path / "video.unknown"))


def test_missing_afmreader_names_the_extra(copy_shared, monkeypatch):
    path = copy_shared("afm/asd_sample_0.asd")
    for name in [m for m in sys.modules if m == "AFMReader" or m.startswith("AFMReader.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "AFMReader", None)  # import AFMReader now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'sciz\[afm\]'"):
        sciz.load(path)
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 1
    assert "pip install 'sciz[afm]'" in result.output  # the brackets survive the console markup


# -- layering: imports go downwards only ----------------------------------------------------------------
def _imported_modules(path: Path, root: Path = SRC.parent) -> set[str]:
    """Absolute names of every module ``path`` (below ``root``) imports, relative imports resolved,
    at any depth (imports inside functions count)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


#: Package or module -> the sciz layers above it that it must never import.
_FORBIDDEN = {
    "formats": ("sciz.afm", "sciz.processing", "sciz.cli", "sciz.lazy"),
    "codecs": ("sciz.formats", "sciz.afm", "sciz.processing", "sciz.cli", "sciz.lazy"),
    "processing": ("sciz.afm", "sciz.cli"),
    "errors.py": ("sciz.",),
    "_util.py": ("sciz.formats", "sciz.codecs", "sciz.afm", "sciz.processing", "sciz.cli", "sciz.lazy"),
    "metadata.py": ("sciz.formats", "sciz.codecs", "sciz.afm", "sciz.processing", "sciz.cli", "sciz.lazy"),
    "model.py": ("sciz.formats", "sciz.codecs", "sciz.afm", "sciz.processing", "sciz.cli", "sciz.lazy"),
    "stack.py": ("sciz.formats", "sciz.codecs", "sciz.afm", "sciz.processing", "sciz.cli", "sciz.lazy"),
}


@pytest.mark.parametrize("where", sorted(_FORBIDDEN))
def test_no_upward_imports(where):
    target = SRC / where
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    bad = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in files
        for name in sorted(_imported_modules(path))
        if any(name == layer.rstrip(".") or name.startswith(layer.rstrip(".") + ".") for layer in _FORBIDDEN[where])
        and not (where == "errors.py" and name == "sciz.errors")
    ]
    assert not bad, "\n".join(bad)


def test_the_layering_check_sees_relative_and_nested_imports(tmp_path):
    # The checker itself must catch what it exists for, or the test above cannot fail.
    module = tmp_path / "sciz" / "formats" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from ..afm import export_bundles\n    from .. import lazy\n", encoding="utf-8")
    names = _imported_modules(module, tmp_path)
    assert {"sciz.afm", "sciz.afm.export_bundles", "sciz.lazy"} <= names
