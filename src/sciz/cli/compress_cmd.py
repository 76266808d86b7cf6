"""``sciz compress IN OUT --tolerance T``: read any registered format, choose the codec that compresses it
best within the bound (:func:`sciz.codecs.choose`) and write it into OUT with that codec.

A netCDF source goes to :func:`sciz.netcdf.compress` instead: every variable with its own bound and
encoding, written as netCDF-4 (``OUT.nc``) or Zarr (``OUT.zarr``), with a per-variable table."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import app, disk_size, fail, not_replaceable, range_outlier_warning
from .info_cmd import parse_options, read_dataset

__all__ = ["compress_command"]


def _lossless_note(dtype: Any, level: float | None, chosen: str) -> str:
    """Why the chosen codec stores every value exactly (a bound of 0; integers; or nothing lossy won)."""
    if level == 0:
        why = "a bound of 0 means lossless"
    elif level is not None and dtype.kind in "iu" and level < 1:
        why = f"{dtype} values differ by at least 1, so a bound of {level:g} keeps every one of them exactly"
    else:
        why = f"on this {dtype} data exact storage beat every lossy codec within the bound {level:g}"
    return f"lossless: {why}; chose {chosen}, which stores every value exactly"


def _target_options(writer_name: str, codec: Any) -> dict[str, Any]:
    """The write option that carries a codec object, by target format."""
    if writer_name == "scz":
        return {"codec": codec}
    if writer_name in ("zspy", "zspy-zip"):
        return {"compressor": codec}
    if writer_name == "hspy":
        return {"compression": codec}
    fail(f"{writer_name} files cannot hold a chosen codec; write .scz, .zspy or .hspy")


def _is_netcdf(source: Path) -> bool:
    from ..formats.netcdf import CLASSIC_MAGIC, NetcdfFormat

    if not source.is_file():
        return False
    with source.open("rb") as handle:
        head = handle.read(8)
    return head[:4] in CLASSIC_MAGIC or (
        head.startswith(b"\x89HDF") and NetcdfFormat().sniff(source, head) and source.suffix.lower() != ".hspy"
    )


def _compress_netcdf(
    source: Path,
    target: Path,
    tolerance: float | None,
    rel_tolerance: float | None,
    var: list[str],
    codec_name: str | None,
    portable: bool,
    zarr_format: int,
    report: Path | None,
    force: bool,
) -> None:
    from ..errors import SciZError
    from ..netcdf import compress

    overrides: dict[str, float] = {}
    for item in var:
        name, sep, value = item.partition("=")
        try:
            overrides[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            fail(f"--var {item!r}: expected NAME=TOL with TOL a number, e.g. --var tos=0.01", code=2)
    try:
        result = compress(
            source,
            target,
            tolerance=tolerance,
            rel_tolerance=rel_tolerance,
            variables=overrides,
            codec=codec_name,
            portable=portable,
            zarr_format=zarr_format,
            report=report,
            force=force,
        )
    except (SciZError, OSError, ValueError) as exc:
        fail(str(exc) if str(source) in str(exc) or str(target) in str(exc) else f"{source}: {exc}")
    typer.echo(result.table())


@app.command("compress")
def compress_command(
    source: Annotated[Path, typer.Argument(help="The file to read (any format sciz reads).")],
    target: Annotated[Path, typer.Argument(help="The file to write: .scz, .zspy or .hspy.")],
    tolerance: Annotated[
        float | None, typer.Option("--tolerance", help="Absolute error bound for every element.")
    ] = None,
    rel_tolerance: Annotated[
        float | None, typer.Option("--rel-tolerance", help="Error bound as a share of the data range (1e-3).")
    ] = None,
    psnr: Annotated[
        float | None, typer.Option("--psnr", help="Lowest PSNR in dB (kept via an absolute bound).")
    ] = None,
    objective: Annotated[str, typer.Option("--objective", help="ratio, speed or balanced.")] = "ratio",
    fill_value: Annotated[
        float | None, typer.Option("--fill-value", help="Value marking missing data (kept exactly).")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", "-t", help="Target format, when the extension does not say.")
    ] = None,
    read_option: Annotated[
        list[str] | None, typer.Option("--read-option", "-r", help="KEY=VALUE for the reader.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace TARGET if it exists.")] = False,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="netCDF: NAME=TOL, an absolute bound for one variable.")
    ] = None,
    codec_name: Annotated[
        str | None,
        typer.Option("--codec", help="netCDF: sz3, zfp, sperr, blosc2, pack, bitround or deflate for every variable."),
    ] = None,
    portable: Annotated[
        bool, typer.Option("--portable", help="netCDF: only encodings every reader decodes without plugins.")
    ] = False,
    zarr_format: Annotated[int, typer.Option("--zarr-format", help="netCDF to .zarr: 2 or 3.")] = 3,
    report: Annotated[
        Path | None, typer.Option("--report", help="netCDF: write the per-variable table as JSON here.")
    ] = None,
) -> None:
    """Compress SOURCE into TARGET with the codec that compresses it best within the bound.

    A netCDF SOURCE is compressed variable by variable into TARGET.nc (netCDF-4; HDF5 plugin filters,
    or with --portable CF packing / BitRound) or TARGET.zarr, each variable checked against its bound.
    """
    import numpy as np

    if _is_netcdf(source):
        if psnr is not None or fill_value is not None or to is not None or read_option:
            fail("for a netCDF source use --tolerance, --rel-tolerance, --var, --codec, --portable, --report", code=2)
        _compress_netcdf(source, target, tolerance, rel_tolerance, var or [], codec_name, portable, zarr_format,
                         report, force)  # fmt: skip
        return
    if var or codec_name or portable or report is not None:
        fail("--var, --codec, --portable and --report are for netCDF sources", code=2)

    from .. import codecs
    from ..codecs.registry import spec
    from ..errors import RangeOutlierWarning, SciZError
    from ..formats import format_for_writing, load
    from ..formats._hdf5 import filtered_size
    from ..quality import valid_mask

    if sum(bound is not None for bound in (tolerance, rel_tolerance, psnr)) != 1:
        fail("give exactly one of --tolerance, --rel-tolerance or --psnr", code=2)
    if target.exists() and not force:
        fail(f"{target} exists; use --force to replace it")
    try:
        writer = format_for_writing(target, to)
    except (SciZError, ValueError) as exc:
        fail(str(exc))
    if target.exists() and (refusal := not_replaceable(target, writer)):
        fail(refusal)
    reader, dataset = read_dataset(source, None, parse_options(read_option or [], "--read-option"))
    data = np.asarray(dataset.data)
    if tolerance is None:
        warning = range_outlier_warning(data, fill_value)
        if warning:
            typer.echo(warning, err=True)
    # HDF5 holds the codecs that have a registered filter (other readers decode those)
    names = [n for n in codecs.list_codecs() if writer.name != "hspy" or getattr(spec(n), "hdf5_filter_id", None)]
    try:
        with warnings.catch_warnings():  # said above, in the command line's words
            warnings.simplefilter("ignore", RangeOutlierWarning)
            codec = codecs.choose(
                data,
                tolerance=tolerance,
                rel_tolerance=rel_tolerance,
                psnr=psnr,
                objective=objective,
                candidates=names,
                fill_value=fill_value,
                container="hdf5" if writer.name == "hspy" else "sciz",
                measure=filtered_size if writer.name == "hspy" else None,  # through the HDF5 filter
            )
    except (SciZError, ValueError) as exc:
        fail(f"{source}: {exc}")
    choice = codec.choice
    options = _target_options(writer.name, codec)
    try:
        written = Path(writer.write(dataset, target, **options))
    except (SciZError, OSError, ValueError, TypeError) as exc:
        fail(f"writing {target} as {writer.name} failed: {exc}")
    loaded = load(written)
    restored = np.asarray(loaded.data)
    valid = valid_mask(data, fill_value)
    error = float(np.max(np.abs(restored[valid].astype(np.float64) - data[valid]))) if valid.any() else 0.0
    file_ratio = data.nbytes / max(1, disk_size(written))
    stored = getattr(loaded.storage.get("data"), "stored_bytes", None)
    extra = len(dataset.layers) + len(dataset.masks)
    if extra and stored:  # the layers and masks are stored losslessly beside the compressed data
        ratio_text = f"ratio {data.nbytes / max(1, stored):.2f} (the data; the whole file with {extra} lossless "
        ratio_text += f"layers/masks and the metadata: {file_ratio:.2f})"
    else:
        ratio_text = f"ratio {file_ratio:.2f}"
    predicted = next(c["predicted_ratio"] for c in choice["candidates"] if c["label"] == choice["chosen"])
    typer.echo(f"chose {choice['chosen']} ({choice['reason']}; predicted ratio {predicted:g})")
    if codec.lossless:
        typer.echo(_lossless_note(data.dtype, choice.get("tolerance"), choice["chosen"]))
    typer.echo(
        f"wrote {written} ({writer.name}) from {source} ({reader.name}): {ratio_text}, "
        f"max error {error:.4g} (bound {codec.tolerance:.4g})"
    )
    if codec.tolerance is not None and error > codec.tolerance:
        fail(f"the written file exceeds the bound: max error {error:g} > {codec.tolerance:g}")
