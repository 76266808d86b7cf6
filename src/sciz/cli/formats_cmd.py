"""``sciz formats``: every registered file format with its extensions and what sciz can do with it."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .app import app, console

__all__ = ["formats_command"]


@app.command("formats")
def formats_command(
    capability: Annotated[
        str | None,
        typer.Option("--can", help="Only formats with this capability: read, write, lazy, afm-stack or afm-export."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """List the file formats of the registry: name, extensions, capabilities and the extra they need."""
    from ..errors import ArgumentError
    from ..formats import list_formats
    from .app import fail

    try:
        plugins = list_formats(capability)
    except ArgumentError as exc:
        fail(str(exc), code=2)
    if as_json:
        rows = [
            {
                "name": p.name,
                "extensions": list(p.extensions),
                "capabilities": sorted(p.capabilities()),
                "extra": p.extra,
                "export_names": list(p.stack_export),
                "description": p.description,
            }
            for p in plugins
        ]
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title="sciz formats" + (f" that can {capability}" if capability else ""))
    for column in ("format", "extensions", "can", "needs", "description"):
        table.add_column(column)
    for p in plugins:
        needs = escape(f"sciz[{p.extra}]") if p.extra else ""
        table.add_row(p.name, " ".join(p.extensions), ", ".join(sorted(p.capabilities())), needs, p.description)
    console.print(table)
