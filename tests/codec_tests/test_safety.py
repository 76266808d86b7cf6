"""Corrupt, truncated, foreign and hostile streams raise the codec's error: no crash, hang, huge allocation or garbage.

The fuzz campaigns run in a subprocess so that a crash would be counted, not take pytest down. The
forged-stream campaigns reseal every checksum, as a forger would, and use the default decode: the
engine header checks and the child process for SZ3 must make it safe without ``isolated=True``.
Their counts print with ``pytest -rA``.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import textwrap
import warnings
from typing import Any

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
        else:  # foreign
            size = rng.randrange(0, 4096)
            case = bytes(rng.randrange(256) for _ in range(size)) if index % 2 else _stream.MAGIC + bytes(
                rng.randrange(256) for _ in range(size))
        try:
            result = codec.decode(case, timeout=20)
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


#: (codec, parameters, dtype, shape) of the forged-stream campaigns: every engine and layout sciz writes.
FORGED = {
    "zfp-tolerance": ("zfp", {"tolerance": 1e-3}, "f4", (12, 40, 40)),
    "zfp-rate": ("zfp", {"rate": 8}, "f8", (12, 40, 40)),
    "zfp-lossless": ("zfp", {"tolerance": 0}, "i4", (40, 300)),
    "sz3": ("sz3", {"tolerance": 1e-3}, "f4", (12, 40, 40)),
    "sperr": ("sperr", {"tolerance": 1e-3}, "f4", (12, 40, 40)),
    "sperr-2d": ("sperr", {"mode": "rate", "quality": 6}, "f8", (40, 300)),
    "lerc-float": ("lerc", {"tolerance": 1e-3}, "f4", (12, 40, 40)),
    "lerc-int": ("lerc", {"tolerance": 0}, "i2", (40, 300)),
    "pcodec": ("pcodec", {}, "f8", (12, 40, 40)),
    "szip": ("szip", {}, "u2", (12, 40, 40)),
}

FORGE_SCRIPT = textwrap.dedent(
    """
    import json, os, random, resource, sys
    import numpy as np
    import imagecodecs
    from sciz import codecs
    from sciz.codecs import _stream
    from sciz.codecs.registry import CODECS, spec
    from sciz.codecs.sz3 import Sz3Codec

    parent, engine_in_parent = os.getpid(), []
    sz3_engine = Sz3Codec.decode_chunk

    def counted(*args):  # the SZ3 engine must never run on a forged payload in this process
        if os.getpid() == parent:
            engine_in_parent.append(1)
        return sz3_engine(*args)

    Sz3Codec.decode_chunk = staticmethod(counted)
    other_key = None  # every fourth stream is tagged under a key that is not this user's

    key, count = sys.argv[1], int(sys.argv[2])
    name, params, dtype, shape = json.loads(sys.argv[3])
    others = json.loads(sys.argv[4])
    rng = random.Random(key)

    def field(shape, dtype):
        grid = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
        values = np.sin(grid[0] * 2) + np.cos(grid[-1] * grid[0])
        return (values * 1000).astype(dtype) if np.dtype(dtype).kind in "iu" else values.astype(dtype)

    def parsed(name, params, dtype, shape):
        stream = bytes(codecs.get(name, **params).encode(field(shape, dtype)))
        return _stream.parse_stream(stream, codecs.CodecError)

    def forge(payload, method=None, params=None):
        chunk = header.chunks[0]
        forged = _stream.StreamHeader(header.codec, header.dtype, header.shape,
                                      header.params if params is None else params, header.rows, header.big_endian,
                                      [_stream.Chunk(chunk.method if method is None else method, payload,
                                                     chunk.patch_index, chunk.patch_values)])
        return _stream.pack_stream(forged, key=other_key)  # every checksum resealed, as a forger would

    def mutate(raw, within=None):
        raw = bytearray(raw)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(min(len(raw), within or len(raw))) if raw else 0
            kind = rng.random()
            if kind < 0.5 and raw:
                raw[position] ^= 1 << rng.randrange(8)
            elif kind < 0.75 and raw:
                raw[position] = rng.randrange(256)
            elif kind < 0.9 and within is None:
                raw[position:position] = rng.randbytes(rng.randint(1, 8))
            elif raw and within is None:
                del raw[position:position + rng.randint(1, 8)]
        return bytes(raw)

    def fletcher32(data):  # LERC2's own checksum, so forged LERC bodies reach its decoder
        low = high = 0xFFFF
        for start in range(0, len(data) - 1, 718):
            for i in range(start, min(start + 718, len(data) - 1), 2):
                low += (data[i] << 8) + data[i + 1]
                high += low
            low, high = (low & 0xFFFF) + (low >> 16), (high & 0xFFFF) + (high >> 16)
        if len(data) & 1:
            low += data[-1] << 8
            high += low
        low, high = (low & 0xFFFF) + (low >> 16), (high & 0xFFFF) + (high >> 16)
        return (high << 16 | low) & 0xFFFFFFFF

    def pco_flood(chunks):  # a valid pco header for this chunk, then many constant chunks (2 MB each)
        flood = bytes(imagecodecs.pcodec_encode(np.zeros(chunks * 262144, "i8"), 8))
        width = (int.from_bytes(flood[6:16], "little") & 0x3F) + 1
        size = int(np.prod(shape))
        bits = max(1, size.bit_length())
        varint = ((bits - 1) | size << 6).to_bytes((6 + bits + 7) // 8, "little")
        return flood[:5] + bytes([flood[5] if np.dtype(dtype).kind == "i" else 6]) + varint + flood[
            6 + (6 + width + 7) // 8:]

    header = parsed(name, params, dtype, shape)
    payload = bytes(header.chunks[0].payload)
    method = header.chunks[0].method
    assert method == codecs.get(name, **params).method, "the campaign must forge the engine's own payload"
    alien = [bytes(parsed(*other).chunks[0].payload) for other in others]
    reshaped = []
    for other_shape, other_dtype in [((4, 4), dtype), ((3, 10, 40, 40), dtype), ((12, 40, 41), dtype),
                                     (shape, {"f4": "f8", "f8": "f4", "i4": "f4", "i2": "u1", "u2": "u1"}[dtype])]:
        try:
            other = parsed(name, params, other_dtype, other_shape).chunks[0]
        except codecs.CodecError:
            continue
        if other.method == method:
            reshaped.append(bytes(other.payload))
    methods = sorted(row.method for row in CODECS.values() if row.method is not None)
    modes = ["mutate", "header", "truncate", "random", "foreign", "reshape", "method", "params"]
    counts = {"array": 0, "error": 0}
    wrong = []
    for index in range(count):
        other_key = os.urandom(32) if index % 4 == 3 else None
        mode = modes[index % len(modes)]
        if name == "lerc" and index % 16 == 0:
            mode = "lerc-reseal"
        if name == "pcodec" and index % 32 == 0:
            mode = "pco-flood"
        if mode == "mutate":
            case = forge(mutate(payload))
        elif mode == "header":
            case = forge(mutate(payload, within=64))
        elif mode == "truncate":
            case = forge(payload[: rng.randrange(len(payload))])
        elif mode == "random":
            case = forge(rng.randbytes(rng.choice([rng.randrange(64), rng.randrange(len(payload) + 1)])))
        elif mode == "foreign":
            case = forge(rng.choice(alien))
        elif mode == "reshape":
            case = forge(mutate(rng.choice(reshaped)) if rng.random() < 0.3 else rng.choice(reshaped))
        elif mode == "method":  # this engine's payload handed to another engine
            case = forge(payload, method=rng.choice([m for m in methods if m != method]))
        elif mode == "params":
            forged_params = dict(header.params)
            if forged_params:
                forged_params[rng.choice(sorted(forged_params))] = rng.choice([0, 1, 3, 7, 8, 16, 33, -1, None, "ec"])
            case = forge(payload, params=forged_params)
        elif mode == "lerc-reseal":
            body = bytearray(mutate(payload))
            if body[:6] == b"Lerc2 " and len(body) > 14:
                body[10:14] = fletcher32(bytes(body[14:])).to_bytes(4, "little")
            case = forge(bytes(body))
        else:
            case = forge(pco_flood(rng.choice([64, 1000])))
        print(index, mode, flush=True, file=sys.stderr)  # the last line names the culprit of a crash
        decode = codecs.decode if index % 2 else getattr(codecs, f"{name}_decode")
        try:
            result = decode(case)
        except spec(name).error:
            counts["error"] += 1
            continue
        except Exception as exc:
            wrong.append(f"{index} {mode}: {type(exc).__name__}: {exc}"[:300])
            continue
        if result.shape != header.shape or result.dtype != header.dtype:
            wrong.append(f"{index} {mode}: decoded {result.shape} {result.dtype}")
        else:
            counts["array"] += 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps({"counts": counts, "wrong": wrong, "peak_mb": peak, "engine_in_parent": len(engine_in_parent)}))
    """
)


@pytest.mark.parametrize("key", list(FORGED))
def test_forged_streams_default_decode_never_crashes(key: str, record_property: Any) -> None:
    # Engine payloads damaged, truncated, random, from other codecs or shapes, or handed to another
    # engine, with every checksum resealed: the default decode (no isolated=) must answer each
    # with an array of the stream's shape and dtype or the codec's error. A crash kills the child.
    name = FORGED[key][0]
    others = [spec for other, spec in FORGED.items() if FORGED[other][0] != name]
    count = 1000
    process = subprocess.run(
        [sys.executable, "-c", FORGE_SCRIPT, key, str(count), json.dumps(FORGED[key]), json.dumps(others)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = process.stderr.strip().splitlines()[-3:]
    assert process.returncode == 0, f"{key}: the decoding process died ({process.returncode}) at {last}"
    results = json.loads(process.stdout.strip().splitlines()[-1])
    # Printed at the end of every run (tests/conftest.py: pytest_terminal_summary), in CI too.
    record_property(
        "summary",
        f"forged-stream fuzz {key}: {count} streams -> {results['counts']}, 0 crashes, "
        f"0 hangs, peak {results['peak_mb']} MB",
    )
    assert results["wrong"] == [], "every forged stream must decode to the stream's shape/dtype or raise"
    assert results["counts"]["array"] + results["counts"]["error"] == count
    assert results["counts"]["error"] >= count // 4, "most forged payloads must be refused"
    assert results["peak_mb"] < 1000, "a forged stream made the decoder allocate far more than the array"
    # Forged sz3 payloads, untagged or tagged under another user's key, reach the engine only in the child.
    assert results["engine_in_parent"] == 0


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


def _with_payload(stream: bytes, payload: bytes) -> bytes:
    """``stream`` with its engine payload replaced and every checksum resealed, as a forger would."""
    header = _stream.parse_stream(stream, codecs.CodecError)
    chunk = header.chunks[0]
    header.chunks = [_stream.Chunk(chunk.method, payload, chunk.patch_index, chunk.patch_values)]
    return _stream.pack_stream(header)


def _payload(stream: bytes) -> bytes:
    return bytes(_stream.parse_stream(stream, codecs.CodecError).chunks[0].payload)


SMALL = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
FIELD = np.linspace(0, 1, 12 * 40 * 40, dtype=np.float32).reshape(12, 40, 40)


@pytest.mark.parametrize(
    ("name", "params", "says"),
    [
        ("zfp", {"tolerance": 1e-3}, r"zfp header holds a \(16, 16\) float32 array, the sciz header a \(12, 40, 40\)"),
        (
            "sz3",
            {"tolerance": 1e-3},
            r"SZ3 header holds a \(16, 16\) array of 256 values, the sciz header a \(12, 40, 40\)",
        ),
        (
            "sperr",
            {"tolerance": 1e-3},
            r"SPERR header holds a \(16, 16\) float32 array, the sciz header a \(12, 40, 40\)",
        ),
        ("lerc", {"tolerance": 1e-3}, r"LERC2 header holds a \(16, 16\) f4 array, the sciz header a \(12, 40, 40\)"),
        ("pcodec", {}, r"pco header declares 256 values, the sciz header a chunk of 19200"),
    ],
)
def test_engine_header_for_another_shape_is_refused(name: str, params: dict, says: str) -> None:
    codec = codecs.get(name, **params)
    small = _payload(bytes(codec.encode(SMALL)))
    forged = _with_payload(bytes(codec.encode(FIELD)), small)
    with pytest.raises(codec.error, match=says):
        codec.decode(forged)
    with pytest.raises(codec.error, match="refused before decoding"):
        codecs.decode(forged)


def test_engine_headers_declaring_gigabytes_are_refused() -> None:
    # Engine headers claiming ~3 GB where the sciz header says 12 x 40 x 40: refused before any engine allocates.
    zfp = bytearray(_payload(codecs.zfp_encode(FIELD, tolerance=1e-3)))
    bits = int.from_bytes(zfp[:16], "little")
    bits |= (0xFFFF << 36) | (0xFFFF << 52)  # nx and ny become 65536 (3 GB of float32 with nz = 12)
    zfp[:16] = bits.to_bytes(16, "little")
    with pytest.raises(codecs.ZfpError, match=r"zfp header holds a \(12, 65536, 65536\)"):
        codecs.zfp_decode(_with_payload(codecs.zfp_encode(FIELD, tolerance=1e-3), bytes(zfp)))
    sperr = bytearray(_payload(codecs.sperr_encode(FIELD, tolerance=1e-3)))
    sperr[2:14] = struct.pack("<III", 1024, 1024, 768)  # x, y, z: 3 GB of float32
    with pytest.raises(codecs.SperrError, match=r"SPERR header holds a \(768, 1024, 1024\)"):
        codecs.sperr_decode(_with_payload(codecs.sperr_encode(FIELD, tolerance=1e-3), bytes(sperr)))
    pco = bytearray(_payload(codecs.pcodec_encode(FIELD)))
    pco[6:12] = ((33 - 1) | (805306368 << 6)).to_bytes(6, "little")  # 805306368 float32: 3 GB
    with pytest.raises(codecs.PcodecError, match="pco header declares 805306368 values"):
        codecs.pcodec_decode(_with_payload(codecs.pcodec_encode(FIELD), bytes(pco)))


def test_forged_speck_length_and_szip_parameters_are_refused() -> None:
    sperr = bytearray(_payload(codecs.sperr_encode(FIELD, tolerance=1e-3)))
    sperr[18 + 17 + 1 : 18 + 17 + 9] = struct.pack("<Q", 1 << 60)  # the chunk's SPECK stream claims 2**60 bits
    with pytest.raises(codecs.SperrError, match="impossible for 19200 values"):
        codecs.sperr_decode(_with_payload(codecs.sperr_encode(FIELD, tolerance=1e-3), bytes(sperr)))
    header = _stream.parse_stream(codecs.szip_encode(FIELD), codecs.SzipError)
    header.params = {**header.params, "bits_per_pixel": 8}
    with pytest.raises(codecs.SzipError, match="bits_per_pixel=8 does not fit its 4-byte samples"):
        codecs.szip_decode(_stream.pack_stream(header))


def test_truncated_zfp_payload_is_not_read_past_its_end() -> None:
    # zfp reads its bit stream without bounds: 1000 bytes of a 50 MB-class payload segfaulted before.
    data = np.random.default_rng(0).normal(size=(16, 256, 256)).astype(np.float32)
    stream = bytes(codecs.zfp_encode(data, rate=16))
    result = codecs.zfp_decode(_with_payload(stream, _payload(stream)[:1000]))
    assert result.shape == data.shape and result.dtype == data.dtype


def test_forged_sz3_body_raises_without_asking_for_isolation() -> None:
    stream = bytes(codecs.sz3_encode(FIELD, tolerance=1e-3))
    payload = bytearray(_payload(stream))
    payload[60:68] = b"\xff" * 8  # inside the body: the engine would throw through C and abort
    forged = _with_payload(stream, bytes(payload))
    with pytest.raises(codecs.Sz3Error):
        codecs.sz3_decode(forged)
    assert np.array_equal(codecs.sz3_decode(stream), codecs.decode(stream, isolated=False))
    with pytest.raises(codecs.Sz3Error, match=r"isolated=.* must be None"):
        codecs.decode(stream, isolated="yes")


def test_child_runner_reports_crashes_exits_hangs_and_falls_back_to_the_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one child runner (streams and HDF5 SZ3 chunks): results come back whichever way; failures raise."""
    import os
    import time

    from sciz.codecs import _isolate
    from sciz.errors import CodecError

    def fill(out: np.ndarray) -> None:
        out[...] = np.arange(out.size).reshape(out.shape)

    expected = np.arange(300 * 1000, dtype="f8").reshape(300, 1000)
    assert np.array_equal(
        _isolate.run_in_child(fill, (300, 1000), np.dtype("f8"), error=CodecError, timeout=30, what="x"), expected
    )
    given = np.zeros((300, 1000))
    assert (
        _isolate.run_in_child(fill, (300, 1000), np.dtype("f8"), error=CodecError, timeout=30, what="x", out=given)
        is given
    )
    assert np.array_equal(given, expected)
    real_open = os.open

    def no_proc_mem(path: str, *args: object, **kwargs: object) -> int:
        if str(path).endswith("/mem"):
            raise PermissionError(path)
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", no_proc_mem)
        piped = _isolate.run_in_child(fill, (300, 1000), np.dtype("f8"), error=CodecError, timeout=30, what="x")
    assert np.array_equal(piped, expected), "the pipe fallback returns the same result"
    # Results from 16 MiB on are decoded into a memory file that the parent maps privately (no copy)
    big = np.arange(3001 * 1000, dtype="f8").reshape(3001, 1000)
    real_fetch = _isolate._fetch
    fetched: list[int] = []
    with monkeypatch.context() as patch:
        patch.setattr(_isolate, "_fetch", lambda *args: fetched.append(1) or real_fetch(*args))
        shared = _isolate.run_in_child(fill, big.shape, np.dtype("f8"), error=CodecError, timeout=30, what="x")
    assert np.array_equal(shared, big) and shared.flags.writeable
    if hasattr(os, "memfd_create"):
        assert fetched == [], "a large result is the child's pages, not a copy"
        # ... mapped privately: a process forked later writes its own copy, never the caller's array
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() with threads
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the forked process
            shared[...] = -1.0
            os._exit(0 if shared[0, 0] == -1.0 else 1)
        assert os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 0
        assert np.array_equal(shared, big), "the child's writes stayed in the child"
        shared[0] = 7.0  # and the caller's own writes are its own
        assert (shared[0] == 7.0).all() and np.array_equal(shared[1:], big[1:])
        with pytest.raises(CodecError, match="crashed"):
            _isolate.run_in_child(
                lambda out: os.abort(), big.shape, np.dtype("f8"), error=CodecError, timeout=30, what="x"
            )
    # Without a memory file, the parent faults its result in while the child works and reads the
    # child's memory on several threads; a piece that cannot be read sends the whole through the pipe.
    real_span = _isolate._read_span
    with monkeypatch.context() as patch:
        patch.setattr(_isolate, "_shared_file", lambda nbytes: -1)
        patch.setattr(_isolate, "_fetch", lambda *args: fetched.append(1) or real_fetch(*args))
        copied = _isolate.run_in_child(fill, big.shape, np.dtype("f8"), error=CodecError, timeout=30, what="x")
        assert np.array_equal(copied, big) and fetched == [1], "copied out of the child's memory"
        patch.setattr(_isolate, "usable_cores", lambda: 2)  # the parallel copy even on one core
        first_only = lambda d, t, a, start, stop: start == 0 and real_span(d, t, a, start, stop)  # noqa: E731
        patch.setattr(_isolate, "_read_span", first_only)
        piped = _isolate.run_in_child(fill, big.shape, np.dtype("f8"), error=CodecError, timeout=30, what="x")
    assert np.array_equal(piped, big), "a failed piece falls back to the pipe"

    def crash(out: np.ndarray) -> None:
        os.abort()

    def print_and_exit(out: np.ndarray) -> None:
        os.write(1, b"Decompression Error: Unknown Datatype\n")  # as the C filter does, on file descriptor 1
        os._exit(0)

    def hang(out: np.ndarray) -> None:
        time.sleep(30)

    def refuse(out: np.ndarray) -> None:
        raise CodecError("the payload is refused")

    cases = [
        (crash, "crashed (signal 6)"),
        (print_and_exit, "Unknown Datatype"),
        (hang, "took over 1 s"),
        (refuse, "refused"),
    ]
    for work, message in cases:
        with pytest.raises(CodecError, match=re.escape(message)):
            _isolate.run_in_child(work, (3,), np.dtype("f8"), error=CodecError, timeout=1, what="the engine")
