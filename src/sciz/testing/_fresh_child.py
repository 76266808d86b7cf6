"""The fresh interpreter of :mod:`sciz.testing.fresh`: reads back what another process wrote.

Run as ``python -I -c <this file's text> <manifest.json> [kind]``, never imported. Before a job
only the standard library and numpy are loaded; each job (one way of reading: a seed function,
``sciz.codecs.decode``, a container reader...) runs in its own forked child, so no job profits
from modules another one imported: a decoder that only works after some import side effect fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np


def _stream(item: dict[str, Any]) -> bytes:
    return Path(item["path"]).read_bytes()


def _first_signal(tree: Any) -> Any:
    """``Experiments/<first>/data`` of a HyperSpy tree opened by zarr or h5py (no sciz involved)."""
    experiments = tree["Experiments"]
    return experiments[sorted(experiments.keys())[0]]["data"]


def _read(kind: str, item: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The array one way of reading gives for ``item``, and facts about how it got it."""
    report: dict[str, Any] = {}
    if kind == "seed":
        import sciz.codecs

        array = getattr(sciz.codecs, item["codec"] + "_decode")(_stream(item))
        report["check"] = bool(getattr(sciz.codecs, item["codec"] + "_check")(_stream(item)))
    elif kind in ("decode", "isolated"):
        from sciz.codecs import decode

        array = decode(_stream(item), isolated=kind == "isolated")
    elif kind == "numcodecs":
        import numcodecs

        array = numcodecs.get_codec({"id": "sciz", "codec": item["config"]}).decode(_stream(item))
    elif kind == "zspy-sciz":
        from sciz.zspy import file_reader

        array = file_reader(item["path"])[0]["data"]
    elif kind == "zspy-zarr":
        import zarr

        stored = _first_signal(zarr.open_group(item["path"], mode="r"))
        array = stored[...]
        report["codecs"] = [codec.get_config()["id"] for codec in stored.compressors]
    elif kind == "hspy-sciz":
        from sciz.hspy import file_reader

        array = file_reader(item["path"])[0]["data"]
    elif kind == "hspy-h5py":
        import h5py
        import hdf5plugin  # noqa: F401  (registers the plugin filters)

        with h5py.File(item["path"], "r") as handle:
            dataset = _first_signal(handle)
            array = dataset[()]
            plist = dataset.id.get_create_plist()
            report["filters"] = [int(plist.get_filter(i)[0]) for i in range(plist.get_nfilters())]
    elif kind == "load":
        import sciz
        from sciz.formats import detect_format

        dataset = sciz.load(item["path"])
        array = np.asarray(dataset.data)
        report["format"] = detect_format(item["path"]).name
        report["axes"] = [axis.to_dict() for axis in dataset.axes]
        report["name"] = dataset.name
        report["metadata"] = json.loads(json.dumps(dataset.metadata, default=repr))
    else:
        raise ValueError(f"unknown kind of reading {kind!r}")
    return array, report


def _run_job(job: dict[str, Any], out: Path) -> None:
    """Read every item of one job, saving each array and a report (errors included) as it goes."""
    folder = out / job["kind"]
    preloaded = sorted(name for name in sys.modules if name == "sciz" or name.startswith("sciz."))
    for item in job["items"]:
        report: dict[str, Any] = {"preloaded": preloaded}
        try:
            array, facts = _read(job["kind"], item)
            report.update(facts)
            np.save(folder / f"{item['key']}.npy", np.asarray(array), allow_pickle=False)
        except Exception:
            report["error"] = traceback.format_exc()
        module = sys.modules.get("sciz")
        report["sciz"] = getattr(module, "__file__", None)
        (folder / f"{item['key']}.json").write_text(json.dumps(report), encoding="utf-8")


def _run_forked(job: dict[str, Any], out: Path) -> str:
    """Run one job in a forked child; return how the child ended."""
    pid = os.fork()
    if pid == 0:  # the child: never return into the parent's code
        code = 1
        try:
            _run_job(job, out)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def main(manifest_path: str, only: str | None = None) -> None:
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    sys.path.insert(0, manifest["root"])  # the sciz under test, whatever is installed
    out = Path(manifest["out"])
    for job in manifest["jobs"]:
        if only is not None and job["kind"] != only:
            continue
        (out / job["kind"]).mkdir(parents=True, exist_ok=True)
        if only is not None:
            _run_job(job, out)
            status = "exit status 0"
        elif hasattr(os, "fork"):
            status = _run_forked(job, out)
        else:  # no fork: one more fresh interpreter per job
            script = Path(manifest["script"]).read_text(encoding="utf-8")
            done = subprocess.run([sys.executable, "-I", "-c", script, manifest_path, job["kind"]], check=False)
            status = f"exit status {done.returncode}"
        (out / job["kind"] / "__status__.txt").write_text(status, encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
