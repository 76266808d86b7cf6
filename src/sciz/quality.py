"""How close a decoded array is to its original: error metrics and the climate acceptance tests.

Every metric compares the *valid* elements only: finite values of the original that are not its
``fill_value`` (say the 1e20 marking land in an ocean field). Codecs keep the others exactly and
apart from the bound, so they say nothing about quality; that they came back unchanged is counted
separately (:attr:`QualityReport.invalid_changed`).

The acceptance tests are those of Baker et al. (2016, "Evaluating lossy data compression on climate
simulation data within a large ensemble", GMD 9) as used by ClimateBenchPress and ldcpy:
R^2 > 0.99999 (the squared Pearson correlation), the spatial relative error test (under 5 % of the
points have a relative error above 1e-4) and DSSIM >= 0.9995 (the data SSIM of Baker, Hammerling and
Turton 2019 on every 2-D slice: values scaled to [0, 1] by the original slice's range, an 11x11
Gaussian window of sigma 1.5, and C1 = C2 = 1e-8).

Example
-------
>>> import numpy as np
>>> from sciz.quality import compare
>>> original = np.linspace(0, 1, 4096).reshape(64, 64)
>>> report = compare(original, original + 1e-6)
>>> round(report.max_abs_error, 9), report.passes
(1e-06, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import argument_error

__all__ = [
    "DSSIM_MIN",
    "R2_MIN",
    "SPATIAL_REL_ERROR",
    "SPATIAL_SHARE_MAX",
    "QualityReport",
    "compare",
    "dssim",
    "error_autocorrelation",
    "error_histogram",
    "pearson",
    "psnr",
    "range_outlier",
    "range_outlier_message",
    "spectral_error",
    "ssim",
    "valid_mask",
]

#: The acceptance thresholds (Baker et al. 2016; ClimateBenchPress).
R2_MIN = 0.99999
SPATIAL_REL_ERROR = 1e-4
SPATIAL_SHARE_MAX = 0.05
DSSIM_MIN = 0.9995

#: SSIM's Gaussian window (Wang et al. 2004): sigma 1.5, 11 taps (radius 5).
_SIGMA, _RADIUS = 1.5, 5
#: DSSIM's stabilising constants on data scaled to [0, 1] (Baker, Hammerling and Turton 2019).
_DSSIM_C = 1e-8


def _pair(original: Any, decoded: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(original), np.asarray(decoded)
    if a.shape != b.shape:
        raise argument_error("decoded", f"array of shape {b.shape}", f"must have the original's shape {a.shape}")
    if a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
        raise argument_error("original", f"{a.dtype} array", "metrics compare real numeric arrays")
    return a, b


def valid_mask(original: Any, fill_value: float | None = None) -> np.ndarray:
    """Where ``original`` holds data: finite and not equal to ``fill_value``."""
    values = np.asarray(original)
    valid = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    if fill_value is not None and math.isfinite(float(fill_value)):
        valid &= values != fill_value
    return valid


@dataclass(frozen=True)
class RangeOutlier:
    """A value far outside all the others, which alone sets one end of the data range."""

    value: float
    count: int
    total: int
    low: float  # the range of the other valid values
    high: float


#: Values :func:`range_outlier` first looks at (a sample finding no outlier proves there is none).
OUTLIER_SAMPLE = 1024


def range_outlier(
    data: Any, fill_value: float | None = None, *, factor: float = 10.0, valid: np.ndarray | None = None
) -> RangeOutlier | None:
    """The value (NaN, Inf and ``fill_value`` aside) lying at least ``factor`` times the spread of
    all the others away from them, or None. Such a value (an unmarked fill, 1e20 land in an ocean
    field) sets the range that a relative or PSNR bound is a share of: ``rel_tolerance=1e-3`` then
    means 1e17, and every real value may be lost while the bound holds. ``valid``: the mask of the
    valid elements, when the caller has it.

    Cheap: the others' spread is first taken from an evenly strided sample of about
    :data:`OUTLIER_SAMPLE` values. The sample's spread is at most the whole's and its gap to the
    lone value at least the whole's, so a sample that finds no outlier proves there is none; one
    that finds it is confirmed on every value.
    """
    array = np.asarray(data)
    if array.dtype.kind not in "fiu" or array.size < 16:
        return None
    if valid is None and (array.dtype.kind == "f" or fill_value is not None):
        valid = valid_mask(array, fill_value)
    values = (array if valid is None or valid.all() else array[valid]).reshape(-1)
    if values.size < 3:
        return None
    sample = values[:: max(1, values.size // OUTLIER_SAMPLE)]
    for lone in (values.max(), values.min()):
        for candidates in (sample, values) if sample.size < values.size else (values,):
            rest = candidates[candidates != lone]
            if rest.size < 2:
                if candidates is sample:
                    continue  # the sample holds nothing but the lone value: ask every value
                break
            low, high = float(rest.min()), float(rest.max())
            gap = min(abs(float(lone) - low), abs(float(lone) - high))
            if not (high > low and gap >= factor * (high - low)):
                break  # none in the sample: none in the whole
            if candidates is values:
                return RangeOutlier(float(lone), int(values.size - rest.size), int(values.size), low, high)
    return None


def range_outlier_message(found: RangeOutlier, option: str = "fill_value=") -> str:
    """The one wording of the warning, with ``option`` spelled as the caller's interface spells it
    (``fill_value=`` in Python, ``--fill-value `` on the command line)."""
    return (
        f"{found.count} of {found.total} values equal {found.value:g}, far outside the others "
        f"({found.low:g} .. {found.high:g}). A relative or PSNR bound is a share of the whole range, "
        f"which {found.value:g} sets; if it marks missing data, pass {option}{found.value:g}."
    )


def _valid_values(original: Any, decoded: Any, fill_value: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The valid elements of both arrays, as float64 (the decoded ones may be anything)."""
    a, b = _pair(original, decoded)
    valid = valid_mask(a, fill_value)
    return a[valid].astype(np.float64), b[valid].astype(np.float64)


def psnr(original: Any, decoded: Any, *, fill_value: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: 20 log10(range / RMSE) over the valid elements (inf if exact)."""
    x, y = _valid_values(original, decoded, fill_value)
    if not x.size:
        return math.inf
    span = float(x.max() - x.min())
    rmse = math.sqrt(float(np.mean((y - x) ** 2)))
    if rmse == 0:
        return math.inf
    if span == 0:
        return -math.inf
    return 20 * math.log10(span / rmse)


def pearson(original: Any, decoded: Any, *, fill_value: float | None = None) -> float:
    """Pearson correlation of the valid elements (1.0 when both are the same constant, NaN when one only is)."""
    x, y = _valid_values(original, decoded, fill_value)
    if x.size < 2:
        return 1.0
    dx, dy = x - x.mean(), y - y.mean()
    sx, sy = math.sqrt(float(dx @ dx)), math.sqrt(float(dy @ dy))
    if sx == 0 and sy == 0:
        return 1.0 if np.array_equal(x, y) else math.nan
    if sx == 0 or sy == 0:
        return math.nan
    return float(dx @ dy) / (sx * sy)


def _filled(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """float64 copy with invalid elements set to the mean of the valid ones (0 if none)."""
    out = values.astype(np.float64)
    out[~valid] = float(out[valid].mean()) if valid.any() else 0.0
    return out


def _ssim_map(a: np.ndarray, b: np.ndarray, c1: float, c2: float, axes: tuple[int, ...]) -> np.ndarray:
    """SSIM at every element, Gaussian window over ``axes`` (the others are left alone)."""
    from scipy import ndimage

    sigma = [(_SIGMA if axis in axes else 0.0) for axis in range(a.ndim)]

    def blur(values: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(values, sigma, truncate=_RADIUS / _SIGMA, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim(original: Any, decoded: Any, *, fill_value: float | None = None) -> float:
    """Structural similarity (Wang et al. 2004) over every axis, mean over the valid elements.

    Gaussian window of sigma 1.5 (11 taps), C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L the original's
    valid range. Invalid elements are set to the valid mean before filtering and left out of the mean.
    """
    a, b = _pair(original, decoded)
    valid = valid_mask(a, fill_value)
    if not valid.any():
        return 1.0
    x, y = _filled(a, valid), _filled(b, valid & np.isfinite(b))
    span = float(x[valid].max() - x[valid].min()) or 1.0
    axes = tuple(axis for axis in range(x.ndim) if x.shape[axis] > 1)
    return float(_ssim_map(x, y, (0.01 * span) ** 2, (0.03 * span) ** 2, axes)[valid].mean())


def dssim(original: Any, decoded: Any, *, fill_value: float | None = None) -> float:
    """The data SSIM of Baker et al. 2019: the smallest SSIM of the 2-D slices over the last two axes.

    Each slice is scaled to [0, 1] by its original's valid range; C1 = C2 = 1e-8. A 1-D array is one
    slice of one row. Constant or empty slices are skipped (1.0 when all are).
    """
    a, b = _pair(original, decoded)
    valid = valid_mask(a, fill_value)
    if a.ndim < 2:
        a, b, valid = a.reshape(1, -1), b.reshape(1, -1), valid.reshape(1, -1)
    rows, cols = a.shape[-2:]
    a, b, valid = a.reshape(-1, rows, cols), b.reshape(-1, rows, cols), valid.reshape(-1, rows, cols)
    worst = 1.0
    for x, y, keep in zip(a, b, valid, strict=True):
        if not keep.any():
            continue
        low, high = float(x[keep].min()), float(x[keep].max())
        if high == low:
            continue
        xs = (_filled(x, keep) - low) / (high - low)
        ys = (_filled(y, keep & np.isfinite(y)) - low) / (high - low)
        axes = tuple(axis for axis in range(2) if xs.shape[axis] > 1)
        worst = min(worst, float(_ssim_map(xs, ys, _DSSIM_C, _DSSIM_C, axes)[keep].mean()))
    return worst


def spectral_error(original: Any, decoded: Any, *, fill_value: float | None = None) -> float:
    """Relative L1 distance of the power spectra along the last axis: sum |P(x) - P(y)| / sum P(x).

    The spectra are averaged over the other axes; the mean is removed first; invalid elements are
    set to the valid mean. 0 for an exact copy; noise-like errors raise the high frequencies.
    """
    a, b = _pair(original, decoded)
    valid = valid_mask(a, fill_value)
    x, y = _filled(a, valid), _filled(b, valid & np.isfinite(b))
    x, y = x.reshape(-1, x.shape[-1] if x.ndim else 1), y.reshape(-1, y.shape[-1] if y.ndim else 1)
    mean = float(x[valid.reshape(x.shape)].mean()) if valid.any() else 0.0
    px = (np.abs(np.fft.rfft(x - mean, axis=-1)) ** 2).mean(axis=0)
    py = (np.abs(np.fft.rfft(y - mean, axis=-1)) ** 2).mean(axis=0)
    total = float(px.sum())
    if total == 0:
        return 0.0 if np.array_equal(px, py) else math.inf
    return float(np.abs(px - py).sum()) / total


def error_histogram(
    original: Any, decoded: Any, *, bins: int = 50, fill_value: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of the signed errors decoded - original over the valid elements."""
    x, y = _valid_values(original, decoded, fill_value)
    counts, edges = np.histogram(y - x, bins=bins)
    return counts, edges


def error_autocorrelation(original: Any, decoded: Any, *, fill_value: float | None = None) -> list[float]:
    """Lag-1 autocorrelation of the error along each axis (0 for white noise, near 1 for smooth errors).

    Pairs with an invalid element are left out; NaN where the error is constant along an axis.
    """
    a, b = _pair(original, decoded)
    valid = valid_mask(a, fill_value) & (np.isfinite(b) if b.dtype.kind == "f" else True)
    error = np.where(valid, b.astype(np.float64) - a.astype(np.float64), 0.0)
    result = []
    for axis in range(error.ndim):
        n = error.shape[axis]
        if n < 2:
            result.append(math.nan)
            continue
        head, tail = np.take(error, range(n - 1), axis), np.take(error, range(1, n), axis)
        both = np.take(valid, range(n - 1), axis) & np.take(valid, range(1, n), axis)
        u, v = head[both], tail[both]
        if u.size < 2:
            result.append(math.nan)
            continue
        du, dv = u - u.mean(), v - v.mean()
        denominator = math.sqrt(float(du @ du) * float(dv @ dv))
        result.append(float(du @ dv) / denominator if denominator else math.nan)
    return result


@dataclass
class QualityReport:
    """Every metric of one (original, decoded) pair; :attr:`passes` is all three acceptance tests."""

    count: int
    invalid_changed: int
    max_abs_error: float
    max_rel_error: float
    mean_abs_error: float
    rmse: float
    nrmse: float
    psnr: float
    pearson: float
    r2: float
    ssim: float
    dssim: float
    spectral_error: float
    spatial_rel_error_share: float
    error_autocorrelation: list[float]
    histogram_counts: list[int] = field(default_factory=list)
    histogram_edges: list[float] = field(default_factory=list)

    @property
    def r2_pass(self) -> bool:
        return self.r2 > R2_MIN

    @property
    def spatial_pass(self) -> bool:
        return self.spatial_rel_error_share < SPATIAL_SHARE_MAX

    @property
    def dssim_pass(self) -> bool:
        return self.dssim >= DSSIM_MIN

    @property
    def passes(self) -> bool:
        """The climate acceptance tests: R^2, spatial relative error and DSSIM, and no invalid element changed."""
        return self.r2_pass and self.spatial_pass and self.dssim_pass and self.invalid_changed == 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (inf and NaN become strings, as JSON has neither)."""
        out = {key: _json_number(value) for key, value in asdict(self).items()}
        out.update(r2_pass=self.r2_pass, spatial_pass=self.spatial_pass, dssim_pass=self.dssim_pass)
        out["passes"] = self.passes
        return out


def _json_number(value: Any) -> Any:
    if isinstance(value, list):
        return [_json_number(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _invalid_changed(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> int:
    """Invalid elements of ``a`` that ``b`` does not hold bit for bit (NaN payloads included)."""
    invalid = ~valid
    if not invalid.any():
        return 0
    if a.dtype != b.dtype:
        return int(np.count_nonzero(~((a[invalid] == b[invalid]) | (np.isnan(a[invalid]) & np.isnan(b[invalid])))))
    bits = f"u{a.dtype.itemsize}"
    return int(np.count_nonzero(a[invalid].view(bits) != b[invalid].view(bits)))


def compare(original: Any, decoded: Any, *, fill_value: float | None = None, bins: int = 50) -> QualityReport:
    """Every metric and the acceptance tests for ``decoded`` against ``original`` (same shape)."""
    a, b = _pair(original, decoded)
    valid = valid_mask(a, fill_value)
    x, y = a[valid].astype(np.float64), b[valid].astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(y - x)
    nonzero = x != 0
    if x.size:
        span = float(x.max() - x.min())
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            relative = error[nonzero] / np.abs(x[nonzero])
        max_abs = float(error.max()) if np.isfinite(error).all() else math.inf
        rmse = math.sqrt(float(np.mean(error**2))) if math.isfinite(max_abs) else math.inf
        share = float(np.count_nonzero(~(relative <= SPATIAL_REL_ERROR))) / x.size
        max_rel = float(relative.max()) if relative.size else 0.0
        mean_abs = float(error.mean())
    else:
        span = max_abs = rmse = share = max_rel = mean_abs = 0.0
    r = pearson(a, b, fill_value=fill_value)
    counts, edges = error_histogram(a, b, bins=bins, fill_value=fill_value) if x.size else (np.zeros(0), np.zeros(0))
    return QualityReport(
        count=int(x.size),
        invalid_changed=_invalid_changed(a, b, valid),
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        mean_abs_error=mean_abs,
        rmse=rmse,
        nrmse=rmse / span if span else (0.0 if rmse == 0 else math.inf),
        psnr=psnr(a, b, fill_value=fill_value),
        pearson=r,
        r2=r * r,
        ssim=ssim(a, b, fill_value=fill_value),
        dssim=dssim(a, b, fill_value=fill_value),
        spectral_error=spectral_error(a, b, fill_value=fill_value),
        spatial_rel_error_share=share,
        error_autocorrelation=error_autocorrelation(a, b, fill_value=fill_value),
        histogram_counts=[int(c) for c in counts],
        histogram_edges=[float(e) for e in edges],
    )
