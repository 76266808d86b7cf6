"""``sciz demo``: process a built-in synthetic AFM video and write every export into one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app, console, fail
from .process_cmd import ProcessJob, check_tolerance, print_summary, run_job

__all__ = ["DEMO_FOLDER", "demo_command"]

#: Where ``sciz demo`` writes unless told otherwise.
DEMO_FOLDER = Path("sciz-demo")


@app.command("demo")
def demo_command(
    output_folder: Annotated[
        Path, typer.Argument(help="Folder to write the demo files into.", show_default=True)
    ] = DEMO_FOLDER,
    frames: Annotated[int, typer.Option("--frames", min=2, max=500, help="Frames in the sample video.")] = 24,
    size: Annotated[int, typer.Option("--size", min=32, max=2048, help="Frame side in pixels.")] = 128,
    codec: Annotated[
        str | None, typer.Option("--codec", help="HDF5 codec for the bundle (e.g. zfp); default lossless.")
    ] = None,
    tolerance: Annotated[float | None, typer.Option("--tolerance", help="Error bound for a lossy --codec.")] = None,
) -> None:
    """Process a generated AFM video (drift, tilt, banding, noise) and export it every way sciz can.

    Writes the processed and raw stack as OME-TIFF, NPZ and HDF5 bundles and annotated GIFs.
    """
    from ..errors import SciZError
    from ..processing import Pipeline
    from ..processing.sample import DEMO_PROCESSING, sample_stack

    check_tolerance(tolerance, codec)
    stack = sample_stack(frames, size)
    job = ProcessJob(
        processing=Pipeline(DEMO_PROCESSING),
        formats=["tif", "npz", "h5"],
        make_gif=True,
        raw=True,
        output_folder=output_folder,
        output_name="sciz_demo",
        scale_bar_nm=50.0,
        codec=codec,
        tolerance=tolerance,
    )
    console.print(
        f"sample video: {frames} frames of {size}x{size} px, 2 nm/px; pipeline: {DEMO_PROCESSING}",
        highlight=False,
        soft_wrap=True,
    )
    try:
        written = run_job(stack, job)
    except (SciZError, OSError, ValueError) as exc:
        fail(str(exc))
    print_summary(stack, job, written, "built-in sample (sciz.processing.sample.sample_stack)")
    console.print(f"demo files are in [bold]{output_folder.resolve()}[/]", highlight=False, soft_wrap=True)
