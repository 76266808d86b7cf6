"""``sciz evaluate IN``: every codec at several error bounds on one file's array: JSON, plots and an HTML page."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from .app import app, console, fail, range_outlier_warning
from .info_cmd import parse_options, read_dataset

__all__ = ["evaluate_command"]


def _split(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        fail(f"{flag} {text!r}: expected a comma-separated list", code=2)
    return items


@app.command("evaluate")
def evaluate_command(
    source: Annotated[Path, typer.Argument(help="The file to read (any format sciz reads).")],
    codecs: Annotated[
        str | None, typer.Option("--codecs", help="Comma-separated codecs (default: every bounded one and auto).")
    ] = None,
    tolerances: Annotated[
        str, typer.Option("--tolerances", help="Comma-separated bounds relative to the data range.")
    ] = "1e-2,1e-3,1e-4",
    out: Annotated[Path, typer.Option("--out", help="Folder for evaluation.json, the PNGs and report.html.")] = Path(
        "sciz-evaluation"
    ),
    fill_value: Annotated[
        float | None, typer.Option("--fill-value", help="Value marking missing data (kept exactly).")
    ] = None,
    read_option: Annotated[
        list[str] | None, typer.Option("--read-option", "-r", help="KEY=VALUE for the reader.")
    ] = None,
) -> None:
    """Code SOURCE's array with each codec at each bound; write a JSON table, plots and an HTML report."""
    import numpy as np
    from rich.progress import Progress

    from ..errors import SciZError
    from ..evaluate import default_codecs, evaluate, write_report

    bounds = []
    for text in _split(tolerances, "--tolerances") or []:
        try:
            bounds.append(float(text))
        except ValueError:
            fail(f"--tolerances: {text!r} is not a number", code=2)
    if any(not 0 < b < 1 for b in bounds):
        fail(f"--tolerances {tolerances!r}: bounds are shares of the data range, between 0 and 1", code=2)
    reader, dataset = read_dataset(source, None, parse_options(read_option or [], "--read-option"))
    data = np.asarray(dataset.data)
    warning = range_outlier_warning(data, fill_value)
    if warning:
        console.print(warning, markup=False, highlight=False)
    names = _split(codecs, "--codecs") or default_codecs(data)
    console.print(
        f"evaluating {source.name} ({data.shape} {data.dtype}): {len(names)} codecs x {len(bounds)} bounds",
        markup=False,
        highlight=False,
    )
    with contextlib.ExitStack() as stack:
        if console.is_terminal:  # a bar that redraws; elsewhere (a log, a pipe) one line per codec and bound
            progress = stack.enter_context(Progress(console=console, transient=True))
            task = progress.add_task(f"evaluating {source.name}", total=len(names) * len(bounds))

            def show(label: str) -> None:
                progress.update(task, advance=1, description=label)
        else:

            def show(label: str) -> None:
                console.print(label, markup=False, highlight=False, soft_wrap=True)

        try:
            rows = evaluate(data, codecs=names, bounds=bounds, fill_value=fill_value, progress=show)
        except (SciZError, ValueError) as exc:
            fail(f"{source}: {exc}")
    if not any("ratio" in row for row in rows):
        refusals = "; ".join(sorted({f"{row['codec']}: {row['error']}" for row in rows}))
        fail(f"{source}: no codec coded its {data.dtype} array ({refusals})")
    paths = write_report(
        rows, out, title=f"sciz evaluation of {source.name} ({reader.name}, {data.shape} {data.dtype})"
    )
    best = max((r for r in rows if "ratio" in r), key=lambda r: r["ratio"], default=None)
    if best is not None:
        console.print(
            f"best ratio {best['ratio']:.2f}: {best['codec']} at bound {best['bound']:g} of the range "
            f"(tolerance {best['tolerance']:.4g})"
        )
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")
