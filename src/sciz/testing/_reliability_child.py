"""The worker of :mod:`sciz.testing.reliability`: reads hostile and mutated files, each in a capped child.

Run as ``python -I -c <this file's text> <manifest.json>``, never imported. It imports sciz and its
readers' libraries once, then forks one child per case: the child limits its address space
(``RLIMIT_AS``), prepares a mutant if the case asks for one, reads the file with ``sciz.load``,
materialises every array and writes what happened to ``<out>/<id>.json``. The worker kills a child
that outlives the case timeout (a hang) and records how every child ended and its peak memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np


def _mutate(case: dict[str, Any], workdir: Path) -> Path:
    """Copy the case's base file or tree into ``workdir`` and flip bits in, or truncate, one file of it."""
    base = Path(case["path"])
    copy = workdir / base.name
    if base.is_dir():
        shutil.copytree(base, copy, symlinks=True)
        files = sorted(p for p in copy.rglob("*") if p.is_file())
    else:
        shutil.copy2(base, copy)
        files = [copy]
    rng = random.Random(case["seed"])
    victim = rng.choice(files)
    data = bytearray(victim.read_bytes())
    if case["mutation"] == "truncate":
        data = data[: rng.randrange(len(data))] if data else data
    else:
        for _ in range(rng.choice((1, 1, 2, 4, 8))):
            if data:
                position = rng.randrange(len(data))
                data[position] ^= 1 << rng.randrange(8)
    victim.write_bytes(bytes(data))
    return copy


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _read_case(case: dict[str, Any], workdir: Path) -> dict[str, Any]:
    import sciz
    from sciz.errors import SciZError

    path = _mutate(case, workdir) if case.get("mutation") else Path(case["path"])
    try:
        dataset = sciz.load(path)
        data = np.asarray(dataset.data)
        for extra in (*dataset.layers.values(), *dataset.masks.values()):
            np.asarray(extra)
    except MemoryError as exc:
        return {"outcome": "memory blow-up", "detail": f"MemoryError: {exc}"}
    except SciZError as exc:
        return {"outcome": "clean error", "detail": f"{type(exc).__name__}: {exc}"[:400]}
    except RecursionError as exc:
        return {"outcome": "raw error", "detail": f"RecursionError: {str(exc)[:200]}"}
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        detail = f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"
        return {"outcome": "raw error", "detail": detail[:400]}
    expected = case.get("expected")
    if expected is None:
        return {"outcome": "silent garbage", "detail": f"returned {data.dtype} {data.shape}; expected an error"}
    if _same(data, np.load(expected, allow_pickle=False)):
        return {"outcome": "correct", "detail": ""}
    if case.get("mutation") and data.shape == np.load(expected, mmap_mode="r").shape:
        return {"outcome": "undetected change", "detail": f"{data.dtype} {data.shape} with other values"}
    return {"outcome": "silent garbage", "detail": f"returned {data.dtype} {data.shape}, not the expected array"}


def _child(case: dict[str, Any], out: Path, limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    workdir = out / f"work-{case['id']}"
    workdir.mkdir()
    report = _read_case(case, workdir)
    (out / f"{case['id']}.json").write_text(json.dumps(report), encoding="utf-8")


def _run(case: dict[str, Any], out: Path, limit: int, timeout: float) -> dict[str, Any]:
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never return into the worker's loop
        code = 1
        try:
            _child(case, out, limit)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    status, usage, hung = 0, None, False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            hung = True
            break
        time.sleep(0.002)
    report_file = out / f"{case['id']}.json"
    report: dict[str, Any]
    if hung:
        report = {"outcome": "hang", "detail": f"no answer within {timeout:g} s"}
    elif report_file.exists():
        report = json.loads(report_file.read_text(encoding="utf-8"))
    elif os.WIFSIGNALED(status):
        report = {"outcome": "crash", "detail": f"killed by signal {os.WTERMSIG(status)}"}
    else:
        report = {"outcome": "crash", "detail": f"exit status {os.WEXITSTATUS(status)} without a report"}
    report["peak_mb"] = round(usage.ru_maxrss / 1024) if usage is not None else None
    report["seconds"] = round(time.monotonic() - start, 3)
    shutil.rmtree(out / f"work-{case['id']}", ignore_errors=True)
    return report


def main(manifest_path: str) -> None:
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    sys.path.insert(0, manifest["root"])  # the sciz under test, whatever is installed
    import sciz.formats

    sciz.formats.list_formats()  # register every format before forking
    for module in ("h5py", "hdf5plugin", "zarr", "numcodecs", "tifffile"):
        with contextlib.suppress(ImportError):
            __import__(module)
    out = Path(manifest["out"])
    results = {}
    for case in manifest["cases"]:
        results[case["id"]] = _run(case, out, manifest["limit"], manifest["timeout"])
    Path(manifest["results"]).write_text(json.dumps(results), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
