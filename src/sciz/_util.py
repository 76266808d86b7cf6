"""Small helpers every layer shares (the one place for them)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["memory_budget", "usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else all), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def memory_budget() -> int:
    """Bytes this process may still allocate: the machine's available memory, capped by RLIMIT_AS.

    Readers check every size a file declares against it before allocating, so a hostile header is a
    clean error instead of a MemoryError or the kernel's OOM killer.
    """
    budget = 1 << 62
    try:
        with Path("/proc/meminfo").open(encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    budget = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            budget = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            statm = Path("/proc/self/statm").read_text(encoding="ascii")  # the address space already mapped
            mapped = int(statm.split()[0]) * os.sysconf("SC_PAGE_SIZE")
            budget = min(budget, max(0, soft - mapped))
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return budget
