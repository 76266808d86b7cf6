"""HDF5, TIFF, TMD and STL readers against hostile and damaged files, concurrent replacement and failed writes.

Hostile files are read in a child process whose address space is capped (3 GB) and whose time is
bounded: a reader that hangs, crashes or allocates what a header declares fails the test instead
of taking the suite down.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
pytest.importorskip("hdf5plugin")

from sciz.afm import load_h5_bundle, save_h5_bundle  # noqa: E402
from sciz.errors import FormatError  # noqa: E402
from sciz.hspy import file_reader, file_writer  # noqa: E402
from sciz.stack import ImageStack  # noqa: E402

TESTS = Path(__file__).resolve().parent
CHILD_TIMEOUT = 60
ADDRESS_SPACE = 3 << 30


def _stack(value: float = 0.0, n: int = 4) -> ImageStack:
    rng = np.random.default_rng(3)
    data = (rng.normal(0, 1, (n, 40, 56)) + value).astype(np.float32)
    return ImageStack(
        data,
        pixel_size_nm=1.5,
        channel="height",
        frame_metadata=[{"timestamp": float(i)} for i in range(n)],
        processed={"raw": data + 1, "flat": data},
        masks={"m": data > 0},
    )


def _signal(data: np.ndarray) -> dict:
    axes = [{"name": n, "size": s, "scale": 1.0, "offset": 0.0, "units": "nm", "navigate": i == 0}
            for i, (n, s) in enumerate(zip("tyx", data.shape, strict=True))]  # fmt: skip
    return {"data": data, "axes": axes, "metadata": {"General": {"title": "s"}}, "original_metadata": {}}


def _read_in_child(cases: dict[str, tuple[str, Path]]) -> dict[str, str]:
    """Read each (reader, path) in one capped child process; the outcome of each as 'Type: message'."""
    script = textwrap.dedent(
        f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE}, {ADDRESS_SPACE}))
        from sciz.afm import load_h5_bundle, load_ome_tiff_stack
        from sciz.hspy import file_reader
        from sciz.formats.tmd import read_tmd
        from sciz.formats.stl import read_stl
        readers = {{"afm": load_h5_bundle, "hspy": file_reader, "tiff": load_ome_tiff_stack,
                    "tmd": read_tmd, "stl": read_stl}}
        out = {{}}
        for name, (reader, path) in json.loads(sys.argv[1]).items():
            try:
                readers[reader](path)
                out[name] = "read"
            except BaseException as exc:
                out[name] = f"{{type(exc).__name__}}: {{exc}}"
        print(json.dumps(out))
        """
    )
    argument = json.dumps({name: (reader, os.fspath(path)) for name, (reader, path) in cases.items()})
    done = subprocess.run(
        [sys.executable, "-c", script, argument], capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----- hostile structures ----------------------------------------------------------------------------
def _hostile_h5(tmp_path: Path) -> dict[str, tuple[str, Path]]:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4 * 40 * 56, dtype=np.float32).tobytes())
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.ones((4, 40, 56), np.float32)
    base = save_h5_bundle(tmp_path / "base.h5", _stack())
    cases: dict[str, tuple[str, Path]] = {}

    def variant(name: str, edit) -> None:
        path = tmp_path / f"{name}.h5"
        path.write_bytes(base.read_bytes())
        with h5py.File(path, "r+") as f:
            edit(f)
        cases[name] = ("afm", path)

    def external_storage(f) -> None:
        del f["processed/raw"]
        f.create_dataset("processed/raw", shape=(4, 40, 56), dtype=np.float32, external=[(os.fspath(secret), 0, 35840)])

    def external_link(f) -> None:
        del f["processed/raw"]
        f["processed/raw"] = h5py.ExternalLink(os.fspath(other), "/x")

    def soft_to_external(f) -> None:
        f["elsewhere"] = h5py.ExternalLink(os.fspath(other), "/x")
        del f["data"]
        f["data"] = h5py.SoftLink("/elsewhere")

    def soft_cycle(f) -> None:
        f["processed/a"] = h5py.SoftLink("/processed/b")
        f["processed/b"] = h5py.SoftLink("/processed/a")

    def virtual(f) -> None:
        layout = h5py.VirtualLayout(shape=(4, 40, 56), dtype=np.float32)
        layout[:] = h5py.VirtualSource(os.fspath(other), "x", shape=(4, 40, 56))
        del f["masks/m"]
        f.create_virtual_dataset("masks/m", layout)

    def huge(f) -> None:  # 4 TiB declared, no chunk stored: nothing in the file says otherwise
        del f["processed/flat"]
        f.create_dataset("processed/flat", shape=(1 << 20, 1 << 10, 1 << 10), dtype=np.float32, chunks=(1, 64, 64))

    for name, edit in [("external_storage", external_storage), ("external_link", external_link),
                       ("soft_to_external", soft_to_external), ("soft_cycle", soft_cycle),
                       ("virtual", virtual), ("huge", huge)]:  # fmt: skip
        variant(name, edit)

    hspy = file_writer_path(tmp_path / "base.hspy")
    for name in ("hard_cycle", "deep", "hspy_external"):
        path = tmp_path / f"{name}.hspy"
        path.write_bytes(hspy.read_bytes())
        with h5py.File(path, "r+") as f:
            if name == "hard_cycle":
                f["Experiments/s/metadata/loop"] = f["Experiments/s"]  # a group that contains itself
            elif name == "deep":
                group = f["Experiments/s/metadata"]
                for level in range(200):
                    group = group.create_group(f"g{level}")
            else:
                del f["Experiments/s/data"]
                f["Experiments/s/data"] = h5py.ExternalLink(os.fspath(other), "/x")
        cases[name] = ("hspy", path)
    return cases


def file_writer_path(path: Path) -> Path:
    file_writer(path, _signal(np.ones((4, 40, 56), np.float32)), show_progressbar=False)
    return path


def test_hostile_hdf5_structures_are_named_errors(tmp_path):
    cases = _hostile_h5(tmp_path)
    outcomes = _read_in_child(cases)
    expected = {
        "external_storage": r"/processed/raw: its data is stored in other files \(.*secret\.bin\)",
        "external_link": r"/processed/raw is an external link to .*other\.h5:/x",
        "soft_to_external": r"/elsewhere is an external link",
        "soft_cycle": r"soft link in a cycle",
        "virtual": r"/masks/m: a virtual dataset",
        "huge": r"/processed/flat: declares .* GiB, more than this process can allocate",
        "hard_cycle": r"contains itself",
        "deep": r"nest deeper than 64 levels",
        "hspy_external": r"/Experiments/s/data is an external link",
    }
    import re

    for name, pattern in expected.items():
        outcome = outcomes[name]
        assert outcome.startswith("FormatError: "), (name, outcome)
        assert re.search(pattern, outcome), (name, outcome)
        assert os.fspath(cases[name][1]) in outcome, (name, outcome)  # the error names the file
        assert "0.0, 1.0, 2.0" not in outcome


def test_hostile_tiff_tmd_stl_sizes_are_refused_before_allocation(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from sciz.afm import save_ome_tiff_stack

    cases: dict[str, tuple[str, Path]] = {}
    for compression in (None, "zlib"):
        path = save_ome_tiff_stack(tmp_path / f"big_{compression}.ome.tif", _stack(n=1), compression=compression)
        blob = bytearray(path.read_bytes())
        with tifffile.TiffFile(path) as tif:
            for tag_name in ("ImageWidth", "ImageLength", "RowsPerStrip"):
                tag = tif.pages[0].tags.get(tag_name)
                if tag is not None:  # 65535 x 65535 float32 pixels: 16 GiB asked of a 2 KB file
                    struct.pack_into("<H" if tag.dtype == 3 else "<I", blob, tag.valueoffset, 65535)
        path.write_bytes(bytes(blob))
        cases[f"tiff_{compression}"] = ("tiff", path)
    from sciz.formats.tmd import read_tmd_header, write_tmd

    tmd = write_tmd(tmp_path / "huge.tmd", np.zeros((3, 4), np.float32))  # then its header declares 65535 x 65535
    blob = bytearray(tmd.read_bytes())
    struct.pack_into("<II", blob, read_tmd_header(tmd).dimensions_offset, 65535, 65535)
    tmd.write_bytes(bytes(blob))
    cases["tmd"] = ("tmd", tmd)
    stl = tmp_path / "huge.stl"
    stl.write_bytes(b"binary".ljust(80, b" ") + struct.pack("<I", 0xFFFFFFFF) + bytes(50))
    cases["stl"] = ("stl", stl)
    outcomes = _read_in_child(cases)
    assert "file can hold at most" in outcomes["tiff_None"] and "(65535, 65535)" in outcomes["tiff_None"]
    assert "(65535, 65535)" in outcomes["tiff_zlib"]
    assert outcomes["tmd"].startswith("FormatError: ") and "65535x65535" in outcomes["tmd"]
    assert outcomes["stl"].startswith("FormatError: ") and "4294967295 triangles" in outcomes["stl"]
    for name, outcome in outcomes.items():
        assert outcome.startswith("FormatError: ") and os.fspath(cases[name][1]) in outcome, (name, outcome)


# ----- damaged chunks: errors within seconds, never a hang -------------------------------------------
def test_damaged_processed_chunk_is_an_error_not_a_deadlock(tmp_path):
    path = save_h5_bundle(tmp_path / "d.h5", _stack())
    with h5py.File(path, "r") as f:
        info = f["processed/raw"].id.get_chunk_info(0)
    blob = bytearray(path.read_bytes())
    blob[info.byte_offset + info.size // 2] ^= 0x10
    path.write_bytes(bytes(blob))
    outcome = _read_in_child({"flipped": ("afm", path)})["flipped"]
    assert outcome.startswith("FormatError: ") and "/processed/raw chunk at" in outcome, outcome


@pytest.mark.parametrize(("kind", "count"), [("afm", 120), ("hspy", 80), ("afm-sperr", 60)])
def test_mutants_are_errors_or_correct_data(tmp_path, kind, count):
    """Flipped bits (a quarter inside the chunks of /processed or the hspy data) and truncations:
    each mutant read in a forked child of a capped process: no hang, crash or unwrapped error."""
    done = subprocess.run(
        [sys.executable, os.fspath(TESTS / "hdf5_mutants.py"), kind, str(count), os.fspath(tmp_path), "20"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    outcomes = report["outcomes"]
    assert sum(outcomes.values()) == count
    assert outcomes["hang"] == outcomes["crash"] == outcomes["unwrapped"] == outcomes["changed"] == 0, report
    assert outcomes["error"] > count // 2  # most single-bit damage is detected (checksums, structure)


def test_one_damaged_mask_attribute_never_drops_the_nan_mask(tmp_path):
    stack = _stack()
    stack.processed["raw"][0, :2, :3] = np.nan
    path = save_h5_bundle(tmp_path / "z.h5", stack, codec="zfp", tolerance=1e-3)
    with h5py.File(path, "r+") as f:  # the writer's own name of the mask is lost: CF's still finds it
        del f["processed/raw"].attrs["sciz_mask"]
    assert np.isnan(load_h5_bundle(path).processed["raw"][0, :2, :3]).all()
    with h5py.File(path, "r+") as f:  # the two names disagree: an error, not a guess
        f["processed/raw"].attrs["sciz_mask"] = "/sciz_masks/elsewhere"
    with pytest.raises(FormatError, match=r"/processed/raw: its mask is named '/sciz_masks/elsewhere' by sciz_mask"):
        load_h5_bundle(path)


# ----- one version of a file while it is replaced ----------------------------------------------------
def test_reads_see_one_version_while_the_file_is_replaced(tmp_path):
    """A thread replaces the bundle (os.replace) between two versions while 40 reads run, in a child process
    with a timeout: each read returns exactly one version (the reader holds one handle for the whole read)."""
    for index in range(2):
        save_h5_bundle(tmp_path / f"v{index}.h5", _stack(float(100 * index), n=12))
    script = textwrap.dedent(
        """
        import json, os, sys, threading
        import numpy as np
        from pathlib import Path
        from sciz.afm import load_h5_bundle
        folder = Path(sys.argv[1])
        blobs = [(folder / f"v{i}.h5").read_bytes() for i in range(2)]
        expected = [load_h5_bundle(folder / f"v{i}.h5").data for i in range(2)]
        target = folder / "live.h5"
        target.write_bytes(blobs[0])
        stop = threading.Event()

        def replace_forever():
            index = 0
            while not stop.is_set():
                index ^= 1
                temporary = folder / f".live.{index}.tmp"
                temporary.write_bytes(blobs[index])
                os.replace(temporary, target)

        writer = threading.Thread(target=replace_forever)
        writer.start()
        outcomes = []
        try:
            for _ in range(40):
                data = load_h5_bundle(target).data
                outcomes.append([i for i, want in enumerate(expected) if np.array_equal(data, want)])
        finally:
            stop.set()
            writer.join()
        print(json.dumps(outcomes))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, os.fspath(tmp_path)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(outcomes) == 40
    assert all(len(matches) == 1 for matches in outcomes), outcomes  # never a mixture of two versions


# ----- failed writes ---------------------------------------------------------------------------------
def test_a_full_disk_is_an_error_naming_the_file_and_keeps_the_old_target(tmp_path):
    """A file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes writes fail with EFBIG, as a full disk does with
    ENOSPC: each writer raises FormatError naming the file, the old target stays and no temporary is left."""
    script = textwrap.dedent(
        """
        import json, resource, signal, sys
        import numpy as np
        from pathlib import Path
        from sciz.afm import save_h5_bundle, save_ome_tiff_stack
        from sciz.hspy import file_writer
        from sciz.stack import ImageStack
        folder = Path(sys.argv[1])
        rng = np.random.default_rng(0)
        stack = ImageStack(rng.normal(size=(8, 128, 128)).astype(np.float32), pixel_size_nm=1.0)
        for name in ("a.h5", "b.hspy", "c.ome.tif"):
            (folder / name).write_bytes(b"old")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        writers = {
            "a.h5": lambda p: save_h5_bundle(p, stack),
            "b.hspy": lambda p: file_writer(p, {"data": stack.data, "axes": [{"size": n} for n in stack.data.shape]},
                                            show_progressbar=False),
            "c.ome.tif": lambda p: save_ome_tiff_stack(p, stack),
        }
        out = {}
        for name, write in writers.items():
            try:
                write(folder / name)
                out[name] = "written"
            except BaseException as exc:
                out[name] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(out))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, os.fspath(tmp_path)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    for name, outcome in outcomes.items():
        # The format's own guard or sciz.atomic's (whichever sees the OSError first) names the file.
        assert outcome.startswith("FormatError: ") and str(tmp_path / name) in outcome, (name, outcome)
        assert "cannot write" in outcome, (name, outcome)
        if name != "c.ome.tif":  # tifffile reports a short write without the errno
            assert "the file is larger than this system allows" in outcome, (name, outcome)
        assert (tmp_path / name).read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.hspy", "c.ome.tif"]  # no temporary left


# ----- what sciz writes, other readers read in a fresh process ---------------------------------------
def test_fresh_h5py_and_tifffile_read_what_sciz_writes(tmp_path):
    from sciz.afm import save_ome_tiff_stack

    stack = _stack()
    bundle = save_h5_bundle(tmp_path / "b.h5", stack)
    lossy = save_h5_bundle(tmp_path / "z.h5", stack, codec="zfp", tolerance=1e-3)
    hspy = tmp_path / "s.hspy"
    file_writer(hspy, _signal(stack.data), show_progressbar=False)
    save_ome_tiff_stack(tmp_path / "t.ome.tif", stack)
    np.save(tmp_path / "want.npy", stack.data)
    script = textwrap.dedent(
        """
        import sys, h5py, hdf5plugin, tifffile, numpy as np
        folder = sys.argv[1]
        want = np.load(folder + "/want.npy")
        with h5py.File(folder + "/b.h5", "r") as f:
            assert np.array_equal(f["data"][()], want) and np.array_equal(f["processed/raw"][()], want + 1)
            assert np.array_equal(f["masks/m"][()], want > 0)
        with h5py.File(folder + "/z.h5", "r") as f:
            assert np.abs(f["data"][()] - want).max() <= 1e-3
        with h5py.File(folder + "/s.hspy", "r") as f:
            assert np.array_equal(f["Experiments/s/data"][()], want)
        assert np.array_equal(tifffile.imread(folder + "/t.ome.tif").reshape(want.shape), want)
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, os.fspath(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
    assert lossy.is_file() and bundle.is_file()
    np.testing.assert_array_equal(file_reader(hspy)[0]["data"], stack.data)


def test_read_dataset_errors_name_file_and_object(tmp_path):
    from sciz.formats import _hdf5

    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("lzf", data=np.arange(4000, dtype=np.float32), chunks=(100,), compression="lzf")
    with h5py.File(path, "r") as f:
        info_offset = f["lzf"].id.get_chunk_info(3).byte_offset
    blob = bytearray(path.read_bytes())
    blob[info_offset : info_offset + 8] = b"\xff" * 8
    path.write_bytes(bytes(blob))
    with _hdf5.open_file(path) as f, pytest.raises(FormatError, match=r"plain\.h5: /lzf: cannot be read"):
        _hdf5.read_dataset(f["lzf"], where=f"{path}: /lzf")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(FormatError, match=r"garbage\.h5: not a readable HDF5 file"):
        _hdf5.open_file(garbage)


def test_a_file_that_crashes_the_hdf5_library_is_a_clean_error(tmp_path):
    """Found by the mutation suite: one flipped bit in an attribute header of an hspy file made
    libhdf5 dereference garbage in ``attrs[...]`` (SIGSEGV). The structure is walked in a forked
    child first (``_hdf5.probe``), so the crash is the child's and the caller gets a FormatError."""
    from sciz.testing import reliability as rel
    from sciz.testing._writer import write_as

    mutant = tmp_path / "m88.hspy"
    write_as("hspy", mutant, rel.sample_data("hspy"))
    data = bytearray(mutant.read_bytes())
    data[10905] ^= 4  # the mutant of seed 88
    mutant.write_bytes(bytes(data))
    read = textwrap.dedent(
        f"""
        import sys
        import sciz
        from sciz.formats import _hdf5
        if sys.argv[1] == "unprobed":
            _hdf5.probe = lambda handle, where: None
        try:
            sciz.load({str(mutant)!r}).data[...]
        except sciz.errors.FormatError as exc:
            print("FormatError", exc)
        """
    )
    unprobed = subprocess.run([sys.executable, "-c", read, "unprobed"], capture_output=True, text=True, timeout=120)
    if unprobed.returncode != -11:
        pytest.skip(f"this HDF5 build lays the file out differently: the flip no longer crashes ({unprobed.stdout})")
    probed = subprocess.run([sys.executable, "-c", read, "probed"], capture_output=True, text=True, timeout=120)
    assert probed.returncode == 0, probed.stderr[-2000:]
    assert probed.stdout.startswith("FormatError") and "crashed (signal 11)" in probed.stdout, probed.stdout


@pytest.mark.parametrize(
    ("metadata", "title", "problem"),
    [
        ({"a\x00b": 2, "a\x00c": 3}, "t", "holds a NUL character"),  # both came back as one key "a"
        ({"g": {"a\x00b": 2}}, "t", "holds a NUL character"),  # came back as {"g": {"a": 2}}
        ({"note": 1}, "x\x00y", "holds a NUL character"),  # a raw ValueError
        ({"v": "a\x00b"}, "t", "cannot be stored in HDF5"),  # a raw ValueError
        ({"v": "x\ud800y"}, "t", "cannot be stored in HDF5"),  # a raw UnicodeEncodeError
        ({"g": {".": {"x": 5}, "x": 1}}, "t", "named '.'"),  # came back as {"g": {"x": 5}}
        ({"note": 1}, ".", "named '.'"),  # the experiment group '.' is /Experiments itself
    ],
)
def test_hspy_refuses_names_and_strings_hdf5_cannot_hold(tmp_path: Path, metadata, title, problem) -> None:
    import sciz

    target = tmp_path / "out.hspy"
    with pytest.raises(FormatError, match=problem) as caught:
        sciz.save(sciz.Dataset(np.zeros((3, 4)), metadata=metadata, name=title), target)
    assert str(target) in str(caught.value)
    assert list(tmp_path.iterdir()) == []
    kept = {"a.b": 1, "..": 2, "tab\tkey": "x\ty"}
    back = sciz.load(sciz.save(sciz.Dataset(np.zeros((3, 4)), metadata=kept, name="t"), target))
    assert back.metadata == kept and back.name == "t"


@pytest.mark.parametrize(
    "fill",
    [np.zeros(0, "f4"), np.array(["1", "2"], dtype=object), 1 + 2j, np.zeros(1, dtype=[("a", "f4")])],
    ids=["empty", "strings", "complex", "compound"],
)
def test_a_fill_value_attribute_that_is_not_one_real_number_is_a_clean_error(tmp_path: Path, fill) -> None:
    # An empty sciz_fill_value was a raw IndexError; a complex one was silently taken for its real part.
    import sciz

    data = np.arange(64 * 64, dtype="f4").reshape(64, 64) / 100
    data[5, 5] = -999
    path = sciz.save(sciz.Dataset(data), tmp_path / "x.hspy", compression="zfp", tolerance=0.01, fill_value=-999)
    assert sciz.load(path).data[5, 5] == -999
    with h5py.File(path, "r+") as handle:
        handle["Experiments/__unnamed__/data"].attrs["sciz_fill_value"] = fill
    with pytest.raises(FormatError, match=r"sciz_fill_value attribute .* is not one real number"):
        sciz.load(path)
