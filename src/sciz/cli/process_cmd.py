"""``sciz process INPUT``: read an AFM video, run a processing pipeline, export bundles and a GIF."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .app import app, console, disk_size, err_console, fail, human_size

if TYPE_CHECKING:
    from ..stack import ImageStack

__all__ = ["ProcessJob", "process_command", "run_job"]


@dataclass
class ProcessJob:
    """Everything ``sciz process`` and ``sciz demo`` do to one stack."""

    processing: Any = None
    formats: list[str] = field(default_factory=list)
    make_gif: bool = False
    raw: bool = False
    output_folder: Path = Path("output")
    output_name: str | None = None
    scale_bar_nm: float = 100.0
    zmin: Any = "auto"
    zmax: Any = "auto"
    fps: float | None = None
    cmap: str = "afmhot"
    codec: str | None = None
    tolerance: float | None = None
    #: True: layers on disk, frames in blocks; False: in memory; "auto": by the memory budget.
    out_of_core: bool | str = "auto"


def split_inputs(tokens: Sequence[str]) -> tuple[str, list[str]]:
    """The INPUT path and any export names written space-separated after ``--export``.

    Click hands the words after ``--export npz`` (``hdf5 ...``) over as positional arguments; a word
    that is an export name and not an existing path is taken as one.
    """
    from ..afm.export import export_formats

    names = export_formats()
    paths: list[str] = []
    formats: list[str] = []
    for token in tokens:
        if token.lower().lstrip(".") in names and not Path(token).exists():
            formats.append(token)
        else:
            paths.append(token)
    if len(paths) != 1:
        shown = ", ".join(paths) if paths else "none"
        fail(f"give exactly one INPUT file or folder (got {shown})", 2)
    return paths[0], formats


def run_job(stack: ImageStack, job: ProcessJob) -> list[tuple[str, Path]]:
    """Process ``stack`` and write the exports ``job`` asks for, with a progress bar on stderr.

    Returns the (kind, path) of every file written.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ..afm import export_bundles, export_gif
    from ..processing import Pipeline

    pipeline = job.processing if isinstance(job.processing, Pipeline) else Pipeline(job.processing or [])
    exports = [(fmt, False) for fmt in job.formats]
    gifs = [False] if job.make_gif else []
    if job.raw and len(pipeline):
        # --raw adds the unprocessed snapshot next to the processed files (no ``_filtered`` suffix).
        exports += [(fmt, True) for fmt in job.formats]
        gifs += [True] if job.make_gif else []
    total = len(pipeline) + len(exports) + len(gifs)
    written: list[tuple[str, Path]] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("processing", total=max(total, 1))

        def step_progress(done: int, _total: int, name: str) -> None:
            progress.update(task, completed=done, description=f"step {done + 1}/{_total}: {name}")

        if len(pipeline):
            from ..processing import needs_out_of_core

            out_of_core = needs_out_of_core(stack, pipeline) if job.out_of_core == "auto" else bool(job.out_of_core)
            how = "out of core (layers on disk, frames in blocks)" if out_of_core else "in memory"
            err_console.print(
                f"processing {how}{' (chosen by the memory budget)' if job.out_of_core == 'auto' else ''}"
            )
            pipeline.run(stack, progress=step_progress, out_of_core=out_of_core)
        done = len(pipeline)
        for fmt, raw in exports:
            progress.update(task, completed=done, description=f"writing {fmt}{' (raw)' if raw else ''}")
            paths = export_bundles(
                stack,
                job.output_folder,
                job.output_name,
                [fmt],
                raw=raw,
                codec=job.codec if fmt == "h5" else None,
                tolerance=job.tolerance if fmt == "h5" else None,
            )
            written += [(f"{name}{' (raw)' if raw else ''}", Path(p)) for name, p in paths.items()]
            done += 1
        for raw in gifs:
            progress.update(task, completed=done, description=f"writing gif{' (raw)' if raw else ''}")
            gif = export_gif(
                stack,
                make_gif=True,
                output_folder=job.output_folder,
                output_name=job.output_name,
                scale_bar_nm=job.scale_bar_nm,
                cmap_name=job.cmap,
                raw=raw,
                fps=job.fps,
                zmin=job.zmin,
                zmax=job.zmax,
            )
            if gif is not None:
                written.append((f"gif{' (raw)' if raw else ''}", Path(gif)))
            done += 1
        progress.update(task, completed=max(total, 1))
    return written


def print_summary(stack: ImageStack, job: ProcessJob, written: list[tuple[str, Path]], source: str) -> None:
    """Say what was read, which steps ran and which files were written (with sizes)."""
    from rich.table import Table

    steps = [s.get("name", "?") for s in stack.provenance.get("processing", {}).get("steps", [])]
    console.print(
        f"read [bold]{source}[/]: {stack.n_frames} frames of {stack.height}x{stack.width} px, "
        f"{stack.pixel_size_nm:g} nm/px, channel {stack.channel!r}",
        highlight=False,
        soft_wrap=True,
    )
    if steps:
        console.print(f"processing steps: {' -> '.join(steps)}", highlight=False, soft_wrap=True)
    if not written:
        console.print("nothing written (add --export npz,h5,tif and/or --make-gif)")
        return
    table = Table(title=f"written to {job.output_folder}", title_justify="left")
    table.add_column("kind")
    table.add_column("file", overflow="fold")
    table.add_column("size", justify="right")
    for kind, path in written:
        table.add_row(kind, str(path), human_size(disk_size(path)))
    console.print(table)


def _bound(value: str, name: str) -> float | str:
    text = value.strip().lower()
    if text in ("auto", "frame"):
        return text
    try:
        return float(text)
    except ValueError:
        fail(f"{name}={value!r} is not allowed: give a number, 'auto' (1st/99th percentile) or 'frame'", 2)


@app.command("process")
def process_command(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT",
            help="AFM video file (.asd, .h5-jpk, .spm, .jpk, .ibw, .gwy, .npz, .h5, .ome.tif, .tif, .npy) "
            "or a folder of frames.",
            show_default=False,
        ),
    ],
    processing: Annotated[
        str | None,
        typer.Option(
            "--processing",
            "-p",
            help='Steps, e.g. "remove_plane; gaussian_filter:sigma=2; mask_threshold:threshold=1".',
        ),
    ] = None,
    processing_file: Annotated[
        Path | None, typer.Option("--processing-file", help="YAML/JSON file with a 'filters:' list of steps.")
    ] = None,
    export: Annotated[
        list[str] | None,
        typer.Option(
            "--export", "-e", help="Formats to write: tif, npz, h5 (hdf5); comma- or space-separated, repeatable."
        ),
    ] = None,
    make_gif: Annotated[bool, typer.Option("--make-gif", help="Also write an annotated animated GIF.")] = False,
    output_folder: Annotated[Path, typer.Option("--output-folder", "-o", help="Where to write.")] = Path("output"),
    output_name: Annotated[
        str | None, typer.Option("--output-name", "-n", help="Base file name (default: the input's name).")
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Also export the unprocessed stack (no _filtered suffix).")
    ] = False,
    scale_bar_nm: Annotated[float, typer.Option("--scale-bar-nm", help="GIF scale bar length in nm.")] = 100.0,
    zmin: Annotated[str, typer.Option("--zmin", help="GIF colour minimum: a height, 'auto' or 'frame'.")] = "auto",
    zmax: Annotated[str, typer.Option("--zmax", help="GIF colour maximum: a height, 'auto' or 'frame'.")] = "auto",
    fps: Annotated[
        float | None, typer.Option("--fps", help="GIF frame rate (default: from the frame timestamps).")
    ] = None,
    cmap: Annotated[str, typer.Option("--cmap", help="GIF colormap (any matplotlib name).")] = "afmhot",
    channel: Annotated[
        str | None, typer.Option("--channel", "-c", help="Data channel (default: the format's height channel).")
    ] = None,
    codec: Annotated[
        str | None,
        typer.Option("--codec", help="HDF5 codec from the registry (zfp, sz3, sperr, szip); default lossless."),
    ] = None,
    tolerance: Annotated[
        float | None, typer.Option("--tolerance", help="Absolute error bound for a lossy --codec.")
    ] = None,
    pixel_size_nm: Annotated[
        float | None, typer.Option("--pixel-size-nm", help="Pixel size for inputs that carry none (arrays, TIFF).")
    ] = None,
    out_of_core: Annotated[
        bool | None,
        typer.Option(
            "--out-of-core/--in-memory",
            help="Keep layers on disk and process frames in blocks (bounded memory), or all in memory; "
            "default: out of core when the layers would not fit in half the available memory.",
        ),
    ] = None,
) -> None:
    """Process an AFM video: read INPUT, run the steps, and export bundles and a GIF.

    Example: sciz process video.asd -p "remove_plane; gaussian_filter:sigma=1" --export npz h5 --make-gif
    """
    from ..afm.export import parse_formats
    from ..errors import SciZError
    from ..processing import Pipeline, load_stack

    source, extra_formats = split_inputs(inputs)
    if processing is not None and processing_file is not None:
        fail("give either --processing or --processing-file, not both", 2)
    if extra_formats and not export:
        fail(f"unexpected argument(s) {', '.join(extra_formats)}: export formats follow --export", 2)
    if tolerance is not None and codec is None:
        fail("--tolerance needs --codec (the default HDF5 compression is lossless)", 2)
    zmin_value, zmax_value = _bound(zmin, "--zmin"), _bound(zmax, "--zmax")
    try:
        formats = parse_formats([*(export or []), *extra_formats]) if export else []
        if codec is not None and "h5" not in formats:
            fail("--codec applies to the HDF5 bundle; add --export h5", 2)
        pipeline = Pipeline.from_file(processing_file) if processing_file is not None else Pipeline(processing or [])
    except FileNotFoundError as exc:
        fail(str(exc))
    except (SciZError, ValueError) as exc:
        fail(str(exc), 2)
    if not Path(source).exists():
        fail(f"no such file or folder: {source}")
    if not formats and not make_gif:
        console.print("note: no --export or --make-gif given; processing only, nothing will be written")
    job = ProcessJob(
        processing=pipeline,
        formats=formats,
        make_gif=make_gif,
        raw=raw,
        output_folder=output_folder,
        output_name=output_name,
        scale_bar_nm=scale_bar_nm,
        zmin=zmin_value,
        zmax=zmax_value,
        fps=fps,
        cmap=cmap,
        codec=codec,
        tolerance=tolerance,
        out_of_core="auto" if out_of_core is None else out_of_core,
    )
    try:
        stack = load_stack(source, channel, pixel_size_nm=pixel_size_nm)
    except FileNotFoundError as exc:
        fail(str(exc))
    except (SciZError, OSError, ValueError) as exc:
        fail(f"cannot read {source}: {exc}")
    try:
        written = run_job(stack, job)
    except (SciZError, OSError, ValueError) as exc:
        fail(str(exc))
    print_summary(stack, job, written, os.fspath(source))
