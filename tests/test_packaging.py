"""The package's declared extras: ``sciz[all]`` installs every optional feature."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
#: Extras that are not features of the library (what the test suite needs).
NOT_FEATURES = {"test", "all"}


def test_all_extra_names_every_feature_extra():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    (entry,) = extras["all"]
    named = set(re.fullmatch(r"sciz\[(?P<names>[a-z0-9_,-]+)\]", entry)["names"].split(","))
    assert "afm" in named  # AFMReader: `sciz process video.asd` after `pip install 'sciz[all]'`
    assert named == set(extras) - NOT_FEATURES
