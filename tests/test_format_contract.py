"""Every registered format passes the format contract (sciz.testing.FormatTests)."""

from __future__ import annotations

import pytest

from sciz.formats import list_formats
from sciz.testing import FormatTests


class TestEveryFormat(FormatTests):
    known_failures = {}  # noqa: RUF012  (a ClassVar of the contract)

    @pytest.fixture(params=[plugin.name for plugin in list_formats()])
    def format_name(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)
