"""Corrupt, truncated, foreign and hostile streams raise the codec's error: no crash, hang, huge allocation or garbage.

The fuzz campaigns run in a subprocess so that a crash would be counted, not take pytest down.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sciz import codecs
from sciz.codecs import _stream

CODECS = {
    "zfp": {"tolerance": 1e-3},
    "sperr": {"tolerance": 1e-3},
    "sz3": {"tolerance": 1e-3},
    "lerc": {"tolerance": 1e-3},
    "pcodec": {},
    "szip": {},
}

FUZZ_SCRIPT = textwrap.dedent(
    """
    import json, random, sys
    import numpy as np
    from sciz import codecs
    from sciz.codecs import _stream

    name, params, count, mode = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = random.Random(hash(name) & 0xFFFF)
    grid = np.meshgrid(*[np.linspace(0, 3, n) for n in (12, 40, 40)], indexing="ij")
    data = (np.sin(grid[0]) + np.cos(grid[1] * grid[2])).astype(np.float32)
    data[0, 0, :3] = np.nan
    codec = codecs.get(name, **params)
    stream = bytes(codec.encode(data))
    header = _stream.parse_stream(stream, codecs.CodecError if hasattr(codecs, "CodecError") else Exception)

    def mutate(raw):
        raw = bytearray(raw)
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            position = rng.randrange(len(raw)) if raw else 0
            if kind < 0.5 and raw:
                raw[position] ^= 1 << rng.randrange(8)
            elif kind < 0.75 and raw:
                raw[position] = rng.randrange(256)
            elif kind < 0.9:
                raw[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif raw:
                del raw[position:position + rng.randint(1, 8)]
        return bytes(raw)

    results = {"raised": 0, "identical": 0, "decoded": 0, "other": []}
    expected = codec.decode(stream)
    for index in range(count):
        if mode == "truncate":
            case = stream[: rng.randrange(len(stream))]
        elif mode == "mutate":
            case = mutate(stream)
        elif mode == "foreign":
            size = rng.randrange(0, 4096)
            case = bytes(rng.randrange(256) for _ in range(size)) if index % 2 else _stream.MAGIC + bytes(
                rng.randrange(256) for _ in range(size))
        else:  # reseal: damage engine payloads but recompute every checksum, as an attacker would
            chunks = []
            for chunk in header.chunks:
                payload = mutate(bytes(chunk.payload)) if rng.random() < 0.9 else bytes(chunk.payload)[: rng.randrange(
                    max(1, len(chunk.payload)))]
                chunks.append(_stream.Chunk(chunk.method, payload, chunk.patch_index, chunk.patch_values))
            forged = _stream.StreamHeader(header.codec, header.dtype, header.shape, header.params, header.rows,
                                          header.big_endian, chunks)
            case = _stream.pack_stream(forged)
        try:
            result = codec.decode(case, isolated=(mode == "reseal"), timeout=20)
        except codec.error:
            results["raised"] += 1
            continue
        except Exception as exc:
            results["other"].append(f"{type(exc).__name__}: {exc}"[:200])
            continue
        if result.shape == expected.shape and result.tobytes() == expected.tobytes():
            results["identical"] += 1
        else:
            results["decoded"] += 1
    print(json.dumps(results))
    """
)


def _campaign(name: str, mode: str, count: int) -> dict:
    process = subprocess.run(
        [sys.executable, "-c", FUZZ_SCRIPT, name, json.dumps(CODECS[name]), str(count), mode],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, (
        f"{name} {mode}: the decoding process crashed ({process.returncode}): {process.stderr[-2000:]}"
    )
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CODECS))
@pytest.mark.parametrize("mode", ["mutate", "truncate", "foreign"])
def test_fuzz_damaged_streams_never_crash_or_return_garbage(name: str, mode: str) -> None:
    results = _campaign(name, mode, 1000)
    assert results["other"] == [], "every failure must be the codec's own error"
    assert results["decoded"] == 0, "a damaged stream decoded to different data (garbage)"
    assert results["raised"] + results["identical"] == 1000
    assert results["raised"] >= 900


@pytest.mark.parametrize("name", list(CODECS))
def test_fuzz_hostile_resealed_streams_isolated(name: str) -> None:
    # Checksums were recomputed, so the engines see the damage; isolation must turn crashes into errors.
    results = _campaign(name, "reseal", 300)
    assert results["other"] == []
    assert results["raised"] + results["identical"] + results["decoded"] == 300


def _forge(stream: bytes, shape: tuple[int, ...], rows: int, n_chunks: int | None = None) -> bytes:
    header = _stream.parse_stream(stream, codecs.Sz3Error)
    header.shape = shape
    header.rows = rows
    raw = _stream.pack_stream(header)
    if n_chunks is not None:
        # Rewrite the chunk count and the header checksum, as a hostile writer could.
        fixed = _stream._FIXED.size + 8 * len(shape) + len(json.dumps(header.params, separators=(",", ":")))
        raw = raw[: fixed + 8] + struct.pack("<I", n_chunks) + raw[fixed + 12 :]
    return raw


def test_hostile_sizes_are_refused_before_allocating() -> None:
    stream = codecs.sz3_encode(np.ones((8, 8), np.float32), tolerance=0.1)
    huge = _forge(stream, (2**40, 2**20), 2**40)
    with pytest.raises(codecs.Sz3Error, match=r"memory|chunk"):
        codecs.sz3_decode(huge)
    mismatched = _forge(stream, (8000, 8), 8)
    with pytest.raises(codecs.Sz3Error, match="chunk table"):
        codecs.sz3_decode(mismatched)


def test_errors_say_what_is_wrong() -> None:
    data = np.ones((16, 16), np.float32)
    stream = bytes(codecs.zfp_encode(data, tolerance=1e-2))
    with pytest.raises(codecs.ZfpError, match="truncated"):
        codecs.zfp_decode(stream[:40])
    damaged = bytearray(stream)
    damaged[-5] ^= 0xFF
    with pytest.raises(codecs.ZfpError, match="checksum"):
        codecs.zfp_decode(bytes(damaged))
    with pytest.raises(codecs.ZfpError, match="not a sciz stream"):
        import imagecodecs

        codecs.zfp_decode(imagecodecs.zfp_encode(data))
    with pytest.raises(codecs.ZfpError, match="unexpected bytes"):
        codecs.zfp_decode(stream + b"\0")
    with pytest.raises(codecs.ZfpError, match="bytes-like"):
        codecs.zfp_decode(12345)
