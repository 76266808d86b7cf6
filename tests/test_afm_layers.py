"""select_layers / export_bundles(keep=...): bundles without the intermediate layers, and the float32 note."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sciz.afm import export_bundles, load_h5_bundle, load_npz_bundle, select_layers
from sciz.errors import ArgumentError, DataWarning
from sciz.processing import run_pipeline
from sciz.processing.sample import sample_stack

PIPELINE = "remove_plane; mask_threshold:threshold=0.5; row_median_align; clear; gaussian_filter:sigma=1"


@pytest.fixture
def processed():
    stack = sample_stack(4, 40)
    run_pipeline(stack, PIPELINE)
    return stack


def test_select_layers_words_keys_and_step_names(processed):
    assert list(processed.processed) == [
        "raw",
        "step_1_remove_plane",
        "step_3_row_median_align",
        "step_5_gaussian_filter",
    ]
    assert list(processed.masks) == ["step_2_mask_threshold"]
    cases = {
        "raw,final": (["raw", "step_5_gaussian_filter"], []),
        "raw final masks": (["raw", "step_5_gaussian_filter"], ["step_2_mask_threshold"]),
        "none": ([], []),
        "all": (list(processed.processed), list(processed.masks)),
        "row_median_align,mask_threshold": (["step_3_row_median_align"], ["step_2_mask_threshold"]),
        "step_1_remove_plane": (["step_1_remove_plane"], []),
    }
    for keep, (layers, masks) in cases.items():
        kept = select_layers(processed, keep)
        assert (list(kept.processed), list(kept.masks)) == (layers, masks), keep
        assert kept.data is processed.data and kept.provenance == processed.provenance
    assert select_layers(processed, ["raw", "final"]).processed.keys() == {"raw", "step_5_gaussian_filter"}
    assert select_layers(processed, None) is processed
    assert len(processed.processed) == 4  # the stack itself keeps every layer


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        ("raw,blur", r"keep='blur' is not allowed: must be one of all, none, raw, final, masks, .*step_1_remove_plane"),
        ("none,raw", r"'none' cannot be combined"),
        ("", r"name at least one"),
        (3, r"must be layer names"),
    ],
)
def test_select_layers_errors(processed, keep, message):
    with pytest.raises(ArgumentError, match=message):
        select_layers(processed, keep)


def test_export_bundles_keep_writes_only_those_layers(processed, tmp_path):
    everything = export_bundles(processed, tmp_path / "all", "run", ["npz", "h5"])
    kept = export_bundles(processed, tmp_path / "kept", "run", ["npz", "h5"], keep="raw,final")
    assert kept["npz"].name == "run_filtered.npz"  # still named as processed data
    for loader, key in ((load_npz_bundle, "npz"), (load_h5_bundle, "h5")):
        back = loader(kept[key])
        assert list(back.processed) == ["raw", "step_5_gaussian_filter"] and back.masks == {}
        np.testing.assert_array_equal(back.data, processed.data)
        np.testing.assert_array_equal(back.processed["raw"], processed.processed["raw"])
        assert [s["name"] for s in back.provenance["processing"]["steps"]][-1] == "gaussian_filter"
        assert kept[key].stat().st_size < everything[key].stat().st_size
    none = export_bundles(processed, tmp_path / "none", "run", "npz", keep="none")["npz"]
    assert none.name == "run_filtered.npz" and load_npz_bundle(none).processed == {}
    raw = export_bundles(processed, tmp_path / "raw", "run", "npz", raw=True, keep="none")["npz"]
    np.testing.assert_array_equal(load_npz_bundle(raw).data, processed.processed["raw"])  # raw export: keep unused


def test_float64_values_that_round_are_reported(tmp_path):
    stack = sample_stack(2, 16)
    stack.data = stack.data.astype(np.float64) + 1e-9  # no longer exact in float32
    with pytest.warns(DataWarning, match=r"the stack: float64 values are stored as float32 in AFM bundles"):
        export_bundles(stack, tmp_path, "f64", "npz")
    stack.data = np.round(stack.data * 4) / 4  # float64 holding float32-exact values: nothing to say
    big = stack.copy()
    big.data = np.full((2, 3, 3), 2**25 + 1, np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_bundles(stack, tmp_path, "exact", "npz")
        small = big.copy()
        small.data = np.full((2, 3, 3), 2**24, np.int64)
        export_bundles(small, tmp_path, "small_ints", "npz")
    with pytest.warns(DataWarning, match=r"int64 values are stored as float32"):
        export_bundles(big, tmp_path, "ints", "npz")


def test_values_beyond_float32_are_refused_by_the_bundle_exports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Found by attack: float64 heights up to 1e300 became Inf in every layer of an AFM bundle, under a
    # warning about rounding to 7 digits.
    from sciz.afm import export_bundles
    from sciz.errors import FormatError
    from sciz.stack import ImageStack

    heights = np.random.default_rng(0).random((3, 16, 16)) * 1e300
    stack = ImageStack(heights, 1.0, "height_trace", [{"timestamp": float(i)} for i in range(3)])
    with pytest.raises(FormatError, match="beyond float32's range"):
        export_bundles(stack, tmp_path, "s", ["npz"])
    assert not list(tmp_path.iterdir())
