"""The streaming NPZ writer (parallel deflate blocks, stored members, ZIP64) and the npz/npy registry formats."""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import sciz
from sciz.errors import ArgumentError, FormatError
from sciz.formats import _deflate, _zip
from sciz.formats._deflate import STORED, DeflatePlan, choose_plan
from sciz.formats._zip import ZipStreamWriter
from sciz.formats.npz import read_npz, write_npz
from sciz.heightmap import export_to_npz
from sciz.model import Axis, Dataset


def smooth_noisy(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).sum(axis=0).astype(np.float32)
    return (np.sin(grid / 50.0) + 0.01 * rng.standard_normal(shape)).astype(np.float32)


def members(path: Path | str) -> dict[str, zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # every CRC checks out
        return {info.filename: info for info in archive.infolist()}


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_blocks_make_one_valid_deflate_stream(tmp_path: Path, threads: int) -> None:
    array = smooth_noisy((700, 900))  # 2.5 MB: several blocks per member
    path = write_npz(tmp_path / "a.npz", {"field": array}, threads=threads)
    info = members(path)["field.npy"]
    assert info.compress_type == zipfile.ZIP_DEFLATED and info.compress_size < info.file_size
    with np.load(path, allow_pickle=False) as loaded:
        assert np.array_equal(loaded["field"], array)


def test_zlib_blocks_are_primed_so_size_stays_close_to_one_stream(tmp_path: Path) -> None:
    array = np.tile(np.arange(5000, dtype=np.int16), 400)  # repeats across block boundaries
    path = write_npz(tmp_path / "a.npz", {"x": array}, threads=2)  # redundant: zlib-ng, primed blocks
    info = members(path)["x.npy"]
    raw = io.BytesIO()
    with ZipStreamWriter(raw, threads=2) as archive:
        view = memoryview(array).cast("B")
        blocks = [view[i : i + 100_000] for i in range(0, len(view), 100_000)]
        archive.write_member("x", blocks, len(view), DeflatePlan("zlib-ng", 7))
    with zipfile.ZipFile(raw) as archive:
        assert archive.read("x") == array.tobytes()
        explicit = archive.getinfo("x").compress_size
    ours = max(info.compress_size, explicit)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=array)
    with zipfile.ZipFile(buffer) as archive:
        numpys = archive.getinfo("x.npy").compress_size
    assert ours <= numpys * 1.02


def test_incompressible_members_are_stored_and_tiny_or_smooth_ones_deflated(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    entries = {
        "noise": rng.integers(0, 256, 1 << 20, dtype=np.uint8),
        "zeros": np.zeros(1 << 20, dtype=np.float64),
        "field": smooth_noisy((512, 512)),
    }
    path = write_npz(tmp_path / "a.npz", entries)
    found = members(path)
    assert found["noise.npy"].compress_type == zipfile.ZIP_STORED
    assert found["zeros.npy"].compress_type == zipfile.ZIP_DEFLATED
    assert found["zeros.npy"].compress_size < 20_000
    assert found["field.npy"].compress_type == zipfile.ZIP_DEFLATED
    loaded = read_npz(path).entries
    for key, value in entries.items():
        assert np.array_equal(loaded[key], value)


def test_choose_plan_prefers_fast_settings_only_when_they_keep_the_size() -> None:
    rng = np.random.default_rng(0)
    assert choose_plan([rng.integers(0, 256, 200_000, dtype=np.uint8)], 200_000, 2) == STORED
    noisy_float = smooth_noisy((256, 256)).tobytes()
    plan = choose_plan([noisy_float], len(noisy_float), 2)
    sample_size = _deflate.deflated_size([noisy_float], plan)
    level6 = _deflate.deflated_size([noisy_float], None)
    assert not plan.stored and sample_size <= level6 * (1 + _deflate.SIZE_TOLERANCE)
    assert choose_plan([b"tiny"], 4, 2) == DeflatePlan("zlib-ng", 6)
    # libdeflate compresses a member in one call: never for members too big for that.
    assert choose_plan([noisy_float], _deflate.WHOLE_LIMIT + 1, 2).engine != "libdeflate"


@pytest.mark.parametrize("plan", [DeflatePlan("isal", 1), DeflatePlan("isal", 2), DeflatePlan("zlib-ng", 7)])
def test_every_engine_joins_blocks_into_one_stream_close_to_numpys_size(plan: DeflatePlan, shared_data: Path) -> None:
    field = np.load(shared_data / "fields" / "ccsm_trefht_1890-1999.npy", allow_pickle=False)
    raw = io.BytesIO()
    with ZipStreamWriter(raw, threads=2) as archive:
        view = memoryview(field.tobytes())
        blocks = [view[i : i + 300_000] for i in range(0, len(view), 300_000)]
        info = archive.write_member("f", blocks, len(view), plan)
    with zipfile.ZipFile(raw) as archive:
        assert archive.read("f") == field.tobytes()
    reference = len(zlib.compress(field.tobytes(), 6))
    assert info.compressed_size <= reference * 1.07  # isal's level 1 is the loosest, measured +4 %


def test_whole_member_libdeflate_plan_is_one_standard_stream(tmp_path: Path) -> None:
    array = smooth_noisy((300, 400))
    raw = io.BytesIO()
    with ZipStreamWriter(raw, threads=2) as archive:
        archive.write_member(
            "a", [b"head", memoryview(array).cast("B")], 4 + array.nbytes, DeflatePlan("libdeflate", 6)
        )
    with zipfile.ZipFile(raw) as archive:
        assert archive.read("a") == b"head" + array.tobytes()


def test_explicit_levels_and_uncompressed(tmp_path: Path) -> None:
    array = smooth_noisy((200, 300))
    stored = members(write_npz(tmp_path / "s.npz", {"a": array}, compress=False))["a.npy"]
    assert stored.compress_type == zipfile.ZIP_STORED and stored.compress_size == stored.file_size
    fast = members(write_npz(tmp_path / "f.npz", {"a": array}, level=1))["a.npy"]
    best = members(write_npz(tmp_path / "b.npz", {"a": array}, level=9))["a.npy"]
    assert fast.compress_type == best.compress_type == zipfile.ZIP_DEFLATED
    assert members(write_npz(tmp_path / "z.npz", {"a": array}, level=0))["a.npy"].compress_type == 0
    for level in (-1, 10, 2.5, True):
        with pytest.raises(ArgumentError, match="level"):
            write_npz(tmp_path / "x.npz", {"a": array}, level=level)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="threads"):
        write_npz(tmp_path / "x.npz", {"a": array}, threads=0)


def test_forced_zip64_records_read_back(tmp_path: Path) -> None:
    array = smooth_noisy((100, 100))
    path = write_npz(tmp_path / "z64.npz", {"a": array, "b": 1.5}, force_zip64=True)
    raw = Path(path).read_bytes()
    assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw  # zip64 end record and locator
    loaded = read_npz(path).entries
    assert np.array_equal(loaded["a"], array) and loaded["b"] == 1.5


def test_zip64_offsets_and_sizes_when_past_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lower the limit so small members exercise the code paths of files over 2 GiB.
    monkeypatch.setattr(_zip, "ZIP64_LIMIT", 1000)
    entries = {f"m{i}": smooth_noisy((40, 40), seed=i) for i in range(4)}
    path = write_npz(tmp_path / "big.npz", entries)
    found = members(path)
    assert max(info.header_offset for info in found.values()) > 1000
    with np.load(path, allow_pickle=False) as loaded:
        for key, value in entries.items():
            assert np.array_equal(loaded[key], value)


def test_writer_rejects_duplicates_and_size_mismatch() -> None:
    with ZipStreamWriter(io.BytesIO(), threads=1) as archive:
        archive.write_bytes("a", b"x")
        with pytest.raises(ArgumentError, match="only once"):
            archive.write_bytes("a", b"y")
        with pytest.raises(ValueError, match="announced"):
            archive.write_member("b", [b"abc"], 5, DeflatePlan("zlib-ng", 6))


def test_non_ascii_member_names_and_empty_archives(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "u.npz", {"höhe": np.arange(3)})
    assert "höhe.npy" in members(path)
    assert np.array_equal(read_npz(path).entries["höhe"], np.arange(3))
    empty = write_npz(tmp_path / "e.npz", {})
    assert read_npz(empty).entries == {}


def test_lazy_dask_arrays_are_streamed(tmp_path: Path) -> None:
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(smooth_noisy((300, 200)), chunks=(64, 200))
    path = write_npz(tmp_path / "d.npz", {"lazy": lazy})
    assert np.array_equal(read_npz(path).entries["lazy"], lazy.compute())


def test_npz_format_keeps_the_whole_dataset(tmp_path: Path) -> None:
    data = smooth_noisy((3, 40, 50))
    dataset = Dataset(
        data,
        axes=[Axis("time", "s", 0.5), Axis("y", "nm", 2.0, 10.0), Axis("x", "nm", 2.0, -4.0, navigate=False)],
        layers={"raw": data * 2, "step_1": data[:, ::2, ::2].copy()},
        masks={"above": data > 0},
        metadata={"units": "nm", "nested": {"when": None, "pair": (1, 2.5)}},
        name="stack",
    )
    dataset.add_provenance("synthetic", {"seed": 0})
    path = sciz.save(dataset, tmp_path / "d.npz")
    back = sciz.load(path)
    assert np.array_equal(back.data, data) and back.axes == dataset.axes and back.name == "stack"
    assert back.metadata == dataset.metadata and back.provenance == dataset.provenance
    assert set(back.layers) == {"raw", "step_1"} and np.array_equal(back.layers["step_1"], data[:, ::2, ::2])
    assert np.array_equal(back.masks["above"], data > 0)
    assert back.storage["data"].codec == "deflate" and back.storage["masks/above"].stored_bytes > 0
    with np.load(path, allow_pickle=False) as plain:
        assert {"data", "layers/raw", "masks/above", "metadata"} <= set(plain.files)


def test_npz_format_reads_seed_style_dicts_as_datasets(tmp_path: Path) -> None:
    heights = smooth_noisy((30, 40))
    path = export_to_npz(
        {"height_map": heights, "x_length": 4.0, "y_length": 3.0, "units": "mm", "flag": np.zeros((30, 40), bool)},
        tmp_path / "seed.npz",
    )
    dataset = sciz.load(path)
    assert np.array_equal(dataset.data, heights)
    assert dataset.axes[1].scale == pytest.approx(0.1) and dataset.axes[0].units == "mm"
    assert dataset.metadata == {"x_length": 4.0, "y_length": 3.0, "units": "mm"}
    assert "flag" in dataset.layers
    assert sciz.formats.detect_format(path).name == "npz"


def test_npz_format_problems_and_options(tmp_path: Path) -> None:
    dataset = Dataset(np.zeros(3), metadata={"bad": object()})
    problems = sciz.formats.get_format("npz").problems(dataset)
    assert problems and "metadata" in problems[0]
    with pytest.raises(FormatError, match="cannot hold"):
        sciz.save(dataset, tmp_path / "x.npz")
    with pytest.raises(ArgumentError, match="compress, level, threads"):
        sciz.save(Dataset(np.zeros(3)), tmp_path / "x.npz", colour="red")


def test_npy_format_round_trip_and_problems(tmp_path: Path, shared_data: Path) -> None:
    field = np.load(shared_data / "fields" / "echam5_temperature_3d.npy", allow_pickle=False)
    path = sciz.save(Dataset(field), tmp_path / "f.npy")
    back = sciz.load(path, mmap=True)
    assert isinstance(back.data, np.memmap) and np.array_equal(back.data, field)
    assert back.storage["data"].stored_bytes == field.nbytes
    problems = sciz.formats.get_format("npy").problems(Dataset(field, metadata={"units": "K"}, layers={"a": field}))
    assert any("metadata" in p for p in problems) and any("layers" in p for p in problems)


def test_deflate_stream_is_standard(tmp_path: Path) -> None:
    # An independent inflater (zlib, raw) decodes the member bytes exactly.
    array = smooth_noisy((300, 400))
    path = write_npz(tmp_path / "a.npz", {"a": array}, threads=2)
    info = members(path)["a.npy"]
    raw = Path(path).read_bytes()
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    inflater = zlib.decompressobj(-15)
    content = inflater.decompress(raw[start : start + info.compress_size])
    assert inflater.eof and not inflater.unused_data
    assert content[-array.nbytes :] == array.tobytes()


def test_keys_that_are_no_safe_member_names_are_escaped_and_round_trip(tmp_path: Path) -> None:
    keys = ["..", "../up", "/abs", "a\\b", "c:d", "50%", "x/./y", "plain/nested"]
    entries = {key: np.arange(i + 1) for i, key in enumerate(keys)}
    path = write_npz(tmp_path / "k.npz", entries)
    names = set(members(path))
    assert all(_zip.zip_name_problem(name) is None for name in names)
    assert "plain/nested.npy" in names and "50%25.npy" in names  # safe keys keep their names
    loaded = read_npz(path).entries
    assert set(loaded) == set(keys)
    for key, value in entries.items():
        assert np.array_equal(loaded[key], value)


def test_whole_member_falls_back_to_blocks_when_the_sample_misjudged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_zip, "compress_whole", lambda data, level, capacity: None)
    array = smooth_noisy((300, 400))
    raw = io.BytesIO()
    with ZipStreamWriter(raw, threads=2) as archive:
        archive.write_member(
            "a", [b"head", memoryview(array).cast("B")], 4 + array.nbytes, DeflatePlan("libdeflate", 6)
        )
    with zipfile.ZipFile(raw) as archive:
        assert archive.read("a") == b"head" + array.tobytes()
        assert archive.getinfo("a").compress_size < array.nbytes
