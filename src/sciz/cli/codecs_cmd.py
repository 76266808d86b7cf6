"""``sciz codecs list`` and ``sciz codecs demo``: what codecs exist here and what they do to a real-looking field."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import typer
from rich.table import Table

from .app import app, console, fail

codecs_app = typer.Typer(help="The scientific codecs: which are available, and a demonstration.", no_args_is_help=True)
app.add_typer(codecs_app, name="codecs")


@codecs_app.command("list")
def list_command() -> None:
    """List every codec of the codec table: available or not and why, its engine and version, dtypes and modes."""
    import imagecodecs

    from .. import codecs
    from ..codecs.registry import CODECS, codec_class

    versions = imagecodecs.version(dict)
    table = Table(title=f"sciz codecs (engines: imagecodecs {versions['imagecodecs']})")
    for column in ("codec", "available", "engine", "dtypes", "modes"):
        table.add_column(column)
    for name in codecs.list_codecs():
        row = CODECS.get(name) or getattr(codec_class(name), "spec", None)
        if row is None:  # registered by a third party without a table row
            table.add_row(name, "[green]yes[/green]", codec_class(name).__module__, "?", "third-party codec")
            continue
        constants = getattr(codecs, row.engine, None) if row.engine else None
        available = True if constants is None else bool(constants.available)
        version = versions.get(row.library, "n/a")
        engine = f"{row.library} {version}"
        if available:
            status = "[green]yes[/green]"
        elif name == "jetraw":
            status = "[red]no[/red]: proprietary library not installed"
        else:
            status = f"[red]no[/red]: this imagecodecs build lacks {row.library}"
        table.add_row(name, status, engine, " ".join(row.dtypes), row.summary)
    console.print(table)


@dataclass
class DemoRow:
    codec: str
    setting: str
    ratio: float
    encode_mb_s: float
    decode_mb_s: float
    max_error: float
    bound: float | None


def demo_field(shape: tuple[int, int, int] = (32, 256, 256), seed: int = 42) -> np.ndarray:
    """A deterministic smooth float32 field with a little noise, like a simulation or surface map."""
    z, y, x = (np.linspace(0, 1, n, dtype=np.float32) for n in shape)
    field = (
        np.sin(6.0 * x)[None, None, :] * np.cos(5.0 * y)[None, :, None]
        + 0.5 * np.sin(9.0 * z)[:, None, None]
        + 0.2 * np.cos(17.0 * (x[None, None, :] + y[None, :, None]))
    )
    noise = np.random.default_rng(seed).normal(0.0, 1e-4, shape).astype(np.float32)
    return (field + noise).astype(np.float32)


def run_demo(field: np.ndarray, tolerance: float, numthreads: int | None = None) -> list[DemoRow]:
    """Compress ``field`` with each available codec; measure ratio, speed and the largest error."""
    from .. import codecs

    settings: list[tuple[str, str, dict[str, Any]]] = [
        ("zfp", f"tolerance={tolerance:g}", {"tolerance": tolerance}),
        ("sz3", f"tolerance={tolerance:g}", {"tolerance": tolerance}),
        ("sperr", f"tolerance={tolerance:g}", {"tolerance": tolerance}),
        ("lerc", f"tolerance={tolerance:g}", {"tolerance": tolerance}),
        ("pcodec", "level=8 (lossless)", {"level": 8}),
        ("szip", "nn (lossless)", {}),
        ("zfp", "tolerance=0 (lossless)", {"tolerance": 0}),
    ]
    rows = []
    megabytes = field.nbytes / 1e6
    for name, label, params in settings:
        codec = codecs.get(name, **params)
        start = time.perf_counter()
        stream = codec.encode(field, numthreads=numthreads)
        encoded = time.perf_counter()
        restored = codec.decode(stream, numthreads=numthreads)
        decoded = time.perf_counter()
        error = float(np.max(np.abs(restored.astype(np.float64) - field.astype(np.float64))))
        rows.append(
            DemoRow(
                name,
                label,
                field.nbytes / len(stream),
                megabytes / max(encoded - start, 1e-9),
                megabytes / max(decoded - encoded, 1e-9),
                error,
                codec.tolerance,
            )
        )
    return rows


@codecs_app.command("demo")
def demo_command(
    tolerance: float = typer.Option(1e-3, help="Absolute error bound for the lossy codecs."),
    frames: int = typer.Option(32, min=1, max=4096, help="Depth of the built-in 3-D field (frames x 256 x 256)."),
    numthreads: int = typer.Option(1, min=0, help="Threads per codec call (0 = all cores)."),
) -> None:
    """Compress a built-in smooth float32 field with each codec and print ratio, speed and error."""
    if not math.isfinite(tolerance) or tolerance <= 0:
        fail(f"--tolerance={tolerance:g} is not allowed: must be a positive finite number (an absolute error bound)", 2)
    field = demo_field((frames, 256, 256))
    console.print(
        f"Built-in field: {field.shape} float32, {field.nbytes / 1e6:.1f} MB, "
        f"range {field.min():.3f}..{field.max():.3f}"
    )
    with console.status("compressing with each codec..."):
        rows = run_demo(field, tolerance, numthreads)
    table = Table(title="sciz codecs on the built-in field")
    for column in ("codec", "setting", "ratio", "encode MB/s", "decode MB/s", "max error", "bound kept"):
        table.add_column(column, justify="right" if column not in ("codec", "setting") else "left")
    for row in rows:
        kept = "n/a" if row.bound is None else ("yes" if row.max_error <= row.bound else "[red]NO[/red]")
        table.add_row(
            row.codec,
            row.setting,
            f"{row.ratio:.2f}",
            f"{row.encode_mb_s:.0f}",
            f"{row.decode_mb_s:.0f}",
            f"{row.max_error:.3g}",
            kept,
        )
    console.print(table)
