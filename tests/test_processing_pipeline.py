"""Pipelines: parsing strings and files, validation errors, running with layers, masks and provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sciz.errors import ArgumentError, FormatError
from sciz.processing import (
    Pipeline,
    ProcessingError,
    list_steps,
    load_processing_file,
    mask_threshold,
    parse_processing,
    remove_plane,
    row_median_align,
    run_pipeline,
)
from sciz.stack import ImageStack

RNG = np.random.default_rng(21)


def make_stack(n: int = 5, h: int = 24, w: int = 28) -> ImageStack:
    yy, xx = np.mgrid[0:h, 0:w]
    data = (0.05 * xx + 0.03 * yy + RNG.normal(0, 0.2, (n, h, w))).astype(np.float32)
    data[:, 8:14, 10:18] += 4.0
    frames = [{"timestamp": 0.5 * i, "frame_pixel_size_nm": 1.5} for i in range(n)]
    return ImageStack(data, 1.5, "height_trace", frames, file_path="sample.asd")


def test_parse_processing_string():
    steps = parse_processing(
        " remove_plane ; gaussian_filter:sigma=2; mask_threshold:threshold=-1.5;"
        "drop_frames:indices_to_drop=[0, 3]; replace_nan:mode='constant',value=0;"
        "intersection_crop:pad=(1,2); align_frames:max_shift=none,mode=crop; ;"
    )
    assert steps == [
        ("remove_plane", {}),
        ("gaussian_filter", {"sigma": 2}),
        ("mask_threshold", {"threshold": -1.5}),
        ("drop_frames", {"indices_to_drop": [0, 3]}),
        ("replace_nan", {"mode": "constant", "value": 0}),
        ("intersection_crop", {"pad": [1, 2]}),
        ("align_frames", {"max_shift": None, "mode": "crop"}),
    ]


def test_unknown_step_lists_what_exists():
    with pytest.raises(ArgumentError, match="processing step 2: unknown processing step 'remove_plain'") as info:
        parse_processing("zero_mean; remove_plain")
    message = str(info.value)
    for spec in list_steps():
        assert spec.name in message


def test_unknown_parameter_lists_the_parameters():
    with pytest.raises(ArgumentError, match=r"has no parameter 'sigmaa'; its parameters are: sigma=1\.0"):
        parse_processing("gaussian_filter:sigmaa=2")
    with pytest.raises(ArgumentError, match="its parameters are: none"):
        parse_processing("remove_plane:order=2")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("gaussian_filter:sigma=wide", "gaussian_filter:sigma='wide' is not allowed: must be a number"),
        ("polynomial_flatten:order=1.5", "must be an integer"),
        ("align_frames:mode=wrap", "must be one of pad, crop, crop_square"),
        ("gaussian_filter:sigma", "is not key=value"),
        ("replace_nan:mode=constant", "needs value"),
        ("drop_frames:indices_to_drop=[a]", "list of integers"),
    ],
)
def test_bad_parameter_values(text, match):
    with pytest.raises(ArgumentError, match=match):
        parse_processing(text)


def test_processing_files(tmp_path):
    yaml_file = tmp_path / "steps.yaml"
    yaml_file.write_text(
        "filters:\n  - name: remove_plane\n  - name: gaussian_filter\n    sigma: 2.0\n"
        "  - name: mask_threshold\n    params: {threshold: 1}\n  - clear\n"
    )
    assert load_processing_file(yaml_file) == [
        ("remove_plane", {}),
        ("gaussian_filter", {"sigma": 2.0}),
        ("mask_threshold", {"threshold": 1}),
        ("clear", {}),
    ]
    json_file = tmp_path / "steps.json"
    steps = [{"name": "zero_mean"}, {"name": "drop_frames", "indices_to_drop": [1]}]
    json_file.write_text(json.dumps({"steps": steps}))
    assert Pipeline.from_file(json_file).names == ["zero_mean", "drop_frames"]
    plain = tmp_path / "plain.yml"
    plain.write_text("- row_median_align\n- name: zero_median\n")
    assert [name for name, _ in load_processing_file(plain)] == ["row_median_align", "zero_median"]


def test_processing_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="processing file not found"):
        load_processing_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("filters: [unclosed")
    with pytest.raises(FormatError, match="not valid YAML"):
        load_processing_file(bad)
    bad.write_text("other: 1\n")
    with pytest.raises(FormatError, match="top-level 'filters'"):
        load_processing_file(bad)
    bad.write_text("filters:\n  - sigma: 2\n")
    with pytest.raises(FormatError, match="step 1 must be a mapping with a 'name'"):
        load_processing_file(bad)
    bad.write_text("filters:\n  - name: blur\n")
    with pytest.raises(ArgumentError, match="unknown processing step 'blur'"):
        load_processing_file(bad)
    broken = tmp_path / "bad.json"
    broken.write_text("{")
    with pytest.raises(FormatError, match="not valid JSON"):
        load_processing_file(broken)


def test_run_keeps_each_layer_and_records_provenance():
    stack = make_stack()
    original = stack.data.copy()
    calls = []
    run_pipeline(
        stack,
        "remove_plane; mask_threshold:threshold=1; row_median_align; clear; gaussian_filter:sigma=1",
        progress=lambda done, total, name: calls.append((done, total, name)),
    )
    assert list(stack.processed) == [
        "raw",
        "step_1_remove_plane",
        "step_3_row_median_align",
        "step_5_gaussian_filter",
    ]
    assert list(stack.masks) == ["step_2_mask_threshold"]
    np.testing.assert_array_equal(stack.processed["raw"], original)
    np.testing.assert_array_equal(stack.data, stack.processed["step_5_gaussian_filter"])
    # The masked step used the mask: row medians come from background pixels only.
    mask = stack.masks["step_2_mask_threshold"]
    np.testing.assert_array_equal(mask, mask_threshold(stack.processed["step_1_remove_plane"], 1.0))
    expected = row_median_align(stack.processed["step_1_remove_plane"], mask=mask)
    np.testing.assert_array_equal(stack.processed["step_3_row_median_align"], expected)
    steps = stack.provenance["processing"]["steps"]
    assert [s["index"] for s in steps] == [1, 2, 3, 4, 5]
    assert [s["step_type"] for s in steps] == ["filter", "mask", "filter", "clear", "filter"]
    assert steps[0]["processed_key"] == "step_1_remove_plane" and steps[1]["mask_key"] == "step_2_mask_threshold"
    assert steps[2]["masked"] is True and steps[4]["masked"] is False and steps[3]["mask_cleared"] is True
    assert steps[4]["params"] == {"sigma": 1.0}
    for step in steps:
        assert {"name", "params", "timestamp", "version", "function_module"} <= set(step)
    assert stack.provenance["processing"]["keys_by_name"]["remove_plane"] == ["step_1_remove_plane"]
    environment = stack.provenance["environment"]
    assert {"timestamp", "python_version", "platform", "sciz_version", "numpy_version"} <= set(environment)
    json.dumps(stack.provenance)
    assert calls[0] == (0, 5, "remove_plane") and calls[-1] == (5, 5, "done")


def test_masks_while_a_mask_is_active_are_combined():
    stack = make_stack()
    run_pipeline(stack, "mask_threshold:threshold=3; mask_below_threshold:threshold=-0.3; zero_mean")
    first, combined = list(stack.masks)
    assert combined == "step_2_mask_threshold_mask_below_threshold"
    np.testing.assert_array_equal(stack.masks[combined], stack.masks[first] | (stack.processed["raw"] < -0.3))


def test_masked_filters_fit_the_background():
    stack = make_stack()
    run_pipeline(stack, "mask_threshold:threshold=2; remove_plane")
    mask = stack.masks["step_1_mask_threshold"]
    np.testing.assert_array_equal(stack.data, remove_plane(stack.processed["raw"], mask=mask))


def test_stack_edits_carry_frame_metadata_and_the_mask():
    stack = make_stack()
    run_pipeline(stack, "mask_threshold:threshold=2; drop_frames:indices_to_drop=[1,3]; zero_mean")
    assert stack.n_frames == 3
    assert [f["timestamp"] for f in stack.frame_metadata] == [0.0, 1.0, 2.0]
    assert len(stack.state_backups["frame_metadata_before_edit"]) == 5
    step = stack.provenance["processing"]["steps"][1]
    assert step["kept_frames"] == [0, 2, 4] and step["processed_key"] == "step_2_drop_frames"
    # zero_mean still used the (edited) mask: each frame's background mean is zero.
    mask = stack.masks["step_1_mask_threshold"][[0, 2, 4]]
    for i in range(3):
        assert float(stack.data[i][~mask[i]].mean()) == pytest.approx(0.0, abs=1e-5)


def test_video_steps_that_change_the_frame_size_clear_the_mask():
    stack = make_stack()
    stack.data = np.stack([np.roll(frame, 2 * i, axis=1) for i, frame in enumerate(stack.data)])
    run_pipeline(stack, "mask_threshold:threshold=2; align_frames:mode=pad; replace_nan:mode=zero; zero_mean")
    steps = stack.provenance["processing"]["steps"]
    assert [shift[1] for shift in steps[1]["metadata"]["shifts"]] == [0, -2, -4, -6, -8]
    assert steps[1]["mask_cleared"] is True and steps[3]["masked"] is False
    assert stack.data.shape == (5, 24, 28 + 8)


def test_a_failing_step_names_step_and_frame_and_changes_nothing():
    stack = make_stack()
    before = (stack.data.copy(), dict(stack.processed), json.dumps(stack.provenance))
    with pytest.raises(ProcessingError, match=r"step 3 'zero_mean' failed on frame 0: no background pixel") as info:
        run_pipeline(stack, "remove_plane; mask_threshold:threshold=-100; zero_mean")
    assert (info.value.step, info.value.index, info.value.frame) == ("zero_mean", 3, 0)
    np.testing.assert_array_equal(stack.data, before[0])
    assert stack.processed == before[1] and json.dumps(stack.provenance) == before[2]
    with pytest.raises(ProcessingError, match=r"step 1 'align_frames' failed: .*reference_frame=9"):
        run_pipeline(stack, "align_frames:reference_frame=9")


def test_a_second_run_continues_the_history():
    stack = make_stack()
    run_pipeline(stack, "remove_plane")
    run_pipeline(stack, [("gaussian_filter", {"sigma": 0.5}), {"name": "zero_median"}])
    assert [s["processed_key"] for s in stack.provenance["processing"]["steps"]] == [
        "step_1_remove_plane",
        "step_2_gaussian_filter",
        "step_3_zero_median",
    ]


def test_pipeline_objects():
    pipeline = Pipeline(["remove_plane", ("polynomial_flatten", {"order": 3})])
    assert len(pipeline) == 2
    assert pipeline.steps[1] == ("polynomial_flatten", {"order": 3})
    assert "polynomial_flatten:order=3" in repr(pipeline)
    with pytest.raises(ArgumentError, match="is not a name"):
        Pipeline([42])
