"""Shared test fixtures: the real sample data beside the project, and library versions in the header."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _stream_key(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The key sciz tags its sz3 streams with (sciz.codecs._trust) lives in the session's temporary
    folder, not in the home of whoever runs the tests; subprocesses inherit it."""
    if "SCIZ_KEY_FILE" not in os.environ:
        os.environ["SCIZ_KEY_FILE"] = str(tmp_path_factory.mktemp("key") / "stream.key")


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


# ----- playNano 0.5.0, for the interop tests -------------------------------------------------------
# playNano pins an old psutil through its dependencies, which would downgrade the test environment,
# so it runs in its own virtual environment: the test environment's site-packages are visible to it
# through a .pth file, and only playNano plus the few libraries its I/O modules import are installed
# there. Set SCIZ_PLAYNANO_PYTHON to use an existing interpreter that has playNano instead.

PLAYNANO = "playnano==0.5.0"
#: What playnano.io.{data_loaders,export_data} import beyond the test environment (via its processing package).
OVERLAY = [
    "scikit-learn", "narwhals", "joblib", "threadpoolctl",
    "scikit-image", "networkx", "lazy-loader", "imageio",
]  # fmt: skip


def _python_in(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _build_playnano_env(root: Path) -> Path:
    venv = root / "venv"
    key = json.dumps([PLAYNANO, *OVERLAY, sys.version, sys.prefix])
    marker = root / "ready.json"
    if marker.exists() and marker.read_text() == key and _python_in(venv).exists():
        return _python_in(venv)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    python = _python_in(venv)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_sciz_test_parent.pth").write_text("\n".join(sorted(parent)) + "\n")
    # --ignore-installed: the parent's packages are visible, but playNano must live in this venv only.
    install = [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed", PLAYNANO, *OVERLAY]
    done = subprocess.run(install, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"installing {PLAYNANO} into {venv} failed:\n{done.stderr[-3000:]}")
    marker.write_text(key)
    return python


@pytest.fixture(scope="session")
def playnano_python(request: pytest.FixtureRequest) -> Path:
    """An interpreter that imports playNano 0.5.0 (built once, cached in .pytest_cache)."""
    override = os.environ.get("SCIZ_PLAYNANO_PYTHON")
    if override:
        return Path(override)
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    if cache is not None:
        root = Path(cache.mkdir("sciz-playnano-0.5.0"))
    else:
        root = request.getfixturevalue("tmp_path_factory").mktemp("sciz-playnano-0.5.0")
    lock_path = root / "lock"
    with lock_path.open("w") as lock:
        if os.name == "posix":  # several xdist workers share the cache: build it once
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            python = _build_playnano_env(root)
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            pytest.fail(f"cannot provide playNano for the interop tests: {exc}")
    check = subprocess.run(
        [str(python), "-c", "import playnano, playnano.io.data_loaders; print(playnano.__version__)"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.strip() == "0.5.0"
    return python


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures tests record as ``summary`` properties (the forged-stream fuzz counts), under xdist too."""
    lines = [
        str(value)
        for report in terminalreporter.stats.get("passed", [])
        for key, value in getattr(report, "user_properties", ())
        if key == "summary"
    ]
    if lines:
        terminalreporter.section("sciz figures")
        for line in sorted(lines):
            terminalreporter.write_line(line)
