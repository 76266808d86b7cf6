"""``sciz process INPUT...``: read AFM videos, run a processing pipeline, export bundles and a GIF.

Existing outputs are refused unless ``--force``; several inputs (or globs) run as a batch with one
summary; warnings of the library are printed as ``warning: ...`` lines; without a terminal each
stage prints one line (a log shows progress instead of nothing for minutes).
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import SciZWarning
from .app import app, console, disk_size, err_console, fail, human_size, not_replaceable

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
    scale_bar_nm: float | None = None
    zmin: Any = "auto"
    zmax: Any = "auto"
    fps: float | None = None
    cmap: str = "afmhot"
    codec: str | None = None
    tolerance: float | None = None
    #: True: layers on disk, frames in blocks; False: in memory; "auto": by the memory budget.
    out_of_core: bool | str = "auto"
    keep: str | None = None
    colorbar: bool = False

    def pipeline(self) -> Any:
        from ..processing import Pipeline

        return self.processing if isinstance(self.processing, Pipeline) else Pipeline(self.processing or [])

    def outputs(self, stack: ImageStack, filtered: bool) -> list[tuple[str, bool, Path]]:
        """(export name, raw, path) of every file this job writes for ``stack``; ``filtered``: whether
        the processed files get the ``_filtered`` suffix (they do once a step has run)."""
        from ..afm.export import export_formats
        from ..afm.gif import export_stem

        kinds = [*self.formats, *(["gif"] if self.make_gif else [])]
        known = export_formats()
        base = export_stem(stack, self.output_name, raw=True)  # the stem without _filtered
        rows = []
        for raw in (False, True) if self.raw and len(self.pipeline()) else (False,):
            stem = f"{base}_filtered" if filtered and not raw else base
            for kind in kinds:
                extension = ".gif" if kind == "gif" else known[kind].extensions[0]
                rows.append((kind, raw, self.output_folder / f"{stem}{extension}"))
        return rows


def split_inputs(tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    """The INPUT paths (globs expanded) and any export names written space-separated after ``--export``.

    Click hands the words after ``--export npz`` (``hdf5 ...``) over as positional arguments; a word
    that is an export name and not an existing path is taken as one. A pattern with ``*``, ``?`` or
    ``[`` that names no existing path is expanded (sorted), as a shell would.
    """
    from ..afm.export import export_formats

    names = export_formats()
    paths: list[str] = []
    formats: list[str] = []
    for token in tokens:
        if token.lower().lstrip(".") in names and not Path(token).exists():
            formats.append(token)
        elif any(char in token for char in "*?[") and not Path(token).exists():
            # glob.glob, not Path.glob: the pattern may be absolute ("/data/run*/*.asd").
            found = sorted(glob.glob(str(Path(token).expanduser())))  # noqa: PTH207
            if not found:
                fail(f"no file or folder matches {token}", 2)
            paths.extend(found)
        else:
            paths.append(token)
    if not paths:
        fail("give at least one INPUT file or folder", 2)
    return list(dict.fromkeys(paths)), formats


class _Stages:
    """Progress of one job: a bar on a terminal; elsewhere (logs, CI, pipes) one line per stage."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> _Stages:
        if err_console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
            self.progress = Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True)
            self.progress.__enter__()
            self.task = self.progress.add_task("processing", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=self.total)
            self.progress.__exit__(*exc)

    def note(self, text: str) -> None:
        """A line that stays on screen (above the bar on a terminal)."""
        (self.progress.console if self.progress is not None else err_console).print(text, highlight=False)

    def stage(self, done: int, description: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, description=description)
        elif done < self.total:
            err_console.print(f"[{done + 1}/{self.total}] {description}", highlight=False, soft_wrap=True)


def run_job(
    stack: ImageStack, job: ProcessJob, before_writing: Callable[[], None] | None = None
) -> list[tuple[str, Path]]:
    """Process ``stack`` and write the exports ``job`` asks for, reporting each stage on stderr.

    ``before_writing`` is called between the processing and the first file (to refuse outputs).
    Returns the (kind, path) of every file written.
    """
    from ..afm import export_bundles, export_gif
    from ..processing._common import release_free_memory

    pipeline = job.pipeline()
    exports = [(fmt, False) for fmt in job.formats]
    gifs = [False] if job.make_gif else []
    if job.raw and len(pipeline):
        # --raw adds the unprocessed snapshot next to the processed files (no ``_filtered`` suffix).
        exports += [(fmt, True) for fmt in job.formats]
        gifs += [True] if job.make_gif else []
    total = len(pipeline) + len(exports) + len(gifs)
    written: list[tuple[str, Path]] = []
    with _Stages(total) as stages:
        if len(pipeline):
            from ..processing import needs_out_of_core

            automatic = needs_out_of_core(stack, pipeline, spill=True)
            out_of_core = automatic if job.out_of_core == "auto" else bool(job.out_of_core)
            how = "out of core (layers on disk, frames in blocks)" if out_of_core else "in memory"
            stages.note(f"processing {how}{' (chosen by the memory budget)' if job.out_of_core == 'auto' else ''}")

            def step(done: int, steps: int, name: str) -> None:
                if done < steps:  # the pipeline's last call (done == steps) is not a stage
                    stages.stage(done, f"step {done + 1}/{steps}: {name}")

            # In memory the kept layers but the final one spill to scratch files as they are made, so
            # memory holds the input and the final layer whatever the number of steps.
            pipeline.run(stack, progress=step, out_of_core=out_of_core, keep=job.keep, spill=not out_of_core)
        done = len(pipeline)
        if before_writing is not None:
            before_writing()
        for fmt, raw in exports:
            stages.stage(done, f"writing {fmt}{' (raw)' if raw else ''}")
            h5 = fmt == "h5"
            paths = export_bundles(
                stack,
                job.output_folder,
                job.output_name,
                [fmt],
                raw=raw,
                codec=job.codec if h5 else None,
                tolerance=job.tolerance if h5 else None,
                keep=job.keep,
            )
            written += [(f"{name}{' (raw)' if raw else ''}", Path(p)) for name, p in paths.items()]
            release_free_memory()  # the writer's buffers, before the next export allocates its own
            done += 1
        for raw in gifs:
            stages.stage(done, f"writing gif{' (raw)' if raw else ''}")
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
                colorbar=job.colorbar,
            )
            if gif is not None:
                written.append((f"gif{' (raw)' if raw else ''}", Path(gif)))
            done += 1
    return written


def describe_read(stack: ImageStack) -> str:
    """``32 frames of 200x200 px, 0.5 nm/px, channel 'TP'``: what was read (taken before the steps run)."""
    return (
        f"{stack.n_frames} frame{'s' if stack.n_frames != 1 else ''} of {stack.height}x{stack.width} px, "
        f"{stack.pixel_size_nm:g} nm/px, "
        f"channel {stack.channel!r}"
    )


def print_summary(
    stack: ImageStack, job: ProcessJob, written: list[tuple[str, Path]], source: str, read: str | None = None
) -> None:
    """Say what was read (``read``, default: the stack as it is now), which steps ran and which files
    were written (with sizes)."""
    from rich.table import Table

    steps = [s.get("name", "?") for s in stack.provenance.get("processing", {}).get("steps", [])]
    console.print(
        f"read [bold]{escape_markup(source)}[/]: {read or describe_read(stack)}", highlight=False, soft_wrap=True
    )
    if steps:
        frames = f"{stack.n_frames} frame{'s' if stack.n_frames != 1 else ''}"
        processed = f" (result: {frames} of {stack.height}x{stack.width} px)"
        console.print(f"processing steps: {' -> '.join(steps)}{processed}", highlight=False, soft_wrap=True)
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


class InputFailed(Exception):
    """One input of ``sciz process`` could not be processed; the message says why."""


@contextlib.contextmanager
def shown_warnings() -> Iterator[list[str]]:
    """Print each warning raised inside as ``warning: ...`` on stderr when it happens (once per text),
    and collect the texts."""
    from rich.markup import escape

    said: list[str] = []

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        text = str(message)
        if text in said:
            return
        said.append(text)
        kind = "" if issubclass(category, SciZWarning) else f"{category.__name__}: "
        err_console.print(f"[bold yellow]warning:[/] {kind}{escape(text)}", highlight=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield said


def check_outputs(paths: list[Path], force: bool, claimed: set[Path], inputs: frozenset[Path] = frozenset()) -> None:
    """Refuse files this run wrote already (two inputs with one name), inputs of this run (even through
    a symlink, even with ``--force``: a later input would be read from another input's result) and,
    without ``--force``, files that exist."""
    read = [path for path in paths if path.resolve() in inputs]
    if read:
        raise InputFailed(
            f"{read[0]} is an input of this run (or a link to one); write elsewhere with --output-folder "
            "or --output-name"
        )
    among = [path for path in paths if path.resolve().parent in inputs]
    if among:
        raise InputFailed(
            f"{among[0]} would be written among the frames of the input folder {among[0].parent} (and read as "
            "frames of it next time); write elsewhere with --output-folder"
        )
    for folder in dict.fromkeys(path.parent for path in paths):
        ancestor = folder
        while not ancestor.exists() and ancestor.parent != ancestor:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise InputFailed(f"--output-folder {folder}: {ancestor} is a file, not a folder; choose another folder")
    twice = [path for path in paths if path.resolve() in claimed]
    if twice:
        raise InputFailed(
            f"{twice[0]} was already written by another input of this run; give the inputs different names "
            "or --output-folder"
        )
    existing = [path for path in paths if path.exists() or path.is_symlink()]
    if existing and not force:
        shown = ", ".join(str(path) for path in existing)
        raise InputFailed(f"would overwrite {shown}; pass --force to replace existing outputs")
    for path in existing:  # --force replaces only an earlier output of the same kind (as convert)
        refusal = _not_an_earlier_output(path)
        if refusal:
            raise InputFailed(refusal)


def _not_an_earlier_output(path: Path) -> str | None:
    """Why ``--force`` may not replace ``path`` (None: it is a file of the kind ``process`` writes there)."""
    if path.suffix.lower() == ".gif":
        try:
            with path.open("rb") as handle:
                if handle.read(4) == b"GIF8":
                    return None
        except OSError:
            pass
        return f"{path} exists and is not a GIF; --force replaces only earlier outputs: remove it or rename"
    from ..errors import SciZError
    from ..formats import format_for_writing

    try:
        writer = format_for_writing(path, None)
    except (SciZError, ValueError):
        return None  # no sciz format by that name: atomic's own check decides
    return not_replaceable(path, writer)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on writing into ``folder``, whether it exists yet or not.

    The lock is a ``flock`` on a file named after the folder's resolved path in a private folder of
    this user's under the system's temporary folder (nothing is added to the output folder, and
    two runs lock the same file whichever of them creates the folder). Where that private folder
    cannot be trusted (not ours, or a link), the nearest existing folder on the path is locked.
    """
    import fcntl
    import hashlib
    import stat
    import tempfile

    resolved = folder.resolve()
    locks = Path(tempfile.gettempdir()) / f"sciz-locks-{os.getuid()}"
    try:
        locks.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(locks)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise PermissionError(f"{locks} is not a private folder of this user's")
        name = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:32] + ".lock"
        descriptor = os.open(locks / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        existing = resolved
        while not existing.is_dir() and existing.parent != existing:
            existing = existing.parent
        descriptor = os.open(existing, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def process_one(source: str, job: ProcessJob, options: dict[str, Any], claimed: set[Path]) -> list[tuple[str, Path]]:
    """Read, check the outputs, process and export one input; raise :class:`InputFailed` with the reason."""
    from ..afm.gif import _is_filtered
    from ..errors import SciZError
    from ..processing import load_stack

    if not Path(source).exists():
        raise InputFailed(f"no such file or folder: {source}")
    if not err_console.is_terminal:
        err_console.print(f"reading {source}", highlight=False, soft_wrap=True)
    try:
        stack = load_stack(source, options["channel"], pixel_size_nm=options["pixel_size_nm"])
    except FileNotFoundError as exc:
        raise InputFailed(str(exc)) from None
    except (SciZError, OSError, ValueError) as exc:
        raise InputFailed(f"cannot read {source}: {exc}") from None
    except MemoryError:
        raise InputFailed(f"cannot read {source}: it does not fit in memory") from None
    read = describe_read(stack)
    # Checked before the work (as the names will be) and again after it (as they are).
    planned = job.outputs(stack, _is_filtered(stack, False) or len(job.pipeline()) > 0)
    inputs = options.get("inputs", frozenset())
    check_outputs([path for _, _, path in planned], options["force"], claimed, inputs)

    folder_lock = contextlib.ExitStack()

    def recheck() -> None:
        # Another sciz process writing into the same folder waits here until that one is done, so
        # this check sees its outputs (without the lock both passed it and the last file won).
        folder_lock.enter_context(_folder_lock(job.output_folder))
        paths = [path for _, _, path in job.outputs(stack, _is_filtered(stack, False))]
        check_outputs(paths, options["force"], claimed, inputs)

    try:
        with folder_lock:
            written = run_job(stack, job, before_writing=recheck)
    except (SciZError, ValueError) as exc:
        raise InputFailed(str(exc)) from None
    except OSError as exc:  # a plain OS error names no step or file of ours: say where it was writing
        raise InputFailed(f"writing into --output-folder {job.output_folder} failed: {exc}") from None
    except MemoryError:
        raise InputFailed(f"ran out of memory processing {source}: process it with --out-of-core") from None
    claimed.update(path.resolve() for _, path in written)
    print_summary(stack, job, written, os.fspath(source), read)
    return written


def print_batch_summary(results: list[tuple[str, str | None, int, int]]) -> None:
    """One table for a run over several inputs: per input, the files written or why it failed."""
    from rich.table import Table

    failed = sum(1 for _, error, _, _ in results if error is not None)
    table = Table(
        title=f"{len(results)} inputs: {len(results) - failed} processed, {failed} failed", title_justify="left"
    )
    for column in ("input", "result", "files", "warnings"):
        table.add_column(column, overflow="fold")
    for source, error, files, warned in results:
        result = "[green]ok[/]" if error is None else f"[red]failed[/]: {escape_markup(error)}"
        table.add_row(escape_markup(source), result, str(files), str(warned))
    console.print(table)


def escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@app.command("process")
def process_command(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT",
            help="AFM video files (.asd, .h5-jpk, .spm, .jpk, .ibw, .gwy, .npz, .h5, .ome.tif, .tif, .npy), "
            "folders of frames, or glob patterns ('runs/*.asd'). Several inputs run as a batch: each is "
            "written under its own name and a failing input does not stop the others.",
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
        str | None,
        typer.Option("--output-name", "-n", help="Base file name (default: the input's name; one input only)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace output files that exist (without it they are refused).")
    ] = False,
    keep: Annotated[
        str | None,
        typer.Option(
            "--keep",
            help="Layers the bundles keep: raw, final, masks, none, layer keys or step names, comma-separated "
            "(default: all; e.g. raw,final skips the intermediate steps).",
        ),
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Also export the unprocessed stack (no _filtered suffix).")
    ] = False,
    scale_bar_nm: Annotated[
        float | None,
        typer.Option("--scale-bar-nm", help="GIF scale bar length in nm (default: 100 nm where it fits)."),
    ] = None,
    colorbar: Annotated[bool, typer.Option("--colorbar", help="Add a height colour bar to the GIF.")] = False,
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
        typer.Option(
            "--codec",
            help="HDF5 codec from the registry (zfp, sz3, sperr, szip), or auto (the one that codes the data "
            "smallest within --tolerance); default lossless. zfp, sz3 and sperr files need `import hdf5plugin` "
            "before h5py or playNano can read them.",
        ),
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
    """Process AFM videos: read each INPUT, run the steps, and export bundles and a GIF.

    Existing output files are refused unless --force.

    Several inputs (or a glob) are processed in turn; a summary follows; exit code 1 if any failed.

    Example: sciz process video.asd -p "remove_plane; gaussian_filter:sigma=1" --export npz h5 --make-gif
    """
    sources, extra_formats = split_inputs(inputs)
    job = _job_from_options(processing, processing_file, export, extra_formats, codec, tolerance, zmin, zmax, keep)
    job.make_gif, job.raw, job.output_folder, job.output_name = make_gif, raw, output_folder, output_name
    job.scale_bar_nm, job.fps, job.cmap, job.colorbar = scale_bar_nm, fps, cmap, colorbar
    job.out_of_core = "auto" if out_of_core is None else out_of_core
    if len(sources) > 1:
        _check_batch_names(sources, output_name)
    if not job.formats and not make_gif:
        console.print("note: no --export or --make-gif given; processing only, nothing will be written")
    read_paths = frozenset(Path(source).resolve() for source in sources)
    options = {"channel": channel, "pixel_size_nm": pixel_size_nm, "force": force, "inputs": read_paths}
    claimed: set[Path] = set()
    if len(sources) == 1:
        with shown_warnings():
            try:
                process_one(sources[0], job, options, claimed)
            except InputFailed as exc:
                fail(str(exc))
        return
    results: list[tuple[str, str | None, int, int]] = []
    for number, source in enumerate(sources, 1):
        console.print(f"[bold][{number}/{len(sources)}][/] {escape_markup(source)}", highlight=False, soft_wrap=True)
        with shown_warnings() as said:
            try:
                written = process_one(source, job, options, claimed)
            except InputFailed as exc:
                err_console.print(f"[bold red]error:[/] {escape_markup(str(exc))}", highlight=False, soft_wrap=True)
                results.append((source, str(exc), 0, len(said)))
                continue
        results.append((source, None, len(written), len(said)))
    print_batch_summary(results)
    if any(error is not None for _, error, _, _ in results):
        raise typer.Exit(1)


def _job_from_options(
    processing: str | None,
    processing_file: Path | None,
    export: list[str] | None,
    extra_formats: list[str],
    codec: str | None,
    tolerance: float | None,
    zmin: str,
    zmax: str,
    keep: str | None,
) -> ProcessJob:
    """The job's steps and exports from the options, or exit 2 naming what is wrong (before any input is read)."""
    from ..afm.export import parse_formats
    from ..errors import SciZError
    from ..processing import Pipeline

    if processing is not None and processing_file is not None:
        fail("give either --processing or --processing-file, not both", 2)
    if extra_formats and not export:
        fail(f"unexpected argument(s) {', '.join(extra_formats)}: export formats follow --export", 2)
    check_tolerance(tolerance, codec)
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
    if keep is not None and not formats:
        fail("--keep chooses the layers of the bundles; add --export npz, h5 or tif", 2)
    if keep is not None:
        _check_keep(keep, pipeline.names)
    return ProcessJob(
        processing=pipeline, formats=formats, zmin=zmin_value, zmax=zmax_value, codec=codec, tolerance=tolerance,
        keep=keep,
    )  # fmt: skip


def _check_keep(keep: str, steps: list[str]) -> None:
    """Names ``--keep`` cannot mean with these steps exit 2 before any input is read (layers an input
    bundle brings are named by key, ``step_<i>_<name>``, or checked once it is read when no step runs)."""
    from ..afm.layers import KEEP_WORDS

    words = keep.replace(",", " ").split()
    allowed = f"{', '.join(KEEP_WORDS)}, a step of this run ({', '.join(steps)}) or a layer key step_<i>_<name>"
    if not words:
        fail(f"--keep={keep!r} is not allowed: name the layers to keep: {allowed}", 2)
    for word in words:
        if steps and word not in KEEP_WORDS and word not in steps and not re.fullmatch(r"step_\d+_\w+", word):
            fail(f"--keep={word!r} is not allowed: give {allowed}", 2)


def check_tolerance(tolerance: float | None, codec: str | None) -> None:
    """``--tolerance`` is a finite bound >= 0 (0: lossless) and needs ``--codec``; else exit 2 saying so."""
    if tolerance is None:
        return
    if not math.isfinite(tolerance) or tolerance < 0:
        fail(f"--tolerance={tolerance:g} is not allowed: give a finite absolute error bound >= 0 (0 = lossless)", 2)
    if codec is None:
        fail("--tolerance needs --codec (the default HDF5 compression is lossless)", 2)


def _check_batch_names(sources: list[str], output_name: str | None) -> None:
    """Several inputs are named after themselves: refuse one --output-name and inputs sharing a name."""
    if output_name is not None:
        fail(
            f"--output-name names the files of one input; with {len(sources)} inputs each is named after "
            "its input (use --output-folder to keep runs apart)",
            2,
        )
    seen: dict[str, str] = {}
    for source in sources:
        stem = Path(source).name.split(".")[0]
        if stem in seen:
            fail(
                f"{seen[stem]} and {source} would both write {stem}*: process them into different "
                "--output-folder, or one at a time with --output-name",
                2,
            )
        seen[stem] = source
