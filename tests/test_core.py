"""The core: dataset model, atomic writes of files and trees, and the format registry (magic bytes before extension)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import sciz
from sciz import atomic, errors, formats
from sciz.model import Axis, Dataset


def test_dataset_fills_axes_and_checks_inputs() -> None:
    ds = Dataset([[1, 2], [3, 4]], axes=[Axis("y", "nm", 0.5)], masks={"m": np.zeros((2, 2), bool)})
    assert [a.name for a in ds.axes] == ["y", "axis1"]
    assert ds.shape == (2, 2) and ds.dtype == np.int64
    assert set(ds.arrays()) == {"data", "masks/m"}
    np.testing.assert_allclose(ds.axes[0].coordinates(3), [0.0, 0.5, 1.0])
    with pytest.raises(errors.ArgumentError, match="masks must be boolean"):
        Dataset(np.zeros(3), masks={"m": np.zeros(3)})
    with pytest.raises(errors.ArgumentError, match="3 axes given"):
        Dataset(np.zeros(3), axes=[Axis(), Axis(), Axis()])
    with pytest.raises(errors.ArgumentError, match=r"Axis\.scale"):
        Axis("x", scale=float("nan"))
    with pytest.raises(errors.ArgumentError, match="layers key"):
        Dataset(np.zeros(3), layers={"a/b": np.zeros(3)})
    with pytest.raises(errors.ArgumentError, match="object"):
        Dataset(np.array([object()]))


def test_dataset_copy_and_provenance() -> None:
    ds = Dataset(np.zeros((2, 3)), metadata={"a": 1}, name="demo")
    entry = ds.add_provenance("remove_plane", {"order": 1}, output="layers/step_1")
    assert entry["step"] == "remove_plane" and entry["versions"]["sciz"] == sciz.__version__
    clone = ds.copy(name="other")
    clone.metadata["a"] = 2
    assert ds.metadata["a"] == 1 and clone.name == "other" and clone.provenance == ds.provenance
    assert "demo" in repr(ds)


def test_atomic_file_replaces_or_leaves_alone(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / "out.bin"
    with atomic.atomic_file(target) as handle:
        handle.write(b"first")
    assert target.read_bytes() == b"first"
    assert oct(target.stat().st_mode & 0o777) != oct(0o600), "the file gets normal permissions"
    with pytest.raises(RuntimeError), atomic.atomic_file(target) as handle:
        handle.write(b"half-writ")
        raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"first", "a failed write leaves the old file"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"], "no temporary left behind"


def test_atomic_directory(tmp_path: Path) -> None:
    target = tmp_path / "tree"
    with atomic.atomic_directory(target) as temporary:
        (temporary / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(ValueError), atomic.atomic_directory(target) as temporary:
        (temporary / "b.txt").write_text("two")
        raise ValueError("crash")
    assert sorted(os.listdir(target)) == ["a.txt"]
    with atomic.atomic_directory(target, replace_if=lambda path: (path / "a.txt").exists()) as temporary:
        (temporary / "c.txt").write_text("three")
    assert sorted(os.listdir(target)) == ["c.txt"], "the new tree replaces the old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


class _Magic(formats.Format):
    name = "test-magic"
    extensions: ClassVar[tuple[str, ...]] = (".tm",)
    magic: ClassVar[tuple[bytes, ...]] = (b"TMAGIC",)

    def read(self, path: Path, **options: Any) -> Dataset:
        return Dataset(np.frombuffer(path.read_bytes()[6:], np.uint8), name="magic")

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        with atomic.atomic_file(path) as handle:
            handle.write(b"TMAGIC" + np.asarray(dataset.data, np.uint8).tobytes())
        return path

    def problems(self, dataset: Dataset) -> list[str]:
        return ["masks cannot be stored"] if dataset.masks else []


class _ByExtension(_Magic):
    name = "test-ext"
    extensions: ClassVar[tuple[str, ...]] = (".te", ".long.te")
    magic: ClassVar[tuple[bytes, ...]] = ()


@pytest.fixture
def test_formats():
    formats.list_formats()
    formats.register_format(_Magic)
    formats.register_format(_ByExtension)
    yield
    formats._registry.pop("test-magic")
    formats._registry.pop("test-ext")


@pytest.mark.usefixtures("test_formats")
def test_registry_detects_by_magic_then_extension(tmp_path: Path) -> None:
    path = sciz.save(Dataset(np.arange(4, dtype=np.uint8)), tmp_path / "x.tm")
    misnamed = path.rename(tmp_path / "x.te")
    assert formats.detect_format(misnamed).name == "test-magic", "magic bytes win over the extension"
    other = tmp_path / "y.long.te"
    other.write_bytes(b"\0\1\2")
    assert formats.detect_format(other).name == "test-ext"
    loaded = sciz.load(misnamed)
    assert np.array_equal(loaded.data, np.arange(4)) and loaded.source == str(misnamed)
    assert formats.get_format("TM").name == "test-magic"
    with pytest.raises(errors.FormatError, match="cannot hold this dataset: masks"):
        sciz.save(Dataset(np.zeros(2, np.uint8), masks={"m": np.zeros(2, bool)}), tmp_path / "z.tm")
    with pytest.raises(errors.UnknownFormatError, match="cannot tell the format"):
        sciz.save(Dataset(np.zeros(2)), tmp_path / "z.unknown")
    unknown = tmp_path / "q.bin"
    unknown.write_bytes(b"????")
    with pytest.raises(errors.UnknownFormatError, match="not a file format sciz recognises"):
        sciz.load(unknown)
    with pytest.raises(FileNotFoundError):
        sciz.load(tmp_path / "missing.tm")
    with pytest.raises(errors.UnknownFormatError, match="known formats"):
        formats.get_format("nosuch")


def test_errors_subclass_builtins() -> None:
    assert issubclass(errors.FormatError, OSError) and issubclass(errors.FormatError, ValueError)
    assert issubclass(errors.MissingDependencyError, ImportError)
    error = errors.argument_error("level", 99, "must be 0-12")
    assert isinstance(error, ValueError) and "level=99" in str(error) and "0-12" in str(error)
    with pytest.raises(errors.MissingDependencyError, match=r"pip install 'sciz\[nosuch\]'"):
        formats.require("no_such_module_xyz", "nosuch")


def test_import_sciz_is_light() -> None:
    import subprocess
    import sys

    heavy = ("imagecodecs", "h5py", "zarr", "scipy", "dask", "tifffile", "matplotlib")
    code = f"import sys, sciz; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
