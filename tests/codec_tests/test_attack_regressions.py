"""Regressions from an adversarial review of the codec layer (forks, timeouts, forged chunks, odd arguments)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sciz import codecs
from sciz.errors import CodecError, FormatError, PcodecError, Sz3Error


def field() -> np.ndarray:
    grid = np.meshgrid(np.linspace(0, 3, 16), np.linspace(0, 2, 64), indexing="ij")
    return (np.sin(grid[0]) * np.cos(grid[1] * 3)).astype(np.float32)


DEADLOCK_SCRIPT = """
import sys, threading, time
import numpy as np
import imagecodecs.imagecodecs as loader
from sciz import codecs
from sciz.codecs import _isolate
forks = []
child = _isolate.decode_in_child
_isolate.decode_in_child = lambda *args, **kwargs: forks.append(1) or child(*args, **kwargs)
stream = open(sys.argv[1], "rb").read()
codecs.describe_stream(stream)  # loads the checksum engine now, so the decode below forks without waiting
held = threading.Event()
def hold():  # another thread inside imagecodecs' lazy loader while we fork
    with loader._LOCK:
        held.set()
        time.sleep(1.0)
thread = threading.Thread(target=hold)
thread.start()
held.wait()
restored = codecs.decode(stream, timeout=15)  # sz3: decoded in a child, which loads the engine lazily
thread.join()
print("ok", restored.shape, "forked" if forks else "in-process")
"""


def test_isolated_decode_does_not_deadlock_on_imagecodecs_lazy_loading_lock(tmp_path: Path) -> None:
    # A fresh process whose sz3 engine is not loaded yet: the forked child must load it, under the
    # lock another thread held at the fork. It hung until the timeout and called a valid stream forged.
    import subprocess
    import sys

    # The stream must be foreign to the child's process: one of this user's own (tagged under the
    # session's key, sciz.codecs._trust) decodes in-process, and the test then proved nothing (attack
    # finding: it had passed that way since streams were tagged).
    path = tmp_path / "x.scz"
    path.write_bytes(codecs.sz3_encode(field(), tolerance=1e-3))
    environment = {**os.environ, "SCIZ_KEY_FILE": str(tmp_path / "another-users.key")}
    result = subprocess.run(
        [sys.executable, "-c", DEADLOCK_SCRIPT, str(path)], capture_output=True, text=True, timeout=120, env=environment
    )
    assert result.returncode == 0 and "ok (16, 64) forked" in result.stdout, result.stderr[-1500:] + result.stdout


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), None, "10", True])
def test_bad_timeouts_are_refused_naming_the_argument(timeout: object) -> None:
    stream = codecs.sz3_encode(field(), tolerance=1e-3)
    with pytest.raises(Sz3Error, match="timeout="):
        codecs.decode(stream, timeout=timeout)  # type: ignore[arg-type]


def test_infinite_timeout_means_no_limit() -> None:
    stream = codecs.sz3_encode(field(), tolerance=1e-3)
    assert codecs.decode(stream, isolated=True, timeout=float("inf")).shape == field().shape


def test_zarr_chunk_with_a_stream_of_another_dtype_is_an_error() -> None:
    codec = codecs.numcodecs_codec(codecs.get("pcodec"))
    stream = codec.encode(np.arange(128, dtype=np.float64))
    with pytest.raises(PcodecError, match="float64"):
        codec.decode(stream, out=np.empty((4, 64), np.float32))
    with pytest.raises(PcodecError, match="128 elements"):
        codec.decode(stream, out=np.empty(64, np.float64))


@pytest.mark.parametrize("fill_value", [10**400, 10**5000, -(2**70)], ids=["1e400", "1e5000", "-2^70"])
def test_absurd_fill_values_are_the_codecs_error(fill_value: int) -> None:
    with pytest.raises(PcodecError, match="fill_value="):
        codecs.pcodec_encode(np.arange(10, dtype="i4"), fill_value=fill_value)


def test_a_fifo_is_never_opened_as_a_file(tmp_path: Path) -> None:
    from sciz.formats import detect_format

    fifo = tmp_path / "stream.scz"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        detect_format(fifo)  # used to block forever waiting for a writer


def test_scz_is_read_into_memory_not_mapped(tmp_path: Path) -> None:
    # A mapped file truncated by another process meanwhile killed the reader with SIGBUS.
    from sciz.formats.scz import read_scz

    path = tmp_path / "x.scz"
    path.write_bytes(codecs.zfp_encode(field(), tolerance=1e-3))
    array, _ = read_scz(path)
    with path.open("r+b") as handle:
        handle.truncate(40)
    assert array.shape == field().shape
    with pytest.raises(FormatError):
        read_scz(path)
    assert isinstance(CodecError("x"), ValueError)
