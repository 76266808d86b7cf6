"""zspy against hostile stores and faults: writes stay inside the target, reads stay inside the store.

Cases that could hang (FIFOs) or read forever (/dev/zero) run in a subprocess with a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sciz
from sciz.errors import FormatError
from sciz.formats import zspy

HOSTILE_KEYS = ["..", ".", ".zattrs", ".zarray", ".zgroup", "zarr.json", "", "~", "~x", "a/b", "..\\..", "x\x00y"]


def signal(data: np.ndarray | None = None, title: str = "scan", **metadata: Any) -> dict[str, Any]:
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) if data is None else data
    return {"data": data, "metadata": {"General": {"title": title}, "Signal": {}, **metadata}}


def store(tmp_path: Path, name: str = "s.zspy", **kwargs: Any) -> Path:
    path = tmp_path / name
    zspy.file_writer(path, signal(), show_progressbar=False, **kwargs)
    return path


def data_dir(path: Path) -> Path:
    return path / "Experiments" / "scan" / "data"


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------
# Writes never escape the target; every key and title round-trips exactly
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["local", "zip"])
def test_hostile_keys_and_titles_stay_inside_and_round_trip_in_a_fresh_process(tmp_path: Path, kind: str) -> None:
    nested = {key: {"value": index, "array": np.arange(index + 1)} for index, key in enumerate(HOSTILE_KEYS)}
    scalars = {key: f"scalar {index}" for index, key in enumerate(HOSTILE_KEYS)}
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    titles = ["../..", "..", ".zattrs", "~", "a\\b"]
    targets = [str(work / f"out-{i}.zspy") for i in range(len(titles))]
    for title, target in zip(titles, targets, strict=True):
        zspy.file_writer(
            target, signal(title=title, Nested=nested, Scalars=scalars), store_type=kind, show_progressbar=False
        )
    assert sorted(str(p) for p in work.iterdir()) == sorted(targets)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    code = f"""
        import json, numpy as np
        from sciz.zspy import file_reader
        out = []
        for target in {targets!r}:
            (back,) = file_reader(target)
            md = back["metadata"]
            out.append({{
                "title": md["General"]["title"],
                "nested": {{k: [v["value"], v["array"].tolist()] for k, v in md["Nested"].items()}},
                "scalars": md["Scalars"],
            }})
        print(json.dumps(out))
    """
    result = run_python(textwrap.dedent(code))
    assert result.returncode == 0, result.stderr
    for title, back in zip(titles, json.loads(result.stdout), strict=True):
        assert back["title"] == title
        assert back["nested"] == {k: [i, list(range(i + 1))] for i, k in enumerate(HOSTILE_KEYS)}
        assert back["scalars"] == scalars


def test_escaped_names_are_plain_children_of_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.zspy"
    zspy.file_writer(path, signal(title="..", Bad={"..": {"x": 1}}), show_progressbar=False)
    experiment = path / "Experiments" / "~.."
    assert (experiment / "metadata" / "Bad" / "~.." / ".zattrs").is_file()
    assert json.loads((experiment / "metadata" / "Bad" / "~.." / ".zattrs").read_text()) == {"x": 1}


# --------------------------------------------------------------------------------------------
# A writer replaces only a zspy store
# --------------------------------------------------------------------------------------------
def test_writer_never_deletes_a_directory_that_is_not_a_zspy_store(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "notes.txt").write_text("precious")
    for write in (
        lambda: zspy.file_writer(project, signal(), show_progressbar=False),
        lambda: zspy.file_writer(project, signal(), store_type="zip", show_progressbar=False),
        lambda: sciz.save(sciz.Dataset(np.zeros((2, 2))), project, format="zspy"),
    ):
        with pytest.raises(FormatError, match="not a zspy store"):
            write()
    assert (project / "notes.txt").read_text() == "precious" and (project / "src").is_dir()
    plain = tmp_path / "plain.txt"
    plain.write_text("keep")
    with pytest.raises(FormatError, match="not a zspy store"):
        zspy.file_writer(plain, signal(), show_progressbar=False)
    assert plain.read_text() == "keep"
    # A zspy store and an empty directory are replaced.
    empty = tmp_path / "empty"
    empty.mkdir()
    zspy.file_writer(empty, signal(), show_progressbar=False)
    zspy.file_writer(empty, signal(np.ones((2, 3, 4), np.float32)), show_progressbar=False)
    assert zspy.file_reader(empty)[0]["data"].sum() == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "plain.txt", "project"]
    foreign = {"notes.txt": b"precious"}
    with pytest.raises(FormatError, match="not a zspy store"):
        zspy.file_writer(foreign, signal(), show_progressbar=False)
    assert foreign == {"notes.txt": b"precious"}


def test_write_failure_is_a_format_error_naming_the_file_and_leaves_no_debris(tmp_path: Path) -> None:
    # A file size limit makes the OS refuse the chunk write (EFBIG), as a full disk would (ENOSPC).
    target = tmp_path / "big.zspy"
    code = f"""
        import resource, signal, numpy as np
        from sciz.errors import FormatError
        from sciz.zspy import file_writer
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        data = np.random.default_rng(0).random((4, 200, 200))
        try:
            file_writer({str(target)!r}, {{"data": data}}, show_progressbar=False, compressor="zstd")
        except FormatError as exc:
            print("FormatError:", exc)
    """
    result = run_python(textwrap.dedent(code))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("FormatError:") and str(target) in result.stdout
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Reads never leave the store
# --------------------------------------------------------------------------------------------
def _chunk(path: Path) -> Path:
    return data_dir(path) / "0" / "0" / "0"


@pytest.mark.parametrize("separator", ["/../", "/../../..", "\\", "..", "-", ""])
def test_dimension_separator_other_than_dot_or_slash_is_refused(tmp_path: Path, separator: str) -> None:
    path = store(tmp_path)
    zarray = data_dir(path) / ".zarray"
    doc = json.loads(zarray.read_text())
    doc["dimension_separator"] = separator or 5
    zarray.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="dimension_separator"):
        zspy.file_reader(path)


@pytest.mark.parametrize("entry", ["chunk", "zattrs", "group", "zgroup"])
def test_symlinks_inside_a_directory_store_are_refused(tmp_path: Path, entry: str) -> None:
    path = store(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(b'{"stolen": true}')
    if entry == "chunk":
        victim, name = _chunk(path), "0/0/0"
        victim.unlink()
        victim.symlink_to(secret)
    elif entry == "zattrs":
        victim, name = path / "Experiments" / "scan" / ".zattrs", ".zattrs"
        victim.unlink()
        victim.symlink_to(secret)
    elif entry == "zgroup":
        victim, name = path / "Experiments" / "scan" / "metadata" / ".zgroup", ".zgroup"
        victim.unlink()
        victim.symlink_to(secret)
    else:
        (outside / "metadata").mkdir()
        (outside / "metadata" / ".zgroup").write_text('{"zarr_format": 2}')
        (outside / "metadata" / ".zattrs").write_text('{"stolen": true}')
        victim, name = path / "Experiments" / "scan" / "metadata", "metadata"
        for child in sorted(victim.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        victim.rmdir()
        victim.symlink_to(outside / "metadata", target_is_directory=True)
    for lazy in (False, True):
        with pytest.raises(FormatError, match=f"{name}.*symbolic link"):
            back = zspy.file_reader(path, lazy=lazy)
            np.asarray(back[0]["data"])


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "device"])
def test_fifo_and_device_entries_are_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    path = store(tmp_path)
    chunk = _chunk(path)
    chunk.unlink()
    if kind == "fifo":
        os.mkfifo(chunk)
    elif kind == "dev-zero-link":
        chunk.symlink_to("/dev/zero")
    else:
        try:
            os.mknod(chunk, 0o600 | __import__("stat").S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
        except PermissionError:
            pytest.skip("creating a device node needs privileges")
    code = f"""
        from sciz.errors import FormatError
        from sciz.zspy import file_reader
        for lazy in (False, True):
            try:
                signals = file_reader({str(path)!r}, lazy=lazy)
                signals[0]["data"][...].sum() if not lazy else signals[0]["data"].sum().compute()
                print("read")
            except FormatError as exc:
                print("FormatError:", exc)
    """
    result = run_python(textwrap.dedent(code), timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("FormatError:") and "0/0/0" in line for line in lines), lines


def test_zip_store_with_traversal_names_is_refused_naming_the_member(tmp_path: Path) -> None:
    """The one checked ZIP reader refuses an archive with a member named outside it (as for NPZ)."""
    path = store(tmp_path, "z.zspy", store_type="zip")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("Experiments/../../evil/.zgroup", '{"zarr_format": 2}')
    with pytest.raises(FormatError, match=r"Experiments/\.\./\.\./evil/\.zgroup.*path component"):
        zspy.file_reader(path)


# --------------------------------------------------------------------------------------------
# Malformed metadata is a clean error, never uninitialised memory
# --------------------------------------------------------------------------------------------
MALFORMED = {
    "zero chunks": {"chunks": [0, 0, 0]},
    "negative chunks": {"chunks": [-1, 48, 48]},
    "float chunks": {"chunks": [1.5, 3, 4]},
    "chunks rank": {"chunks": [2, 3]},
    "negative shape": {"shape": [-2, 3, 4]},
    "shape rank": {"shape": [2, 3]},
    "string shape": {"shape": "abc"},
    "dtype wider than chunks": {"dtype": "<f8"},
    "dtype narrower than chunks": {"dtype": "<f2"},
    "bad dtype": {"dtype": "<q99"},
    "empty dtype": {"dtype": "|V0"},
    "int fill too big": {"dtype": "<f4", "fill_value": "abc"},
    "order": {"order": "Z"},
    "compressor": {"compressor": "blosc"},
    "filters": {"filters": "crc32"},
    "huge": {"shape": [10**7, 10**7, 10**7], "chunks": [10**6, 10**6, 10**6]},
    "too many chunks": {"shape": [10**6, 10**6, 10**3], "chunks": [1, 1, 1]},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_zarray_is_a_clean_format_error(tmp_path: Path, case: str) -> None:
    path = store(tmp_path)
    zarray = data_dir(path) / ".zarray"
    doc = json.loads(zarray.read_text())
    doc.update(MALFORMED[case])
    zarray.write_text(json.dumps(doc))
    with pytest.raises(FormatError) as caught:
        back = zspy.file_reader(path)
        np.asarray(back[0]["data"])
    assert "data" in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("dtype", "fill"), [("|u1", 300), ("<i4", 1.5), ("<i4", "NaN"), ("|b1", 2), ("<f4", True), ("<i2", -40000)]
)
def test_impossible_fill_values_are_refused(tmp_path: Path, dtype: str, fill: Any) -> None:
    path = tmp_path / "s.zspy"
    zspy.file_writer(path, signal(np.zeros((2, 3, 4), dtype)), show_progressbar=False)
    zarray = data_dir(path) / ".zarray"
    doc = json.loads(zarray.read_text())
    doc["fill_value"] = fill
    zarray.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="fill_value"):
        zspy.file_reader(path)


def test_missing_chunks_read_as_the_fill_value(tmp_path: Path) -> None:
    path = store(tmp_path)
    zarray = data_dir(path) / ".zarray"
    doc = json.loads(zarray.read_text())
    doc["fill_value"] = 5.0
    zarray.write_text(json.dumps(doc))
    _chunk(path).unlink()
    assert (zspy.file_reader(path)[0]["data"] == 5.0).all()


# --------------------------------------------------------------------------------------------
# Deep and cyclic trees
# --------------------------------------------------------------------------------------------
def test_deeply_nested_groups_are_a_clean_format_error() -> None:
    memory: dict[str, bytes] = {}
    zspy.file_writer(memory, signal(), show_progressbar=False)
    prefix = "Experiments/scan/metadata"
    for _depth in range(2000):
        prefix += "/g"
        memory[f"{prefix}/.zgroup"] = b'{"zarr_format": 2}'
    with pytest.raises(FormatError, match="nested deeper"):
        zspy.file_reader(memory)


def test_cyclic_directory_store_is_refused(tmp_path: Path) -> None:
    path = store(tmp_path)
    (path / "Experiments" / "scan" / "metadata" / "loop").symlink_to(path / "Experiments", target_is_directory=True)
    with pytest.raises(FormatError, match=r"loop.*symbolic link"):
        zspy.file_reader(path)


# --------------------------------------------------------------------------------------------
# Chunk checksums
# --------------------------------------------------------------------------------------------
def test_damaged_chunk_is_an_error_thanks_to_the_crc32_which_zarr_python_also_checks(tmp_path: Path) -> None:
    import zarr

    data = np.random.default_rng(0).poisson(20, (4, 32, 32)).astype(np.float32)
    path = tmp_path / "c.zspy"
    zspy.file_writer(path, signal(data), show_progressbar=False)
    zarray = json.loads((data_dir(path) / ".zarray").read_text())
    assert zarray["compressor"] == {"id": "crc32"} and zarray["filters"][0]["id"] == "blosc"
    stored = zarr.open_array(zarr.storage.LocalStore(path, read_only=True), path="Experiments/scan/data", mode="r")
    np.testing.assert_array_equal(stored[...], data)  # a standard layout: zarr-python decodes and checks it
    chunk = _chunk(path)
    damaged = bytearray(chunk.read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    chunk.write_bytes(bytes(damaged))
    for lazy in (False, True):
        with pytest.raises(FormatError, match="CRC-32 mismatch") as caught:
            np.asarray(zspy.file_reader(path, lazy=lazy)[0]["data"])
        assert str(path) in str(caught.value)
    plain = tmp_path / "plain.zspy"
    zspy.file_writer(plain, signal(data), show_progressbar=False, checksum=False)
    assert json.loads((data_dir(plain) / ".zarray").read_text())["compressor"]["id"] == "blosc"
    np.testing.assert_array_equal(zspy.file_reader(plain)[0]["data"], data)


def test_a_store_read_across_a_replace_sees_only_the_tree_it_opened(tmp_path: Path) -> None:
    """A DirectoryKV reads the tree it opened while the name is replaced; then it refuses, never mixes."""
    import copy

    from sciz import atomic
    from sciz.formats.hyperspy_zarr import DirectoryKV, load_array, read_tree

    path = tmp_path / "s.zspy"
    shape = (4, 3, 4)
    zspy.file_writer(path, signal(np.zeros(shape, np.float32)), chunks=(1, 3, 4), show_progressbar=False)
    kv = DirectoryKV(path)
    with kv.reading():
        root, _ = read_tree(kv)  # the tree and its metadata come from the first version
        zspy.file_writer(path, signal(np.ones(shape, np.float32)), chunks=(1, 3, 4), show_progressbar=False)
        node = root.children["Experiments"].children["scan"].children["data"]  # type: ignore[union-attr]
        np.testing.assert_array_equal(load_array(node, False), np.zeros(shape), "chunks of another version")  # type: ignore[arg-type]
        assert len(atomic.debris_of(path, include_live=True)) == 1, "the writer deleted the tree under the reader"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zspy"], "the last reader removes the replaced tree"
    with pytest.raises(FormatError, match="replaced while being read"):
        kv.get(".zgroup")  # a later read through the same store: its tree is gone, the name holds another
    kv.close()
    # A store sent to another process (dask workers) checks that the name still holds the tree it opened.
    fresh = DirectoryKV(path)
    assert fresh.get(".zgroup") is not None
    moved = copy.copy(fresh)  # what pickling sends: the path and the identity of the tree
    assert moved.get(".zgroup") is not None
    zspy.file_writer(path, signal(np.ones(shape, np.float32)), show_progressbar=False)
    with pytest.raises(FormatError, match="replaced while being read"):
        copy.copy(fresh).get(".zgroup")
    fresh.close()
    assert zspy.file_reader(path)[0]["data"].sum() == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zspy"]
    link = tmp_path / "link.zspy"  # a root given through a symlink is resolved once, then read the same way
    link.symlink_to(path)
    assert zspy.file_reader(link)[0]["data"].sum() == 48
    # Keeping the stored data (write_dataset=False) links it from the one tree it read, and leaves nothing behind.
    zspy.file_writer(path, signal(np.zeros(shape, np.float32)), write_dataset=False, show_progressbar=False)
    assert zspy.file_reader(path)[0]["data"].sum() == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.zspy", "s.zspy"]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(("fmt", "deepest"), [("zspy", 197), ("zspy-zip", 197), ("hspy", 60), ("npz", None)])
def test_writers_refuse_metadata_nested_deeper_than_their_reader_reads(tmp_path: Path, fmt: str, deepest) -> None:
    # zspy wrote metadata 198-1000 levels deep and hspy 61-1000 levels deep into files their own readers
    # refused; 2000 levels were a raw RecursionError in every writer.
    suffix = sciz.formats.get_format(fmt).extensions[0]
    if deepest is not None:
        back = sciz.load(sciz.save(sciz.Dataset(np.zeros(3), metadata=_nested(deepest)), tmp_path / f"a{suffix}"))
        assert back.metadata["k"] is not None
        with pytest.raises(FormatError, match="levels") as caught:
            sciz.save(sciz.Dataset(np.zeros(3), metadata=_nested(deepest + 1)), tmp_path / f"b{suffix}", format=fmt)
        assert f"b{suffix}" in str(caught.value)
    with pytest.raises(FormatError, match=r"nests too deeply|levels") as caught:
        sciz.save(sciz.Dataset(np.zeros(3), metadata=_nested(2000)), tmp_path / f"c{suffix}", format=fmt)
    assert f"c{suffix}" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([f"a{suffix}"] if deepest is not None else [])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        # zarr's sharding codec divided by the inner chunk shape: a raw ZeroDivisionError
        (
            {
                "codecs": [
                    {
                        "name": "sharding_indexed",
                        "configuration": {
                            "chunk_shape": [0, 4],
                            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                            "index_location": "end",
                        },
                    }
                ]
            },
            "ZeroDivisionError",
        ),
        # unknown key encodings found no chunk and read as all fill values; transformers were ignored
        ({"chunk_key_encoding": {"name": "evil"}}, "chunk_key_encoding 'evil'"),
        ({"storage_transformers": [{"name": "evil"}]}, "storage_transformers"),
    ],
    ids=["sharding inner chunk 0", "unknown key encoding", "storage transformer"],
)
def test_forged_zarr_v3_array_metadata_is_a_clean_error(tmp_path: Path, change: dict[str, Any], problem: str) -> None:
    data = np.arange(12, dtype="f4").reshape(3, 4)
    path = sciz.save(sciz.Dataset(data, name="t"), tmp_path / "x.zspy", zarr_format=3)
    document = path / "Experiments" / "t" / "data" / "zarr.json"
    meta = json.loads(document.read_text())
    meta.update(change)
    document.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match=problem):
        sciz.load(path)


@pytest.mark.parametrize("how", ["inflates past its chunk", "bzip2"])
def test_zip_store_entries_are_bounded_before_inflating(tmp_path: Path, how: str) -> None:
    # zipfile inflated any entry whole: a 1.2 MB store whose 48-byte chunk inflated to 1.2 GB read as
    # 2.4 GB resident before the chunk was found damaged (as bzip2, such an entry is a few kB).
    data = np.arange(12, dtype="f4").reshape(3, 4)
    base = sciz.save(sciz.Dataset(data, name="t"), tmp_path / "base.zspy", format="zspy-zip")
    forged = tmp_path / "forged.zspy"
    chunk = "Experiments/t/data/0/0"
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(forged, "w") as target:
        for info in source.infolist():
            if info.filename != chunk:
                target.writestr(info, source.read(info))
            elif how == "bzip2":
                target.writestr(chunk, source.read(info), compress_type=zipfile.ZIP_BZIP2)
            else:
                target.writestr(chunk, bytes(8 << 20), compress_type=zipfile.ZIP_DEFLATED)
    if how == "bzip2":  # read by the one ZIP reader, whose inflaters stop at the declared size
        assert np.array_equal(sciz.load(forged).data, data)
    else:
        with pytest.raises(FormatError, match="more than a chunk of its array can take"):
            sciz.load(forged)
    assert np.array_equal(sciz.load(base).data, data)


@pytest.mark.parametrize("compressor", ["zlib", "gzip", "bz2", "lzma", "zstd"])
def test_a_chunk_that_inflates_past_its_size_stops_at_the_bound(tmp_path: Path, compressor: str) -> None:
    """Found by review: numcodecs' general-purpose decoders inflate without bound (a 6.6 MB zlib chunk
    reached 3 GB resident). A chunk is decoded with at most its array's chunk bound of output."""
    import json

    import numcodecs

    data = np.arange(12, dtype="f4").reshape(3, 4)
    path = tmp_path / "s.zspy"
    sciz.save(sciz.Dataset(data, name="t"), path, checksum=False)
    array = path / "Experiments" / "t" / "data"
    meta = json.loads((array / ".zarray").read_text())
    meta["compressor"] = {"id": compressor}
    meta["filters"] = None
    (array / ".zarray").write_text(json.dumps(meta))
    codec = numcodecs.get_codec({"id": compressor})
    chunks = [p for p in array.rglob("*") if p.is_file() and not p.name.startswith(".")]
    bomb = codec.encode(bytes(16 << 20))  # 16 MiB of zeros for a 48-byte chunk
    for chunk in chunks:
        chunk.write_bytes(bytes(bomb))
    with pytest.raises(FormatError, match=r"inflates past|does not decode within"):
        sciz.load(path).data[...]
    for chunk in chunks:  # the same compressor within bounds still reads
        chunk.write_bytes(bytes(codec.encode(data.tobytes())))
    assert np.array_equal(np.asarray(sciz.load(path).data), data)


# --------------------------------------------------------------------------------------------
# Names longer than a file system holds, and text no file holds
# --------------------------------------------------------------------------------------------
LONG_KEYS = ["k" * 300, "温" * 90, "~" + "x" * 260, ".." + "." * 300]


def long_name_signal() -> dict[str, Any]:
    nested = {key: {"value": index, "array": np.arange(index + 1)} for index, key in enumerate(LONG_KEYS)}
    lists = {key: [{"a": index}, index] for index, key in enumerate(LONG_KEYS)}
    return signal(title="t" * 400, Nested=nested, Lists=lists)


@pytest.mark.parametrize("kind", ["local", "zip", "hspy"])
def test_names_longer_than_a_file_system_holds_round_trip_in_a_fresh_process(tmp_path: Path, kind: str) -> None:
    from sciz.formats import hspy

    target = tmp_path / ("long.hspy" if kind == "hspy" else "long.zspy")
    if kind == "hspy":
        hspy.file_writer(target, long_name_signal(), show_progressbar=False)
    else:
        zspy.file_writer(target, long_name_signal(), store_type=kind, show_progressbar=False)
    if kind == "local":
        assert max(len(p.name.encode()) for p in target.rglob("*")) <= 255
    code = f"""
        import json, numpy as np
        from sciz.{"hspy" if kind == "hspy" else "zspy"} import file_reader
        out = []
        for exact in (True, False):
            (back,) = file_reader({str(target)!r}, exact=exact)
            md = back["metadata"]
            out.append({{
                "title": md["General"]["title"],
                "nested": {{k: [v["value"], v["array"].tolist()] for k, v in md["Nested"].items()}},
                "lists": md["Lists"],
            }})
        print(json.dumps(out))
    """
    result = run_python(textwrap.dedent(code))
    assert result.returncode == 0, result.stderr
    for back in json.loads(result.stdout):
        assert back["title"] == "t" * 400
        assert back["nested"] == {k: [i, list(range(i + 1))] for i, k in enumerate(LONG_KEYS)}
        assert back["lists"] == {k: [{"a": i}, i] for i, k in enumerate(LONG_KEYS)}


@pytest.mark.parametrize("where", ["key", "value", "title"])
def test_text_no_file_can_hold_is_refused_naming_the_key_or_file(tmp_path: Path, where: str) -> None:
    from sciz.errors import ArgumentError
    from sciz.formats import hspy

    bad = "a\ud800b"  # a lone surrogate: not valid Unicode, no UTF-8 form
    metadata = {"Odd": {bad: 1}} if where == "key" else {"Odd": {"name": bad}} if where == "value" else {}
    sig = signal(title=bad if where == "title" else "scan", **metadata)
    for writer, name in ((zspy.file_writer, "s.zspy"), (hspy.file_writer, "s.hspy")):
        if where == "value":  # a string value: the writer refuses it, naming the file
            with pytest.raises(FormatError, match="surrogate") as info:
                writer(tmp_path / name, sig, show_progressbar=False)
            assert str(tmp_path / name) in str(info.value)
            continue
        with pytest.raises(ArgumentError, match="lone surrogate") as info:
            writer(tmp_path / name, sig, show_progressbar=False)
        assert ("Experiments" if where == "title" else "Odd") in str(info.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Arrays zarr-python reads for sciz (zarr 3 features the engine leaves to it) stay confined too
# --------------------------------------------------------------------------------------------
def _sharded_store(tmp_path: Path, name: str) -> tuple[Path, np.ndarray]:
    """A zspy store (zarr 3) whose data array is sharded: read by zarr-python through sciz's store."""
    import zarr

    path = tmp_path / name
    zspy.file_writer(path, signal(), zarr_format=3, show_progressbar=False)
    data = np.arange(64.0).reshape(8, 8) + (0 if name == "s.zspy" else 1000)
    (path / "Experiments" / "scan" / "data" / "zarr.json").unlink()
    for chunk in sorted((path / "Experiments" / "scan" / "data").rglob("*"), reverse=True):
        chunk.unlink() if chunk.is_file() else chunk.rmdir()
    array = zarr.create_array(
        path / "Experiments" / "scan" / "data", shape=(8, 8), chunks=(2, 2), shards=(4, 4), dtype="f8", zarr_format=3
    )
    array[:] = data
    return path, data


@pytest.mark.parametrize("when", ["before-open", "after-lazy-open"])
def test_zarr_python_fallback_never_follows_a_symlinked_chunk(tmp_path: Path, when: str) -> None:
    path, data = _sharded_store(tmp_path, "s.zspy")
    other, _ = _sharded_store(tmp_path, "other.zspy")  # a valid shard outside the store: would decode
    (back,) = zspy.file_reader(path, exact=False)
    np.testing.assert_array_equal(back["data"], data)  # read by zarr-python, through DirectoryKV
    victim = path / "Experiments" / "scan" / "data" / "c" / "1" / "1"
    outside = other / "Experiments" / "scan" / "data" / "c" / "1" / "1"

    def swap() -> None:
        victim.unlink()
        victim.symlink_to(outside)

    if when == "before-open":
        swap()
        with pytest.raises(FormatError, match=r"c/1/1.*symbolic link"):
            zspy.file_reader(path, exact=False)
    else:  # the link appears after the lazy open: every chunk read is confined, not just a first scan
        (lazy,) = zspy.file_reader(path, lazy=True, exact=False)
        swap()
        with pytest.raises(FormatError, match=r"c/1/1.*symbolic link"):
            np.asarray(lazy["data"])


def test_zarr_python_fallback_refuses_keys_leaving_the_store(tmp_path: Path) -> None:
    import asyncio

    from sciz.formats._zarr_kvstore import KVZarrStore
    from sciz.formats._zarr_stores import DirectoryKV

    path, _ = _sharded_store(tmp_path, "s.zspy")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    store = KVZarrStore(DirectoryKV(path), read_only=True)
    # zarr-python drops '..' from paths it builds; the store refuses any key that would leave it anyway.
    for key in ("../secret/zarr.json", "Experiments/../../secret/zarr.json", "Experiments/./scan/zarr.json"):
        with pytest.raises(FormatError, match="leaves the store"):
            asyncio.run(store.get(key))
        with pytest.raises(FormatError, match="leaves the store"):
            asyncio.run(store.exists(key))

    async def listing(prefix: str) -> list[str]:
        return [name async for name in store.list_dir(prefix)]

    with pytest.raises(FormatError, match="leaves the store"):
        asyncio.run(listing("../secret"))
    with pytest.raises(ValueError, match="read-only"):  # zarr's own check
        asyncio.run(store.delete("Experiments/scan/data/zarr.json"))
