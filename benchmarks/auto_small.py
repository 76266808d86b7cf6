"""Regret and CPU time of sciz.codecs.choose on small crops of the real data (4 k to 80 k values).

``choose`` predicts an array of up to 128 k values from one centred block of an eighth of it; this
checks that prediction where it matters, on crops of the fields and videos of ``benchmarks/auto.py``
(same oracle: every codec of the table in its default mode, on the whole crop). Printed per crop and
bound: the chosen codec, its ratio / the oracle's best, and the CPU time of the search / the
oracle's (best of ``ROUNDS`` alternate rounds each, as in ``benchmarks/auto.py``).

Run: ``PYTHONPATH=src python benchmarks/auto_small.py [--share 0.125]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from auto import BOUNDS, arrays, oracle_candidates
from sciz import codecs
from sciz.codecs import auto
from sciz.quality import valid_mask

ROUNDS = 5


def crops() -> list[tuple[str, np.ndarray, float | None]]:
    data = {name.split()[0].split("_")[0]: (array, fill) for name, array, fill in arrays()}
    asd, ccsm, sst, echam = data["asd"][0], data["ccsm"][0], data["sst"][0], data["echam5"][0]
    return [
        ("playnano 4x32x48", data["playnano"][0], None),
        ("asd 4x64x64", asd[:4, :64, :64], None),
        ("asd 8x40x40", asd[:8, 80:120, 80:120], None),
        ("asd 200x200", asd[0], None),
        ("asd 2x200x200", asd[:2], None),
        ("ccsm 64x128", ccsm[0], None),
        ("ccsm 2x64x128", ccsm[:2], None),
        ("ccsm 8x64x128", ccsm[:8], None),
        ("sst 170x180", sst[0], 1e20),
        ("sst 2x170x180", sst[:2], 1e20),
        ("echam 96x192", echam[0, 0], None),
        ("echam 4x96x192", echam[0, :4], None),
        ("jpk 4096x4", data["sample"][0][:4096], None),
        ("jpk 16384x4", data["sample"][0], None),
    ]


def best_cpu(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[float, Any, float, Any]:
    """Best CPU time and result of each of two functions, run in ``ROUNDS`` alternate rounds (so
    that neither always runs with the caches the other warmed)."""
    times, results = [float("inf"), float("inf")], [None, None]
    for _ in range(ROUNDS):
        for i, function in enumerate((first, second)):
            start = time.process_time()
            results[i] = function()
            times[i] = min(times[i], time.process_time() - start)
    return times[0], results[0], times[1], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=auto.PROBE_SHARE, help="the probe's share of a small array")
    args = parser.parse_args()
    auto.PROBE_SHARE = args.share
    warnings.simplefilter("ignore")
    rows = []
    for name, crop, fill in crops():
        array = np.ascontiguousarray(crop)
        values = array[valid_mask(array, fill)]
        extra = {} if fill is None else {"fill_value": fill}
        for rel in BOUNDS:
            tolerance = rel * (float(values.max()) - float(values.min()))

            def oracle(
                array: np.ndarray = array, tolerance: float = tolerance, extra: dict = extra
            ) -> tuple[float, str]:
                return max(
                    (array.nbytes / len(codecs.get(n, **p, **extra).encode(array, numthreads=2)), n)
                    for n, p in oracle_candidates(array, tolerance)
                )

            def search(array: np.ndarray = array, rel: float = rel, fill: float | None = fill) -> Any:
                return codecs.choose(array, rel_tolerance=rel, fill_value=fill, numthreads=2)

            oracle_s, (best, best_name), search_s, chosen = best_cpu(oracle, search)
            ratio = array.nbytes / len(chosen.encode(array, numthreads=2))
            rows.append((ratio / best, search_s / oracle_s))
            print(
                f"{name:16} {rel:6.0e} {array.size:6d} {chosen.choice['chosen'][:26]:26} {ratio:7.2f} "
                f"{best_name:>6} {best:7.2f}  r/or {ratio / best:5.3f}  cpu/or {search_s / oracle_s:5.3f} "
                f"({search_s * 1e3:.2f} / {oracle_s * 1e3:.2f} ms)"
            )
    ratios, times = [r for r, _ in rows], [t for _, t in rows]
    print(
        f"\nratio / oracle: min {min(ratios):.3f}, mean {statistics.mean(ratios):.3f}; "
        f"CPU time / oracle: median {statistics.median(times):.3f}, max {max(times):.3f}"
    )


if __name__ == "__main__":
    main()
