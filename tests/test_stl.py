"""STL export of height maps, checked with a real STL reader (trimesh) and by parsing the bytes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh

import sciz
from sciz.errors import ArgumentError, FormatError
from sciz.formats.stl import heightmap_triangle_count, read_stl, write_heightmap_stl
from sciz.heightmap import export_to_stl, load_tmd


def relief(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    return (np.sin(x / 7.0) * np.cos(y / 5.0) + 0.1 * rng.random((rows, cols))).astype(np.float32)


def load_mesh(path: str | Path) -> trimesh.Trimesh:
    return trimesh.load(path, file_type="stl", force="mesh")


@pytest.mark.parametrize("ascii", [False, True])
def test_surface_triangles_and_physical_bounds(tmp_path: Path, ascii: bool) -> None:
    heights = relief(30, 40)
    path = export_to_stl(heights, tmp_path / "s", x_length=8.0, y_length=3.0, z_scale=2.0, ascii=ascii)
    assert path.endswith("s.stl")
    mesh = load_mesh(path)
    assert len(mesh.faces) == 2 * 29 * 39 == heightmap_triangle_count(30, 40, base=False)
    pitch_x, pitch_y = 8.0 / 40, 3.0 / 30
    np.testing.assert_allclose(
        mesh.bounds,
        [[0, 0, 2 * heights.min()], [39 * pitch_x, 29 * pitch_y, 2 * heights.max()]],
        rtol=1e-6,
        atol=1e-6,
    )
    assert not mesh.is_watertight  # an open surface
    assert (mesh.face_normals[:, 2] > 0).all()  # facing up


def test_binary_header_is_80_bytes_and_the_count_matches(tmp_path: Path) -> None:
    path = Path(export_to_stl(relief(5, 6), tmp_path / "h.stl"))
    raw = path.read_bytes()
    count = struct.unpack("<I", raw[80:84])[0]
    assert count == 2 * 4 * 5 and len(raw) == 84 + 50 * count
    assert not raw[:5].lower().startswith(b"solid")
    record = np.frombuffer(raw, dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")], offset=84)
    np.testing.assert_allclose(np.linalg.norm(record["n"], axis=1), 1.0, rtol=1e-6)


def test_ascii_is_valid_text_stl(tmp_path: Path) -> None:
    path = Path(export_to_stl(relief(4, 4), tmp_path / "a.stl", ascii=True))
    text = path.read_text("ascii")
    assert text.startswith("solid ") and text.rstrip().splitlines()[-1].startswith("endsolid")
    assert text.count("facet normal") == 18 and text.count("vertex") == 54
    assert np.array_equal(read_stl(path).data, read_stl(export_to_stl(relief(4, 4), tmp_path / "b.stl")).data)


@pytest.mark.parametrize("shape", [(2, 2), (2, 3), (3, 2), (3, 3), (17, 23)])
def test_base_makes_a_watertight_solid(tmp_path: Path, shape: tuple[int, int]) -> None:
    heights = relief(*shape, seed=sum(shape))
    path = export_to_stl(heights, tmp_path / "solid.stl", x_length=2.0, y_length=1.0, base_thickness=0.5)
    mesh = load_mesh(path)
    assert len(mesh.faces) == heightmap_triangle_count(*shape, base=True)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert mesh.bounds[0, 2] == pytest.approx(float(heights.min()) - 0.5, abs=1e-6)


def test_flat_map_with_base_is_a_box_of_the_right_volume(tmp_path: Path) -> None:
    path = export_to_stl(np.full((11, 21), 3.0), tmp_path / "box.stl", x_length=21.0, y_length=11.0, base_thickness=2.0)
    mesh = load_mesh(path)
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(20.0 * 10.0 * 2.0, rel=1e-6)  # vertex span (n-1) pitches
    np.testing.assert_allclose(mesh.bounds, [[0, 0, 1.0], [20.0, 10.0, 3.0]], atol=1e-6)


def test_real_tmd_to_stl_with_offsets(shared_data: Path, tmp_path: Path) -> None:
    data = load_tmd(shared_data / "tmd" / "v2_Surface.tmd")
    path = export_to_stl(data, tmp_path / "surface.stl", z_scale=100.0, base_thickness=0.01)
    mesh = load_mesh(path)
    assert len(mesh.faces) == heightmap_triangle_count(169, 169, base=True) and mesh.is_watertight
    pitch = data["x_length"] / 169
    assert mesh.bounds[1, 0] == pytest.approx(168 * pitch, rel=1e-6)
    assert mesh.bounds[1, 2] == pytest.approx(100.0 * float(data["height_map"].max()), rel=1e-6)
    shifted = read_stl(export_to_stl(data["height_map"], tmp_path / "o.stl", x_offset=5.0, y_offset=-1.0))
    assert shifted.data[..., 0].min() == 5.0 and shifted.data[..., 1].min() == -1.0


def test_image_orientation_is_not_mirrored(tmp_path: Path) -> None:
    heights = np.zeros((3, 4), np.float32)
    heights[0, 3] = 1.0  # top-right pixel of the image
    triangles = read_stl(export_to_stl(heights, tmp_path / "o.stl")).data.reshape(-1, 3)
    peak = triangles[np.argmax(triangles[:, 2])]
    assert tuple(peak) == (3.0, 2.0, 1.0)  # largest x and largest y


def test_a_million_pixel_map_is_vectorised(tmp_path: Path) -> None:
    heights = relief(1000, 1000)
    path = export_to_stl(heights, tmp_path / "big.stl")
    raw_count = struct.unpack("<I", Path(path).read_bytes()[80:84])[0]
    assert raw_count == 2 * 999 * 999 and Path(path).stat().st_size == 84 + 50 * raw_count
    mesh = read_stl(path)
    assert mesh.data[..., 2].max() == heights.max()


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArgumentError, match="NaN or infinite"):
        export_to_stl(np.array([[0.0, np.nan], [1.0, 2.0]]), tmp_path / "x.stl")
    with pytest.raises(ArgumentError, match="2-D"):
        export_to_stl(np.zeros(4), tmp_path / "x.stl")
    with pytest.raises(ArgumentError, match="at least 2 x 2"):
        write_heightmap_stl(tmp_path / "x.stl", np.zeros((1, 5)))
    with pytest.raises(ArgumentError, match="base_thickness"):
        export_to_stl(np.zeros((2, 2)), tmp_path / "x.stl", base_thickness=0)
    with pytest.raises(ArgumentError, match="x_pitch"):
        write_heightmap_stl(tmp_path / "x.stl", np.zeros((2, 2)), x_pitch=-1)
    assert not (tmp_path / "x.stl").exists()


def test_reader_rejects_damaged_files(tmp_path: Path) -> None:
    raw = Path(export_to_stl(relief(4, 4), tmp_path / "ok.stl")).read_bytes()
    (tmp_path / "cut.stl").write_bytes(raw[:-10])
    with pytest.raises(FormatError, match=r"cut\.stl: truncated binary STL: the header says 18 triangles"):
        read_stl(tmp_path / "cut.stl")
    text = Path(export_to_stl(relief(3, 3), tmp_path / "a.stl", ascii=True)).read_text()
    (tmp_path / "half.stl").write_text(text[: len(text) // 2])
    with pytest.raises(FormatError, match=r"half\.stl: (truncated|malformed) ASCII STL"):
        read_stl(tmp_path / "half.stl")
    (tmp_path / "word.stl").write_text(text.replace("vertex", "vertex oops", 1))
    with pytest.raises(FormatError, match=r"word\.stl: malformed ASCII STL: a coordinate is not a number"):
        read_stl(tmp_path / "word.stl")


def test_stl_format_in_the_registry(shared_data: Path, tmp_path: Path) -> None:
    surface = sciz.load(shared_data / "tmd" / "v2_Surface.tmd")
    plugin = sciz.formats.get_format("stl")
    assert plugin.problems(surface) == []  # the geometry holds lengths, offsets and units; comment -> header
    path = sciz.save(surface, tmp_path / "s.stl", base_thickness=0.001)
    back = sciz.load(path)
    assert back.metadata["stl_header"] == "Created by TrueMap v6" and back.metadata["triangles"] == len(back.data)
    assert load_mesh(path).is_watertight
    assert "masks" in " ".join(plugin.problems(sciz.load(shared_data / "tmd" / "Euro_coin.tmd", nodata_to_nan=True)))
    copy = sciz.save(back, tmp_path / "copy.stl")
    assert np.array_equal(sciz.load(copy).data, back.data)
