"""sciz.codecs.choose and the "auto" codec: the choice is a configured table codec, the best on the
sample, the bound holds on every element of the final encode, and the choice is recorded."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sciz import codecs
from sciz.codecs import auto
from sciz.codecs.registry import codec_class
from sciz.errors import CodecError, LosslessFallbackWarning, ZfpError
from sciz.quality import psnr


def _field(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
    smooth = sum(np.sin(g * (i + 1.3)) for i, g in enumerate(grids))
    return (280 + 5 * smooth + 0.05 * rng.standard_normal(shape)).astype(np.float32)


def _eligible(array: np.ndarray) -> set[str]:
    names = set()
    for name in codecs.list_codecs():
        row = getattr(codec_class(name), "spec", None)
        if row is not None and row.method is not None and array.dtype.str[1:] in row.dtypes:
            names.add(name)
    return names


def test_choice_is_the_best_table_codec_and_keeps_the_bound() -> None:
    field = _field((40, 60))
    codec = codecs.choose(field, rel_tolerance=1e-3, numthreads=1)
    assert codec.name in codecs.list_codecs()
    span = float(field.max()) - float(field.min())
    assert codec.tolerance == pytest.approx(1e-3 * span)
    choice = codec.get_config()["choice"]
    json.dumps(choice)
    assert choice["sample"]["share"] == 1.0  # small arrays are coded whole: the prediction is exact
    assert {c["codec"] for c in choice["candidates"]} == _eligible(field)
    restored = codecs.decode(codec.encode(field))
    assert np.abs(restored.astype(np.float64) - field).max() <= codec.tolerance
    ratio = field.nbytes / len(codec.encode(field))
    for candidate in choice["candidates"]:
        other = codecs.get(candidate["codec"], **candidate["params"])
        other.set_order(candidate["order"])
        assert ratio >= field.nbytes / len(other.encode(field)) * 0.999, candidate["label"]
    rebuilt = codecs.from_config(json.loads(json.dumps(codec.get_config())))
    assert rebuilt == codec and rebuilt.choice == choice


def test_sampled_choice_on_a_larger_array_prunes_and_keeps_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto, "SAMPLE_SHARE", 0.3)  # three blocks of this small array: two rounds
    field = _field((48, 80, 80), seed=1)
    codec = codecs.choose(field, tolerance=0.01, numthreads=2)
    choice = codec.get_config()["choice"]
    assert choice["sample"]["blocks"] >= 3 and choice["sample"]["share"] < 0.5
    assert any(c["pruned"] for c in choice["candidates"])
    assert not any(c["pruned"] for c in choice["candidates"] if c["label"] == choice["chosen"])
    restored = codecs.decode(codec.encode(field, numthreads=2))
    assert np.abs(restored.astype(np.float64) - field).max() <= 0.01


def test_nan_and_fill_values_come_back_exactly() -> None:
    field = _field((32, 48)).astype(np.float64)
    field[3:9, 5:20] = 1e20
    field[20, :7] = np.nan
    codec = codecs.choose(field, tolerance=1e-3, fill_value=1e20)
    assert codec.fill_value == 1e20
    restored = codecs.decode(codec.encode(field))
    assert np.array_equal(restored[3:9, 5:20], field[3:9, 5:20])
    assert np.isnan(restored[20, :7]).all()
    valid = np.isfinite(field) & (field != 1e20)
    assert np.abs(restored[valid] - field[valid]).max() <= 1e-3


def test_integer_data_get_an_integer_codec() -> None:
    video = (np.cumsum(np.random.default_rng(2).integers(-3, 4, (6, 32, 32)), axis=2) * 10).astype(np.int16)
    codec = codecs.choose(video, tolerance=4)
    assert "i2" in codec.dtypes
    restored = codecs.decode(codec.encode(video))
    assert restored.dtype == np.int16
    assert np.abs(restored.astype(np.int64) - video).max() <= 4


def test_psnr_and_ratio_bounds() -> None:
    field = _field((40, 64), seed=3)
    codec = codecs.choose(field, psnr=60)
    assert psnr(field, codecs.decode(codec.encode(field))) >= 60
    rated = codecs.choose(field, ratio=8)
    assert rated.tolerance is None and rated.name in ("zfp", "sperr")
    assert field.nbytes / len(rated.encode(field)) == pytest.approx(8, rel=0.35)


def test_speed_objective_keeps_half_the_best_ratio() -> None:
    field = _field((40, 64), seed=4)
    codec = codecs.choose(field, tolerance=1e-2, objective="speed")
    ratios = {c["label"]: c["predicted_ratio"] for c in codec.choice["candidates"]}
    assert ratios[codec.choice["chosen"]] >= max(ratios.values()) / 2


def test_zfp_accuracy_is_checked_by_the_driver() -> None:
    field = _field((64, 64), seed=5)
    inflated = codecs.get("zfp", tolerance=1e-3, accuracy=2e-3)
    stream = inflated.encode(field)
    assert np.abs(codecs.decode(stream).astype(np.float64) - field).max() <= 1e-3
    assert len(stream) < len(codecs.get("zfp", tolerance=1e-3).encode(field))
    assert codecs.from_config(inflated.get_config()) == inflated
    # too inflated: more than 5 % misses, the chunk is stored exactly and the user told
    with pytest.warns(LosslessFallbackWarning, match="missed the bound"):
        stream = codecs.get("zfp", tolerance=1e-3, accuracy=8e-3).encode(field)
    assert np.array_equal(codecs.decode(stream), field)
    with pytest.raises(ZfpError, match="accuracy"):
        codecs.get("zfp", rate=8, accuracy=1e-3)


def test_auto_codec_chooses_per_array_and_round_trips() -> None:
    codec = codecs.get("auto", rel_tolerance=1e-3)
    assert codecs.from_config(codec.get_config()) == codec
    field = _field((24, 40), seed=6)
    stream = codec.encode(field)
    assert codec.chosen is not None and codec.chosen.name in codecs.list_codecs()
    restored = codec.decode(stream)
    assert np.abs(restored.astype(np.float64) - field).max() <= codec.chosen.tolerance
    wrapped = codecs.numcodecs_codec(codec)
    assert np.abs(wrapped.decode(wrapped.encode(field)).reshape(field.shape) - field).max() <= codec.chosen.tolerance


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tolerance": 1e-3, "psnr": 40}, "exactly one"),
        ({}, "exactly one"),
        ({"tolerance": -1}, "tolerance"),
        ({"tolerance": 1e-3, "objective": "fast"}, "objective"),
        ({"tolerance": 1e-3, "candidates": ["nope"]}, "candidates"),
        ({"ratio": 0.5}, "ratio"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        codecs.choose(_field((8, 8)), **kwargs)


def test_block_shape_is_shaped_like_the_array_on_the_zfp_grid() -> None:
    assert auto._block_shape((1, 17, 96, 192), 2**15) == (1, 8, 44, 88)
    shape = auto._block_shape((110, 64, 128), 2**15)
    assert all(n % 4 == 0 for n in shape) and math.prod(shape) <= 2**15


def test_axis_order_is_carried_by_the_stream_and_undone_in_a_fresh_process(tmp_path) -> None:
    import subprocess
    import sys

    field = _field((6, 20, 36), seed=7)
    np.save(tmp_path / "field.npy", field)
    names = [n for n in codecs.list_codecs() if getattr(codec_class(n), "spec", None) is not None]
    written = []
    for name in names:
        row = codec_class(name).spec
        if row.method is None or "f4" not in row.dtypes:
            continue
        codec = codecs.get(name, **({"tolerance": 0.01} if "tolerance" in row.bounds else {}))
        codec.set_order((2, 0, 1))
        assert codecs.from_config(json.loads(json.dumps(codec.get_config()))) == codec
        (tmp_path / f"{name}.scz").write_bytes(codec.encode(field))
        out = np.empty_like(field)
        assert codec.decode(codec.encode(field), out=out, shape=field.shape) is out
        written.append(name)
    assert {"zfp", "sperr", "sz3"} <= set(written)
    check = (
        "import sys, pathlib, numpy as np, sciz.codecs as c; d = pathlib.Path(sys.argv[1]); "
        "f = np.load(d / 'field.npy'); "
        "print(max(float(np.abs(c.decode((d / (n + '.scz')).read_bytes()) - f).max()) for n in sys.argv[2:]))"
    )
    run = subprocess.run([sys.executable, "-c", check, str(tmp_path), *written], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout) <= 0.01


def test_bad_axis_orders_are_refused() -> None:
    from sciz.codecs.driver import stream_order

    codec = codecs.get("sz3", tolerance=0.1)
    with pytest.raises(CodecError, match="permutation"):
        codec.set_order((0, 0, 1))
    codec.set_order((1, 0))
    with pytest.raises(CodecError, match="2-d arrays"):
        codec.encode(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(CodecError, match="not a permutation"):
        stream_order({"order": [0, 2]}, 2, CodecError)
    assert stream_order({}, 3, CodecError) is None


def test_layouts_are_tried_where_the_array_is_coded_whole() -> None:
    field = _field((8, 16, 28), seed=8)  # up to WHOLE_ELEMENTS values: coded whole
    codec = codecs.choose(field, tolerance=0.01)
    orders = [c["order"] for c in codec.choice["candidates"]]
    assert codec.choice["layouts"] and [2, 0, 1] in orders and None in orders
    assert np.abs(codecs.decode(codec.encode(field)) - field).max() <= 0.01
    assert not codecs.choose(field, tolerance=0.01, layouts=False).choice["layouts"]
    # a larger small array is predicted from a probe, where orders are tried only when asked
    larger = _field((12, 24, 40), seed=8)
    assert not codecs.choose(larger, tolerance=0.01).choice["layouts"]
    asked = codecs.choose(larger, tolerance=0.01, layouts=True)
    assert [2, 0, 1] in [c["order"] for c in asked.choice["candidates"]]


def test_a_relative_bound_on_data_with_an_unmarked_fill_warns_how_to_mark_it() -> None:
    # The SST field's 1e20 land without fill_value= made rel_tolerance=1e-3 a 1e17 bound (sz3
    # tolerance=1e+17 chosen, the ocean lost) without a word.
    from sciz.errors import RangeOutlierWarning

    field = _field((24, 40))
    field[:6] = 1e20
    with pytest.warns(RangeOutlierWarning, match=r"240 of 960 values equal 1e\+20.*pass fill_value=1e\+20"):
        codecs.choose(field, rel_tolerance=1e-3, numthreads=1)
    with pytest.warns(RangeOutlierWarning, match=r"fill_value=1e\+20"):
        codecs.choose(field, psnr=60, numthreads=1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RangeOutlierWarning)
        marked = codecs.choose(field, rel_tolerance=1e-3, fill_value=1e20, numthreads=1)
        codecs.choose(field, tolerance=0.01, numthreads=1)  # an absolute bound does not depend on the range
        codecs.choose(_field((24, 40)), rel_tolerance=1e-3, numthreads=1)
    assert marked.tolerance == pytest.approx(1e-3 * float(np.ptp(field[6:])), rel=1e-6)


def test_zfp_tolerance_on_integers_is_one_error_naming_the_dtype_and_what_is_allowed() -> None:
    for dtype in ("int16", "uint8", "int32", "int64"):
        data = np.arange(64, dtype=dtype).reshape(8, 8)
        with pytest.raises(ZfpError) as caught:
            codecs.zfp_encode(data, tolerance=1.0)
        message = str(caught.value)
        assert f"got {dtype}" in message and "float32/float64" in message and "tolerance=0 (lossless)" in message
        assert caught.value.__cause__ is None and "Error:" not in message  # one error, no chained engine text
    assert codecs.zfp_decode(codecs.zfp_encode(np.arange(64, dtype="i4").reshape(8, 8), tolerance=0)).dtype == "i4"


def test_large_arrays_get_the_reversed_axis_order_where_a_central_block_shows_the_gain() -> None:
    # Rows (t, y) smooth along x with an offset each: the engine wants x first (4.3x on the whole).
    # 2^20 values: the check's block is 2^16 (a sixteenth), its smallest.
    rng = np.random.default_rng(0)
    x = np.arange(128, dtype=np.float32)
    rows = (10 * np.sin(x / 20) + rng.normal(0, 1, (64, 128, 1))).astype(np.float32)
    chosen = codecs.choose(rows, rel_tolerance=1e-3, candidates=["sperr"], numthreads=1)
    assert chosen.order == (2, 1, 0) and chosen.choice["layouts"], chosen.choice["chosen"]
    assert "x on a central block" in chosen.choice["reason"]
    stream = chosen.encode(rows, numthreads=1)
    assert np.abs(codecs.decode(stream) - rows).max() <= chosen.tolerance
    natural = codecs.get("sperr", tolerance=chosen.tolerance).encode(rows, numthreads=1)
    assert len(natural) > 2 * len(stream)
    predicted = next(c["predicted_ratio"] for c in chosen.choice["candidates"] if c["label"] == chosen.choice["chosen"])
    # the block's gain (2^16 values) understates the whole's: the prediction errs low, never high
    assert rows.nbytes / len(natural) < predicted <= 1.1 * rows.nbytes / len(stream)
    # frames smooth in (y, x) with an offset each: the array's own order stays (reversed: 0.45x)
    y = np.arange(128, dtype=np.float32)[:, None]
    frames = (10 * np.sin(x / 20 + y / 15) + 3 * rng.normal(0, 1, (64, 1, 1))).astype(np.float32)
    assert codecs.choose(frames, rel_tolerance=1e-3, candidates=["sperr"], numthreads=1).order is None
    assert codecs.choose(rows, rel_tolerance=1e-3, candidates=["sperr"], numthreads=1, layouts=False).order is None


def test_a_small_array_is_predicted_from_a_probe_and_keeps_the_bound() -> None:
    field = _field((6, 48, 64), seed=9)  # 18432 values: more than WHOLE_ELEMENTS, under 4 blocks
    codec = codecs.choose(field, rel_tolerance=1e-3)
    choice = codec.choice
    assert choice["sample"]["blocks"] == 1 and 0.1 <= choice["sample"]["share"] <= 0.3, choice["sample"]
    coded = [c for c in choice["candidates"] if c["blocks"]]
    assert {c["codec"] for c in coded} >= {"sperr", "lerc", "zfp"}  # sz3: see the test below
    restored = codecs.decode(codec.encode(field))
    assert np.abs(restored.astype(np.float64) - field).max() <= codec.tolerance
    # within 5 % of the best default candidate coded whole
    best = max(field.nbytes / len(codecs.get(n, tolerance=codec.tolerance).encode(field)) for n in ("sperr", "sz3"))
    assert field.nbytes / len(codec.encode(field)) >= 0.95 * best


def test_lossless_codecs_are_skipped_only_where_the_bound_spans_many_steps_of_the_data() -> None:
    rng = np.random.default_rng(10)
    heights = np.cumsum(rng.integers(-500, 501, (64, 256)), axis=1).astype(np.int32)
    loose = codecs.choose(heights, tolerance=2000)  # log2(2 * 2000 / 1) = 12 bits
    skipped = {c["codec"] for c in loose.choice["candidates"] if c["blocks"] == 0}
    assert skipped == {"pcodec", "szip"} and loose.name == "lerc"
    assert all(c["pruned"] and c["predicted_ratio"] is None for c in loose.choice["candidates"] if c["blocks"] == 0)
    assert np.abs(codecs.decode(loose.encode(heights)).astype(np.int64) - heights).max() <= 2000
    # the same heights in steps of 100: the bound spans 40 steps (5.3 bits), lossless stays in the race
    stepped = heights * 100
    tight = codecs.choose(stepped, tolerance=2000)
    assert all(c["blocks"] for c in tight.choice["candidates"] if c["codec"] in ("pcodec", "szip"))
    # a float ramp quantised to 1/64: the bound spans 2 steps, lossless is tried
    ramp = np.round(np.cumsum(rng.normal(0, 1, (32, 128)), axis=1) * 64).astype(np.float32) / 64
    near = codecs.choose(ramp, tolerance=1 / 64)
    assert all(c["blocks"] for c in near.choice["candidates"] if c["codec"] in ("pcodec", "szip"))
    assert auto._resolution_bits(ramp, np.ones(ramp.shape, bool), 1 / 64) == pytest.approx(1.0)
    # other objectives weigh speed: lossless codecs stay candidates
    fast = codecs.choose(heights, tolerance=2000, objective="speed")
    assert all(c["blocks"] for c in fast.choice["candidates"])


def test_inflated_zfp_is_tried_only_where_the_planes_it_saves_could_make_it_win() -> None:
    field = _field((40, 64), seed=11)

    def by_label(codec: object) -> dict:
        return {c["label"]: c for c in codec.choice["candidates"]}  # type: ignore[attr-defined]

    def bits(ratio: float) -> float:
        return 32 / ratio

    far = by_label(codecs.choose(field, tolerance=0.05, layouts=False))  # zfp 3.8, sperr 10.8
    zfp, sperr = far["zfp tolerance=0.05"]["predicted_ratio"], far["sperr tolerance=0.05"]["predicted_ratio"]
    assert bits(zfp) - 2 * auto.ZFP_PLANE_BITS > bits(sperr)  # 4x: two planes fewer still lose
    for label in ("zfp tolerance=0.05 accuracy=0.1", "zfp tolerance=0.05 accuracy=0.2"):
        assert far[label]["blocks"] == 0 and far[label]["pruned"] and far[label]["predicted_ratio"] is None
    # against lerc alone zfp is close (2.8 against 3.0): both inflations are tried, and gain
    near = by_label(codecs.choose(field, tolerance=0.005, candidates=["zfp", "lerc"], layouts=False))
    plain = near["zfp tolerance=0.005"]["predicted_ratio"]
    for label, planes in (("zfp tolerance=0.005 accuracy=0.01", 1), ("zfp tolerance=0.005 accuracy=0.02", 2)):
        inflated = near[label]["predicted_ratio"]
        assert near[label]["blocks"] == 1 and inflated > plain
        assert bits(plain) - bits(inflated) <= planes * auto.ZFP_PLANE_BITS  # the bound the rule uses


def test_block_bytes_are_the_coded_sections_of_the_final_stream() -> None:
    from sciz.codecs import _stream

    field = _field((24, 40), seed=12).astype(np.float64)
    field[2:5, 3:9] = 1e20
    field[10, :4] = np.nan
    for name, params in [("zfp", {"tolerance": 1e-3, "accuracy": 4e-3}), ("sz3", {"tolerance": 1e-3}), ("lerc", {})]:
        codec = codecs.get(name, **params, fill_value=1e20)
        codec.set_order((1, 0))
        header = _stream.parse_stream(codec.encode(field), CodecError)
        sections = sum(len(c.payload) + len(c.mask) + c.patch_index.size * (8 + field.itemsize) for c in header.chunks)
        assert sections > 0 and auto._block_bytes(codec, field)[0] == sections, name


def test_sz3_is_left_out_of_a_probe_too_small_to_measure_it_where_sperr_races() -> None:
    field = _field((6, 48, 64), seed=13)  # probe 4x20x28 = 2240 values
    raced = {c["codec"]: c for c in codecs.choose(field, rel_tolerance=1e-3).choice["candidates"]}
    assert raced["sz3"]["blocks"] == 0 and raced["sz3"]["pruned"] and raced["sperr"]["blocks"] == 1
    # without sperr, or on an array coded whole, or for another objective, sz3 is coded
    alone = codecs.choose(field, rel_tolerance=1e-3, candidates=["sz3", "zfp"]).choice["candidates"]
    assert all(c["blocks"] == 1 for c in alone if c["codec"] == "sz3")
    small = codecs.choose(_field((8, 16, 28), seed=13), rel_tolerance=1e-3).choice["candidates"]
    assert all(c["blocks"] == 1 for c in small if c["codec"] == "sz3" and c["order"] is None)
    fast = codecs.choose(field, rel_tolerance=1e-3, objective="speed").choice["candidates"]
    assert all(c["blocks"] == 1 for c in fast if c["codec"] == "sz3")
    # a larger array's blocks are large enough: sz3 races
    large = codecs.choose(_field((16, 96, 128), seed=13), rel_tolerance=1e-3).choice["candidates"]
    assert all(c["blocks"] >= 1 for c in large if c["codec"] == "sz3")
