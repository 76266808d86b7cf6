"""The format contract: one test class that checks every registered file format the same way.

:class:`FormatTests` holds the tests; a subclass names the format, as :class:`CodecTests` does for
codecs. A third-party format registered through the ``sciz.formats`` entry point gets the same suite::

    from sciz.testing import FormatTests

    class TestMyFormat(FormatTests):
        format = "myformat"

What every format promises: a dataset it can hold (the richest of :func:`representative_datasets`
for which :meth:`~sciz.formats.Format.problems` finds nothing) is read back by ``sciz.load`` in a
fresh interpreter with the same data (bit for bit), axes calibration, name and metadata; writing,
overwriting and failing leave nothing beside the target; a writer never replaces what is not a file
of its own format, and its errors are sciz errors naming the target.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from ..errors import FormatError, SciZError
from ..formats import Format, get_format
from ..model import Axis, Dataset
from .fresh import FreshRead, read_in_fresh_process

__all__ = ["FormatTests", "dataset_for", "representative_datasets"]


def representative_datasets(seed: int = 0) -> Iterator[tuple[str, Dataset]]:
    """Datasets from the richest (3-D, calibrated axes, title, nested metadata) to a bare 2-D height map."""
    rng = np.random.default_rng(seed)
    volume = rng.standard_normal((3, 8, 9)).astype(np.float32)
    axes = [Axis("t", "s", 0.5, 1.0), Axis("y", "nm", 2.0, -1.0), Axis("x", "nm", 2.0, 3.0)]
    metadata = {"title": "contract sample", "count": 3, "nested": {"values": [1, 2], "label": "a/b"}}
    yield "calibrated volume", Dataset(volume, axes=axes, metadata=metadata, name="contract sample")
    # AFM stacks (what the OME-TIFF and AFM bundle formats hold): frame times, pixel size, layers.
    from ..stack import ImageStack

    frames = [{"timestamp": 0.5 * i, "line_rate": 10.0} for i in range(3)]
    layers = {"raw": volume * 2, "step_1_flatten": volume + 1}
    yield (
        "afm stack with layers",
        ImageStack(
            volume, 2.0, "height_trace", frames, processed=layers, masks={"step_2_mask": volume > 0}
        ).to_dataset(),
    )
    yield "afm stack", ImageStack(volume, 2.0, "height_trace", frames).to_dataset()
    # (n, 3, 3) float32: a triangle mesh (STL's own kind of data), for other single-array formats a 3-D array.
    yield "triangles", Dataset(rng.standard_normal((4, 3, 3)).astype(np.float32))
    image = rng.standard_normal((8, 9)).astype(np.float32)
    yield "calibrated image", Dataset(image, axes=[Axis("y", "m", 2e-9, 0.0), Axis("x", "m", 2e-9, 0.0)])
    yield "bare volume", Dataset(volume)
    yield "bare image", Dataset(image)


def dataset_for(plugin: Format, seed: int = 0) -> tuple[str, Dataset]:
    """The richest representative dataset ``plugin`` can hold whole (its ``problems`` list is empty)."""
    tried = []
    for label, dataset in representative_datasets(seed):
        problems = plugin.problems(dataset)
        if not problems:
            return label, dataset
        tried.append(f"{label}: {'; '.join(problems)}")
    raise AssertionError(f"format {plugin.name} can hold none of the representative datasets:\n" + "\n".join(tried))


#: Length units a format may convert between (TMD stores millimetres): metres per unit.
_LENGTH_UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "nm": 1e-9, "pm": 1e-12}


def _same_calibration(got: tuple[str, float, float], wrote: tuple[str, float, float]) -> bool:
    """Equal, or the same lengths in another unit (to float32 precision, as formats storing float32 keep them)."""
    if got == wrote:
        return True
    if got[0] not in _LENGTH_UNITS or wrote[0] not in _LENGTH_UNITS:
        return False
    factor = _LENGTH_UNITS[got[0]] / _LENGTH_UNITS[wrote[0]]
    return bool(np.allclose([got[1] * factor, got[2] * factor], wrote[1:], rtol=1e-6, atol=0.0))


def _kept(got: Any, wrote: Any) -> bool:
    """Whether ``got`` holds everything of ``wrote``: equal, or dicts where the format added keys of its own
    (an AFM bundle records its file under ``provenance["bundle"]``)."""
    if isinstance(wrote, dict) and isinstance(got, dict):
        return all(key in got and _kept(got[key], value) for key, value in wrote.items())
    return bool(got == wrote)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class FormatTests:
    """The tests every registered format passes. Set ``format`` or override the ``format_name`` fixture."""

    #: The registry name of the format under test.
    format: ClassVar[str | None] = None
    #: Checks known to fail today, ``{test name: {format name: reason}}``: strict xfails.
    known_failures: ClassVar[Mapping[str, Mapping[str, str]]] = {}

    # ----- fixtures -------------------------------------------------------------------------------
    @pytest.fixture
    def format_name(self) -> str:
        if self.format is None:
            pytest.fail(f"{type(self).__name__}: set the class attribute 'format' or override the format_name fixture")
        return self.format

    @pytest.fixture
    def plugin(self, format_name: str) -> Format:
        return get_format(format_name)

    @pytest.fixture(autouse=True)
    def _known_failure(self, request: pytest.FixtureRequest, format_name: str) -> None:
        reason = self.known_failures.get(request.node.originalname, {}).get(format_name)
        if reason:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))

    @pytest.fixture
    def writable(self, plugin: Format) -> Format:
        if not plugin.can_write:
            pytest.skip(f"sciz reads {plugin.name} files but does not write them")
        return plugin

    @staticmethod
    def target(plugin: Format, folder: Path, stem: str = "sample") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{stem}{plugin.extensions[0]}"

    # ----- the registry row -----------------------------------------------------------------------
    def test_registration(self, plugin: Format, format_name: str) -> None:
        """The plugin has a name, extensions and at least one capability; writing a read-only one is explained."""
        assert plugin.name == format_name
        # A directory format may have no extension (a folder of frames): then its content names it.
        assert plugin.extensions or (plugin.directory and type(plugin).sniff is not Format.sniff)
        assert all(e.startswith(".") for e in plugin.extensions), plugin.extensions
        assert plugin.can_read or plugin.can_write
        if not plugin.can_write:
            with pytest.raises(FormatError, match=plugin.name):
                plugin.write(Dataset(np.zeros((2, 2), np.float32)), Path("never-written"))

    # ----- round trips ----------------------------------------------------------------------------
    def test_round_trip_in_fresh_process(self, writable: Format, tmp_path: Path) -> None:
        """What the format can hold comes back from ``sciz.load`` in a fresh interpreter, an overwrite
        replaces the first write whole, and nothing is left beside either target."""
        if not writable.can_read:
            pytest.skip(f"sciz writes {writable.name} files but does not read them")
        label, dataset = dataset_for(writable)
        target = self.target(writable, tmp_path / "out")
        written = writable.write(dataset, target)
        assert Path(written) == target, f"{writable.name} wrote {written}, asked for {target}"
        assert _listing(target.parent) == [target.name], f"{writable.name} left debris beside {target.name}"
        overwritten = self.target(writable, tmp_path / "overwritten")
        writable.write(dataset_for(writable, seed=1)[1], overwritten)
        _, second = dataset_for(writable, seed=2)
        writable.write(second, overwritten)
        assert _listing(overwritten.parent) == [overwritten.name], f"{writable.name}: debris after an overwrite"
        reads = self._fresh_load(tmp_path, {label: target, "overwritten": overwritten})
        self.check_read_back(writable, dataset, reads[label])
        again = reads["overwritten"]
        assert np.array_equal(again.value(), np.asarray(second.data)), f"{again.where}: not the second write's data"

    def test_never_replaces_what_is_not_its_own(self, writable: Format, tmp_path: Path) -> None:
        """A directory (and for directory formats, a foreign non-empty one) at the target is refused, untouched."""
        target = self.target(writable, tmp_path / "out")
        target.mkdir()
        (target / "notes.txt").write_text("precious", encoding="utf-8")
        with pytest.raises(FormatError) as raised:
            writable.write(dataset_for(writable)[1], target)
        assert target.name in str(raised.value), f"the error does not name the target: {raised.value}"
        assert _listing(target) == ["notes.txt"] and (target / "notes.txt").read_text(encoding="utf-8") == "precious"
        assert _listing(target.parent) == [target.name], f"{writable.name} left debris beside {target.name}"

    def test_unwritable_target_is_a_sciz_error(self, writable: Format, tmp_path: Path) -> None:
        """A target whose folder cannot exist (a file is in the way) is a sciz error naming it; nothing is left."""
        blocker = tmp_path / "blocker"
        blocker.write_bytes(b"a file, not a folder")
        target = blocker / "sub" / f"sample{writable.extensions[0]}"
        with pytest.raises(SciZError) as raised:
            writable.write(dataset_for(writable)[1], target)
        assert "blocker" in str(raised.value), f"the error does not name the target: {raised.value}"
        assert _listing(tmp_path) == ["blocker"]

    # ----- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _fresh_load(workdir: Path, files: dict[str, Path]) -> dict[str, FreshRead]:
        keys = {label: label.replace(" ", "_") for label in files}
        jobs = {"load": [{"key": keys[label], "path": str(path)} for label, path in files.items()]}
        reads = read_in_fresh_process(jobs, workdir, timeout=120)
        return {label: reads[("load", keys[label])] for label in files}

    def check_read_back(self, plugin: Format, dataset: Dataset, read: FreshRead) -> None:
        """Data bit for bit; the detected format; axes calibration, name and metadata where written."""
        restored = read.value()
        original = np.asarray(dataset.data)
        assert read.report["format"] == plugin.name, f"{read.where}: detected as {read.report['format']!r}"
        assert restored.shape == original.shape, f"{read.where}: shape {restored.shape}, wrote {original.shape}"
        assert restored.dtype == original.dtype, f"{read.where}: dtype {restored.dtype}, wrote {original.dtype}"
        assert restored.tobytes() == original.tobytes(), f"{read.where}: the data changed"
        for axis, back in zip(dataset.axes, read.report["axes"], strict=True):
            if axis.units or axis.scale != 1.0 or axis.offset != 0.0:
                got = (back["units"], back["scale"], back["offset"])
                assert _same_calibration(got, (axis.units, axis.scale, axis.offset)), (
                    f"{read.where}: axis {axis.name} came back {got}, wrote {(axis.units, axis.scale, axis.offset)}"
                )
        if dataset.name:
            assert read.report["name"] == dataset.name, f"{read.where}: name {read.report['name']!r}"
        for key, value in dataset.metadata.items():
            assert _kept(read.report["metadata"].get(key), value), f"{read.where}: metadata {key!r} came back changed"
