"""The root typer application and the ``--version`` option."""

from __future__ import annotations

import importlib

import typer
from rich.console import Console

from .._version import __version__

app = typer.Typer(
    name="sciz",
    help="Save, compress and export scientific arrays with their metadata.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

#: Modules that add commands to ``app`` when imported.
COMMAND_MODULES = [
    "sciz.cli.codecs_cmd",
    "sciz.cli.info_cmd",
    "sciz.cli.convert_cmd",
    "sciz.cli.process_cmd",
    "sciz.cli.demo_cmd",
    "sciz.cli.compress_cmd",
    "sciz.cli.evaluate_cmd",
]


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"sciz {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", help="Print the sciz version and exit.", callback=_version_callback, is_eager=True
    ),
) -> None:
    """sciz: scientific arrays, their metadata, and error-bounded compression."""


def _register_commands() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)


def main() -> None:
    """Entry point of the ``sciz`` console script."""
    _register_commands()
    app()
