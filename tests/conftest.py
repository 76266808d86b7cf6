"""Shared test fixtures: the real sample data beside the project, and library versions in the header."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_report_header(config: pytest.Config) -> list[str]:
    import imagecodecs
    import numpy

    return [f"numpy {numpy.__version__}, imagecodecs {imagecodecs.__version__}", f"shared data: {SHARED_DATA}"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real sample files (../shared/data); tests copy before anything could write near them."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the real sample data is missing: expected {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def copy_shared(shared_data: Path, tmp_path: Path):
    """Copy a file or folder from the shared data into tmp_path and return the copy's path."""

    def _copy(relative: str) -> Path:
        source = shared_data / relative
        target = tmp_path / source.name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return target

    return _copy
