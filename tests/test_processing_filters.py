"""Levelling filters and masks: exact results on synthetic surfaces, mask semantics, and errors naming the frame."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sciz.errors import ArgumentError
from sciz.processing import (
    ProcessingError,
    gaussian_filter,
    mask_adaptive,
    mask_below_threshold,
    mask_mean_offset,
    mask_morphological,
    mask_threshold,
    polynomial_flatten,
    polynomial_surface,
    remove_plane,
    row_median_align,
    zero_mean,
    zero_median,
)

RNG = np.random.default_rng(11)


def grid(n: int = 3, h: int = 24, w: int = 30) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.broadcast_to(yy, (n, h, w)), np.broadcast_to(xx, (n, h, w))


def planes(n: int = 3, h: int = 24, w: int = 30) -> np.ndarray:
    yy, xx = grid(n, h, w)
    a, b, c = RNG.normal(size=(3, n, 1, 1)) * [[[[5.0]]], [[[0.3]]], [[[0.2]]]]
    return a + b * xx + c * yy


def test_remove_plane_removes_any_plane_per_frame():
    tilted = planes()
    out = remove_plane(tilted)
    assert out.shape == tilted.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, 0.0, atol=1e-9)


def test_remove_plane_keeps_float32_and_promotes_integers():
    data = (planes() * 100).astype(np.float32)
    assert remove_plane(data).dtype == np.float32
    assert remove_plane(np.arange(2 * 8 * 9, dtype=np.int16).reshape(2, 8, 9)).dtype == np.float64


def test_remove_plane_on_a_single_image_returns_an_image():
    image = planes(1)[0]
    out = remove_plane(image)
    assert out.shape == image.shape
    np.testing.assert_allclose(out, 0.0, atol=1e-9)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_polynomial_flatten_removes_polynomials_up_to_its_order(order):
    yy, xx = grid(2, 20, 26)
    surface = np.zeros(yy.shape)
    for total in range(order + 1):
        for i in range(total + 1):
            surface += RNG.normal() * (xx / 26) ** i * (yy / 20) ** (total - i)
    np.testing.assert_allclose(polynomial_flatten(surface, order=order), 0.0, atol=1e-9)
    if order < 3:  # a higher term is not removed by a lower-order fit
        curved = surface + (xx / 26) ** (order + 1)
        assert np.abs(polynomial_flatten(curved, order=order)).max() > 1e-3


def test_masked_fit_ignores_the_foreground():
    background = planes(2, 30, 30)
    data = background.copy()
    data[:, 10:20, 12:22] += 7.0  # a particle that would tilt an unmasked fit
    mask = data - background > 1.0
    out = remove_plane(data, mask=mask)
    np.testing.assert_allclose(out[~mask], 0.0, atol=1e-9)
    np.testing.assert_allclose(out[mask], 7.0, atol=1e-9)
    assert np.abs(remove_plane(data)[~mask]).max() > 0.1  # without the mask the fit is biased


def test_masked_fit_matches_lstsq_on_background_pixels():
    data = RNG.normal(size=(3, 25, 31)) + planes(3, 25, 31)
    mask = RNG.random(data.shape) < 0.3
    out = polynomial_flatten(data, order=2, mask=mask)
    yy, xx = np.mgrid[0:25, 0:31].astype(np.float64)
    x, y = xx.ravel(), yy.ravel()
    design = np.stack([np.ones(25 * 31), x, y, x**2, x * y, y**2], 1)
    for i in range(3):
        keep = ~mask[i].ravel()
        coeff, *_ = np.linalg.lstsq(design[keep], data[i].ravel()[keep], rcond=None)
        np.testing.assert_allclose(out[i].ravel(), data[i].ravel() - design @ coeff, atol=1e-9)


def test_poorly_covered_background_is_still_fitted_accurately():
    # Only a small corner is background: the normal equations are ill-conditioned there, so sciz
    # re-solves that frame by SVD; the result must match a direct least-squares solution.
    yy, xx = grid(2, 40, 40)
    data = 0.5 + 0.3 * xx + 0.2 * yy + 0.01 * xx * yy + 0.001 * xx**3 + RNG.normal(0, 0.01, (2, 40, 40))
    mask = np.ones(data.shape, bool)
    mask[:, :8, :8] = False
    out = polynomial_flatten(data, order=3, mask=mask)
    keep = ~mask[0].ravel()
    x, y = xx[0].ravel() / 40, yy[0].ravel() / 40
    design = np.stack([x**i * y ** (t - i) for t in range(4) for i in range(t + 1)], 1)
    coeff, *_ = np.linalg.lstsq(design[keep], data[0].ravel()[keep], rcond=None)
    np.testing.assert_allclose(out[0].ravel(), data[0].ravel() - design @ coeff, atol=1e-7)


def test_nan_pixels_are_left_out_of_fits_and_stay_nan():
    data = planes(2)
    data[0, 3, 4] = np.nan
    data[1, :, 0] = np.nan
    out = remove_plane(data)
    assert np.isnan(out[0, 3, 4]) and np.isnan(out[1, :, 0]).all()
    np.testing.assert_allclose(out[np.isfinite(out)], 0.0, atol=1e-9)


def test_fit_errors_name_the_frame():
    data = planes(3, 10, 10)
    mask = np.zeros(data.shape, bool)
    mask[2] = True
    mask[2, 0, :2] = False  # two pixels cannot fix three plane coefficients
    with pytest.raises(ProcessingError, match="frame 2: 2 background pixels") as info:
        remove_plane(data, mask=mask)
    assert info.value.frame == 2
    mask[2] = True
    mask[2, 4, :] = False  # one row of pixels: a line cannot fix the y slope
    with pytest.raises(ProcessingError, match=r"frame 2: .* do not determine"):
        remove_plane(data, mask=mask)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_polynomial_order_is_checked(bad):
    with pytest.raises(ArgumentError, match="order"):
        polynomial_flatten(planes(1), order=bad)


def test_mask_shape_and_dtype_are_checked():
    data = planes(2)
    with pytest.raises(ArgumentError, match="mask"):
        remove_plane(data, mask=np.zeros((2, 3, 3), bool))
    with pytest.raises(ArgumentError, match="boolean"):
        remove_plane(data, mask=np.zeros(data.shape, np.uint8))


def test_polynomial_surface_is_what_flatten_subtracts():
    data = RNG.normal(size=(2, 12, 14))
    np.testing.assert_allclose(data - polynomial_surface(data, 2), polynomial_flatten(data, 2), atol=1e-12)


def test_row_median_align_removes_line_offsets():
    base = RNG.normal(size=(2, 16, 21))
    offsets = RNG.normal(0, 5, size=(2, 16, 1))
    out = row_median_align(base + offsets)
    np.testing.assert_allclose(out, base - np.median(base, axis=2, keepdims=True), atol=1e-12)


def test_row_median_align_with_mask_uses_background_and_skips_covered_rows():
    data = RNG.normal(size=(1, 6, 9))
    mask = np.zeros(data.shape, bool)
    mask[0, 1, :4] = True
    mask[0, 3, :] = True  # a fully masked line is left as it is
    out = row_median_align(data, mask=mask)
    np.testing.assert_allclose(out[0, 1], data[0, 1] - np.median(data[0, 1, 4:]))
    np.testing.assert_array_equal(out[0, 3], data[0, 3])
    np.testing.assert_allclose(out[0, 0], data[0, 0] - np.median(data[0, 0]))


def test_zero_mean_and_zero_median_per_frame_and_masked():
    data = RNG.normal(size=(3, 10, 11)) + np.array([1.0, -4.0, 9.0])[:, None, None]
    np.testing.assert_allclose(zero_mean(data).mean(axis=(1, 2)), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.median(zero_median(data).reshape(3, -1), axis=1), 0.0, atol=1e-12)
    mask = data > data.mean(axis=(1, 2), keepdims=True)
    centred = zero_mean(data, mask=mask)
    for i in range(3):
        assert centred[i][~mask[i]].mean() == pytest.approx(0.0, abs=1e-12)
        assert np.median(zero_median(data, mask=mask)[i][~mask[i]]) == pytest.approx(0.0, abs=1e-12)


def test_zero_mean_with_a_frame_fully_masked_names_the_frame():
    data = RNG.normal(size=(3, 5, 5))
    mask = np.zeros(data.shape, bool)
    mask[1] = True
    with pytest.raises(ProcessingError, match="frame 1: no background pixel"):
        zero_mean(data, mask=mask)
    with pytest.raises(ProcessingError, match="frame 1"):
        zero_median(data, mask=mask)


def test_gaussian_filter_smooths_frames_independently():
    data = np.zeros((3, 21, 21), np.float32)
    data[1, 10, 10] = 1.0
    out = gaussian_filter(data, sigma=2.0)
    assert out.dtype == np.float32
    assert not out[0].any() and not out[2].any()  # nothing leaks along time
    np.testing.assert_array_equal(out[1], ndimage.gaussian_filter(data[1], 2.0))
    assert out[1].sum() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), "2", True])
def test_gaussian_sigma_is_checked(bad):
    with pytest.raises(ArgumentError, match="sigma"):
        gaussian_filter(np.zeros((1, 4, 4)), sigma=bad)


def test_threshold_masks_and_nan():
    data = np.array([[[0.5, 1.5, np.nan], [-2.0, 3.0, 1.0]]])
    np.testing.assert_array_equal(mask_threshold(data, threshold=1.0), [[[False, True, False], [False, True, False]]])
    np.testing.assert_array_equal(
        mask_below_threshold(data, threshold=0.0), [[[False, False, False], [True, False, False]]]
    )
    with pytest.raises(ArgumentError, match="threshold"):
        mask_threshold(data, threshold="high")


def test_mask_mean_offset_matches_per_frame_statistics():
    data = RNG.normal(size=(4, 20, 20)) * np.array([1, 2, 3, 4])[:, None, None]
    out = mask_mean_offset(data, factor=1.5)
    for i in range(4):
        np.testing.assert_array_equal(out[i], data[i] - data[i].mean() > 1.5 * data[i].std())
    data[0, 0, 0] = np.nan
    out = mask_mean_offset(data, factor=1.5)
    finite = data[0][np.isfinite(data[0])]
    expected = np.isfinite(data[0]) & (np.nan_to_num(data[0]) - finite.mean() > 1.5 * finite.std())
    np.testing.assert_array_equal(out[0], expected)


def test_mask_morphological_closes_within_frames():
    data = RNG.normal(size=(3, 25, 25))
    out = mask_morphological(data, threshold=1.0, structure_size=3)
    for i in range(3):
        expected = ndimage.binary_closing(np.abs(data[i]) > 1.0, structure=np.ones((3, 3), bool))
        np.testing.assert_array_equal(out[i], expected)
    with pytest.raises(ArgumentError, match="structure_size"):
        mask_morphological(data, structure_size=0)


def test_mask_adaptive_matches_block_by_block_thresholding():
    data = RNG.normal(size=(2, 37, 41)) + np.linspace(0, 5, 41)
    out = mask_adaptive(data, block_size=10, offset=0.2)
    expected = np.zeros(data.shape, bool)
    for i in range(2):
        for y in range(0, 37, 10):
            for x in range(0, 41, 10):
                block = data[i, y : y + 10, x : x + 10]
                expected[i, y : y + 10, x : x + 10] = block > block.mean() + 0.2
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ArgumentError, match="block_size"):
        mask_adaptive(data, block_size=0)


def test_input_must_be_a_real_stack():
    with pytest.raises(ArgumentError, match="data"):
        remove_plane(np.zeros(5))
    with pytest.raises(ArgumentError, match="real numbers"):
        zero_mean(np.zeros((1, 3, 3), complex))
