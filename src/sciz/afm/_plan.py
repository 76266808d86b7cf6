"""Choosing deflate settings per array: as small as the peer's setting overall, for the least work.

Each array is sampled (a few of its chunks); the samples are compressed with the peer's setting
(the *reference*, e.g. gzip level 4 without shuffle for HDF5, h5py's default that playNano uses)
and with each candidate setting (shuffle on/off, libdeflate level). :func:`plan`
then gives every array the cheapest candidate and, while the estimated total is larger than the
reference total, upgrades where a setting saves the most bytes per unit of extra work. Costs are
fixed relative numbers (measured speed ratios), so the same input always gets the same settings
and therefore the same file bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MARGIN", "SAMPLE_BYTES", "Estimate", "estimate_from", "plan", "raw_deflate"]

#: Bytes per sample piece; four pieces per array.
SAMPLE_BYTES = 64 * 1024
#: Default fraction below the reference total that a plan aims for. Zero: measured bundles came
#: out within +-0.1 % of the estimate, and mostly below it.
MARGIN = 0.0


def raw_deflate(data: Any, level: int, *, raw: bool = True) -> bytes:
    """libdeflate (GIL released): raw deflate, or zlib-wrapped with ``raw=False``."""
    import imagecodecs

    encode: Any = imagecodecs.deflate_encode  # accepts any buffer; its stubs say bytes only
    return bytes(encode(data, level=level, raw=raw))


@dataclass
class Estimate:
    """Estimated compressed sizes of one array (scaled from its samples): reference and per option."""

    reference: float
    sizes: dict[Any, float]


def estimate_from(
    samples: Sequence[Any],
    total_bytes: int,
    reference: Callable[[Any], int],
    options: Mapping[Any, Callable[[Any], int]],
) -> Estimate:
    """Estimated sizes of an array of ``total_bytes`` from ``samples`` of it (buffers, e.g. chunks):
    with ``reference`` and with each of ``options`` (key -> compressed size of a sample)."""
    scale = total_bytes / max(1, sum(len(memoryview(s).cast("B")) for s in samples))
    return Estimate(
        scale * sum(reference(s) for s in samples),
        {key: scale * sum(size(s) for s in samples) for key, size in options.items()},
    )


def _by_cost_then_size(costs: Mapping[Any, float], item: Estimate) -> Callable[[Any], tuple[float, float]]:
    return lambda key: (costs[key], item.sizes[key])


def plan(
    estimates: Sequence[Estimate | None], costs: Mapping[Any, float], default: Any, *, margin: float = MARGIN
) -> list[Any]:
    """One option per array (``default`` for unplanned ones) whose estimated total size is at most
    the reference total, for about the least total work (greedy by bytes saved per extra work)."""
    chosen: list[Any] = []
    planned: list[tuple[int, Estimate]] = []
    for index, item in enumerate(estimates):
        if item is None:
            chosen.append(default)
        else:
            chosen.append(min(costs, key=_by_cost_then_size(costs, item)))
            planned.append((index, item))
    # ``margin`` leaves room for the sampling error when a caller wants it.
    budget = (1.0 - margin) * sum(item.reference for _, item in planned)
    total = sum(item.sizes[chosen[i]] for i, item in planned)
    while total > budget:
        best: tuple[float, int, Any] | None = None
        for i, item in planned:
            current = chosen[i]
            for key in costs:
                saved = item.sizes[current] - item.sizes[key]
                if saved <= 0:
                    continue
                work = max(costs[key] - costs[current], 1e-9) * item.reference
                if best is None or saved / work > best[0]:
                    best = (saved / work, i, key)
        if best is None:
            break  # nothing left that shrinks anything: keep the strongest settings reached
        _, index, key = best
        item = dict(planned)[index]
        total += item.sizes[key] - item.sizes[chosen[index]]
        chosen[index] = key
    return chosen
