"""The root typer application, the ``--version`` option and what every command shares (errors, sizes)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, NoReturn

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
    "sciz.cli.formats_cmd",
    "sciz.cli.convert_cmd",
    "sciz.cli.process_cmd",
    "sciz.cli.demo_cmd",
    "sciz.cli.compress_cmd",
    "sciz.cli.evaluate_cmd",
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and leave with ``code``."""
    from rich.markup import escape

    # Escaped: messages hold brackets that are not markup (``pip install 'sciz[afm]'``).
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def disk_size(path: Path) -> int:
    """Bytes on disk of a file, or of every file below a directory."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def range_outlier_warning(data: object, fill_value: float | None) -> str | None:
    """A warning when one value far from all the others (an unmarked fill such as 1e20 land) sets the range
    (:func:`sciz.quality.range_outlier`; the same words as :func:`sciz.codecs.choose` warns with)."""
    from ..quality import range_outlier, range_outlier_message

    found = range_outlier(data, fill_value)
    return None if found is None else "warning: " + range_outlier_message(found, "--fill-value ")


def human_size(size: float) -> str:
    """``size`` bytes as ``123 B``, ``4.5 MiB``..."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop returns first


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


def not_replaceable(target: Path, writer: Any) -> str | None:
    """Why ``--force`` may not replace the existing ``target`` with a ``writer`` file (None: it may).

    Only a file or store sciz reads as the target's format, or as a format of the same container
    (one that shares an extension with it: ``npz`` and ``afm-npz``, ``zspy`` and ``zspy-zip``), is
    replaced: a mistyped name never costs an unrelated file or folder (issue 9: a writer never deletes
    what is not a store of its format). ``sciz convert``, ``compress`` and ``process`` share this rule.
    """
    from ..errors import SciZError
    from ..formats import detect_format

    try:
        found = detect_format(target)
    except (SciZError, OSError, ValueError):
        found = None
    if found is not None and (found.name == writer.name or set(found.extensions) & set(writer.extensions)):
        return None
    kind = "folder" if target.is_dir() else "file"
    what = f"a {found.name} {kind}" if found is not None else f"a {kind} of no format sciz recognises"
    return (
        f"{target} exists and is {what}, not {writer.name}; --force replaces only an existing {writer.name} "
        f"file or store: remove {target} yourself or choose another target"
    )
