"""Quality metrics against values computed by hand on small arrays, NaN/fill handling and the acceptance tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sciz import quality


def test_hand_computed_errors_psnr_pearson() -> None:
    original = np.array([[0.0, 1.0], [2.0, 3.0]])
    decoded = np.array([[0.0, 1.0], [2.0, 4.0]])
    report = quality.compare(original, decoded)
    assert report.count == 4
    assert report.max_abs_error == 1.0
    assert report.mean_abs_error == 0.25
    assert report.rmse == 0.5  # sqrt(1 / 4)
    assert report.nrmse == pytest.approx(0.5 / 3)
    assert report.psnr == pytest.approx(20 * math.log10(3 / 0.5))  # 15.563 dB
    assert report.max_rel_error == pytest.approx(1 / 3)
    # x = 0 has no relative error but counts among the points: 1 of 4 exceeds 1e-4
    assert report.spatial_rel_error_share == 0.25
    # dx = (-1.5, -.5, .5, 1.5), dy = (-1.75, -.75, .25, 2.25): 6.5 / sqrt(5 * 8.75)
    assert report.pearson == pytest.approx(6.5 / math.sqrt(43.75))
    assert report.r2 == pytest.approx(6.5**2 / 43.75)
    assert not report.passes and not report.r2_pass and not report.spatial_pass
    assert sum(report.histogram_counts) == 4
    assert report.histogram_edges[0] == 0.0 and report.histogram_edges[-1] == 1.0


def test_ssim_of_constants_is_the_luminance_term() -> None:
    # No variance anywhere: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 L)^2 with L = 1 for a constant.
    a, b = np.full((12, 12), 1.0), np.full((12, 12), 2.0)
    c1 = 1e-4
    assert quality.ssim(a, b) == pytest.approx((4 + c1) / (5 + c1), rel=1e-9)
    assert quality.ssim(a, a) == pytest.approx(1.0)


def test_dssim_scaled_per_slice_and_worst_slice() -> None:
    rng = np.random.default_rng(1)
    field = np.cumsum(rng.standard_normal((3, 24, 24)), axis=2)
    noisy = field.copy()
    noisy[1] += rng.standard_normal((24, 24)) * 0.5
    assert quality.dssim(field, field) == pytest.approx(1.0)
    worst = quality.dssim(field, noisy)
    assert worst < 0.999
    # the worst slice decides, and scaling by the original's range makes it unit-free
    assert worst == pytest.approx(quality.dssim(field[1], noisy[1]))
    assert quality.dssim(field * 1e5 + 300, noisy * 1e5 + 300) == pytest.approx(worst, rel=1e-6)
    assert quality.ssim(field, noisy) < 1.0


def test_spectral_error_of_a_doubled_wave_is_three() -> None:
    wave = np.cos(2 * np.pi * np.arange(16) / 8)[None, :].repeat(3, 0)
    # P(2x) = 4 P(x): sum |P - 4P| / sum P = 3
    assert quality.spectral_error(wave, 2 * wave) == pytest.approx(3.0)
    assert quality.spectral_error(wave, wave) == 0.0


def test_error_autocorrelation_alternating_and_smooth() -> None:
    original = np.zeros(6)
    assert quality.error_autocorrelation(original, original + np.array([1, -1, 1, -1, 1, -1.0])) == [
        pytest.approx(-1.0)
    ]
    assert quality.error_autocorrelation(original, original + np.arange(6.0)) == [pytest.approx(1.0)]
    two_d = quality.error_autocorrelation(np.zeros((4, 4)), np.arange(16.0).reshape(4, 4))
    assert two_d == [pytest.approx(1.0), pytest.approx(1.0)]


def test_nan_and_fill_values_are_left_out_and_checked() -> None:
    original = np.array([1.0, 2.0, np.nan, 1e20, 4.0])
    decoded = np.array([1.5, 2.0, np.nan, 1e20, 4.0])
    report = quality.compare(original, decoded, fill_value=1e20)
    assert report.count == 3
    assert report.max_abs_error == 0.5
    assert report.psnr == pytest.approx(20 * math.log10(3 / math.sqrt(0.25 / 3)))
    assert report.invalid_changed == 0
    changed = decoded.copy()
    changed[3] = 0.0
    assert quality.compare(original, changed, fill_value=1e20).invalid_changed == 1
    # without the fill value, 1e20 is data and dominates the range
    assert quality.compare(original, decoded).count == 4
    assert quality.valid_mask(original, 1e20).tolist() == [True, True, False, False, True]


def test_acceptance_tests_pass_for_a_tight_bound_and_fail_for_a_loose_one() -> None:
    y, x = np.mgrid[0:64, 0:64]
    field = 280 + 10 * np.sin(x / 9.0) * np.cos(y / 7.0)
    rng = np.random.default_rng(0)
    tight = field + rng.uniform(-1e-4, 1e-4, field.shape)
    loose = field + rng.uniform(-0.5, 0.5, field.shape)
    good, bad = quality.compare(field, tight), quality.compare(field, loose)
    assert good.r2_pass and good.spatial_pass and good.dssim_pass and good.passes
    assert not bad.dssim_pass and not bad.spatial_pass and not bad.passes
    assert bad.r2 < good.r2
    as_json = bad.to_dict()
    assert as_json["passes"] is False and as_json["max_abs_error"] == bad.max_abs_error


def test_exact_copy_and_shape_mismatch() -> None:
    field = np.arange(20.0).reshape(4, 5)
    report = quality.compare(field, field.copy())
    assert report.psnr == math.inf and report.max_abs_error == 0 and report.passes
    assert report.to_dict()["psnr"] == "inf"
    with pytest.raises(ValueError, match="shape"):
        quality.compare(field, field[:2])


def test_range_outlier_finds_a_lone_fill_at_either_end_and_nothing_else() -> None:
    rng = np.random.default_rng(1)
    field = (280 + rng.standard_normal(300_000)).astype(np.float32)  # larger than the 1024-value sample
    assert quality.range_outlier(field) is None
    one = field.copy()
    one[123_457] = 1e20  # one value, off the sample's stride: confirmed on every value
    found = quality.range_outlier(one)
    assert found is not None and found.count == 1 and found.total == field.size
    assert found.low == float(field.min()) and found.high == float(field.max())
    low = field.copy()
    low[::3] = -999.0
    found = quality.range_outlier(low)
    assert found is not None and found.value == -999.0 and found.count == 100_000
    assert quality.range_outlier(one, fill_value=1e20) is None  # marked: not an outlier
    with_nan = one.copy()
    with_nan[:10] = np.nan
    assert quality.range_outlier(with_nan).total == field.size - 10  # type: ignore[union-attr]
    # close to the others (under 10 spreads away): no warning
    near = field.copy()
    near[0] = float(field.max()) + 5 * float(np.ptp(field))
    assert quality.range_outlier(near) is None
    text = quality.range_outlier_message(quality.range_outlier(one), "--fill-value ")  # type: ignore[arg-type]
    assert "1 of 300000 values equal 1e+20" in text and text.endswith("pass --fill-value 1e+20.")
