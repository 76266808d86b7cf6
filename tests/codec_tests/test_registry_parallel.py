"""The codec registry (lists, third-party codecs, numcodecs bridge) and chunked multi-thread coding.

Each codec's configuration round trip is part of the contract (test_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sciz import codecs
from sciz.codecs import _stream

from ._cases import max_error


def test_registry_lists_and_floatpred() -> None:
    names = codecs.list_codecs()
    assert {"zfp", "sperr", "sz3", "lerc", "pcodec", "szip", "floatpred"} <= set(names)
    predictor = codecs.get("floatpred", axis=0, dist=2)
    data = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    assert np.array_equal(predictor.decode(predictor.encode(data)), data)
    assert codecs.from_config(predictor.get_config()) == predictor
    assert codecs.get("sciz_sz3", tolerance=0.5).tolerance == 0.5


def test_register_third_party_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    from sciz.codecs import registry

    class Identity:
        name = "identity-test"

        def __init__(self) -> None:
            pass

    # Registered for this test only: later tests (and `sciz codecs list`) must not see it.
    monkeypatch.setattr(registry, "_classes", dict(registry._classes))
    codecs.register_codec(Identity)
    assert isinstance(codecs.get("identity-test"), Identity)
    assert "identity-test" in codecs.list_codecs()


def test_numcodecs_bridge_round_trip_and_zarr() -> None:
    import numcodecs
    import zarr

    codec = codecs.numcodecs_codec(codecs.get("sz3", tolerance=1e-3))
    config = codec.get_config()
    assert config == {"id": "sciz", "codec": {"id": "sz3", "tolerance": 1e-3}}
    rebuilt = numcodecs.get_codec(config)
    data = np.random.default_rng(1).normal(size=(40, 50)).astype(np.float32)
    assert max_error(data, np.frombuffer(rebuilt.decode(rebuilt.encode(data)), np.float32).reshape(data.shape)) <= 1e-3
    store = zarr.storage.MemoryStore()
    array = zarr.create_array(store, shape=data.shape, chunks=(20, 25), dtype="f4", zarr_format=2, compressors=codec)
    array[:] = data
    again = zarr.open_array(store, zarr_format=2)
    assert max_error(data, again[:]) <= 1e-3


@pytest.mark.parametrize("name", ["sz3", "sperr", "zfp", "lerc", "pcodec", "szip"])
def test_many_chunks_and_threads_give_one_stream(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_stream, "CHUNK_BYTES", 64 * 1024)
    params = {"tolerance": 1e-3} if name in ("sz3", "sperr", "zfp", "lerc") else {}
    grid = np.meshgrid(np.linspace(0, 4, 64), np.linspace(0, 4, 96), np.linspace(0, 4, 40), indexing="ij")
    data = (np.sin(grid[0]) * np.cos(grid[1]) + grid[2] / 10).astype(np.float32)
    data[10, 3, 3] = np.nan
    codec = codecs.get(name, **params)
    single = codec.encode(data, numthreads=1)
    header = _stream.parse_stream(single, codec.error)
    assert len(header.chunks) > 4, "small chunk size should give several chunks"
    threaded = codec.encode(data, numthreads=2)
    assert threaded == single, "chunks at the size limit: the thread count changes nothing"
    for threads in (1, 2, 0):
        restored = codec.decode(single, numthreads=threads)
        assert np.isnan(restored[10, 3, 3])
        assert max_error(data, restored) <= codec.tolerance


def test_threads_share_an_array_in_even_chunks() -> None:
    data = np.random.default_rng(5).normal(size=(64, 256, 256)).astype(np.float32)  # 16 MiB
    codec = codecs.get("pcodec")
    one = codec.encode(data, numthreads=1)
    two = codec.encode(data, numthreads=2)
    assert len(_stream.parse_stream(one, codec.error).chunks) == 1, "one thread codes the array whole"
    header = _stream.parse_stream(two, codec.error)
    assert len(header.chunks) == 2 and header.rows == 32, "two threads get one even half each"
    for stream in (one, two):
        for threads in (1, 2):
            assert codec.decode(stream, numthreads=threads).tobytes() == data.tobytes()
    assert _stream.plan_rows((64, 1024, 1024), 4, threads=3) == 24, "rows rounded up to zfp's block of 4"
    assert _stream.plan_rows((4096, 1024, 1024), 4, threads=1) == 128, "at most CHUNK_BYTES per chunk"


def test_zfp_chunks_on_threads_are_whole_blocks_of_four_rows() -> None:
    # Two threads used to cut (4, 1024, 1024) into chunks of 2 rows, which zfp pads to 4: ratio 3.64 -> 2.55.
    assert _stream.plan_rows((4, 1024, 1024), 4, align=4, threads=2) == 4
    assert _stream.plan_rows((6, 1024, 1024), 4, align=4, threads=3) == 4
    data = np.linspace(0, 1, 4 * 1024 * 1024, dtype=np.float32).reshape(4, 1024, 1024)
    assert codecs.zfp_encode(data, tolerance=1e-3, numthreads=2) == codecs.zfp_encode(data, tolerance=1e-3)
