"""The full reliability run: hostile files, mutants, killed writers and racing writers for every format.

Prints one table per kind of attack (rows: formats; columns: outcomes) and every unacceptable
result grouped by format and case. Target: only ``correct`` and ``clean error`` (``undetected
change`` is acceptable only for formats without a checksum over their payload: a flipped bit in an
uncompressed .npy is other data, not a fault).

    python benchmarks/reliability.py                       # everything, all formats
    python benchmarks/reliability.py --mutants 50 --kills 5 --formats npy,zspy
    python benchmarks/reliability.py --json results.json   # also save every result
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from sciz import formats
from sciz.testing import reliability as rel

#: Real files of the read-only formats (nobody here wrote them; see ../shared/data/SOURCES.md).
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def vendor_samples() -> dict[str, Path]:
    """The real files the mutants and hostile cases of read-only formats (vendor AFM, netCDF) start from."""
    found = {
        "asd": SHARED / "afm" / "asd_sample_0.asd",
        "h5-jpk": SHARED / "afm" / "sample_0.h5-jpk",
        "netcdf": SHARED / "netcdf" / "nc4uvt.nc",
    }
    return {name: path for name, path in found.items() if path.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", help="comma-separated format names (default: every registered format)")
    parser.add_argument("--mutants", type=int, default=300, help="mutants per format (default 300)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLed writes per writable format (default 20)")
    parser.add_argument("--races", type=int, default=10, help="writes per racing writer (default 10)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="parallel case runners")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every result to this file")
    args = parser.parse_args()
    names = args.formats.split(",") if args.formats else [f.name for f in formats.list_formats()]
    writable = rel.writable_formats(names)
    folder = rel.scratch_folder()
    results: list[rel.Result] = []
    try:
        started = time.monotonic()
        samples = vendor_samples()
        cases = rel.hostile_cases(folder / "hostile", names, samples=samples) + rel.mutant_cases(
            folder / "mutants", args.mutants, names, seed=args.seed, samples=samples
        )
        print(f"{len(cases)} read cases built in {time.monotonic() - started:.1f} s", flush=True)
        started = time.monotonic()
        results += rel.run_read_cases(cases, folder / "run", workers=args.workers)
        print(f"ran in {time.monotonic() - started:.1f} s on {args.workers} workers", flush=True)
        started = time.monotonic()
        for name in writable:
            results += rel.kill_writers(name, folder / "kill" / name, args.kills, seed=args.seed)
            results += rel.race_writers(name, folder / "race" / name, args.races, seed=args.seed)
            if formats.get_format(name).can_write:
                results += rel.hostile_writes(name, folder / "write" / name)
        print(f"{len(writable)} formats killed and raced in {time.monotonic() - started:.1f} s\n", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for kind in ("hostile", "mutant", "kill", "race", "write"):
        chosen = [r for r in results if r.kind == kind]
        if chosen:
            print(f"== {kind} ==\n{rel.table(chosen)}\n")
    kills = [r for r in results if r.kind == "kill"]
    missing = sum(not r.extra.get("present", True) for r in kills)
    print(f"kills after which the target name was missing until sciz restored it: {missing} of {len(kills)}\n")
    bad = rel.failures(results)
    grouped = Counter((r.format, r.kind, r.name, r.outcome, r.detail[:140]) for r in bad)
    print(f"== {len(bad)} unacceptable results ==")
    for (name, kind, case, outcome, detail), count in sorted(grouped.items()):
        print(f"{count:>4} x {name:<9} {kind:<8} {case:<28} {outcome:<15} {detail}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1), encoding="utf-8")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
