"""Every Python example of seeds 000 and 001 runs unchanged except for its import lines, on real TMD data."""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sciz.heightmap import load_from_npz, load_tmd

SEEDS = Path(__file__).resolve().parents[1].parent / "shared" / "seeds"

#: The only change to the seed code: where the functions are imported from.
IMPORTS = {
    "from tmd.exporters.compression import": "from sciz.heightmap import",
    "from tmd.processor import TMDProcessor": "from sciz.heightmap import TMDProcessor",
    "from tmd.utils.filter import apply_gaussian_filter": "from sciz.heightmap import apply_gaussian_filter",
}


def seed_blocks(prefix: str) -> list[str]:
    """The fenced Python blocks of a seed document, import lines rewritten, nothing else touched."""
    matches = sorted(SEEDS.glob(f"{prefix}_*.txt"))
    if not matches:
        pytest.fail(f"seed {prefix} is missing from {SEEDS}")
    text = matches[0].read_text(encoding="utf-8")
    blocks = []
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        code = textwrap.dedent(block)  # the archive steps are indented inside a numbered list
        for old, new in IMPORTS.items():
            code = code.replace(old, new)
        assert "tmd." not in code, f"an import was not rewritten:\n{code}"
        blocks.append(code)
    return blocks


@pytest.fixture
def surface(shared_data: Path) -> dict[str, Any]:
    return load_tmd(shared_data / "tmd" / "v2_Surface.tmd")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(code, "<seed example>", "exec"), namespace)
    return namespace


def test_seed_000_has_the_expected_examples() -> None:
    blocks = seed_blocks("000")
    assert len(blocks) == 7, "seed 000 has 4 examples and a 3-step archive workflow"
    assert len(seed_blocks("001")) == 2


def test_seed_000_basic_npy_export(surface: dict[str, Any], in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namespace = run(seed_blocks("000")[0], {"height_map": surface["height_map"]})
    assert namespace["filepath"] == "height_data.npy"
    assert "Height map saved to height_data.npy" in capsys.readouterr().out
    loaded = namespace["loaded_height_map"]
    assert loaded.dtype == np.float32 and np.array_equal(loaded, surface["height_map"])


def test_seed_000_npz_with_metadata(surface: dict[str, Any], in_tmp: Path) -> None:
    height_map = surface["height_map"]
    namespace = run(seed_blocks("000")[1], {"height_map": height_map})
    assert np.array_equal(namespace["loaded_height_map"], height_map)
    assert namespace["x_length"].shape == () and float(namespace["x_length"]) == 10.0
    exact = load_from_npz("complete_data.npz")
    assert exact["width"] == 169 and type(exact["width"]) is int
    assert exact["comment"] == "Sample height map" and type(exact["x_length"]) is float
    namespace["loaded_data"].close()


def test_seed_000_selective_npz(surface: dict[str, Any], in_tmp: Path) -> None:
    height_map = surface["height_map"]
    roughness_map = np.abs(height_map - np.float32(height_map.mean()))
    normal_map = np.stack(np.gradient(height_map.astype(np.float64)), axis=-1)
    namespace = run(
        seed_blocks("000")[2], {"height_map": height_map, "roughness_map": roughness_map, "normal_map": normal_map}
    )
    assert namespace["filepath"] == "maps_collection.npz"
    with np.load("maps_collection.npz", allow_pickle=False) as loaded:
        names = sorted(k for k in loaded.files if not k.startswith("__"))
        assert names == ["height_map", "normal_map", "roughness_map"]
        assert np.array_equal(loaded["normal_map"], normal_map) and loaded["normal_map"].dtype == np.float64


def test_seed_000_scientific_workflow(surface: dict[str, Any], in_tmp: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage

    height_map = surface["height_map"]
    try:
        namespace = run(seed_blocks("000")[3], {"height_map": height_map})
    finally:
        plt.close("all")
    expected = ndimage.gaussian_filter(height_map, sigma=1.0)
    assert np.array_equal(namespace["data"], expected)
    assert np.array_equal(np.load("processed_height_map.npy"), expected)
    assert Path("analysis_result.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seed_000_archive_workflow(shared_data: Path, in_tmp: Path) -> None:
    from scipy import ndimage

    (in_tmp / "sample.tmd").write_bytes((shared_data / "tmd" / "v2_Vickers_Indentation.tmd").read_bytes())
    step1, step2, step3 = seed_blocks("000")[4:7]
    # Step 3 uses datetime without importing it; supplying that import is the only addition.
    namespace = run(step1, {"datetime": dt.datetime})
    run(step2, namespace)
    run(step3, namespace)
    archive = load_from_npz("dataset_001.npz")
    height_map = namespace["height_map"]
    assert height_map.shape == (400, 400)
    assert np.array_equal(archive["original"], height_map)
    expected = ndimage.gaussian_filter(height_map, sigma=0.5)
    assert archive["filtered"].dtype == np.float32 and np.array_equal(archive["filtered"], expected)
    metadata = archive["metadata"]
    assert metadata == {k: v for k, v in namespace["data"].items() if k != "height_map"}
    assert metadata["x_length"] == 0.027293596416711807 and metadata["version"] == 2
    assert metadata["comment"] == "Created by Truemap v6"
    readme = Path("dataset_001_readme.txt").read_text()
    assert "filtered: Gaussian filtered (sigma=0.5)" in readme
    assert re.search(r"^Date: \d{4}-\d{2}-\d{2}$", readme, flags=re.M)


def test_seed_001_basic_npy(surface: dict[str, Any], in_tmp: Path) -> None:
    namespace = run(seed_blocks("001")[0], {"height_map": surface["height_map"]})
    assert Path("heightmap.npy").is_file()
    assert np.array_equal(namespace["loaded_height_map"], surface["height_map"])


def test_seed_001_compressed_npz_with_metadata(surface: dict[str, Any], in_tmp: Path) -> None:
    namespace = run(seed_blocks("001")[1], {"height_map": surface["height_map"]})
    loaded = namespace["loaded_data"]
    assert namespace["units"] == "mm" and type(namespace["units"]) is str
    assert np.array_equal(namespace["height_map"], surface["height_map"])
    assert loaded["timestamp"] == "2023-06-15T14:30:00" and loaded["source"] == "laser_scan"
    assert loaded["x_length"] == 10.0 and type(loaded["x_length"]) is float
    with np.load("terrain_with_metadata.npz", allow_pickle=False) as plain:
        assert str(plain["units"]) == "mm" and float(plain["y_length"]) == 10.0
