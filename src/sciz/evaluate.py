"""Rate-distortion evaluation of the codecs on one array: a table, plots and one self-contained HTML page.

:func:`evaluate` codes the array with each codec at each bound (relative to the valid data range),
timing encode and decode and measuring the decoded array with :func:`sciz.quality.compare`.
:func:`plot_rate_distortion` (bits per value against PSNR), :func:`plot_ratio_vs_bound` and
:func:`plot_pareto` (ratio against encode speed, with the Pareto front) draw matplotlib figures
(Agg, no display needed); :func:`write_report` writes ``evaluation.json``, the PNGs and
``report.html`` (the PNGs embedded as base64, so the page is one file). ``sciz evaluate`` is the
command line for it. The codec ``"auto"`` is :func:`sciz.codecs.choose` at each bound.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .codecs import choose, decode, get, list_codecs
from .codecs.registry import codec_class
from .errors import argument_error
from .quality import compare, valid_mask

__all__ = [
    "DEFAULT_BOUNDS",
    "default_codecs",
    "evaluate",
    "pareto_front",
    "plot_pareto",
    "plot_rate_distortion",
    "plot_ratio_vs_bound",
    "write_report",
]

#: Bounds relative to the valid data range.
DEFAULT_BOUNDS = (1e-2, 1e-3, 1e-4)
PLOTS = {
    "rate_distortion": "bits per value vs PSNR",
    "ratio_vs_bound": "compression ratio vs error bound",
    "pareto": "compression ratio vs encode speed",
}


def default_codecs(array: np.ndarray) -> list[str]:
    """Every codec of the table that keeps an absolute bound for this dtype, then ``"auto"``."""
    names = []
    for name in list_codecs():
        row = getattr(codec_class(name), "spec", None)
        if (
            row is not None
            and row.method is not None
            and "tolerance" in row.bounds
            and array.dtype.str[1:] in row.dtypes
        ):
            names.append(name)
    return [*names, "auto"]


def evaluate(
    data: Any,
    *,
    codecs: Sequence[str] | None = None,
    bounds: Sequence[float] = DEFAULT_BOUNDS,
    fill_value: float | None = None,
    numthreads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per codec and bound: ratio, bits per value, encode/decode MB/s and the quality metrics.

    ``bounds`` are relative to the valid data range; a codec that refuses the data or bound gets a
    row with ``"error"``. ``progress`` is called after each row with a line saying what it found.
    """
    array = np.asarray(data)
    if array.dtype.kind not in "iuf" or array.size == 0:
        raise argument_error("data", f"{array.dtype} array of shape {array.shape}", "must be a non-empty numeric array")
    names = list(codecs) if codecs is not None else default_codecs(array)
    known = [*list_codecs(), "auto"]
    for name in names:
        if name not in known:
            raise argument_error("codecs", name, f"known codecs are {', '.join(known)}")
    valid = valid_mask(array, fill_value)
    values = array[valid]
    span = float(values.max()) - float(values.min()) if values.size else 0.0
    extra: dict[str, Any] = {} if fill_value is None else {"fill_value": fill_value}
    rows = []
    for name in names:
        for bound in bounds:
            tolerance = float(bound) * span
            row: dict[str, Any] = {"codec": name, "bound": float(bound), "tolerance": tolerance}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # fallbacks show in the ratio
                    start = time.perf_counter()
                    if name == "auto":
                        codec = choose(array, tolerance=tolerance, numthreads=numthreads, **extra)
                        row["chosen"] = codec.choice["chosen"]
                    else:
                        codec = get(name, tolerance=tolerance, **extra)
                    stream = codec.encode(array, numthreads=numthreads)
                    encode_s = time.perf_counter() - start
                start = time.perf_counter()
                restored = decode(stream, numthreads=numthreads)
                decode_s = time.perf_counter() - start
            except (ValueError, TypeError) as exc:  # CodecError is a ValueError
                row["error"] = str(exc)
                rows.append(row)
                if progress is not None:
                    progress(f"{name} at {bound:g}: refused ({exc})")
                continue
            ratio = array.nbytes / len(stream)
            report = compare(array, restored, fill_value=fill_value).to_dict()
            row.update(
                ratio=ratio,
                bits_per_value=array.itemsize * 8 / ratio,
                encode_mb_s=array.nbytes / 1e6 / max(encode_s, 1e-9),
                decode_mb_s=array.nbytes / 1e6 / max(decode_s, 1e-9),
                bound_holds=report["max_abs_error"] <= tolerance,
                **{k: v for k, v in report.items() if not k.startswith("histogram")},
            )
            rows.append(row)
            if progress is not None:
                progress(f"{name} at {bound:g}: ratio {ratio:.2f}, max error {report['max_abs_error']:.4g}")
    return rows


def _series(rows: list[dict[str, Any]], x: str, y: str) -> dict[str, dict[str, list[float]]]:
    """{codec: {"x": [...], "y": [...]}} of the rows that have both values (finite), sorted by x."""
    out: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        a, b = row.get(x), row.get(y)
        if isinstance(a, int | float) and isinstance(b, int | float) and math.isfinite(a) and math.isfinite(b):
            out.setdefault(row["codec"], {"x": [], "y": []})
            out[row["codec"]]["x"].append(float(a))
            out[row["codec"]]["y"].append(float(b))
    for series in out.values():
        order = np.argsort(series["x"], kind="stable")
        series["x"] = [series["x"][i] for i in order]
        series["y"] = [series["y"][i] for i in order]
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats in both coordinates (larger is better in both), by x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return sorted(front)


def plot_series(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """The data behind each plot: {plot: {codec: {"x", "y"}}} (the pareto plot adds ``"front"``)."""
    speed = _series(rows, "encode_mb_s", "ratio")
    points = [(x, y) for s in speed.values() for x, y in zip(s["x"], s["y"], strict=True)]
    front = pareto_front(points)
    return {
        "rate_distortion": _series(rows, "bits_per_value", "psnr"),
        "ratio_vs_bound": _series(rows, "bound", "ratio"),
        "pareto": {**speed, "front": {"x": [p[0] for p in front], "y": [p[1] for p in front]}},
    }


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _finish(axes: Any, log: bool) -> None:
    """Log scales and the legend where the plot has points; else a note that no codec coded the data."""
    if not any(len(line.get_xdata()) for line in axes.get_lines()):
        axes.text(0.5, 0.5, "no codec coded this data", ha="center", va="center", transform=axes.transAxes)
        return
    if log:
        axes.set_xscale("log")
        axes.set_yscale("log")
    axes.legend()


def plot_rate_distortion(rows: list[dict[str, Any]]) -> Any:
    """Bits per value (x) against PSNR in dB (y), one line per codec."""
    figure, axes = _figure(PLOTS["rate_distortion"], "bits per value", "PSNR (dB)")
    for codec, series in plot_series(rows)["rate_distortion"].items():
        axes.plot(series["x"], series["y"], marker="o", label=codec, linestyle="--" if codec == "auto" else "-")
    _finish(axes, log=False)
    return figure


def plot_ratio_vs_bound(rows: list[dict[str, Any]]) -> Any:
    """Error bound relative to the range (x, log) against the compression ratio (y, log)."""
    figure, axes = _figure(PLOTS["ratio_vs_bound"], "error bound / data range", "compression ratio")
    for codec, series in plot_series(rows)["ratio_vs_bound"].items():
        axes.plot(series["x"], series["y"], marker="o", label=codec, linestyle="--" if codec == "auto" else "-")
    _finish(axes, log=True)
    return figure


def plot_pareto(rows: list[dict[str, Any]]) -> Any:
    """Encode speed in MB/s (x, log) against the ratio (y, log): every run, and the Pareto front."""
    figure, axes = _figure(PLOTS["pareto"], "encode speed (MB/s)", "compression ratio")
    data = plot_series(rows)["pareto"]
    for codec, series in data.items():
        if codec != "front":
            axes.plot(series["x"], series["y"], marker="o", linestyle="none", label=codec)
    if data["front"]["x"]:
        axes.plot(data["front"]["x"], data["front"]["y"], color="black", linestyle="--", label="Pareto front")
    _finish(axes, log=True)
    return figure


_COLUMNS = (
    ("codec", "codec"),
    ("bound", "bound / range"),
    ("tolerance", "tolerance"),
    ("bound_holds", "bound holds"),
    ("ratio", "ratio"),
    ("bits_per_value", "bits/value"),
    ("encode_mb_s", "encode MB/s"),
    ("decode_mb_s", "decode MB/s"),
    ("max_abs_error", "max abs error"),
    ("psnr", "PSNR dB"),
    ("r2", "R^2"),
    ("dssim", "DSSIM"),
    ("passes", "acceptance"),
)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return html.escape(str(value))


def write_report(
    rows: list[dict[str, Any]], out: str | Path, *, title: str = "sciz codec evaluation"
) -> dict[str, Path]:
    """Write ``evaluation.json``, one PNG per plot and ``report.html`` into ``out``; return their paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "evaluation.json", "html": folder / "report.html"}
    series = plot_series(rows)
    paths["json"].write_text(json.dumps({"title": title, "rows": rows, "plots": series}, indent=1, default=str))
    images = []
    for name, draw in (
        ("rate_distortion", plot_rate_distortion),
        ("ratio_vs_bound", plot_ratio_vs_bound),
        ("pareto", plot_pareto),
    ):
        path = folder / f"{name}.png"
        draw(rows).savefig(path, dpi=100)
        paths[name] = path
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        images.append(f'<figure><img alt="{html.escape(PLOTS[name])}" src="data:image/png;base64,{encoded}"></figure>')
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in _COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(key, row.get('error', '')))}</td>" for key, _ in _COLUMNS) + "</tr>"
        for row in rows
    )
    paths["html"].write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "figure{display:inline-block;margin:0 1em 1em 0}img{max-width:620px}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(images)}"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>"
    )
    return paths
