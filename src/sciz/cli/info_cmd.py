"""``sciz info FILE``: format, arrays (shape, dtype, codec, size on disk, ratio), axes and metadata of any file."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from .app import app, disk_size, fail, human_size

__all__ = ["info_command", "parse_options", "read_dataset"]


_WORDS: dict[str, Any] = {"true": True, "false": False, "none": None, "null": None}


def parse_options(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; values are JSON when they parse (``true``, ``2.5``), else text.

    ``True``/``False``/``None`` in any case are the Python values too: a text ``"False"`` would be
    a true value to every writer option that expects a bool.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, separator, text = item.partition("=")
        if not separator or not key.strip():
            fail(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} nodata_to_nan=true", code=2)
        spelled = text.strip().lower()
        if spelled in _WORDS:  # True/False/None as Python spells them, not only JSON's true/false/null
            value = _WORDS[spelled]
        else:
            try:
                value = json.loads(text)
            except ValueError:
                value = text
        options[key.strip()] = value
    return options


@contextlib.contextmanager
def clear_errors(path: Path) -> Iterator[None]:
    """What a reader raises ends the command with one message naming ``path``."""
    from ..errors import SciZError

    try:
        yield
    except typer.Exit:
        raise
    except (SciZError, OSError, ValueError, TypeError) as exc:
        fail(f"{path}: {exc}" if str(path) not in str(exc) else str(exc))


def format_of(path: Path, format_name: str | None) -> Any:
    """The registered format of ``path`` (detected, or ``format_name``); exits if there is none."""
    from ..formats import detect_format, get_format

    if not path.exists():
        fail(f"no such file or directory: {path}")
    with clear_errors(path):
        plugin = get_format(format_name) if format_name else detect_format(path)
    return plugin


def read_dataset(
    path: Path, format_name: str | None, options: dict[str, Any], *, lazy: bool = False, plugin: Any = None
) -> tuple[Any, Any]:
    """Detect (or look up) the format and read ``path``; errors end the command with a clear message.

    With ``lazy``, a format that streams lazily (``Format.lazy``) is read with ``lazy=True``
    (unless ``options`` say otherwise). ``plugin``: the format, when the caller found it already.
    """
    plugin = plugin if plugin is not None else format_of(path, format_name)
    if not plugin.can_read:
        fail(f"sciz cannot read {plugin.name} files")
    if lazy and plugin.lazy:
        options = {"lazy": True, **options}
    from .process_cmd import shown_warnings

    # What the reader warns of (no pixel size found, blank frames...) is said as sciz process says it.
    with clear_errors(path), shown_warnings():
        dataset = plugin.read(path, **options)
    return plugin, dataset


def _array_rows(dataset: Any, container: str) -> list[dict[str, Any]]:
    rows = []
    for name, array in dataset.arrays().items():
        stored = dataset.storage.get(name)
        nbytes = int(np.prod(array.shape, dtype=np.int64)) * np.dtype(array.dtype).itemsize
        stored_bytes = stored.stored_bytes if stored is not None else None
        row = {
            "name": name,
            "shape": [int(n) for n in array.shape],
            "dtype": str(np.dtype(array.dtype)),
            "codec": stored.codec if stored is not None else None,
            "parameters": dict(stored.parameters) if stored is not None else {},
            "details": dict(stored.details) if stored is not None else {},
            "stored_bytes": stored_bytes,
            "nbytes": nbytes,
            "ratio": (nbytes / stored_bytes) if stored_bytes else None,
        }
        rows.append(row | codec_report(container, row["codec"], row["parameters"]))
    return rows


#: Codecs that never change a value (with any parameters).
_LOSSLESS = {
    "none",
    "deflate",
    "zlib",
    "lzw",
    "packbits",
    "lzma",
    "gzip",
    "lzf",
    "pcodec",
    "szip",
    "floatpred",
    "jetraw",
    "shuffle",
    "zstd",
    "blosc",
}
#: What other tools need to read a codec's arrays, by container and codec (None: any reader of the container).
_HDF5_PLUGIN = "h5py after `import hdf5plugin` (it registers HDF5 filter {id}, {name})"
_SCIZ_ENTRY_POINT = (
    "sciz installed (pip install sciz): numcodecs finds its 'sciz' codec through an entry point, "
    "so zarr, HyperSpy and RosettaSciIO read it"
)
_READ_WITH = {
    ("zarr", "sciz"): _SCIZ_ENTRY_POINT,
    ("zarr", "zfpy"): "zarr/numcodecs with the zfpy package installed (pip install zfpy)",
    ("zarr", "pcodec"): "zarr/numcodecs with the pcodec package installed (pip install pcodec)",
    ("scz", "*"): "sciz only: sciz.load() or sciz.codecs.decode() (a sciz codec stream)",
}


def _container(format_name: str) -> str:
    return {"hspy": "hdf5", "afm-h5": "hdf5", "zspy": "zarr", "zspy-zip": "zarr", "scz": "scz"}.get(format_name, "")


def _bound(codec: str, parameters: dict[str, Any]) -> str | None:
    """The error bound of ``codec`` with ``parameters`` in words; None when no value changes."""
    if codec in _LOSSLESS or codec.endswith((" vendor data", " frame files")):  # the instrument's own values
        return None
    mode = parameters.get("mode")
    if codec == "sperr":  # mode "pwe" (point-wise error), "bpp" (rate) or "psnr", the value in "quality"
        quality = parameters.get("quality", parameters.get("tolerance"))
        sperr_words = {"pwe": "|error| <= {} (point-wise)", "bpp": "{} bits per value", "psnr": "PSNR >= {} dB"}
        return sperr_words.get(str(mode), f"mode {mode} quality {{}}").format(quality)
    if codec == "zfpy":  # numcodecs' ZFPY: 2 fixed rate, 3 fixed precision, 4 fixed accuracy, 5 reversible
        zfp_modes = {2: "rate", 3: "precision", 4: "tolerance", 5: "lossless"}
        mode = zfp_modes.get(mode if isinstance(mode, int) else -1)
        if mode == "lossless":
            return None
        if mode:
            parameters = {mode: parameters.get(mode)}
    for key, words in (
        ("tolerance", "|error| <= {} (absolute)"),
        ("rate", "{} bits per value"),
        ("precision", "{} bit planes kept"),
        ("psnr", "PSNR >= {} dB"),
    ):
        value = parameters.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            if key == "tolerance" and value == 0:
                return None  # tolerance 0: the lossless mode
            return words.format(f"{value:g}")
    if "cd_values" in parameters:
        return "set in the HDF5 filter's values (not written by sciz)"
    return "not recorded in the file"


def _choice_line(choice: dict[str, Any]) -> str:
    """What ``auto`` chose and why, from the ``choice`` record a codec's config keeps."""
    bound = choice.get("bound")
    asked = ", ".join(f"{k}={v}" for k, v in bound.items()) if isinstance(bound, dict) else "?"
    tried = [c.get("label") for c in choice.get("candidates") or [] if isinstance(c, dict)]
    among = f" among {', '.join(map(str, tried))}" if tried else ""
    return f"chosen by: auto ({asked}): {choice.get('chosen', '?')}, {choice.get('reason', '?')}{among}"


def codec_report(container: str, codec: str | None, parameters: dict[str, Any]) -> dict[str, Any]:
    """What a user needs about one array's codec: its name, whether and how far it is lossy, and
    what another tool needs to read it (``read_with``; None when the container's usual reader does)."""
    from ..codecs.registry import CODECS

    if codec is None:
        return {"codec_name": None, "lossy": None, "bound": None, "read_with": None}
    name, inner = codec, parameters
    if codec == "sciz" and isinstance(parameters.get("codec"), dict):  # zarr: {"id": "sciz", "codec": {...}}
        inner = {k: v for k, v in parameters["codec"].items() if k != "id"}
        name = str(parameters["codec"].get("id", "sciz"))
    bound = _bound(name, inner)
    read_with = _READ_WITH.get((container, codec)) or _READ_WITH.get((container, "*"))
    spec = CODECS.get(name)
    if container == "hdf5" and spec is not None and spec.hdf5_filter_id is not None and spec.hdf5_filter_id > 32000:
        read_with = _HDF5_PLUGIN.format(id=spec.hdf5_filter_id, name=name)
    shown = f"{name} (sciz stream)" if codec == "sciz" and name != "sciz" else name
    return {"codec_name": shown, "lossy": bound is not None, "bound": bound, "read_with": read_with}


#: Items of a long list shown in the text report (per-frame metadata of a 1000-frame video).
_LIST_ITEMS = 3


def _afm_stack(dataset: Any) -> dict[str, Any] | None:
    """Frames, channels, pixel size and timestamps of an AFM stack (None if ``dataset`` is not one)."""
    from ..stack import METADATA_KEY, ImageStack

    saved = dataset.metadata.get(METADATA_KEY)
    if not isinstance(saved, dict) or dataset.ndim not in (2, 3):
        return None
    stack = ImageStack.from_dataset(dataset)
    times = [None if np.isnan(t) else float(t) for t in stack.timestamps]
    return {
        "frames": stack.n_frames,
        "height": stack.height,
        "width": stack.width,
        "pixel_size_nm": stack.pixel_size_nm,
        "channel": stack.channel,
        "channels": list(saved["channels"]) if saved.get("channels") else None,  # None: the format does not say
        "timestamps_s": times,
    }


def _stack_lines(summary: dict[str, Any]) -> Iterator[str]:
    channels = f" (in the file: {', '.join(summary['channels'])})" if summary["channels"] else ""
    yield (
        f"afm stack: {summary['frames']} frame{'s' if summary['frames'] != 1 else ''} of "
        f"{summary['height']} x {summary['width']} px, "
        f"{summary['pixel_size_nm']:.6g} nm/px, channel {summary['channel']}{channels}"
    )
    known = [t for t in summary["timestamps_s"] if t is not None]
    if not known:
        yield "  timestamps: none"
        return
    shown = ", ".join(f"{t:.6g}" for t in known[:_LIST_ITEMS])
    more = f", ... {known[-1]:.6g}" if len(known) > _LIST_ITEMS else ""
    missing = len(summary["timestamps_s"]) - len(known)
    yield f"  timestamps [s]: {shown}{more}" + (f" ({missing} frames without one)" if missing else "")


def records_summary(records: Sequence[Any]) -> dict[str, str] | None:
    """One line per key of a long list of similar dicts (per-frame metadata): None when it is not one.

    A key with one value in every record gives ``value (all N)``; numbers ``first .. last``
    (``evenly spaced by d`` when they are); others their count of distinct values and the first.
    """
    if len(records) <= _LIST_ITEMS + 1 or not all(isinstance(r, dict) for r in records):
        return None
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(map(str, record)))
    out: dict[str, str] = {}
    for key in keys:
        values = [r.get(key) for r in records if key in r]
        where = "" if len(values) == len(records) else f" (in {len(values)} of {len(records)})"
        shown = [repr(v) if not isinstance(v, str) else v for v in values]
        if all(s == shown[0] for s in shown):
            out[key] = f"{_short(values[0], 60)} (all {len(values)}){where}"
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            steps = np.diff(np.asarray(values, dtype=np.float64))
            even = f", evenly spaced by {steps[0]:.6g}" if np.allclose(steps, steps[0], rtol=1e-9) else ""
            first, last = _distinct_ends(values[0], values[-1])
            out[key] = f"{first} .. {last}{even}{where}"
        else:
            out[key] = f"{len(set(shown))} distinct values, first {_short(values[0], 60)}{where}"
    return out


def _distinct_ends(first: float, last: float) -> tuple[str, str]:
    """``first`` and ``last`` with 6 significant digits, or as many more as it takes to tell them
    apart (epoch milliseconds 1.51127e+12 .. 1.51127e+12 said nothing); integers whole."""
    if isinstance(first, int) and isinstance(last, int):
        return str(first), str(last)
    for digits in range(6, 18):
        shown = f"{first:.{digits}g}", f"{last:.{digits}g}"
        if shown[0] != shown[1] or first == last:
            break
    return shown


def _summarise(value: Any, indent: int, limit: int = 100) -> Iterator[str]:
    pad = "  " * indent
    compact = records_summary(value) if isinstance(value, list | tuple) else None
    if compact is not None:
        yield f"{pad}{len(value)} records; per key:"
        for key, line in compact.items():
            yield f"{pad}  {key}: {line}"
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list | tuple) and item and _is_nested(item):
                yield f"{pad}{key}:"
                yield from _summarise(item, indent + 1, limit)
            else:
                yield f"{pad}{key}: {_short(item, limit)}"
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if index == _LIST_ITEMS and len(value) > _LIST_ITEMS + 1:
                yield f"{pad}... ({len(value) - index} more)"
                break
            if isinstance(item, dict | list | tuple) and item and _is_nested(item):
                yield f"{pad}[{index}]:"
                yield from _summarise(item, indent + 1, limit)
            else:
                yield f"{pad}[{index}] {_short(item, limit)}"
    else:
        yield f"{pad}{_short(value, limit)}"


def step_names(provenance: Sequence[Any]) -> list[str]:
    """The name of each provenance step (sciz records ``step``, playNano ``name``)."""
    names = []
    for step in provenance:
        found = next((step.get(k) for k in ("step", "name", "function", "operation") if step.get(k)), None)
        names.append(str(found) if found is not None else "?")
    return names


def _is_nested(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return isinstance(value, dict) or any(isinstance(i, dict | list | tuple) for i in items)


def _short(value: Any, limit: int) -> str:
    if isinstance(value, np.ndarray):
        return f"<array {value.dtype} {tuple(value.shape)}>"
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _print_description(path: Path, plugin: Any, described: dict[str, Any], *, as_json: bool) -> None:
    from ..metadata import to_jsonable

    size = disk_size(path)
    if as_json:
        report = {"path": os.fspath(path), "format": plugin.name, "description": plugin.description}
        report |= {"size_on_disk": size, **to_jsonable(described)}
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False))
        return
    typer.echo(f"file:     {path} ({human_size(size)} on disk)")
    typer.echo(f"format:   {plugin.name} - {plugin.description}")
    for line in _report_lines(described, 0):
        typer.echo(line)


def _report_lines(report: dict[str, Any], indent: int) -> Iterator[str]:
    """A format's own report: tables of arrays one per line, ``groups`` as reports of their own."""
    pad = "  " * indent
    for key, value in report.items():
        if _is_array_table(value):
            yield f"{pad}{key}:"
            yield from _array_table(value, indent + 1)
        elif key == "groups" and isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            for name, group in value.items():
                yield f"{pad}group {name}:" + ("" if any(group.values()) else " (empty)")
                if any(group.values()):
                    yield from _report_lines(group, indent + 1)
        elif value or value == 0:
            yield from _summarise({key: value}, indent)


def _is_array_table(value: Any) -> bool:
    """A mapping of names to array descriptions (each with ``dtype`` and ``shape``): shown one per line."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, dict) and "dtype" in v and "shape" in v for v in value.values())
    )


def _array_table(rows: dict[str, dict[str, Any]], indent: int) -> Iterator[str]:
    """One line per array (dimensions, dtype, stored size, ratio, filters), its CF attributes below."""
    pad = "  " * indent
    width = max(len(str(name)) for name in rows)
    shown = ("dtype", "shape", "dimensions", "stored_bytes", "ratio", "filters", "cf", "chunks")
    for name, row in rows.items():
        dims = ", ".join(f"{d}={n}" for d, n in zip(row.get("dimensions") or [], row["shape"], strict=False))
        stored = human_size(row["stored_bytes"]) if row.get("stored_bytes") is not None else "?"
        ratio = f"{row['ratio']:.2f}" if isinstance(row.get("ratio"), int | float) else "?"
        filters = ", ".join(str(f) for f in row.get("filters") or []) or "-"
        if row.get("chunks"):
            filters += f"; chunks {' x '.join(map(str, row['chunks']))}"
        yield f"{pad}{name:<{width}}  ({dims or 'scalar'}) {row['dtype']} stored {stored} ratio {ratio}  {filters}"
        cf = row.get("cf")
        if isinstance(cf, dict) and cf:
            yield f"{pad}{'':<{width}}  " + _short(", ".join(f"{k}={_short(v, 40)}" for k, v in cf.items()), 200)
        yield from _summarise({k: v for k, v in row.items() if k not in shown}, indent + 2)


@app.command("info")
def info_command(
    path: Annotated[Path, typer.Argument(help="The file (or directory store) to describe.")],
    format_name: Annotated[
        str | None, typer.Option("--format", "-f", help="Read as this format instead of detecting it.")
    ] = None,
    read_option: Annotated[
        list[str] | None,
        typer.Option("--read-option", "-r", help="KEY=VALUE passed to the reader, e.g. -r nodata_to_nan=true."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")] = False,
) -> None:
    """Describe a file: its format, every array with its storage, the axes and the metadata."""
    from ..metadata import to_jsonable

    options = parse_options(read_option or [], "--read-option")
    plugin = format_of(path, format_name)
    with clear_errors(path):
        described = plugin.describe(path, **options)  # a format's own report (netCDF), else None
    if described is not None:
        _print_description(path, plugin, described, as_json=as_json)
        return
    plugin, dataset = read_dataset(path, format_name, options, plugin=plugin)
    size = disk_size(path)
    rows = _array_rows(dataset, _container(plugin.name))
    stack = _afm_stack(dataset)
    axes = [axis.to_dict() | {"size": n} for axis, n in zip(dataset.axes, dataset.shape, strict=True)]
    steps = step_names(dataset.provenance)
    stored = [r["stored_bytes"] for r in rows]
    total = sum(r["nbytes"] for r in rows)
    if as_json:
        report = {
            "path": os.fspath(path),
            "format": plugin.name,
            "description": plugin.description,
            "name": dataset.name,
            "size_on_disk": size,
            "ratio": total / size if size else None,
            "arrays": rows,
            "axes": axes,
            "metadata": to_jsonable(dataset.metadata),
            "provenance_steps": len(dataset.provenance),
            "provenance_step_names": steps,
            "capabilities": sorted(plugin.capabilities()),
        }
        if stack is not None:
            report["afm_stack"] = stack
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False))
        return
    ratio = f", ratio {total / size:.2f} to the data in memory" if size else ""
    typer.echo(f"file:     {path} ({human_size(size)} on disk{ratio})")
    typer.echo(f"format:   {plugin.name} - {plugin.description}")
    if dataset.name:
        typer.echo(f"name:     {dataset.name}")
    typer.echo("arrays:")
    width = max(len(r["name"]) for r in rows)
    codec_width = max(len(r["codec_name"] or "?") for r in rows)
    for row in rows:
        shape = " x ".join(map(str, row["shape"])) or "scalar"
        on_disk = human_size(row["stored_bytes"]) if row["stored_bytes"] is not None else "not reported"
        ratio = f"  ratio {row['ratio']:.2f}" if row["ratio"] is not None else ""
        typer.echo(
            f"  {row['name']:<{width}}  {shape:<18} {row['dtype']:<9} codec {row['codec_name'] or '?':<{codec_width}}  "
            f"stored {on_disk:>10}{ratio}"
        )
        shown = row["parameters"]
        if row["codec"] == "sciz" and isinstance(shown.get("codec"), dict):  # a sciz stream in zarr: its codec's
            shown = {k: v for k, v in shown["codec"].items() if k != "id"}
        choice = shown.get("choice") if isinstance(shown.get("choice"), dict) else None
        shown = {k: v for k, v in shown.items() if v is not None and k != "choice"}
        extra = [", ".join(f"{k}={v}" for k, v in shown.items())] if shown else []
        if choice is not None:  # the record of sciz.codecs.choose (codec "auto"): one line, --json has it all
            extra.append(_choice_line(choice))
        extra += [f"lossy: {row['bound']}"] if row["lossy"] else []
        extra += [f"{k}: {v}" for k, v in row["details"].items()]
        if row["read_with"]:
            extra.append(f"other tools read it with {row['read_with']}")
        for line in extra:
            typer.echo(f"  {'':<{width}}  {line}")
    if None in stored:
        typer.echo("  (sizes not reported: the format does not say how each array is stored)")
    typer.echo("axes:")
    for index, axis in enumerate(axes):
        units = f" [{axis['units']}]" if axis["units"] else ""
        typer.echo(
            f"  {index}: {axis['name'] or '-'}{units} size {axis['size']}, scale {axis['scale']:.6g}, "
            f"offset {axis['offset']:.6g}"
        )
    if stack is not None:
        for line in _stack_lines(stack):
            typer.echo(line)
    typer.echo("metadata:" if dataset.metadata else "metadata: (none)")
    for line in _summarise(dataset.metadata, 1):
        typer.echo(line)
    if dataset.provenance:
        typer.echo(f"provenance: {len(steps)} steps: {', '.join(steps)}")
