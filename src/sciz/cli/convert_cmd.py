"""``sciz convert IN OUT``: read any registered format and write another, keeping what the target can hold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .app import app, fail, not_replaceable
from .info_cmd import parse_options, read_dataset

__all__ = ["convert_command"]


@app.command("convert")
def convert_command(
    source: Annotated[Path, typer.Argument(help="The file to read (format detected from its content).")],
    target: Annotated[Path, typer.Argument(help="The file to write (format from its extension or --to).")],
    to: Annotated[
        str | None, typer.Option("--to", "-t", help="Target format name, when the extension does not say.")
    ] = None,
    from_format: Annotated[
        str | None, typer.Option("--from", help="Read SOURCE as this format instead of detecting it.")
    ] = None,
    read_option: Annotated[
        list[str] | None,
        typer.Option("--read-option", "-r", help="KEY=VALUE for the reader, e.g. -r nodata_to_nan=true."),
    ] = None,
    write_option: Annotated[
        list[str] | None,
        typer.Option("--write-option", "-w", help="KEY=VALUE for the writer, e.g. -w base_thickness=0.5 for STL."),
    ] = None,
    drop_unsupported: Annotated[
        bool,
        typer.Option(
            "--drop-unsupported", help="Write even if the target cannot hold everything; say what is dropped."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace TARGET if it exists and sciz reads it as the target format (or one sharing its "
            "extension: npz and afm-npz); any other file or folder is never replaced.",
        ),
    ] = False,
) -> None:
    """Convert SOURCE to TARGET, keeping data, dtype, axes, metadata and title; refuse if the target would lose any.

    An AFM stack (a playNano bundle, a vendor video...) written to a ``.npz`` name becomes a playNano
    bundle; ``--to afm-npz``/``--to afm-h5`` ask for one from any 2-D/3-D dataset.
    """
    from ..errors import SciZError
    from ..formats import format_for_writing

    read_options = parse_options(read_option or [], "--read-option")
    write_options = parse_options(write_option or [], "--write-option")
    if not source.exists():
        fail(f"no such file or directory: {source}")
    if target.exists():
        if source.resolve() == target.resolve():
            fail(f"{target} is the source file itself; choose another target")
        if not force:
            fail(f"{target} exists; use --force to replace it")
    try:
        writer = format_for_writing(target, to)
    except (SciZError, ValueError) as exc:
        gif = (
            "; an animated GIF of an AFM video is made by sciz process --make-gif"
            if target.suffix.lower() == ".gif"
            else ""
        )
        fail(f"{exc}{gif}")
    if target.exists():
        refusal = not_replaceable(target, writer)
        if refusal:
            fail(refusal)
    # Between formats that stream lazily (zspy, hspy) the data flows chunk by chunk through dask.
    reader, dataset = read_dataset(source, from_format, read_options, lazy=writer.lazy)
    if to is None:
        writer = _stack_writer(dataset, target, writer)
    problems = writer.problems(dataset)
    if problems and not drop_unsupported:
        listing = "".join(f"\n  - {p}" for p in problems)
        fits = _formats_that_hold(dataset, writer.name, target)
        hint = f" ({', '.join(fits)} would keep everything)" if fits else ""
        fail(
            f"{writer.name} cannot hold everything in {source} ({reader.name}):{listing}\n"
            f"Nothing was written. Choose a target format that holds it{hint}, "
            "or pass --drop-unsupported to write only what fits."
        )
    for problem in problems:
        typer.echo(f"warning: dropped: {problem}", err=True)
    try:
        written = Path(writer.write(dataset, target, **write_options))
    except (SciZError, OSError, ValueError, TypeError) as exc:
        fail(f"writing {target} as {writer.name} failed: {_option_hint(exc, write_options)}")
    read = _nbytes(dataset)
    del dataset  # a read-back below must not hold both in memory
    kept = sum(read.values()) if not problems and not write_options else _kept_bytes(written, writer, read)
    typer.echo(_summary(source, reader.name, sum(read.values()), kept, written, writer.name, len(problems)))


def _stack_writer(dataset: Any, target: Path, writer: Any) -> Any:
    """The AFM bundle format for ``target`` when ``dataset`` is an AFM stack and the name fits one (``.npz``)."""
    from ..formats import list_formats
    from ..stack import METADATA_KEY

    if writer.afm_stack or not isinstance(dataset.metadata.get(METADATA_KEY), dict):
        return writer
    fitting = [f for f in list_formats("afm-stack") if f.can_write and f.matches_extension(target)]
    return max(fitting, key=lambda f: f.matches_extension(target), default=writer)


def _option_hint(exc: Exception, options: dict[str, Any]) -> str:
    """The writer's error, spelled with the command-line flag when it names a ``-w`` option by its
    keyword: one given (``tolerance=``) or one it advises (``pass fill_value=1e+20``)."""
    import re

    text = str(exc)
    for key in options:
        text = text.replace(f"{key}=", f"-w {key}=", 1) if f"-w {key}=" not in text else text
    return re.sub(r"\bpass ([A-Za-z_]\w*)=", r"pass -w \1=", text)


def _nbytes(dataset: Any) -> dict[str, int]:
    """Bytes in memory of each array of ``dataset`` by name (data, layers/..., masks/...; lazy ones by shape)."""
    return {name: int(a.size) * a.dtype.itemsize for name, a in dataset.arrays().items()}


def _kept_bytes(written: Path, writer: Any, read: dict[str, int]) -> int | None:
    """Bytes of the arrays read (``read``: bytes by name) that ``written`` still holds, when the
    conversion dropped something or writer options (``-w raw=true``...) may have: the file is read
    back (lazily where the format streams) for the names of its arrays, so the ratio is to what was
    read and kept. None (and a warning) if it cannot be read back."""
    from ..errors import SciZError

    if not writer.can_read:
        return None
    try:
        back = writer.read(written, **({"lazy": True} if writer.lazy else {}))
        return sum(read.get(name, 0) for name in back.arrays())
    except (SciZError, OSError, ValueError, TypeError) as exc:
        typer.echo(f"warning: {written} could not be read back to measure what it holds: {exc}", err=True)
        return None


def _summary(source: Path, reader: str, read: int, kept: int | None, written: Path, writer: str, dropped: int) -> str:
    """One line, the same for every format: what went where, its size on disk and the ratio of the data
    it holds (in memory) to that size; when that is less than what was read, both sizes are said."""
    from .app import disk_size, human_size

    size = disk_size(written)
    line = f"converted {source} ({reader}) -> {written} ({writer}): {human_size(size)} on disk"
    if kept is None:
        line += ", ratio not measured" if size else ""
    elif kept == read and size:
        line += f", ratio {kept / size:.2f}"
    elif size:
        line += f", ratio {kept / size:.2f} to the {human_size(kept)} of data it holds (of {human_size(read)} read)"
    return line + (f"; dropped {dropped} item(s) (see warnings)" if dropped else "")


def _formats_that_hold(dataset: object, exclude: str, target: Path) -> list[str]:
    """How to name the writable formats (other than ``exclude``) that hold ``dataset`` whole.

    By extension (``.hspy``), or ``--to <name>`` where the extension alone would pick another format:
    one that shares ``target``'s extension (a plain ``npz`` where the AFM bundle was refused), or a
    plain ``npz`` for an AFM stack (a ``.npz`` name makes that an AFM bundle).
    """
    from ..errors import SciZError
    from ..formats import format_for_writing, list_formats

    fits: list[str] = []
    for plugin in list_formats("write"):
        if plugin.name == exclude or not plugin.extensions:
            continue
        if _refuses(plugin, dataset):
            continue
        by_name = target.with_name(f"x{plugin.extensions[0]}")
        try:
            picked = _stack_writer(dataset, by_name, format_for_writing(by_name, None))
        except (SciZError, ValueError):
            picked = None
        if picked is not None and picked.name != plugin.name and not _refuses(picked, dataset):
            continue  # the extension names another format that holds it (zspy-zip beside zspy)
        by_extension = picked is not None and picked.name == plugin.name and not plugin.matches_extension(target)
        spelled = plugin.extensions[0] if by_extension else f"--to {plugin.name}"
        if spelled not in fits:
            fits.append(spelled)
    return fits


def _refuses(plugin: Any, dataset: object) -> bool:
    """Whether ``plugin`` cannot hold ``dataset`` whole (a format that cannot even judge it does not)."""
    try:
        return bool(plugin.problems(dataset))
    except Exception:
        return True
