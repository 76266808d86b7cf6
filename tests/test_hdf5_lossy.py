"""NaN/Inf/fill values through the lossy HDF5 filters (ZFP, SZ3, SPERR) in hspy files and AFM h5 bundles,
and chunks of those filters read without ever running the filter on them (sciz.formats._hdf5)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
hdf5plugin = pytest.importorskip("hdf5plugin")

from sciz.afm.bundles_h5 import load_h5_bundle, save_h5_bundle  # noqa: E402
from sciz.errors import ArgumentError, CodecError  # noqa: E402
from sciz.formats import _hdf5, hspy  # noqa: E402

LOSSY = ["sz3", "zfp", "sperr"]
TOLERANCE = 0.01


def nonfinite_stack() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:72] / 64.0
    stack = np.stack([np.sin(6 * x + k) * np.cos(5 * y) for k in range(3)]).astype(np.float32)
    stack[:, 20:31, 10:50] = np.nan  # a land-like region in every frame
    stack[0, 3, 4] = np.inf
    stack[2, 60, 70] = -np.inf
    return stack


@pytest.fixture
def sst_with_nan_land(shared_data: Path) -> np.ndarray:
    """Four months of the real SST field (24 x 170 x 180 float32), its 1e20 land set to NaN."""
    field = np.load(shared_data / "fields" / "sst_tos_O1_2001-2002.npy")[:4].copy()
    field[field >= 1e19] = np.nan
    return field


def signal(data: np.ndarray) -> dict:
    return {
        "data": data,
        "axes": [
            {"name": n, "size": s, "navigate": i == 0} for i, (n, s) in enumerate(zip("tyx", data.shape, strict=True))
        ],
        "metadata": {"General": {"title": "field"}},
    }


def run_fresh(code: str, *args: str) -> dict:
    """Run ``code`` in a new interpreter (same sciz); it prints one JSON line; a crash fails the test."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"the child died ({result.returncode}):\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_exact_nonfinite_and_bound(original: np.ndarray, decoded: np.ndarray) -> None:
    bad = ~np.isfinite(original)
    assert np.array_equal(np.isnan(decoded), np.isnan(original))
    assert np.array_equal(np.isposinf(decoded), np.isposinf(original))
    assert np.array_equal(np.isneginf(decoded), np.isneginf(original))
    assert float(np.max(np.abs(decoded[~bad].astype(np.float64) - original[~bad]))) <= TOLERANCE


FRESH_BUNDLE = """
    import json, sys
    import numpy as np
    from sciz.afm.bundles_h5 import load_h5_bundle
    data = load_h5_bundle(sys.argv[1]).data
    np.save(sys.argv[2], data)
    print(json.dumps({"shape": list(data.shape)}))
"""

PLAIN = """
    import json, sys
    import h5py, hdf5plugin, numpy as np
    with h5py.File(sys.argv[1], "r") as f:
        data, mask = f[sys.argv[2]], f[f[sys.argv[2]].attrs["ancillary_variables"]]
        np.save(sys.argv[3], data[()])
        np.save(sys.argv[4], mask[()])
        plist = data.id.get_create_plist()
        meanings = mask.attrs["flag_meanings"]
        print(json.dumps({
            "filters": [plist.get_filter(i)[0] for i in range(plist.get_nfilters())],
            "flag_values": mask.attrs["flag_values"].tolist(),
            "flag_meanings": meanings if isinstance(meanings, str) else meanings.decode(),
        }))
"""


@pytest.mark.parametrize("codec", LOSSY)
def test_h5_bundle_keeps_nonfinite_exact_and_the_bound(tmp_path, codec):
    stack = nonfinite_stack()
    path = save_h5_bundle(tmp_path / "b.h5", stack, codec=codec, tolerance=TOLERANCE)
    run_fresh(FRESH_BUNDLE, str(path), str(tmp_path / "fresh.npy"))
    check_exact_nonfinite_and_bound(stack, np.load(tmp_path / "fresh.npy"))
    # A plain h5py + hdf5plugin reader: the filter it asked for, finite filled data and the mask.
    info = run_fresh(PLAIN, str(path), "data", str(tmp_path / "plain.npy"), str(tmp_path / "mask.npy"))
    assert info["filters"] == [{"sz3": 32024, "zfp": 32013, "sperr": 32028}[codec], 3]
    assert info["flag_values"] == [0, 1, 2, 3, 4]
    assert info["flag_meanings"] == "valid nan positive_infinity negative_infinity fill_value"
    plain, mask = np.load(tmp_path / "plain.npy"), np.load(tmp_path / "mask.npy")
    assert np.isfinite(plain).all()  # no NaN ever reached the filter
    expected = np.select([np.isnan(stack), np.isposinf(stack), np.isneginf(stack)], [1, 2, 3], 0)
    assert np.array_equal(mask, expected)
    valid = expected == 0
    assert float(np.max(np.abs(plain[valid] - stack[valid]))) <= TOLERANCE
    restored = np.where(mask == 1, np.nan, np.where(mask == 2, np.inf, np.where(mask == 3, -np.inf, plain)))
    check_exact_nonfinite_and_bound(stack, restored)


FRESH_HSPY = """
    import json, sys
    import numpy as np
    from sciz.formats import hspy
    eager = hspy.file_reader(sys.argv[1])[0]["data"]
    lazy = np.asarray(hspy.file_reader(sys.argv[1], lazy=True)[0]["data"].compute())
    np.save(sys.argv[2], eager)
    print(json.dumps({"lazy_equal": bool(np.array_equal(eager, lazy, equal_nan=True))}))
"""


@pytest.mark.parametrize("codec", LOSSY)
def test_hspy_keeps_nan_land_exact_and_the_bound(tmp_path, codec, sst_with_nan_land):
    field = sst_with_nan_land
    path = tmp_path / "sst.hspy"
    hspy.file_writer(path, signal(field), compression=codec, tolerance=TOLERANCE, show_progressbar=False)
    result = run_fresh(FRESH_HSPY, str(path), str(tmp_path / "fresh.npy"))
    assert result["lazy_equal"]
    check_exact_nonfinite_and_bound(field, np.load(tmp_path / "fresh.npy"))
    with h5py.File(path, "r") as f:
        data = f["Experiments/field/data"]
        assert data.attrs["sciz_mask"] == "/Experiments/field/data_mask"
        assert np.isfinite(data[()]).all()
        assert np.array_equal(f["Experiments/field/data_mask"][()] == 1, np.isnan(field))


def test_hspy_fill_value_is_kept_exactly(tmp_path, sst_with_nan_land):
    field = sst_with_nan_land
    field = np.where(np.isnan(field), np.float32(1e20), field)  # the file's own land value
    # zfp cannot keep 0.01 next to 1e20 and says so; with fill_value the land is kept exactly instead.
    with pytest.raises(CodecError, match="cannot keep this tolerance"):
        hspy.file_writer(tmp_path / "no.hspy", signal(field), compression="zfp", tolerance=TOLERANCE)
    path = tmp_path / "sst.hspy"
    hspy.file_writer(
        path, signal(field), compression="zfp", tolerance=TOLERANCE, fill_value=1e20, show_progressbar=False
    )
    run_fresh(FRESH_HSPY, str(path), str(tmp_path / "fresh.npy"))
    decoded = np.load(tmp_path / "fresh.npy")
    land = field == np.float32(1e20)
    assert np.array_equal(decoded[land], field[land])
    assert float(np.max(np.abs(decoded[~land] - field[~land]))) <= TOLERANCE
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["Experiments/field/data_mask"][()] == 4, land)
        assert float(f["Experiments/field/data"].attrs["sciz_fill_value"]) == np.float32(1e20)
    with pytest.raises(ArgumentError, match="fill_value"):
        hspy.file_writer(tmp_path / "gz.hspy", signal(field), compression="gzip", fill_value=1e20)


def test_chunks_the_filter_misses_are_stored_unfiltered(tmp_path, monkeypatch):
    """A filter that cannot keep the bound for a chunk: that chunk is stored exactly (filter skipped)."""
    import sciz.codecs

    codec = sciz.codecs.get("zfp", tolerance=1e-4)
    monkeypatch.setattr(type(codec), "hdf5_filter", lambda self, array: dict(hdf5plugin.Zfp(rate=4)))
    stack = nonfinite_stack()
    path = save_h5_bundle(tmp_path / "b.h5", stack, codec=codec)
    with h5py.File(path, "r") as f:
        data = f["data"]
        masks = [data.id.get_chunk_info(i).filter_mask for i in range(data.id.get_num_chunks())]
        plain = data[()]
    assert masks and set(masks) == {1}  # every chunk missed 1e-4 at 4 bits per value
    valid = np.isfinite(stack)
    assert np.array_equal(plain[valid], stack[valid])
    assert np.array_equal(load_h5_bundle(path).data, stack, equal_nan=True)


def _foreign_file(path: Path) -> dict[str, np.ndarray]:
    """Datasets as other h5py + hdf5plugin users write them (no sciz mask, no checksum), with edge chunks."""
    y, x = np.mgrid[0:50, 0:70] / 50.0
    cube = np.stack([np.sin(5 * x + k) * np.cos(4 * y) for k in range(7)]).astype(np.float32)
    arrays = {}
    with h5py.File(path, "w") as f:
        specs = {
            "sz3": (cube, (4, 32, 40), hdf5plugin.SZ3(absolute=1e-3)),
            "sz3_f8_thin": (cube.astype(np.float64), (1, 32, 40), hdf5plugin.SZ3(absolute=1e-3)),
            "sz3_tiny": (cube[:2, :3, :4], (2, 3, 3), hdf5plugin.SZ3(absolute=1e-3)),  # < 20 elements: raw
            "zfp": (cube, (4, 32, 40), hdf5plugin.Zfp(accuracy=1e-3)),
            "zfp_thin": (cube, (1, 16, 40), hdf5plugin.Zfp(rate=12)),
            "zfp_reversible_f8": (cube.astype(np.float64), (4, 32, 40), hdf5plugin.Zfp(reversible=True)),
            "sperr": (cube, (4, 32, 40), hdf5plugin.Sperr(absolute=1e-3)),
            "sperr_2d": (cube[0], (32, 40), hdf5plugin.Sperr(absolute=1e-3)),
            "sperr_thin": (cube, (1, 32, 40), hdf5plugin.Sperr(peak_signal_to_noise_ratio=60.0)),
        }
        for name, (array, chunks, options) in specs.items():
            f.create_dataset(name, data=array, chunks=chunks, **options)
            arrays[name] = f[name][()]  # what the filter itself decodes
    return arrays


def test_foreign_filter_chunks_decode_like_the_filter_without_running_it(tmp_path):
    path = tmp_path / "foreign.h5"
    expected = _foreign_file(path)
    with h5py.File(path, "r") as f:
        for name, values in expected.items():
            assert _hdf5.filter_codec(f[name]) == name.split("_")[0]
            assert np.array_equal(_hdf5.read_lossy(f[name]), values), name
            region = tuple(slice(1, n - 1) for n in values.shape)
            assert np.array_equal(_hdf5.read_lossy(f[name], region), values[region]), name


HOSTILE = """
    import json, sys
    from sciz.errors import CodecError, FormatError
    kind, path = sys.argv[1], sys.argv[2]
    try:
        if kind == "bundle":
            from sciz.afm.bundles_h5 import load_h5_bundle
            load_h5_bundle(path)
        elif kind == "hspy":
            from sciz.formats import hspy
            hspy.file_reader(path)
        else:
            import h5py
            from sciz.formats import _hdf5
            with h5py.File(path, "r") as f:
                _hdf5.read_lossy(f[kind])
        print(json.dumps({"outcome": "decoded"}))
    except (FormatError, CodecError) as exc:
        print(json.dumps({"outcome": type(exc).__name__, "message": str(exc)}))
"""


def _chunk_span(path: Path, name: str, index: int) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(index)
        return int(info.byte_offset), int(info.size)


def _damage(path: Path, name: str, how: str) -> None:
    blob = bytearray(path.read_bytes())
    offset, size = _chunk_span(path, name, 1)
    if how == "flip":
        for k in range(5):
            blob[offset + (k * 997) % size] ^= 0x5A
    elif how == "truncate":
        blob[offset + size // 3 : offset + size] = bytes(size - size // 3)
    else:  # swap the bytes of two chunks
        other, other_size = _chunk_span(path, name, 2)
        n = min(size, other_size)
        blob[offset : offset + n], blob[other : other + n] = blob[other : other + n], blob[offset : offset + n]
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("codec", LOSSY)
@pytest.mark.parametrize("how", ["flip", "truncate", "swap"])
def test_damaged_chunks_raise_and_never_crash(tmp_path, codec, how):
    stack = np.concatenate([nonfinite_stack()] * 14)  # three chunks of 256 KiB
    bundle = save_h5_bundle(tmp_path / "b.h5", stack, codec=codec, tolerance=TOLERANCE)
    _damage(bundle, "data", how)
    result = run_fresh(HOSTILE, "bundle", str(bundle))
    assert result["outcome"] in ("FormatError", "CodecError"), result
    assert "Fletcher-32" in result["message"] or "damaged" in result["message"], result
    path = tmp_path / "s.hspy"
    hspy.file_writer(path, signal(stack), compression=codec, tolerance=TOLERANCE, chunks=(3, 32, 36))
    _damage(path, "Experiments/field/data", how)
    result = run_fresh(HOSTILE, "hspy", str(path))
    assert result["outcome"] == "FormatError" and "/Experiments/field/data chunk at" in result["message"], result


def _patch(path: Path, old: bytes, new: bytes) -> None:
    blob = path.read_bytes()
    assert old in blob
    path.write_bytes(blob.replace(old, new))


@pytest.mark.parametrize(
    ("name", "old", "new", "why"),
    [
        # SZ3's type code: H5Z-SZ3 prints "Unknown Datatype" and calls exit(0) on an unknown one.
        ("sz3", struct.pack("<5I", 3, 0, 40, 32, 4), struct.pack("<5I", 3, 77, 40, 32, 4), "type 77"),
        # SZ3 dims larger than the chunk: SZ3 would write past its buffer.
        ("sz3", struct.pack("<5I", 3, 0, 40, 32, 4), struct.pack("<5I", 3, 0, 40, 64, 4), "describe chunks"),
        # The zfp header's x size (40 -> 48): zfp would decode a different block layout.
        ("zfp", b"zfp\x05\x7a\x02", b"zfp\x05\xfa\x02", "ZFP header describes"),
        ("sperr", "cd_values", (2, 80), "SPERR parameters describe"),
    ],
)
def test_forged_filter_parameters_are_refused(tmp_path, name, old, new, why):
    path = tmp_path / "foreign.h5"
    _foreign_file(path)
    if old == "cd_values":  # change one of the dataset's filter values in place
        with h5py.File(path, "r") as f:
            values = list(f[name].id.get_create_plist().get_filter(0)[2])
        index, value = new
        old = struct.pack(f"<{len(values)}I", *values)
        values[index] = value
        new = struct.pack(f"<{len(values)}I", *values)
    _patch(path, old, new)
    result = run_fresh(HOSTILE, name, str(path))
    assert result["outcome"] == "FormatError" and why in result["message"], result


def test_forged_sz3_chunks_in_foreign_files_never_take_the_reader_down(tmp_path):
    """No checksum here: damage inside SZ3's zstd frame reaches SZ3, which runs in a forked child."""
    path = tmp_path / "foreign.h5"
    _foreign_file(path)
    outcomes = set()
    for seed in range(6):
        copy = tmp_path / f"forged{seed}.h5"
        blob = bytearray(path.read_bytes())
        offset, size = _chunk_span(path, "sz3", seed % 4)
        rng = np.random.default_rng(seed)
        for position in rng.integers(12, size - 90, 6):
            blob[offset + int(position)] ^= int(rng.integers(1, 256))
        copy.write_bytes(bytes(blob))
        outcomes.add(run_fresh(HOSTILE, "sz3", str(copy))["outcome"])
    assert outcomes <= {"decoded", "FormatError"}
    assert "FormatError" in outcomes


def test_zarr_nonfinite_through_zfpy_pcodec_and_sciz_ids(tmp_path, sst_with_nan_land):
    from sciz.formats import zspy

    field = sst_with_nan_land[:2].copy()
    field[0, 0, 0], field[0, 0, 1] = np.inf, -np.inf
    for zarr_format in (2, 3):
        refused = tmp_path / f"zfpy{zarr_format}.zspy"
        with pytest.raises(CodecError, match="NaN or Inf, which numcodecs ZFPY does not keep"):
            zspy.file_writer(refused, signal(field), compressor="zfp", tolerance=TOLERANCE, zarr_format=zarr_format)
        assert not refused.exists()  # nothing half-written is left
        for name, options in (("pcodec", {}), ("zfp", {"tolerance": TOLERANCE, "standard_codec": False})):
            path = tmp_path / f"{name}{zarr_format}.zspy"
            zspy.file_writer(
                path, signal(field), compressor=name, zarr_format=zarr_format, show_progressbar=False, **options
            )
            code = """
                import json, sys
                import numpy as np
                from sciz.formats import zspy
                np.save(sys.argv[2], np.asarray(zspy.file_reader(sys.argv[1])[0]["data"]))
                print(json.dumps({}))
            """
            run_fresh(code, str(path), str(tmp_path / "z.npy"))
            decoded = np.load(tmp_path / "z.npy")
            check_exact_nonfinite_and_bound(field, decoded)
            if name == "pcodec":  # the standard numcodecs codec: plain zarr reads NaN/Inf back too
                plain = """
                    import json, sys
                    import numpy as np, zarr
                    np.save(sys.argv[2], zarr.open_group(sys.argv[1], mode="r")["Experiments/field/data"][...])
                    print(json.dumps({}))
                """
                run_fresh(plain, str(path), str(tmp_path / "plain.npy"))
                assert np.array_equal(np.load(tmp_path / "plain.npy"), field, equal_nan=True)


@pytest.mark.parametrize("codec", ["sperr", "zfp", "sz3"])
def test_only_the_signal_gets_the_lossy_filter(tmp_path, codec, shared_data):
    """Found by a user trial: a playNano bundle converted to hspy with compression=sperr gave the
    lossy filter to every array after the signal (int lists, strings, bool masks, layers): the
    filter failed and the process died with a bus error. Metadata, layers and masks stay exact."""
    import sciz

    source = sciz.load(shared_data / "playnano" / "processed.npz")
    target = tmp_path / "bundle.hspy"
    sciz.save(source, target, compression=codec, tolerance=1e-3)
    back = sciz.load(target)
    assert np.abs(np.asarray(back.data, np.float64) - np.asarray(source.data, np.float64)).max() <= 1e-3
    for name, layer in source.layers.items():
        np.testing.assert_array_equal(back.layers[name], layer)
    for name, mask in source.masks.items():
        np.testing.assert_array_equal(back.masks[name], mask)
    with h5py.File(target) as handle:
        lossy: list[str] = []

        def visit(name: str, node: object) -> None:
            if isinstance(node, h5py.Dataset) and any(str(k) in ("32013", "32024", "32028") for k in node._filters):
                lossy.append(name)

        handle.visititems(visit)
    assert lossy == ["Experiments/height_trace/data"], lossy


def test_hspy_compression_auto_chooses_for_the_datasets_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The HDF5 filter codes each chunk alone, so "auto" must rank the codecs on chunks of the
    # dataset's shape, not on the whole array (found by review: hspy passed no chunks).
    from sciz.codecs import auto

    asked: list[object] = []
    real_choose = auto.choose

    def recording_choose(*args: object, **kwargs: object) -> object:
        asked.append(kwargs.get("chunks"))
        return real_choose(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(auto, "choose", recording_choose)
    stack = nonfinite_stack()
    target = tmp_path / "auto.hspy"
    hspy.file_writer(
        target,
        {"data": stack, "axes": [{"size": n} for n in stack.shape]},
        compression="auto",
        tolerance=TOLERANCE,
        chunks=(1, 32, 72),
    )
    assert asked == [(1, 32, 72)]
    with h5py.File(target, "r") as h5:
        (data,) = [item for item in _datasets(h5) if item.name.endswith("/data")]
        assert data.chunks == (1, 32, 72)
    restored = hspy.file_reader(target)[0]["data"]
    finite = np.isfinite(stack)
    assert np.array_equal(np.isnan(restored), np.isnan(stack))
    assert np.abs(restored[finite] - stack[finite]).max() <= TOLERANCE


def _datasets(h5: Any) -> list[Any]:
    found: list[Any] = []
    h5.visititems(lambda name, item: found.append(item) if isinstance(item, h5py.Dataset) else None)
    return found


@pytest.mark.parametrize("shape", [(100,), (1, 64), (64, 1), (1, 1, 300)])
def test_one_dimensional_arrays_through_the_lossy_filters(tmp_path: Path, shape: tuple[int, ...]) -> None:
    # Found by a trial user: compression="auto" raised h5py's bare OSError ("filter returned
    # failure", SPERR codes only 2-D/3-D chunks), and sz3 on (1, 64) wrote a file sciz could not read.
    data = np.linspace(0, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    signal = {"data": data, "axes": [{"size": n} for n in shape]}
    target = tmp_path / "auto.hspy"
    hspy.file_writer(target, signal, compression="auto", tolerance=TOLERANCE)
    assert np.abs(hspy.file_reader(target)[0]["data"] - data).max() <= TOLERANCE
    with pytest.raises(CodecError, match="SPERR HDF5 filter codes 2-D and 3-D"):
        hspy.file_writer(tmp_path / "sperr.hspy", signal, compression="sperr", tolerance=TOLERANCE)


def test_a_file_whose_sz3_filter_left_its_chunks_as_they_are_reads(tmp_path: Path) -> None:
    # H5Z-SZ3 sizes a (1, 64) chunk as one value and leaves it uncoded: h5py reads such files, so must sciz.
    data = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 64)
    target = tmp_path / "plain.h5"
    with h5py.File(target, "w") as h5:
        h5.create_dataset("data", data=data, chunks=(1, 64), **hdf5plugin.SZ3(absolute=0.01))
        assert h5["data"]._filters["32024"][:4] == (1, 0, 0, 1), "the filter's own parameters for this chunk"
    with h5py.File(target, "r") as h5:
        assert np.array_equal(_hdf5.read_dataset(h5["data"]), data)
