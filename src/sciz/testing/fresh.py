"""Read back in a fresh interpreter what this process wrote: the persistence half of the codec contract.

Everything sciz writes must be readable by a process that shares nothing with the writer, so
registration by import side effect, state kept in memory or a module that happened to be loaded
cannot hide a bug. :func:`read_in_fresh_process` starts one ``python -I`` (no environment, no user
site, no current directory) that imports the sciz under test, and reads every file of every job
in a forked child of its own (see :mod:`sciz.testing._fresh_child`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["READERS", "FreshRead", "read_in_fresh_process"]

#: The ways of reading a fresh process knows: what each imports and calls.
READERS = {
    "seed": "sciz.codecs.<codec>_decode (and <codec>_check)",
    "decode": "sciz.codecs.decode",
    "isolated": "sciz.codecs.decode(isolated=True)",
    "numcodecs": "numcodecs.get_codec({'id': 'sciz', ...}) through numcodecs' entry point",
    "zspy-sciz": "sciz.zspy.file_reader",
    "zspy-zarr": "zarr.open_group alone",
    "hspy-sciz": "sciz.hspy.file_reader",
    "hspy-h5py": "h5py + hdf5plugin alone",
    "load": "sciz.load (format detected from the file)",
}


@dataclass
class FreshRead:
    """What one way of reading gave for one file in the fresh process."""

    kind: str
    key: str
    array: np.ndarray | None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.key} read by {READERS[self.kind]} in a fresh process"

    def value(self) -> np.ndarray:
        """The array, or an AssertionError saying why the fresh process has none."""
        preloaded = self.report.get("preloaded")
        assert not preloaded, f"{self.where}: sciz modules {preloaded} were loaded before the job began"
        assert "error" not in self.report, f"{self.where} failed:\n{self.report.get('error')}"
        assert self.array is not None, f"{self.where}: no result ({self.report.get('status', 'no report')})"
        return self.array


def sciz_root() -> Path:
    """The folder holding the ``sciz`` package under test (a source tree or site-packages)."""
    import sciz

    return Path(sciz.__file__).resolve().parents[1]


def read_in_fresh_process(
    jobs: dict[str, list[dict[str, Any]]], workdir: Path, *, timeout: float = 300.0
) -> dict[tuple[str, str], FreshRead]:
    """Read files in one fresh interpreter, one forked child per kind of reading.

    ``jobs`` maps a kind of :data:`READERS` to its items, each a dict with ``key`` (a file-name-safe
    label), ``path`` and, where the reader needs them, ``codec`` (seed) or ``config`` (numcodecs).
    ``load`` reports the detected ``format``, the ``axes``, ``name`` and ``metadata`` (JSON, others as repr).
    Returns ``{(kind, key): FreshRead}`` for every item, failed ones included (with the error).
    """
    unknown = sorted(set(jobs) - set(READERS))
    if unknown:
        raise ValueError(f"jobs: unknown kinds of reading {unknown}; known are {', '.join(READERS)}")
    out = workdir / "fresh-reads"
    out.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).with_name("_fresh_child.py")
    manifest = {
        "root": str(sciz_root()),
        "out": str(out),
        "script": str(script),
        "jobs": [{"kind": kind, "items": items} for kind, items in jobs.items()],
    }
    manifest_path = workdir / "fresh-manifest.json"
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-I", "-c", script.read_text(encoding="utf-8"), str(manifest_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=workdir,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"the fresh process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {(kind, item["key"]): _collect(out, kind, item["key"]) for kind, items in jobs.items() for item in items}


def _collect(out: Path, kind: str, key: str) -> FreshRead:
    folder = out / kind
    status_file = folder / "__status__.txt"
    status = status_file.read_text(encoding="utf-8") if status_file.exists() else "the job never ran"
    report_file = folder / f"{key}.json"
    if not report_file.exists():
        return FreshRead(kind, key, None, {"status": f"the job ended ({status}) before reading {key}"})
    report = json.loads(report_file.read_text(encoding="utf-8"))
    report["status"] = status
    array_file = folder / f"{key}.npy"
    array = np.load(array_file, allow_pickle=False) if array_file.exists() else None
    return FreshRead(kind, key, array, report)
