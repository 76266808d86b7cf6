"""The command line: sciz --version, sciz codecs list, sciz codecs demo."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

import sciz
from sciz.cli.app import _register_commands, app

_register_commands()
runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and sciz.__version__ in result.output


def test_codecs_list() -> None:
    result = runner.invoke(app, ["codecs", "list"])
    assert result.exit_code == 0, result.output
    for name in ("zfp", "sperr", "sz3", "lerc", "pcodec", "szip", "floatpred", "jetraw"):
        assert name in result.output
    assert "proprietary" in result.output


def test_codecs_demo_reports_every_bound_kept() -> None:
    result = runner.invoke(app, ["codecs", "demo", "--frames", "4", "--tolerance", "0.01"])
    assert result.exit_code == 0, result.output
    assert "NO" not in result.output
    assert result.output.count("yes") >= 7


def test_console_script_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "sciz", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and sciz.__version__ in result.stdout
