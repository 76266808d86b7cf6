"""TMD files: every real sample with its known values, every header variant, strict errors, canonical writing."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import sciz
from sciz.errors import ArgumentError, FormatError
from sciz.formats.tmd import NODATA_VALUE, read_tmd, read_tmd_header, write_tmd
from sciz.heightmap import TMDProcessor, export_to_tmd, load_tmd

SURFACE_LENGTH = 2.5199999809265137
KNOWN = {
    # name: (version, width, height, x_length, y_length, min, max, float64 mean or None, comment)
    "v1_Surface.tmd": (
        1, 169, 169, SURFACE_LENGTH, SURFACE_LENGTH, 0.0, 0.00020877034694422036, 0.0001298495871558546, "",
    ),
    "v2_Surface.tmd": (
        2, 169, 169, SURFACE_LENGTH, SURFACE_LENGTH, 0.0, 0.00020877034694422036, 0.0001298495871558546,
        "Created by TrueMap v6",
    ),
    "v2_Vickers_Indentation.tmd": (
        2, 400, 400, 0.027293596416711807, 0.027293596416711807, 0.004662000108510256, 0.007039099931716919,
        0.006476435552703333, "Created by Truemap v6",
    ),
    "Euro_coin.tmd": (2, 642, 648, None, None, None, None, None, "Created by Truemap v6"),
    "StepHeight.tmd": (2, 466, 429, None, None, None, None, None, "Created by TrueMap v6"),
    "Laser_marking_on_silicon_wafer.tmd": (2, 648, 484, None, None, None, None, None, "Created by Truemap v6"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_every_real_sample_reads_with_its_known_values(shared_data: Path, name: str) -> None:
    version, width, height, x_length, y_length, low, high, mean, comment = KNOWN[name]
    dataset = sciz.load(shared_data / "tmd" / name)
    assert dataset.shape == (height, width) and dataset.dtype == np.float32
    meta = dataset.metadata
    assert (meta["version"], meta["width"], meta["height"], meta["comment"]) == (version, width, height, comment)
    assert meta["units"] == "mm" and meta["x_offset"] == 0.0 and meta["y_offset"] == 0.0
    assert meta["x_pixel_size"] == meta["x_length"] / width and meta["y_pixel_size"] == meta["y_length"] / height
    assert dataset.axes[1].units == "mm" and dataset.axes[1].scale == meta["x_pixel_size"]
    if x_length is not None:
        assert meta["x_length"] == x_length and meta["y_length"] == y_length
        assert float(dataset.data.min()) == low and float(dataset.data.max()) == high
        assert float(dataset.data.astype(np.float64).mean()) == pytest.approx(mean, rel=1e-12)
    # An independent parse of the canonical layout gives the same heights.
    raw = (shared_data / "tmd" / name).read_bytes()
    offset = 44 if version == 1 else 80
    assert np.array_equal(np.frombuffer(raw, "<f4", offset=offset).reshape(height, width), dataset.data)


def test_v1_and_v2_surfaces_hold_the_same_heights(shared_data: Path) -> None:
    v1 = load_tmd(shared_data / "tmd" / "v1_Surface.tmd")
    v2 = load_tmd(shared_data / "tmd" / "v2_Surface.tmd")
    assert np.array_equal(v1["height_map"], v2["height_map"])
    assert v1["x_length"] == v2["x_length"] and v1["version"] == 1 and v2["version"] == 2


def test_nodata_becomes_nan_with_a_mask(shared_data: Path) -> None:
    path = shared_data / "tmd" / "Euro_coin.tmd"
    raw = sciz.load(path)
    assert int((raw.data == NODATA_VALUE).sum()) == 120_436 and not np.isnan(raw.data).any() and not raw.masks
    clean = sciz.load(path, nodata_to_nan=True)
    mask = clean.masks["nodata"]
    assert mask.dtype == np.bool_ and int(mask.sum()) == 120_436 == clean.metadata["nodata_count"]
    assert np.isnan(clean.data[mask]).all() and not np.isnan(clean.data[~mask]).any()
    assert np.array_equal(clean.data[~mask], raw.data[~mask])
    as_dict = TMDProcessor(path, nodata_to_nan=True).process()
    assert int(as_dict["nodata_mask"].sum()) == 120_436


def test_detection_is_by_content_whatever_the_extension(shared_data: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "surface.dat"
    shutil.copy(shared_data / "tmd" / "v2_Vickers_Indentation.tmd", renamed)
    assert sciz.formats.detect_format(renamed).name == "tmd"
    assert sciz.load(renamed).shape == (400, 400)


def build(
    magic: bytes, comment: bytes, width: int, height: int, floats: tuple[float, ...], data: np.ndarray | None = None
) -> bytes:
    heights = np.arange(width * height, dtype="<f4") if data is None else data.astype("<f4")
    fields = struct.pack("<2I", width, height) + struct.pack(f"<{len(floats)}f", *floats)
    return magic + comment + fields + heights.tobytes()


VARIANTS = {
    # name: (file bytes, dimensions offset, comment)
    "gelsight empty comment": (
        build(b"Binary TrueMap Data File v2.0\r\n\x00", b"\x00", 3, 2, (1.5, 1.0, 0.25, 0.5)), 33, ""
    ),
    "LF magic padded with NULs": (
        build(b"Binary TrueMap Data File v2.0\n\x00\x00", b"Created by TrueMap v6\r\n\x00", 4, 3, (4.0, 3.0, 0, 0)),
        56,
        "Created by TrueMap v6",
    ),
    "30-byte magic, 22-byte comment": (
        build(b"Binary TrueMap Data File v2.0\x00", b"Created by GelSight\r\n\x00", 5, 2, (5.0, 2.0, 1, 2)),
        52,
        "Created by GelSight",
    ),
    "lower-case m": (
        build(b"Binary Truemap Data File v2.0\r\n\x00", b"Created by Truemap v6\r\n\x00", 2, 2, (1, 1, 0, 0)), 56,
        "Created by Truemap v6",
    ),
    "shouting magic": (
        build(b"BINARY TRUEMAP DATA FILE v2.0\r\n\x00", b"x\x00", 2, 3, (2, 3, 0, 0)), 34, "x"
    ),
    "v1": (build(b"Binary TrueMap Data File\r\n\x00\x00", b"", 3, 3, (3.0, 3.0)), 28, ""),
}  # fmt: skip


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_header_variants(tmp_path: Path, variant: str) -> None:
    raw, offset, comment = VARIANTS[variant]
    path = tmp_path / "variant.tmd"
    path.write_bytes(raw)
    header = read_tmd_header(path)
    assert header.dimensions_offset == offset and header.comment == comment
    fields = 16 if variant == "v1" else 24
    assert header.data_offset == offset + fields
    dataset = read_tmd(path)
    assert np.array_equal(dataset.data.ravel(), np.arange(header.width * header.height, dtype=np.float32))
    assert dataset.shape == (header.height, header.width)


def test_offsets_are_read_from_v2_headers(tmp_path: Path) -> None:
    path = tmp_path / "gel.tmd"
    path.write_bytes(VARIANTS["gelsight empty comment"][0])
    dataset = sciz.load(path)
    assert dataset.metadata["x_offset"] == 0.25 and dataset.metadata["y_offset"] == 0.5
    assert dataset.axes[1].offset == 0.25 and dataset.axes[1].scale == 0.5


def canonical(width: int = 4, height: int = 3) -> bytes:
    magic, comment = b"Binary TrueMap Data File v2.0\r\n\x00", b"Created by TrueMap v6\r\n\x00"
    return build(magic, comment, width, height, (1, 1, 0, 0))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (canonical()[:-5], r"truncated TMD file: .*4x3 float32 heights, so it needs 128 bytes but has 123 \(5 miss"),
        (canonical() + b"\x00" * 7, r"oversized TMD file: .* needs 128 bytes but has 135 \(7 extra\)"),
        (canonical()[:60], r"truncated TMD v2 header: the file has 60 bytes, its header needs 80"),
        (canonical(0, 3)[:80], r"malformed TMD v2 header: width=0"),
        (b"GIF89a" + b"\x00" * 100, r"not a TMD file"),
        (b"Binary TrueMap Data File v3.0\r\n\x00" + b"\x00" * 60, r"TMD version 3 is not supported"),
        (
            build(b"Binary TrueMap Data File v2.0\r\n\x00", b"c\x00", 2, 2, (float("nan"), 1, 0, 0)),
            r"malformed header: x_length is nan",
        ),
    ],
)
def test_bad_files_raise_naming_the_file_and_the_mismatch(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.tmd"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=r"bad\.tmd: " + message):
        read_tmd(path)


def test_truncated_real_file_is_not_zero_padded(shared_data: Path, tmp_path: Path) -> None:
    raw = (shared_data / "tmd" / "v2_Vickers_Indentation.tmd").read_bytes()
    path = tmp_path / "cut.tmd"
    path.write_bytes(raw[:-400])
    with pytest.raises(FormatError, match=r"cut\.tmd: truncated TMD file: .*400x400.*\(400 missing\)"):
        sciz.load(path)
    with pytest.raises(FileNotFoundError):
        read_tmd(tmp_path / "absent.tmd")


def test_canonical_writer_reproduces_truemap_files_byte_for_byte(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "tmd" / "v2_Surface.tmd"
    written = sciz.save(sciz.load(source), tmp_path / "copy.tmd")
    assert written.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("name", ["v1_Surface.tmd", "v2_Vickers_Indentation.tmd", "StepHeight.tmd"])
def test_writer_makes_canonical_v2_that_reads_back_identically(shared_data: Path, tmp_path: Path, name: str) -> None:
    original = sciz.load(shared_data / "tmd" / name)
    path = sciz.save(original, tmp_path / "out.tmd")
    raw = path.read_bytes()
    height, width = original.shape
    assert raw[:32] == b"Binary TrueMap Data File v2.0\r\n\x00" and len(raw) == 80 + 4 * width * height
    assert raw[55:56] == b"\x00" and raw.index(b"\x00", 32) == 55  # NUL-scanning readers also find byte 56
    assert struct.unpack("<2I4f", raw[56:80])[:2] == (width, height)
    back = sciz.load(path)
    assert np.array_equal(back.data, original.data)
    for key in ("width", "height", "x_length", "y_length", "x_offset", "y_offset", "units"):
        assert back.metadata[key] == original.metadata[key]


def test_nodata_mask_is_written_as_the_nodata_value(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "tmd" / "Euro_coin.tmd"
    clean = sciz.load(source, nodata_to_nan=True)
    path = sciz.save(clean, tmp_path / "coin.tmd")
    assert path.read_bytes()[80:] == source.read_bytes()[80:]  # heights bit-identical, -1e10 included


def test_export_to_tmd_and_its_arguments(tmp_path: Path) -> None:
    heights = np.linspace(0, 1, 20, dtype=np.float64).reshape(4, 5)
    path = export_to_tmd(heights, tmp_path / "made", x_length=5.0, y_length=2.0, comment="lab scan 7")
    assert path.endswith("made.tmd")
    back = load_tmd(path)
    assert back["comment"] == "lab scan 7" and back["x_length"] == 5.0 and back["y_pixel_size"] == 0.5
    assert np.array_equal(back["height_map"], heights.astype(np.float32))
    again = export_to_tmd(back, tmp_path / "again.tmd")
    assert Path(again).read_bytes() == Path(path).read_bytes()
    with pytest.raises(ArgumentError, match="comment"):
        write_tmd(tmp_path / "x.tmd", heights, comment="a comment that is far too long")
    with pytest.raises(ArgumentError, match="2-D"):
        write_tmd(tmp_path / "x.tmd", np.zeros(5))
    with pytest.raises(ArgumentError, match="x_length"):
        write_tmd(tmp_path / "x.tmd", heights, x_length=float("inf"))


def test_tmd_format_problems_name_what_cannot_be_held() -> None:
    plugin = sciz.formats.get_format("tmd")
    ok = sciz.Dataset(np.zeros((3, 4), np.float32), metadata={"x_length": 1.0, "units": "mm"})
    assert plugin.problems(ok) == []
    bad = sciz.Dataset(
        np.full((2, 3, 4), 0.1, dtype=np.float64),
        layers={"raw": np.zeros(2)},
        masks={"edge": np.zeros((2, 3, 4), bool)},
        metadata={"operator": "ann", "units": "nm"},
    )
    problems = " | ".join(plugin.problems(bad))
    for expected in ("2-D height map", "float32", "layers ['raw']", "masks ['edge']", "['operator']", "'nm'"):
        assert expected in problems
