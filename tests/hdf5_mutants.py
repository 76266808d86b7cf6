"""Mutation harness for sciz's HDF5 readers: flip bits in / truncate a file, read each mutant in its own process.

Run by ``tests/test_hdf5_safety.py`` on a small slice; run it directly for the full count:

    python tests/hdf5_mutants.py afm 900      # AFM .h5 bundle, 900 mutants (afm-zfp, afm-sz3: lossy filters)
    python tests/hdf5_mutants.py hspy 300 /tmp/mutants 10   # work directory, seconds per mutant

One driver process (address space capped, sciz imported once) forks a child per mutant; the child
reads the mutant and reports what it got through a pipe. A child that does not answer within the
timeout is a hang (killed), one that dies by a signal a crash. Outcomes:

* ``error``: a sciz error (FormatError or a codec error) - the wanted result for a damaged file;
* ``correct``: the arrays read are exactly the original ones;
* ``changed``: the read succeeded but an array differs (silent garbage);
* ``unwrapped``: an exception that is not a sciz error escaped;
* ``hang`` / ``crash``.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ADDRESS_SPACE = 3 << 30
OUTCOMES = ("error", "correct", "changed", "unwrapped", "hang", "crash")


def make_afm(path: Path, codec: str | None = None) -> Path:
    """A small AFM bundle: /data, two /processed layers (the deadlock's group), one mask, text blobs;
    with ``codec`` (e.g. "zfp") the float arrays go through that lossy filter (+ Fletcher-32, NaN mask)."""
    from sciz.afm import save_h5_bundle
    from sciz.stack import ImageStack

    rng = np.random.default_rng(5)
    raw = rng.normal(0, 1, (6, 48, 64)).astype(np.float32)
    flat = (raw - raw.mean()).astype(np.float32)
    flat[0, :3, :5] = np.nan  # a NaN mask under /sciz_masks when written through a lossy filter
    stack = ImageStack(
        flat,
        pixel_size_nm=2.0,
        channel="height",
        frame_metadata=[{"timestamp": 0.5 * i} for i in range(6)],
        processed={"raw": raw, "flat": flat * 2},
        masks={"high": flat > 0.5},
        provenance={"steps": ["flat"]},
    )
    return save_h5_bundle(path, stack, codec=codec, tolerance=1e-3 if codec else None)


def make_hspy(path: Path) -> Path:
    from sciz.hspy import file_writer

    rng = np.random.default_rng(6)
    data = rng.normal(0, 1, (8, 40, 48)).astype(np.float32)
    axes = [{"name": n, "size": s, "scale": 1.0, "offset": 0.0, "units": "nm", "navigate": i == 0}
            for i, (n, s) in enumerate(zip("tyx", data.shape, strict=True))]  # fmt: skip
    signal_dict = {"data": data, "axes": axes, "metadata": {"General": {"title": "m"}}, "original_metadata": {}}
    file_writer(path, signal_dict, chunks=(2, 40, 48), show_progressbar=False)
    return path


def read_arrays(kind: str, path: Path) -> dict[str, np.ndarray]:
    if kind.startswith("afm"):
        from sciz.afm import load_h5_bundle

        stack = load_h5_bundle(path)
        return {"data": stack.data, **{f"p/{k}": v for k, v in stack.processed.items()},
                **{f"m/{k}": v for k, v in stack.masks.items()}}  # fmt: skip
    from sciz.hspy import file_reader

    return {"data": np.asarray(file_reader(path)[0]["data"])}


def chunk_spans(path: Path, group: str) -> list[tuple[int, int]]:
    """(byte offset, size) of every stored chunk of the datasets under ``group`` (where damage hung readers)."""
    import h5py

    spans: list[tuple[int, int]] = []
    with h5py.File(path, "r") as f:
        for dataset in f[group].values() if group in f else []:
            if isinstance(dataset, h5py.Dataset) and dataset.chunks is not None:
                dataset.id.chunk_iter(lambda info: spans.append((int(info.byte_offset), int(info.size))))
    return spans


def mutants(original: bytes, count: int, seed: int, spans: list[tuple[int, int]]) -> list[tuple[str, bytes]]:
    """``count`` damaged copies: a truncation (1 in 4), one flipped bit inside a chunk of ``spans`` (1 in 4,
    when given), or one flipped bit anywhere."""
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        if index % 4 == 3:
            cut = int(rng.integers(0, len(original)))
            out.append((f"truncate@{cut}", original[:cut]))
        else:
            if index % 4 == 1 and spans:
                start, size = spans[int(rng.integers(0, len(spans)))]
                position, bit = start + int(rng.integers(0, size)), int(rng.integers(0, 8))
            else:
                position, bit = int(rng.integers(0, len(original))), int(rng.integers(0, 8))
            blob = bytearray(original)
            blob[position] ^= 1 << bit
            out.append((f"flip@{position}.{bit}", bytes(blob)))
    return out


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> bool:
    return got.keys() == want.keys() and all(
        got[k].shape == want[k].shape and got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k], True)
        for k in want
    )


def _child(kind: str, path: Path, want: dict[str, np.ndarray], write_end: int) -> None:
    from sciz.errors import SciZError

    try:
        outcome = "correct" if _same(read_arrays(kind, path), want) else "changed"
    except SciZError:
        outcome = "error"
    except BaseException as exc:  # what escapes is the finding
        outcome = f"unwrapped:{type(exc).__name__}: {str(exc)[:200]}"
    os.write(write_end, outcome.encode("utf-8", "replace"))


def run(kind: str, count: int, workdir: Path, *, seed: int = 0, timeout: float = 30.0) -> dict[str, Any]:
    """Mutate a fresh ``kind`` file ``count`` times and read each mutant in a forked child."""
    workdir.mkdir(parents=True, exist_ok=True)
    if kind.startswith("afm"):  # afm, afm-zfp, afm-sz3, afm-sperr
        original_path = make_afm(workdir / "original.h5", kind.partition("-")[2] or None)
    else:
        original_path = make_hspy(workdir / "original.hspy")
    want = read_arrays(kind, original_path)
    results: Counter[str] = Counter()
    findings: list[str] = []
    spans = chunk_spans(original_path, "processed" if kind.startswith("afm") else "Experiments/m")
    for name, blob in mutants(original_path.read_bytes(), count, seed, spans):
        path = workdir / f"mutant{original_path.suffix}"
        path.write_bytes(blob)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: read, report, leave without running the parent's cleanup
            os.close(read_end)
            try:
                _child(kind, path, want, write_end)
            finally:
                os._exit(0)
        os.close(write_end)
        outcome = _wait(pid, read_end, timeout)
        os.close(read_end)
        results[outcome.split(":", 1)[0]] += 1
        if outcome not in ("error", "correct"):
            findings.append(f"{name}: {outcome}")
    return {"kind": kind, "mutants": count, "outcomes": {k: results.get(k, 0) for k in OUTCOMES}, "findings": findings}


def _wait(pid: int, read_end: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    answer = b""
    while True:
        ready, _, _ = select.select([read_end], [], [], max(0.0, min(0.2, deadline - time.monotonic())))
        if ready:
            part = os.read(read_end, 4096)
            answer += part
            if not part:
                break
        done, status = os.waitpid(pid, os.WNOHANG)
        if done and not ready:
            answer += _drain(read_end)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hang"
    if not done:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"crash:signal {os.WTERMSIG(status)}"
    return answer.decode("utf-8", "replace") or "crash:no answer"


def _drain(read_end: int) -> bytes:
    out = b""
    while True:
        ready, _, _ = select.select([read_end], [], [], 0)
        if not ready:
            return out
        part = os.read(read_end, 4096)
        if not part:
            return out
        out += part


def main(argv: list[str]) -> None:
    kind, count = argv[0], int(argv[1])
    workdir = Path(argv[2]) if len(argv) > 2 else Path(f"/tmp/sciz-mutants-{kind}-{os.getpid()}")
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    timeout = float(argv[3]) if len(argv) > 3 else 30.0
    print(json.dumps(run(kind, count, workdir, timeout=timeout)))


if __name__ == "__main__":
    main(sys.argv[1:])
