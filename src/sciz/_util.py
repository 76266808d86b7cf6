"""Small helpers every layer shares (the one place for them): thread counts, CRC-32, optional imports."""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path
from typing import Any

from .errors import MissingDependencyError

__all__ = ["crc32", "memory_budget", "require", "usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else all), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def crc32(data: Any, value: int | None = None) -> int:
    """CRC-32 (zlib's polynomial) through libdeflate, about six times zlib's speed; ``value`` continues a CRC."""
    import imagecodecs

    return int(imagecodecs.deflate_crc32(data, value)) & 0xFFFFFFFF


def require(module: str, extra: str, *, needed_for: str | None = None, otherwise: str | None = None) -> Any:
    """Import an optional dependency, or raise an error naming the extra that installs it.

    ``needed_for`` says what needs it (default: "this"); ``otherwise`` names a way around it.

    Example
    -------
    >>> h5py = require("h5py", "hdf5")  # doctest: +SKIP
    >>> yaml = require("yaml", "processing", needed_for="reading a YAML file", otherwise="use .json")  # doctest: +SKIP
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        around = f" ({otherwise})" if otherwise else ""
        raise MissingDependencyError(
            f"{module} is needed for {needed_for or 'this'} and is not installed ({exc}); "
            f"install it with: pip install 'sciz[{extra}]'{around}"
        ) from exc


def memory_budget() -> int:
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
