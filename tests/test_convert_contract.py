"""``sciz convert`` never loses silently: every (readable source, writable target) pair, over the registry.

Each conversion either keeps the data (bit for bit), its dtype, the axes' calibration (scale, offset,
units; 1 um == 1000 nm), the metadata and the title, as a fresh process reading the target finds
them, or is refused with the list of what would be lost, the --drop-unsupported flag, and nothing
written. The sources are small synthetic files (int32 data on 1/nm axes with offsets, nested
metadata, a title; each writable format holds the richest of them it can) and the real vendor
samples of the read-only formats.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

import sciz
from sciz import Axis, Dataset
from sciz.cli.app import _register_commands, app
from sciz.formats import get_format, list_formats
from sciz.testing.formats import representative_datasets
from sciz.testing.fresh import read_in_fresh_process

_register_commands()
runner = CliRunner()

#: Real samples of the formats sciz reads but does not write (in the shared data).
VENDOR_SAMPLES = {
    "asd": "afm/asd_sample_0.asd",
    "h5-jpk": "afm/sample_0.h5-jpk",
    "netcdf": "netcdf/tos_O1_2001-2002.nc",
}
#: Read-only formats with no sample file in the shared data (their readers are AFMReader's, tested there).
NO_SAMPLE = {"spm", "jpk", "ibw", "gwy"}
#: Read-only AFM inputs made here: a calibrated TIFF stack, a folder of calibrated TIFF frames.
STACK_INPUTS = {"tiff", "frames"}

_NM = {"nm": 1.0, "pm": 1e-3, "um": 1e3, "µm": 1e3, "mm": 1e6, "cm": 1e7, "m": 1e9}
_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "min": 60.0, "h": 3600.0}


def rich_datasets() -> list[Dataset]:
    """What issue 10 names: int32, 0.1744 1/nm axes offset 131.9, nested metadata, a title; 3-D then 2-D."""
    metadata = {
        "General": {"title": "diffraction", "notes": ["a", {"b": [1, 2.5]}]},
        "Acquisition": {"beam_energy_kV": 300, "detector": {"name": "K3", "binning": [2, 2]}},
    }
    volume = (np.arange(3 * 4 * 5, dtype=np.int32).reshape(3, 4, 5) - 30) * 1000 + 7
    reciprocal = [Axis("ky", "1/nm", 0.1744, 131.9), Axis("kx", "1/nm", 0.1744, 131.9)]
    return [
        Dataset(volume, axes=[Axis("time", "s", 0.5, 0.0), *reciprocal], metadata=metadata, name="Diffraction run"),
        Dataset(volume[0], axes=reciprocal, metadata=metadata, name="Diffraction frame"),
    ]


def _source_file(name: str, folder: Path, shared_data: Path) -> Path:
    """A file of format ``name``: the richest synthetic dataset it holds, or its real sample."""
    if name in VENDOR_SAMPLES:
        return shared_data / VENDOR_SAMPLES[name]
    if name in STACK_INPUTS:
        return _stack_input(name, folder)
    plugin = get_format(name)
    for dataset in [*rich_datasets(), *(d for _, d in representative_datasets())]:
        if not plugin.problems(dataset):
            return sciz.save(dataset, folder / f"source-{name}{plugin.extensions[0]}", format=name)
    raise AssertionError(f"{name} holds none of the synthetic datasets")


def _stack_input(name: str, folder: Path) -> Path:
    """A TIFF stack (``tiff``) or a folder of single-frame TIFFs (``frames``), 0.25 nm/px in ImageJ tags."""
    import tifffile

    frames = np.linspace(-1, 1, 3 * 6 * 5, dtype=np.float32).reshape(3, 6, 5)
    tags = {"imagej": True, "resolution": (4.0, 4.0), "metadata": {"unit": "nm"}}
    if name == "tiff":
        path = folder / "source-tiff.tif"
        tifffile.imwrite(path, frames, **tags)
        return path
    path = folder / "source-frames"
    path.mkdir()
    for index, frame in enumerate(frames):
        tifffile.imwrite(path / f"frame{index}.tif", frame, **tags)
    return path


def _physical(units: str, scale: float, offset: float) -> tuple[str, float, float]:
    for kind, table in (("length", _NM), ("time", _S)):
        if units in table:
            return kind, scale * table[units], offset * table[units]
    return units, scale, offset


def _same_axis(got: dict[str, Any], wrote: Axis) -> bool:
    a = _physical(got["units"], got["scale"], got["offset"])
    b = _physical(wrote.units, wrote.scale, wrote.offset)
    return a[0] == b[0] and math.isclose(a[1], b[1], rel_tol=1e-6) and math.isclose(a[2], b[2], rel_tol=1e-6)


def _kept(got: Any, wrote: Any) -> bool:
    """Everything of ``wrote`` is in ``got`` (a format may add keys of its own, never change or drop one)."""
    if isinstance(wrote, dict):
        return isinstance(got, dict) and all(k in got and _kept(got[k], v) for k, v in wrote.items())
    if isinstance(wrote, list | tuple):
        return isinstance(got, list | tuple) and len(got) == len(wrote) and all(map(_kept, got, wrote))
    if isinstance(wrote, float) and isinstance(got, float):
        return got == wrote or (math.isnan(got) and math.isnan(wrote))
    return bool(got == wrote)


def _losses(source: Dataset, read: Any, target: str) -> list[str]:
    """What the fresh read of the converted file lost of ``source`` (empty: nothing)."""
    data = read.value()
    original = np.asarray(source.data)
    if target == "stl" and not (original.ndim == 3 and original.shape[1:] == (3, 3)):
        return _stl_losses(source, data, read.report)
    lost = []
    if data.dtype != original.dtype:
        lost.append(f"dtype {data.dtype} (was {original.dtype})")
    if data.shape != original.shape or not np.array_equal(data, original, equal_nan=True):
        lost.append(f"data (shape {data.shape}, was {original.shape})")
    for axis, back in zip(source.axes, read.report["axes"], strict=False):
        if not _same_axis(back, axis):
            lost.append(f"axis {axis.name}: {back} (was {axis})")
    if source.name and read.report["name"] != source.name:
        lost.append(f"title {read.report['name']!r} (was {source.name!r})")
    metadata = _own_record(sciz.metadata.to_jsonable(source.metadata))
    for key, value in metadata.items():
        if not _kept(read.report["metadata"].get(key), value):
            lost.append(f"metadata {key!r}")
    return lost


def _stl_losses(source: Dataset, vertices: np.ndarray, report: dict[str, Any]) -> list[str]:
    """A height map's STL keeps its geometry: every pixel's (x, y, height) is a vertex; the title is the header.

    Seen from above, as STL viewers show it: row 0 is the top edge, so y runs from the last row
    (at the axis offset) upwards.
    """
    heights = np.asarray(source.data)
    rows, cols = heights.shape
    y_axis, x_axis = source.axes
    ys = y_axis.offset + y_axis.scale * (rows - 1 - np.arange(rows))
    xs = x_axis.coordinates(cols)
    grid = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], heights), axis=-1).reshape(-1, 3)
    expected = set(map(tuple, grid.astype(np.float32).tolist()))
    found = set(map(tuple, vertices.reshape(-1, 3).astype(np.float32).tolist()))
    lost = [] if expected <= found else [f"{len(expected - found)} of {len(expected)} surface points"]
    if source.name and report["name"] != source.name:
        lost.append(f"title {report['name']!r} (was {source.name!r})")
    return lost


def _own_record(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` without what a bundle reader records about the file it read (``provenance['bundle']``)."""
    stack = metadata.get("afm_stack")
    if not isinstance(stack, dict) or not isinstance(stack.get("provenance"), dict):
        return metadata
    provenance = {k: v for k, v in stack["provenance"].items() if k != "bundle"}
    return {**metadata, "afm_stack": {**stack, "provenance": provenance}}


def test_every_conversion_keeps_everything_or_is_refused(shared_data: Path, tmp_path: Path) -> None:
    readable = [f.name for f in list_formats("read")]
    writable = [f.name for f in list_formats("write")]
    assert set(readable) - set(writable) - set(VENDOR_SAMPLES) - STACK_INPUTS == NO_SAMPLE, (
        "a readable format has no source here"
    )
    sources = {name: _source_file(name, tmp_path, shared_data) for name in readable if name not in NO_SAMPLE}
    converted: dict[str, tuple[str, str, Path]] = {}
    refused: dict[str, list[str]] = {}
    for (source_name, source), target_name in ((s, t) for s in sources.items() for t in writable):
        target = tmp_path / "out" / f"{source_name}-to-{target_name}{get_format(target_name).extensions[0]}"
        result = runner.invoke(app, ["convert", str(source), str(target), "--to", target_name])
        pair = f"{source_name} -> {target_name}"
        if result.exit_code == 0:
            assert "warning" not in result.stderr, f"{pair}: {result.stderr}"
            assert result.stdout.startswith(f"converted {source} ({source_name}) -> "), f"{pair}: {result.stdout}"
            converted[pair.replace(" -> ", "__")] = (source_name, target_name, target)
            continue
        assert result.exit_code == 1, f"{pair}: exit {result.exit_code}\n{result.output}"
        assert f"{target_name} cannot hold everything" in result.stderr, f"{pair}: {result.stderr}"
        assert "--drop-unsupported" in result.stderr and not target.exists(), pair
        listed = [line.strip()[2:] for line in result.stderr.splitlines() if line.strip().startswith("- ")]
        assert listed, f"{pair}: refused without saying what would be lost"
        refused[pair] = listed
        if source_name in VENDOR_SAMPLES:
            continue  # (the loss-accepting write is checked on the small synthetic sources only)
        # Accepting the loss writes what fits, with a warning per loss, or fails with a clean error.
        dropped = runner.invoke(app, ["convert", str(source), str(target), "--to", target_name, "--drop-unsupported"])
        if dropped.exit_code == 0:
            assert dropped.stderr.count("warning: dropped:") == len(listed), f"{pair}: {dropped.stderr}"
        else:
            last = dropped.stderr.strip().splitlines()[-1]
            assert dropped.exit_code == 1 and last.startswith("error:"), f"{pair}: {dropped.output}"
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    reads = read_in_fresh_process(
        {"load": [{"key": key, "path": str(path)} for key, (_, _, path) in converted.items()]}, tmp_path
    )
    originals = {name: sciz.load(path) for name, path in sources.items()}
    losses = {
        key: lost
        for key, (source_name, target_name, _) in converted.items()
        if (lost := _losses(originals[source_name], reads[("load", key)], target_name))
    }
    assert not losses, f"conversions that exited 0 but lost something: {losses}"
    # Every writable format takes its own kind losslessly, and the cases are refused.
    for name in writable:
        assert f"{name}__{name}" in converted, f"{name} -> {name}: {refused.get(f'{name} -> {name}')}"
    assert any("dtype int32" in p for p in refused["hspy -> ome-tiff"])
    assert any("['ky', 'kx']" in p for p in refused["hspy -> ome-tiff"])
    assert any("metadata ['Acquisition', 'General']" in p for p in refused["zspy -> ome-tiff"])
    for single in ("npy", "scz", "tmd"):
        assert any(p.startswith("title 'Diffraction") for p in refused[f"npz -> {single}"]), refused[f"npz -> {single}"]
    assert len(converted) + len(refused) == len(sources) * len(writable)


def test_stl_keeps_a_title_in_its_header_and_refuses_one_it_cannot(tmp_path: Path) -> None:
    image = Dataset(
        np.arange(12, dtype=np.float32).reshape(3, 4), axes=[Axis("y", "mm", 0.5), Axis("x", "mm", 0.5)], name="Coin"
    )
    source = sciz.save(image, tmp_path / "coin.npz")
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "coin.stl")])
    assert result.exit_code == 0, result.output
    reads = read_in_fresh_process({"load": [{"key": "stl", "path": str(tmp_path / "coin.stl")}]}, tmp_path)
    assert reads[("load", "stl")].report["name"] == "Coin"
    long = sciz.save(image.copy(name="é" * 90), tmp_path / "long.npz")
    refused = runner.invoke(app, ["convert", str(long), str(tmp_path / "long.stl")])
    assert refused.exit_code == 1 and "title 'ééé" in refused.stderr and not (tmp_path / "long.stl").exists()
