"""Small helpers every layer shares (the one place for them)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else all), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def available_memory() -> int:
    """Bytes this process could still allocate: the smaller of the memory the OS calls available and
    what the address-space limit (``RLIMIT_AS``) leaves; a large number where neither is known."""
    budget = 1 << 62
    try:
        with Path("/proc/meminfo").open("rb") as handle:
            for line in handle:
                if line.startswith(b"MemAvailable:"):
                    budget = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            budget = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with Path("/proc/self/statm").open("rb") as handle:
                used = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            budget = min(budget, max(0, limit - used))
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return budget
