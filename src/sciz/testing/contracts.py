"""The codec contract: one test class that checks every codec of the table the same way.

:class:`CodecTests` holds the tests; a subclass says which codec they run against, as zarr's
``StoreTests`` do for stores. The settings each test uses are derived from the codec's row in
:mod:`sciz.codecs.registry` (its dtypes and bounds), not kept by hand, so a new row is tested the
moment it exists. A third-party codec gets the same suite::

    from sciz.testing import CodecTests

    class TestMyCodec(CodecTests):
        codec = "mycodec"

sciz's own tests run it over every name of :func:`sciz.codecs.list_codecs` by overriding the
``codec_name`` fixture with a parametrised one (``tests/codec_tests/test_contract.py``).
"""

from __future__ import annotations

import inspect
import json
import mmap
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from ..codecs.registry import CodecSpec, codec_class, list_codecs, spec, spec_for_method
from ..errors import CodecError
from .arrays import (
    SHAPES,
    assert_nonfinite_exact,
    has_nonfinite,
    max_error,
    psnr,
    sample_array,
    with_nonfinite,
)
from .fresh import FreshRead, read_in_fresh_process, sciz_root

__all__ = ["BOUND_SETTINGS", "CodecTests", "Setting", "check_restored", "codec_settings", "engine_available"]

#: How each bound of a table row is asked for: the first spelling whose keywords the codec's
#: constructor takes is used ({} means the codec's defaults, which must then give that bound).
BOUND_SETTINGS: dict[str, tuple[dict[str, Any], ...]] = {
    "tolerance": ({"tolerance": 1e-3},),
    "lossless": ({"tolerance": 0.0}, {}),
    "rate": ({"rate": 16.0}, {"mode": "rate", "quality": 12.0}),
    "precision": ({"precision": 24},),
    "psnr": ({"mode": "psnr", "quality": 90.0},),
}
#: The absolute error bound each kind of setting promises (None: no element-wise bound).
PROMISED_TOLERANCE: dict[str, float | None] = {"tolerance": 1e-3, "lossless": 0.0}
#: h5py's names of HDF5's built-in filters, by id.
_BUILTIN_FILTERS = {"gzip": 1, "szip": 4, "lzf": 32000}
#: Shape of the arrays written to files for the fresh-process checks.
_FILE_SHAPE = (6, 20, 17)


@dataclass(frozen=True)
class Setting:
    """One way of using a codec, derived from one bound of its table row."""

    bound: str
    params: dict[str, Any]
    codec: Any
    #: The row's dtypes this setting accepts.
    dtypes: tuple[str, ...]

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params.items()) or "defaults"
        return f"{self.codec.name}({shown})"

    @property
    def file_dtype(self) -> str:
        """The dtype used for files: float32 where accepted (the common case), else the first."""
        return next((d for d in ("f4", "f8") if d in self.dtypes), self.dtypes[0])


def engine_available(row: CodecSpec) -> bool:
    """Whether the codec's engine is installed (``sciz.codecs.<ENGINE>.available``; True without one)."""
    import sciz.codecs

    constants = getattr(sciz.codecs, row.engine, None) if row.engine else None
    return True if constants is None else bool(constants.available)


def codec_settings(name: str) -> list[Setting]:
    """One setting per bound of the codec's row, in the row's order (the first is its primary use)."""
    row, cls = spec(name), codec_class(name)
    accepted = set(inspect.signature(cls).parameters)
    settings = []
    for bound in row.bounds:
        spellings = [p for p in BOUND_SETTINGS.get(bound, ()) if set(p) <= accepted]
        if not spellings:
            continue
        codec = cls(**spellings[0])
        dtypes = tuple(d for d in row.dtypes if _accepts(codec, d, row))
        settings.append(Setting(bound, dict(spellings[0]), codec, dtypes))
    return settings


def _accepts(codec: Any, dtype: str, row: CodecSpec) -> bool:
    check = getattr(codec, "check_array", None)
    if check is None:
        return True
    try:
        check(np.zeros(2, dtype))
    except row.error:
        return False
    return True


def check_restored(setting: Setting, original: np.ndarray, restored: Any, where: str) -> None:
    """``restored`` keeps what ``setting`` promises for ``original``: shape, dtype, bound, NaN/Inf, PSNR."""
    restored = np.asarray(restored)
    assert restored.shape == original.shape, f"{where}: shape {restored.shape}, expected {original.shape}"
    assert restored.dtype == original.dtype, f"{where}: dtype {restored.dtype}, expected {original.dtype}"
    tolerance = setting.codec.tolerance
    if tolerance == 0.0:
        assert restored.tobytes() == original.tobytes(), f"{where}: a lossless setting changed bits"
        return
    assert_nonfinite_exact(original, restored, where)
    if tolerance is not None:
        error = max_error(original, restored)
        assert error <= tolerance, f"{where}: error {error!r} exceeds the tolerance {tolerance!r}"
        return
    if original.dtype.kind == "f":
        finite = np.isfinite(original)
        assert np.isfinite(restored[finite]).all(), f"{where}: finite values came back as NaN/Inf"
    if setting.bound == "psnr":
        quality = float(setting.params["quality"])
        achieved = psnr(original, restored)
        assert achieved >= quality - 1.0, f"{where}: PSNR {achieved:.2f} dB, asked for {quality} dB"


def _bytes(encoded: Any) -> bytes:
    return encoded.tobytes() if isinstance(encoded, np.ndarray) else bytes(encoded)


def _seed(name: str, kind: str) -> Any:
    import sciz.codecs

    return getattr(sciz.codecs, f"{name}_{kind}")


class CodecTests:
    """The tests every codec passes. Set ``codec`` (a registry name) or override the ``codec_name`` fixture.

    Transforms (no stream method) get the subset that applies to an array-to-array codec; for a
    codec whose engine is not installed, test_row_and_class_agree checks that using it raises its
    error with the reason, and the other tests are skipped.
    """

    #: The registry name of the codec under test.
    codec: ClassVar[str | None] = None
    #: Folder of golden streams (``<case>.scz`` beside ``<case>.expected.npy``); None skips that test.
    golden_dir: ClassVar[Path | None] = None
    #: Checks known to fail today, ``{test name: {codec name: reason}}``: run as strict xfails, so
    #: the suite says when a fix lands.
    known_failures: ClassVar[Mapping[str, Mapping[str, str]]] = {}

    # ----- fixtures -------------------------------------------------------------------------------
    @pytest.fixture
    def codec_name(self) -> str:
        if self.codec is None:
            pytest.fail(f"{type(self).__name__}: set the class attribute 'codec' or override the codec_name fixture")
        return self.codec

    @pytest.fixture
    def row(self, codec_name: str) -> CodecSpec:
        return spec(codec_name)

    @pytest.fixture(autouse=True)
    def _known_failure(self, request: pytest.FixtureRequest, codec_name: str) -> None:
        reason = self.known_failures.get(request.node.originalname, {}).get(codec_name)
        if reason:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))

    @pytest.fixture
    def settings(self, codec_name: str, row: CodecSpec) -> list[Setting]:
        if not engine_available(row):
            pytest.skip(f"{codec_name}: its engine is not installed (sciz.codecs.{row.engine}.available is False)")
        return codec_settings(codec_name)

    def golden_case(self, case: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The original array and codec parameters of golden stream ``case``, if known (override to check the bound)."""
        return None

    @staticmethod
    def needs_stream(row: CodecSpec) -> None:
        if row.method is None:
            pytest.skip(f"{row.name} is a transform or pass-through: it writes no sciz stream")

    # ----- the table and the class ----------------------------------------------------------------
    def test_row_and_class_agree(self, codec_name: str, row: CodecSpec) -> None:
        """The class is the row's, every bound and dtype of the row is usable; a missing engine is explained."""
        cls = codec_class(codec_name)
        assert cls.name == codec_name, f"{cls.__name__}.name is {cls.name!r}, its table row says {codec_name!r}"
        assert issubclass(row.error, CodecError) and issubclass(row.error, ValueError)
        if row.method is not None:
            owner = spec_for_method(row.method)
            assert owner is not None and owner.name == codec_name, f"stream method {row.method} is not {codec_name}'s"
            assert callable(_seed(codec_name, "encode")) and callable(_seed(codec_name, "decode"))
        if not engine_available(row):
            self._check_unavailable_is_explained(codec_name, row)
            return
        settings = codec_settings(codec_name)
        missing = [b for b in row.bounds if b not in {s.bound for s in settings}]
        assert not missing, (
            f"{codec_name} offers bounds {missing} but takes none of their spellings {BOUND_SETTINGS}; "
            f"its parameters are {list(inspect.signature(cls).parameters)}"
        )
        for setting in settings:
            promised = PROMISED_TOLERANCE.get(setting.bound)
            assert setting.codec.tolerance == promised, (
                f"{setting.label}: tolerance is {setting.codec.tolerance!r}, a {setting.bound!r} setting promises "
                f"{promised!r}"
            )
            assert setting.codec.lossless == (promised == 0.0), f"{setting.label}: lossless is wrong"
        unused = [d for d in row.dtypes if not any(d in s.dtypes for s in settings)]
        assert not unused, f"{codec_name}: the table lists dtypes {unused} that no setting accepts"

    @staticmethod
    def _check_unavailable_is_explained(codec_name: str, row: CodecSpec) -> None:
        import sciz.codecs

        with pytest.raises(row.error) as raised:
            sciz.codecs.get(codec_name)
        explanation = str(raised.value)
        assert codec_name.lower() in explanation.lower() and len(explanation) > 60, (
            f"{codec_name}: {explanation!r} does not explain what is missing"
        )
        decode = getattr(sciz.codecs, f"{codec_name}_decode", None)
        if decode is not None:
            with pytest.raises(row.error, match="(?i)" + codec_name):
                decode(b"\0" * 16)

    # ----- round trips ------------------------------------------------------------------------------
    @pytest.mark.parametrize("ndim", sorted(SHAPES))
    def test_round_trip(self, row: CodecSpec, settings: list[Setting], ndim: int) -> None:
        for setting in settings:
            for dtype in setting.dtypes:
                kinds = ["smooth", "random", "constant"] + (["nonfinite"] if dtype[0] == "f" else [])
                for kind in kinds:
                    data = sample_array(kind, SHAPES[ndim], dtype, seed=ndim)
                    if kind == "smooth":
                        data = with_nonfinite(data)
                    where = f"{setting.label} on {kind} {data.dtype} {data.shape}"
                    if ndim == 0 and row.method is None:
                        with pytest.raises(row.error, match="data"):
                            setting.codec.encode(data)  # a transform works along an axis
                        continue
                    check_restored(setting, data, setting.codec.decode(setting.codec.encode(data)), where)

    def test_empty_arrays(self, settings: list[Setting]) -> None:
        for setting in settings:
            for shape in [(0,), (3, 0, 5), (0, 4)]:
                data = np.zeros(shape, setting.dtypes[-1])
                restored = setting.codec.decode(setting.codec.encode(data))
                assert restored.shape == shape and restored.dtype == data.dtype, f"{setting.label} on {shape}"

    def test_any_memory_layout(self, settings: list[Setting]) -> None:
        for setting in settings:
            for dtype in setting.dtypes:
                base = with_nonfinite(sample_array("smooth", (20, 30), dtype))
                readonly = base.copy()
                readonly.flags.writeable = False
                layouts = {
                    "big-endian": base.astype(base.dtype.newbyteorder(">")),
                    "strided": base[::2, ::3],
                    "Fortran-ordered": np.asfortranarray(base),
                    "read-only": readonly,
                }
                for layout, data in layouts.items():
                    restored = setting.codec.decode(setting.codec.encode(data))
                    check_restored(setting, data, restored, f"{setting.label} on {layout} {data.dtype}")

    # ----- configuration, golden streams, inputs and outputs ----------------------------------------
    def test_config_round_trips_through_json(self, codec_name: str, settings: list[Setting]) -> None:
        import sciz.codecs

        for setting in settings:
            codec = setting.codec
            config = codec.get_config()
            assert config["id"] == codec_name, f"{setting.label}: config id {config['id']!r}"
            rebuilt = sciz.codecs.from_config(json.loads(json.dumps(config)))
            assert rebuilt == codec and hash(rebuilt) == hash(codec), f"{setting.label}: {rebuilt!r} != {codec!r}"
            assert repr(rebuilt) == repr(codec)
            assert sciz.codecs.get(f"sciz_{codec_name}", **setting.params) == codec, "the numcodecs-style id works"
            data = with_nonfinite(sample_array("smooth", (20, 30), setting.file_dtype))
            assert _bytes(rebuilt.encode(data)) == _bytes(codec.encode(data)), (
                f"{setting.label}: same config, same output"
            )

    def test_golden_streams(self, codec_name: str, row: CodecSpec, settings: list[Setting]) -> None:
        self.needs_stream(row)
        if self.golden_dir is None:
            pytest.skip("no golden_dir set")
        import sciz.codecs

        from ..codecs._stream import peek_codec

        cases = [p for p in sorted(self.golden_dir.glob("*.scz")) if peek_codec(p.read_bytes()) == codec_name]
        assert cases, f"no golden stream of {codec_name} in {self.golden_dir}: add one (make_golden.py)"
        for path in cases:
            stream = path.read_bytes()
            expected = np.load(path.with_name(path.stem + ".expected.npy"), allow_pickle=False)
            assert _seed(codec_name, "check")(stream) is True, f"{path.name}: {codec_name}_check says no"
            for how, decoded in [("seed", _seed(codec_name, "decode")(stream)), ("any", sciz.codecs.decode(stream))]:
                assert decoded.dtype == expected.dtype and decoded.shape == expected.shape, f"{path.name} ({how})"
                assert decoded.tobytes() == expected.tobytes(), f"{path.name} ({how}) decodes differently than before"
            case = self.golden_case(path.stem)
            if case is not None:
                original, params = case
                tolerance = sciz.codecs.get(codec_name, **params).tolerance
                if tolerance is not None:
                    assert max_error(original, expected) <= tolerance, f"{path.name}: bound broken"
                assert_nonfinite_exact(original, expected, path.name)

    def test_check_and_input_buffers(self, codec_name: str, row: CodecSpec, settings: list[Setting]) -> None:
        self.needs_stream(row)
        setting = settings[0]
        data = with_nonfinite(sample_array("smooth", (20, 30), setting.file_dtype))
        stream = bytes(_seed(codec_name, "encode")(data, **setting.params))
        check = _seed(codec_name, "check")
        assert check(stream) is True and check(stream[:-1]) is False and check(b"garbage bytes") is False
        others = [n for n in list_codecs() if n != codec_name and spec(n).method is not None]
        for other in others:
            assert _seed(other, "check")(stream) is False, f"{other}_check takes a {codec_name} stream"
        decode = _seed(codec_name, "decode")
        reference = decode(stream)
        with mmap.mmap(-1, len(stream)) as mapped:
            mapped.write(stream)
            inputs = {"bytearray": bytearray(stream), "memoryview": memoryview(stream), "mmap": mapped}
            for form, buffer in inputs.items():
                assert decode(buffer).tobytes() == reference.tobytes(), f"decoding from a {form}"
        if others:
            with pytest.raises(CodecError, match=f"sciz {codec_name} stream"):
                _seed(others[0], "decode")(stream)

    def test_out_buffers(self, codec_name: str, row: CodecSpec, settings: list[Setting]) -> None:
        setting = settings[0]
        data = with_nonfinite(sample_array("smooth", (20, 30), setting.file_dtype))
        codec = setting.codec
        if row.method is None:
            target = np.empty_like(data)
            assert codec.encode(data, out=target) is target and target.tobytes() == codec.encode(data).tobytes()
            with pytest.raises(row.error, match="out"):
                codec.encode(data, out=np.empty((3,), data.dtype))
            return
        import sciz.codecs

        encode, decode = _seed(codec_name, "encode"), _seed(codec_name, "decode")
        stream = bytes(encode(data, **setting.params))
        exact = bytearray(len(stream))
        assert encode(data, **setting.params, out=exact) is exact and bytes(exact) == stream
        assert bytes(encode(data, **setting.params, out=bytearray(len(stream) + 100))) == stream
        for bad in (bytearray(10), b"\0" * len(stream)):
            with pytest.raises(row.error, match="out"):
                encode(data, **setting.params, out=bad)
        reference = decode(stream)
        for isolated in (False, True) if hasattr(os, "fork") else (False,):
            target = np.empty_like(data)
            result = sciz.codecs.decode(stream, out=target, isolated=isolated)
            assert np.shares_memory(result, target) and target.tobytes() == reference.tobytes()
        wrong = [np.empty((10,), data.dtype), np.empty((data.shape[0], 2 * data.shape[1]), data.dtype)[:, ::2]]
        wrong += [np.empty(data.shape, "i1" if data.dtype != np.int8 else "u1")]
        for bad_target in wrong:
            with pytest.raises(row.error, match="out"):
                decode(stream, out=bad_target)

    # ----- files and other processes ------------------------------------------------------------------
    def test_hdf5_filter_matches_the_table(
        self, codec_name: str, row: CodecSpec, settings: list[Setting], tmp_path: Path
    ) -> None:
        from ..hspy import file_writer

        for index, setting in enumerate(settings):
            data = sample_array("smooth", _FILE_SHAPE, setting.file_dtype)
            if row.hdf5_filter_id is None:
                assert setting.codec.hdf5_filter(data) is None, f"{setting.label}: a filter the table does not list"
                with pytest.raises(CodecError, match="HDF5 filter"):
                    file_writer(tmp_path / "x.hspy", {"data": data}, compression=setting.codec, show_progressbar=False)
                continue
            try:
                kwargs = setting.codec.hdf5_filter(data)
            except row.error:
                assert index > 0, f"{setting.label}: its primary setting must be storable with its HDF5 filter"
                with pytest.raises(row.error):  # the writer refuses the same way
                    file_writer(tmp_path / "x.hspy", {"data": data}, compression=setting.codec, show_progressbar=False)
                continue
            assert kwargs is not None, f"{setting.label}: the table lists HDF5 filter {row.hdf5_filter_id}"
            compression = kwargs.get("compression")
            assert _BUILTIN_FILTERS.get(compression, compression) == row.hdf5_filter_id, f"{setting.label}: {kwargs}"

    def test_hspy_keeps_nonfinite(
        self, codec_name: str, row: CodecSpec, settings: list[Setting], tmp_path: Path
    ) -> None:
        if row.hdf5_filter_id is None:
            pytest.skip(f"{codec_name} has no HDF5 filter")
        from ..hspy import file_reader, file_writer

        failures = []
        for index, setting in enumerate(settings):
            if setting.file_dtype[0] != "f":
                continue
            finite = sample_array("smooth", _FILE_SHAPE, setting.file_dtype)
            try:
                setting.codec.hdf5_filter(finite)
            except row.error:
                continue  # a setting the filter cannot store at all (test_hdf5_filter_matches_the_table)
            data = with_nonfinite(finite)
            path = tmp_path / f"n{index}.hspy"
            try:
                file_writer(path, {"data": data}, compression=setting.codec, show_progressbar=False)
                check_restored(setting, data, file_reader(path)[0]["data"], f"{setting.label} in hspy")
            except (AssertionError, CodecError) as exc:
                failures.append(f"{setting.label}: {type(exc).__name__}: {exc}")
        assert not failures, "hspy does not keep NaN/Inf:\n" + "\n".join(failures)

    def test_persists_in_a_fresh_process(
        self, codec_name: str, row: CodecSpec, settings: list[Setting], tmp_path: Path
    ) -> None:
        """Encode and write here; decode and read in one fresh interpreter, one forked child per way of reading."""
        self.needs_stream(row)
        plan = _FreshPlan(tmp_path)
        for index, setting in enumerate(settings):
            plan.add_stream(index, setting, hasattr(os, "fork"))
            plan.add_zspy(index, setting)
            if row.hdf5_filter_id is not None:
                plan.add_hspy(index, setting, row)
        reads = read_in_fresh_process(plan.jobs, tmp_path)
        root = sciz_root()
        for read in reads.values():
            plan.check(read, row, root)
        for ours, plain in [("zspy-sciz", "zspy-zarr"), ("hspy-sciz", "hspy-h5py")]:
            for (kind, key), read in reads.items():
                if kind == ours:
                    other = reads[(plain, key)]
                    assert read.value().tobytes() == other.value().tobytes(), f"{read.where} != {other.where}"


@dataclass
class _Expected:
    setting: Setting
    original: np.ndarray
    #: What this process decodes: the fresh one must decode exactly the same (None: not compared).
    reference: np.ndarray | None


class _FreshPlan:
    """The files written for one codec and what reading each in a fresh process must give."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.jobs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.expected: dict[str, _Expected] = {}

    def _data(self, setting: Setting, nonfinite: bool) -> np.ndarray:
        data = sample_array("smooth", _FILE_SHAPE, setting.file_dtype)
        return with_nonfinite(data) if nonfinite else data

    def add_stream(self, index: int, setting: Setting, can_fork: bool) -> None:
        data = self._data(setting, nonfinite=True)
        stream = bytes(setting.codec.encode(data))
        key = f"s{index}-{setting.bound}"
        path = self.folder / f"{key}.scz"
        path.write_bytes(stream)
        self.expected[key] = _Expected(setting, data, setting.codec.decode(stream))
        item = {"key": key, "path": str(path), "codec": setting.codec.name, "config": setting.codec.get_config()}
        for kind in ("seed", "decode", "isolated", "numcodecs") if can_fork else ("seed", "decode", "numcodecs"):
            self.jobs[kind].append(item)

    def add_zspy(self, index: int, setting: Setting) -> None:
        from ..zspy import file_writer

        # The primary setting by name with its parameters, the others as codec objects.
        compressor, params = (setting.codec.name, setting.params) if index == 0 else (setting.codec, {})
        for nonfinite in (False, True):
            data = self._data(setting, nonfinite)
            key = f"z{index}-{setting.bound}-{'nonfinite' if nonfinite else 'finite'}"
            path = self.folder / f"{key}.zspy"
            try:
                file_writer(path, {"data": data}, compressor=compressor, show_progressbar=False, **params)
            except CodecError as exc:
                # A standard codec that cannot keep NaN/Inf may refuse them, saying how to store them.
                if not has_nonfinite(data) or "standard_codec=False" not in str(exc):
                    raise
                file_writer(
                    path, {"data": data}, compressor=compressor, show_progressbar=False, standard_codec=False, **params
                )
            self.expected[key] = _Expected(setting, data, None)
            for kind in ("zspy-sciz", "zspy-zarr"):
                self.jobs[kind].append({"key": key, "path": str(path)})

    def add_hspy(self, index: int, setting: Setting, row: CodecSpec) -> None:
        from ..hspy import file_writer

        data = self._data(setting, nonfinite=False)  # NaN/Inf: test_hspy_keeps_nonfinite
        try:
            setting.codec.hdf5_filter(data)
        except row.error:
            return  # a setting the filter cannot store (test_hdf5_filter_matches_the_table)
        compression, params = (setting.codec.name, setting.params) if index == 0 else (setting.codec, {})
        key = f"h{index}-{setting.bound}"
        path = self.folder / f"{key}.hspy"
        file_writer(path, {"data": data}, compression=compression, show_progressbar=False, **params)
        self.expected[key] = _Expected(setting, data, None)
        for kind in ("hspy-sciz", "hspy-h5py"):
            self.jobs[kind].append({"key": key, "path": str(path)})

    def check(self, read: FreshRead, row: CodecSpec, root: Path) -> None:
        expected = self.expected[read.key]
        array = read.value()
        check_restored(expected.setting, expected.original, array, read.where)
        if expected.reference is not None:
            assert array.tobytes() == expected.reference.tobytes(), f"{read.where}: differs from this process's decode"
        imported = read.report.get("sciz")
        stores_sciz_streams = read.kind != "hspy-h5py" and "sciz" in read.report.get("codecs", ["sciz"])
        if stores_sciz_streams:
            assert imported and Path(imported).resolve().is_relative_to(root), (
                f"{read.where}: used the sciz at {imported}, not the one under test in {root}"
            )
        else:
            assert imported is None, f"{read.where}: a standard codec must be readable without sciz"
        if read.kind == "seed":
            assert read.report.get("check") is True, f"{read.where}: {row.name}_check says no"
        if read.kind == "hspy-h5py":
            assert row.hdf5_filter_id in read.report["filters"], f"{read.where}: filters {read.report['filters']}"
