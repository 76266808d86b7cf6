"""The encoder's fast paths write the streams the plain ones would: the stream is one buffer built
around the engines' output, LERC codes into a buffer of a bound it never exceeds, and LERC's masked
elements are not filled since LERC never reads them."""

from __future__ import annotations

from typing import Any

import imagecodecs
import numpy as np
import pytest

from sciz import codecs
from sciz.codecs import _stream, _trust, driver
from sciz.codecs import lerc as lerc_module
from sciz.codecs.registry import spec
from sciz.testing.arrays import sample_array as field

#: One setting per stream codec, plus zfp's rate mode (verified for non-finite output) and sz3's lossless
#: setting (every chunk stored by pcodec).
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("zfp", {"tolerance": 1e-3}),
    ("zfp", {"rate": 4}),
    ("sperr", {"tolerance": 1e-3}),
    ("sz3", {"tolerance": 1e-3}),
    ("sz3", {"tolerance": 0.0}),
    ("lerc", {"tolerance": 1e-3}),
    ("pcodec", {}),
    ("szip", {}),
]


#: NaN with 300 distinct payloads: the mask table keeps 256, the others become patches.
PAYLOADS = (0x7FC00000 | np.arange(1, 301, dtype=np.uint32)).view(np.float32)


def _with_gaps(data: np.ndarray) -> np.ndarray:
    """``data`` with NaN in the first rows and an Inf in the last, so chunks carry mask sections and patches."""
    data = data.copy()
    data.reshape(-1)[: 3 * PAYLOADS.size : 3] = PAYLOADS
    data[-1, -2, -3] = -np.inf
    return data


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize(("name", "params"), SETTINGS)
def test_stream_is_a_bytearray_identical_to_a_fresh_pack(
    name: str, params: dict[str, Any], threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_stream, "MIN_CHUNK_BYTES", 4096)  # several chunks from a small array
    codec = codecs.get(name, **params)
    data = _with_gaps(field("smooth", (40, 33, 21), np.dtype("f4")))
    stream = codec.encode(data, numthreads=threads)
    assert type(stream) is bytearray
    header = _stream.parse_stream(stream, codec.error)
    assert len(header.chunks) == threads
    masked = sum(chunk.masked for chunk in header.chunks)
    patched = sum(int(chunk.patch_index.size) for chunk in header.chunks)
    assert masked + patched == PAYLOADS.size + 1 and patched >= PAYLOADS.size - _stream.MAX_TABLE
    # Built in place around chunk 0's engine output, it must be what a fresh pack of the same chunks
    # writes (sz3's tagged with this user's key, sciz.codecs._trust).
    key = _trust.signing_key() if header.tag is not None else None
    assert _stream.pack_stream(header, key=key) == stream
    assert codec.encode(data, numthreads=threads) == stream
    restored = codec.decode(bytes(stream))
    assert restored.tobytes() == codec.decode(stream).tobytes()
    assert np.array_equal(restored.reshape(-1)[: 3 * PAYLOADS.size : 3].view(np.uint32), PAYLOADS.view(np.uint32))
    assert restored[-1, -2, -3] == -np.inf


def test_pack_stream_uses_a_payload_only_when_told() -> None:
    method = spec("pcodec").method
    assert method is not None
    payload = bytearray(codecs.get("pcodec").encode_chunk(np.arange(6, dtype="f4"), 0.0, 0.0)[1])
    original = bytes(payload)
    header = _stream.StreamHeader("pcodec", np.dtype("f4"), (6,), {"level": 8}, rows=6)
    header.chunks = [_stream.Chunk(method, payload)]
    fresh = _stream.pack_stream(header)
    assert fresh is not payload and payload == original, "a plain pack must not touch the caller's payload"
    in_place = _stream.pack_stream(header, in_place=True)
    assert in_place is payload and in_place == fresh
    assert np.array_equal(codecs.pcodec_decode(in_place), np.arange(6, dtype="f4"))


def _random_bits(shape: tuple[int, ...], dtype: str, seed: int) -> np.ndarray:
    """Incompressible data of ``dtype`` (finite, for floats): LERC's largest blobs."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    data = rng.integers(0, 256, size=size, dtype=np.uint8).view(dtype).reshape(shape)
    return np.where(np.isfinite(data), data, 0).astype(dtype) if data.dtype.kind == "f" else data


@pytest.mark.parametrize("dtype", ["u1", "i1", "u2", "i2", "u4", "i4", "f4", "f8"])
def test_lerc_blob_stays_within_its_bound(dtype: str) -> None:
    layouts = [((1, 7), False), ((33, 47), False), ((33, 47), True), ((5, 33, 17), False), ((5, 33, 17), True)]
    for seed, (shape, masked) in enumerate(layouts):
        data = _random_bits(shape, dtype, seed)
        planar = masked and len(shape) == 3
        valid = np.random.default_rng(seed).random(shape) > 0.3 if masked else np.ones(shape, bool)
        options = {"masks": valid, "planar": planar} if masked else {}
        for level in (0.0, 0.5):
            blob = imagecodecs.lerc_encode(data, level, **options)  # the engine's own exact sizing
            bound = lerc_module._lerc_bound(shape, data.itemsize, planar)
            # More than the valid values raw: the incompressible case the bound must hold for.
            assert int(valid.sum()) * data.itemsize < len(blob) <= bound, (shape, masked, level)


def test_lerc_codes_again_into_an_exact_buffer_when_the_bound_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    data = field("random", (9, 17, 21), np.dtype("f4"))
    data[0, 1, 2] = np.nan  # through LERC's own mask
    expected = codecs.lerc_encode(data, tolerance=1e-3)
    asked: list[tuple[int, ...]] = []

    def short(shape: tuple[int, ...], itemsize: int, planar: bool) -> int:
        asked.append(shape)
        return 16

    monkeypatch.setattr(lerc_module, "_lerc_bound", short)
    assert codecs.lerc_encode(data, tolerance=1e-3) == expected
    assert asked, "the bound was not used"


def test_lerc_masked_elements_are_not_filled_and_the_stream_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    data = field("smooth", (9, 17, 21), np.dtype("f4"))
    data[:, 4:9, 2:7] = 1e20
    data[0, 0, 0] = np.nan
    codec = codecs.get("lerc", tolerance=1e-3, fill_value=1e20)
    stream = codec.encode(data)
    with monkeypatch.context() as patch:  # filled first, as for every other engine
        patch.setattr(type(codec), "engine_skips_masked", False)
        assert codec.encode(data) == stream

    def no_fill(*args: Any) -> np.ndarray:
        raise AssertionError("masked elements were filled")

    monkeypatch.setattr(driver, "fill_invalid", no_fill)
    assert codec.encode(data) == stream
    with pytest.raises(AssertionError, match="filled"):
        codecs.get("sz3", tolerance=1e-3, fill_value=1e20).encode(data)
