"""Automatic codec choice: the codec of the table that compresses this array best within the user's bound.

:func:`choose` turns the bound (absolute, relative to the data range, PSNR, or a target ratio) into
candidates drawn from the codec table (:func:`~sciz.codecs.registry.list_codecs`: every codec with
a stream, an engine here and the array's dtype, in each mode that keeps the bound, plus zfp with an
inflated engine accuracy whose misses the driver stores exactly). It codes stratified
full-resolution sample blocks with each candidate, in parallel, through the real driver (so masks,
patches and fallbacks are paid for as in the final encode), drops candidates that cannot win after a
first round, and returns the winner configured for the whole array: its encode keeps the
per-element bound as every codec's does. The winner's ``get_config()["choice"]`` says what was tried
and predicted.

The sample: the array is cut into blocks of about ``2^15`` elements shaped like the array (edges on
zfp's 4-value grid); blocks are ranked by their share of NaN/fill values and their local
variation (mean absolute difference along the last axis), cut into equal strata, and the middle
block of each stratum stands for it, weighted by the stratum's elements (blocks shrink where two
would exceed the share). Every candidate first codes one typical block (the middle stratum's); those
predicted over :data:`PRUNE_FACTOR` times larger than the best are dropped and the survivors code
the rest, about 10 % of the array in all. An array of up to 4 blocks is predicted from one centred
block of an eighth of it (coding it whole with every candidate would cost what trying them all on
it does), and coded whole up to :data:`WHOLE_ELEMENTS` values, where the contenders are also tried
with the engine seeing the axes in other orders; on large arrays the winner is tried with its axes
reversed on a central block.

Candidates that cannot win are not coded at all: lossless codecs where the bound spans at least
``2^LOSSLESS_GAP_BITS`` steps of the data's resolution (:func:`_resolution_bits`), and zfp with an
inflated accuracy where the bit planes it saves (:data:`ZFP_PLANE_BITS`) could not make zfp
beat the best candidate of the first block; and sz3 on a small array's probe too small to measure it
(:data:`SZ3_MIN_VALUES`) where sperr races. Blocks are coded through the driver's own chunk step,
without packing a stream.

:class:`AutoCodec` (``sciz.codecs.get("auto", tolerance=...)``) is the same as a codec: it chooses
for each array it encodes, and its streams are those of the chosen codec, decodable by any sciz.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._util import usable_cores
from ..errors import CodecError, RangeOutlierWarning, argument_error
from . import _stream
from .driver import check_fill_value, check_numthreads, decode_stream, is_real, run_parallel
from .registry import CodecSpec, build, codec_class, list_codecs

__all__ = ["CONTAINERS", "OBJECTIVES", "AutoCodec", "choose"]

#: What :func:`choose` optimises: the predicted ratio; encode + decode time among candidates reaching
#: at least half the best ratio; or the time to encode, move at 100 MB/s and decode.
OBJECTIVES = ("ratio", "speed", "balanced")
#: Where the chosen codec's output goes: sciz streams (.scz, .zspy, .npz) or an HDF5 dataset
#: through the codec's registered filter (.hspy, AFM .h5 bundles), which codes its own chunks.
CONTAINERS = ("sciz", "hdf5")
#: zfp's engine accuracy, as multiples of the tolerance, that :func:`choose` tries (its real error is
#: typically 4-8x below the accuracy it is given).
ZFP_INFLATION = (1.0, 2.0, 4.0)
#: zfp codes bit planes: an accuracy ``f`` times the tolerance stops ``log2(f)`` planes earlier,
#: which saves at most about one bit per value and plane (measured on the benchmark's float arrays
#: at 1e-2..1e-4 of their range, 4x the accuracy saved 1.71 to 2.0 bits a value). An inflated
#: accuracy is tried only where zfp at the tolerance, less ``ZFP_PLANE_BITS * log2(f)`` bits a
#: value, would beat the best candidate of the first round.
ZFP_PLANE_BITS = 1.1
#: Share of the array coded per candidate, and the blocks it is cut into.
SAMPLE_SHARE = 0.1
BLOCK_ELEMENTS = 2**15
#: After the first round (one block), candidates predicted this many times larger than the best
#: are dropped (the runner-up on the benchmark cases is within 1.3x of the winner's ratio on
#: CCSM at 1e-3; one block misjudges more than the whole sample, hence the margin).
PRUNE_FACTOR = 1.5
_LINK_BYTES_PER_S = 100e6
#: An array of up to ``4 * BLOCK_ELEMENTS`` values is predicted from one centred block of
#: ``PROBE_SHARE`` of it (at least ``PROBE_MIN`` values), and coded whole up to ``WHOLE_ELEMENTS``.
#: Coding a small array whole with every candidate costs what the oracle does (the engines' fixed
#: costs dominate: sperr takes 0.15 ms even on 384 values), so the probe is all a search can afford.
PROBE_SHARE = 1 / 8
PROBE_MIN = 512
WHOLE_ELEMENTS = 4096
#: Lossless candidates are not tried where the bound spans ``2^LOSSLESS_GAP_BITS`` steps of the
#: data's resolution or more (:func:`_resolution_bits`). Measured where they were tried: a lossless
#: codec came closest on the JPK heights at 1e-4 of the range (pcodec 1.54 against lerc 2.33, 14
#: bits); pcodec alone costs more than half the oracle's time there.
LOSSLESS_GAP_BITS = 8.0
RESOLUTION_SAMPLE = 1024
#: sz3 is not coded on a small array's probe of fewer values than this where sperr races: there its
#: header and Huffman tables outweigh the data (the playNano video's 768-value probe: 1.0 / 2.4 /
#: 5.6 at 1e-4 / 1e-3 / 1e-2 of the range, against 2.3 / 5.6 / 17 whole) and it cannot rank first;
#: on the crops of benchmarks/auto_small.py whose probe is that small it never did, in the 2 cases
#: where it was best whole too (sperr, chosen, came within 0.98 and 0.995 of it), while it cost a
#: quarter to a third of the search.
SZ3_MIN_VALUES = 4096
#: A round coding fewer values than this (all its blocks and candidates together) runs on one
#: thread: starting a pool's threads cost more than they saved on the small arrays' probes.
PARALLEL_ELEMENTS = 2**16
#: A large array's winner is also tried with its axes reversed on one central block of a sixteenth
#: of the array, from ``LAYOUT_MIN`` up to ``LAYOUT_ELEMENTS`` values (:func:`_better_order`), and
#: that order is taken where it codes the block ``LAYOUT_GAIN`` times smaller.
LAYOUT_ELEMENTS = 2**17
LAYOUT_MIN = 65536
LAYOUT_GAIN = 1.1
_REFUSED = 1 << 62  # the size of a block a container's filter refuses


@dataclass(eq=False)  # compared by identity: a field-wise __eq__ would compare the built codecs
class Candidate:
    """One codec in one mode, and what the sample said about it."""

    codec: str
    params: dict[str, Any]
    label: str
    sizes: dict[int, int] = field(default_factory=dict)
    encode_s: float = 0.0
    decode_s: float = 0.0
    pruned: bool = False
    order: tuple[int, ...] | None = None
    gain: float = 1.0  # an axis order's size gain on the central block (see _better_order)
    made: Any = None

    @property
    def lossy(self) -> bool:
        """Coded within a non-zero tolerance (not a lossless or rate mode)."""
        return bool(self.params.get("tolerance"))

    def make(self, fill_value: Any) -> Any:
        """The codec, built once per search (``build`` reads the class signature: 0.1 ms a call)."""
        if self.made is None:
            extra = {} if fill_value is None else {"fill_value": fill_value}
            self.made = build(self.codec, {**self.params, **extra})
            self.made.set_order(self.order)
        return self.made


def _layouts(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Axis orders worth trying besides the array's own: the rotations and the reversal of its axes
    longer than 1 (length-1 axes stay in place). On the ASD video sperr gains 48 % with the frames'
    x axis first; on the climate fields the array's own order is best (measured for all six)."""
    axes = [axis for axis, n in enumerate(shape) if n > 1]
    if len(axes) < 2:
        return []
    arrangements = [axes[k:] + axes[:k] for k in range(1, len(axes))] + [axes[::-1]]
    out: list[tuple[int, ...]] = []
    for arrangement in arrangements:
        order = list(range(len(shape)))
        for position, axis in zip(axes, arrangement, strict=True):
            order[position] = axis
        if tuple(order) not in out and order != list(range(len(shape))):
            out.append(tuple(order))
    return out


@dataclass
class Sample:
    """The blocks standing for the array: slices, and the elements of the array each stands for."""

    blocks: list[tuple[slice, ...]]
    weights: list[float]
    block_shape: tuple[int, ...]
    sizes: list[int] = field(init=False)  # the elements of each block

    def __post_init__(self) -> None:
        self.sizes = [math.prod(s.stop - s.start for s in block) for block in self.blocks]

    @property
    def elements(self) -> int:
        return sum(self.sizes)


def _one_bound(tolerance: Any, rel_tolerance: Any, psnr: Any, ratio: Any, who: str = "") -> tuple[str, float]:
    """(kind, value) of exactly one given bound, checked to be a non-negative finite number."""
    bounds = {"tolerance": tolerance, "rel_tolerance": rel_tolerance, "psnr": psnr, "ratio": ratio}
    given = {k: v for k, v in bounds.items() if v is not None}
    if len(given) != 1:
        raise CodecError(
            f"{who}give exactly one of tolerance, rel_tolerance, psnr or ratio (got {', '.join(given) or 'none'})"
        )
    ((kind, value),) = given.items()
    if not is_real(value) or not math.isfinite(float(value)) or float(value) < 0:
        raise argument_error(kind, value, "must be a non-negative finite number", cls=CodecError)
    return kind, float(value)


def _bound(
    array: np.ndarray,
    valid: np.ndarray,
    tolerance: Any,
    rel_tolerance: Any,
    psnr: Any,
    ratio: Any,
) -> tuple[str, float, float]:
    """(kind, the number given, the absolute tolerance or the ratio) for exactly one given bound."""
    kind, value = _one_bound(tolerance, rel_tolerance, psnr, ratio)
    if kind == "ratio":
        if value <= 1:
            raise argument_error("ratio", value, "must be a compression ratio above 1", cls=CodecError)
        return kind, value, value
    if kind == "tolerance":
        return kind, value, value
    values = array if valid.all() else array[valid]
    span = float(values.max()) - float(values.min()) if values.size else 0.0
    if kind == "rel_tolerance":
        return kind, value, value * span
    if value == 0:
        raise argument_error("psnr", value, "must be a positive number of dB", cls=CodecError)
    # max |error| <= t gives RMSE <= t, so PSNR = 20 log10(range / RMSE) >= the target
    return kind, value, span * 10 ** (-value / 20)


def _check_chunks(chunks: Any, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if chunks is None:
        return None
    if (
        isinstance(chunks, str | bytes)
        or not isinstance(chunks, Sequence)
        or len(chunks) != len(shape)
        or not all(isinstance(c, int | np.integer) and not isinstance(c, bool) and c > 0 for c in chunks)
    ):
        raise argument_error("chunks", chunks, f"must be None or {len(shape)} positive ints", cls=CodecError)
    return tuple(int(c) for c in chunks)


def _engine_here(row: CodecSpec) -> bool:
    from . import _engine_available

    return not row.engine or _engine_available(row.engine)


def _candidates(
    array: np.ndarray,
    kind: str,
    level: float,
    names: Sequence[str] | None,
    hdf5: bool = False,
    fill_value: Any = None,
    skip_lossless: bool = False,
) -> list[Candidate]:
    """The table's codecs in every mode that keeps the bound, for this array's dtype (``hdf5``: those
    with a registered HDF5 filter, and no inflated zfp: a filter has no per-element check).
    ``skip_lossless``: lossless ones are listed pruned, unbuilt, where a lossy one can race."""
    known = list_codecs()
    if names is not None:
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise argument_error("candidates", names, "must be a list of codec names", cls=CodecError)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise argument_error("candidates", unknown[0], f"known codecs are {', '.join(known)}", cls=CodecError)
    code = array.dtype.str[1:]
    out: list[Candidate] = []
    for name in known:
        if names is not None and name not in names:
            continue
        row = getattr(codec_class(name), "spec", None)
        if not isinstance(row, CodecSpec) or row.method is None or code not in row.dtypes or not _engine_here(row):
            continue
        if hdf5 and not row.hdf5_filter_id:
            continue
        tries: list[dict[str, Any]]
        if kind == "ratio":
            bits = array.dtype.itemsize * 8 / level
            tries = [{"rate": bits}, {"mode": "rate", "quality": bits}] if "rate" in row.bounds else []
        elif level == 0:
            tries = [{"tolerance": 0.0}, {}] if "lossless" in row.bounds else []
        elif "tolerance" in row.bounds:
            tries = [{"tolerance": level}]
            if name == "zfp" and not hdf5:
                tries += [{"tolerance": level, "accuracy": level * f} for f in ZFP_INFLATION if f != 1.0]
        else:
            tries = [{}] if "lossless" in row.bounds else []
        checked = False
        for params in tries:
            label = name + "".join(f" {k}={v:.3g}" if isinstance(v, float) else f" {k}={v}" for k, v in params.items())
            candidate = Candidate(name, params, label)
            if skip_lossless and not candidate.lossy:
                candidate.pruned = True  # recorded, not built: it cannot win (see choose)
            elif not checked:  # the codec's later tries (inflated zfp) take the same arrays
                try:
                    candidate.make(fill_value).check_array(array.reshape(-1)[:1])
                except (CodecError, ValueError, TypeError):
                    continue
                checked = True
            out.append(candidate)
            if level == 0 or kind == "ratio":
                break  # one lossless / rate spelling per codec
    if skip_lossless and all(c.pruned for c in out):
        return _candidates(array, kind, level, names, hdf5, fill_value)
    if not out:
        raise CodecError(f"no codec here can code a {array.dtype} array with this bound ({kind}={level:g})")
    return out


def _resolution_bits(array: np.ndarray, valid: np.ndarray, tolerance: float) -> float:
    """``log2(2 * tolerance / resolution)``: roughly the bits per value a lossless codec spends beyond
    an error-bounded coder using the same prediction (it must tell apart values the bound lets the
    other confuse). The resolution is taken from an evenly strided sample of at most
    ``RESOLUTION_SAMPLE`` valid values: for integers (up to 32 bits) the step they all share (the
    gcd of their differences, 1 or more), else the smallest gap between distinct values (a multiple
    of the step of quantised data). A sample can only miss finer steps and closer pairs, so the
    estimate errs towards keeping lossless codecs in the race. Measured on the benchmark cases: the
    ASD video (quantised, a step of 0.061 nm) 6.4 / 3.0 / -0.3 bits at 1e-2 / 1e-3 / 1e-4 of its
    range; the climate fields and the playNano video 7.8 to 16 bits; the JPK heights (int32, step
    1) 14 to 20.6 bits."""
    values = array[valid] if not valid.all() else array.reshape(-1)
    sample = values[:: max(1, values.size // RESOLUTION_SAMPLE)]
    if sample.dtype.kind in "iu" and sample.dtype.itemsize <= 4:
        step = float(np.gcd.reduce(sample.astype(np.int64) - int(sample.min())))
    else:
        gaps = np.diff(np.sort(sample)).astype(np.float64)
        step = float(np.min(gaps, where=gaps > 0, initial=np.inf))
    if step == 0 or not math.isfinite(step):  # constant: nothing to gain over a lossless codec
        return -math.inf
    return math.log2(2 * tolerance / step)


def _block_shape(shape: tuple[int, ...], elements: int) -> tuple[int, ...]:
    """A block of about ``elements`` shaped like the array (each axis scaled alike), multiples of 4.

    Shaped like the array rather than cubic: a wavelet coder's ratio depends on the extent it sees
    along each axis (measured on the ASD video, 32x200x200: 28^3 blocks predicted sperr at 118 against
    its real 973 and ranked it below sz3; 8x56x56 blocks predict 538 and rank it right).
    """
    axes = [n for n in shape if n > 1]
    if not axes:
        return tuple(shape)
    scale = min(1.0, (elements / math.prod(axes)) ** (1 / len(axes)))
    return tuple(n if n == 1 else min(n, max(4, int(n * scale) // 4 * 4)) for n in shape)


def _probe_shape(shape: tuple[int, ...], elements: int) -> tuple[int, ...]:
    """A block of about ``elements`` shaped like the array, sides multiples of 4 (zfp's grid), for a
    small array's probe: axes of up to 4 stay whole and axes that would fall under 4 stop there,
    the others shrink alike to make up for them (:func:`_block_shape` lets such axes make its
    blocks larger: 4x16x24 for an eighth of a 4x32x48 video, a quarter; here 4x12x16)."""
    extent = list(shape)
    free = [axis for axis, n in enumerate(shape) if n > 4]
    while free:
        fixed = math.prod(n for axis, n in enumerate(extent) if axis not in free)
        scale = (elements / fixed / math.prod(shape[axis] for axis in free)) ** (1 / len(free))
        if scale >= 1:
            break
        short = [axis for axis in free if shape[axis] * scale < 4]
        if not short:
            for axis in free:
                extent[axis] = max(4, round(shape[axis] * scale / 4) * 4)
            break
        for axis in short:
            extent[axis] = 4
        free = [axis for axis in free if axis not in short]
    return tuple(extent)


def _plan_sample(array: np.ndarray, valid: np.ndarray, share: float, chunks: tuple[int, ...] | None = None) -> Sample:
    """Stratified blocks (see the module docstring); ``chunks``: blocks are whole chunks of this shape."""
    shape = array.shape
    total = array.size
    if chunks is None and total <= 4 * BLOCK_ELEMENTS:
        # one centred block stands for the whole (the whole itself where the array is tiny)
        if total <= WHOLE_ELEMENTS:
            return Sample([tuple(slice(0, n) for n in shape)], [float(total)], tuple(shape))
        extent = _probe_shape(shape, max(PROBE_MIN, round(PROBE_SHARE * total)))
        probe = tuple(slice((n - b) // 8 * 4, (n - b) // 8 * 4 + b) for n, b in zip(shape, extent, strict=True))
        return Sample([probe], [float(total)], extent)
    # At least two blocks make the share: smaller ones where two full blocks would code twice the
    # share (ECHAM5, 313k values: two 2^15 blocks were 20 % of it, and choose took 0.3x the oracle's CPU)
    if chunks is not None:
        block = tuple(min(n, c) for n, c in zip(shape, chunks, strict=True))
    else:
        block = _block_shape(shape, min(BLOCK_ELEMENTS, max(4096, int(share * total / 2))))
    # chunks: every chunk of the file, edge chunks too (a filter codes them padded to full size)
    grid = [-(-n // b) if chunks is not None else max(1, n // b) for n, b in zip(shape, block, strict=True)]
    tiles = [tuple(int(i) for i in index) for index in np.ndindex(*grid)]
    per_block = math.prod(block)
    count = max(2 if chunks is None else 4, min(len(tiles), round(share * total / per_block)))
    count = min(count, len(tiles))
    # local variation and invalid share of every tile
    values = np.where(valid, array, 0).astype(np.float64, copy=False) if not valid.all() else array
    scores = []
    for tile in tiles:
        where = tuple(slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(tile, block, shape, strict=True))
        part, keep = values[where], valid[where]
        invalid = 1.0 - float(np.count_nonzero(keep)) / keep.size
        if part.shape[-1] > 1:
            both = keep[..., 1:] & keep[..., :-1]
            steps = np.abs(np.diff(part, axis=-1).astype(np.float64))[both]
            variation = float(steps.mean()) if steps.size else 0.0
        else:
            variation = 0.0
        edge = any(w.stop - w.start < b for w, b in zip(where, block, strict=True))
        scores.append((edge, round(invalid * 10), variation, where))
    scores.sort(key=lambda item: (item[0], item[1], item[2]))
    bounds = np.linspace(0, len(scores), count + 1).round().astype(int)
    blocks, weights = [], []
    covered = sum(math.prod(s.stop - s.start for s in item[3]) for item in scores)
    scale = total / covered  # the elements outside whole tiles count like the tiles
    for start, stop in itertools.pairwise(bounds.tolist()):
        if stop <= start:
            continue
        blocks.append(scores[(start + stop) // 2][3])
        members = scores[start:stop]
        weights.append(float(sum(math.prod(s.stop - s.start for s in m[3]) for m in members)) * scale)
    return Sample(blocks, weights, block)


def _predicted_bytes(candidate: Candidate, sample: Sample, itemsize: int) -> float:
    """Bytes of the whole array predicted from the blocks coded so far (weights renormalised)."""
    if not candidate.sizes:
        return math.inf
    done = candidate.sizes.items()
    weight = sum(sample.weights[i] for i, _ in done)
    per_element = sum(sample.weights[i] * size / sample.sizes[i] for i, size in done)
    return per_element / weight * sum(sample.weights)


def _block_bytes(codec: Any, part: np.ndarray, decode: bool = False) -> tuple[int, float, float]:
    """Bytes the final encode stores for ``part`` coded as one chunk (its payload, mask and patches),
    with the seconds to encode it and (``decode``) to decode the payload.

    The block goes through the driver's own chunk step (``driver.code_chunk``: NaN/fill masks,
    the bound's verification and patches, the lossless fallbacks, as in the final encode) but is
    not packed into a stream and parsed back: that took 0.1-0.3 ms a candidate, as long as the
    engine on a small array's probe. A stream's header is left out on purpose too: a sample
    block's would weigh on highly compressible data (ratio 1000 on an AFM video) as the one header
    of the whole array's stream does not. The decode (speed objectives) runs the engine here, not
    in a child as :func:`~sciz.codecs.driver.decode_stream` does for untrusted sz3 streams: the
    payload is the one the engine just made from our own block, as the driver's bound check
    (``driver._misses``) decodes it here too.
    """
    from .driver import chunk_decoder, code_chunk

    if codec.order is not None:
        part = part.transpose(codec.order)
    view = np.ascontiguousarray(part, dtype=part.dtype.newbyteorder("="))
    view = view.reshape(_stream.chunked_shape(view.shape))
    start = time.perf_counter()
    chunk, _, _ = code_chunk(codec, view, 0)
    middle = time.perf_counter()
    if decode:
        decoder = chunk_decoder(chunk.method)
        assert decoder is not None
        decoder(memoryview(chunk.payload), np.empty_like(view), codec.stream_params())
    size = len(chunk.payload) + len(chunk.mask) + chunk.patch_index.size * (8 + view.itemsize)
    return size, middle - start, time.perf_counter() - middle


def _inflate_zfp(
    pool: list[Candidate],
    inflated: list[Candidate],
    code: Callable[[Candidate], None],
    predicted: Callable[[Candidate], float],
    values: int,
) -> list[Candidate]:
    """Code zfp's inflated-accuracy candidates (``code``) that could beat the best candidate of the
    first round: those whose bound of :data:`ZFP_PLANE_BITS` bits a value and plane saved on plain
    zfp's predicted bytes (``values`` in the array) comes under the best's. Returns the others
    (marked pruned, left uncoded)."""
    plain = [c for c in pool if c.codec == "zfp" and "accuracy" not in c.params]
    best = min(predicted(c) for c in pool if c.sizes)
    untried = []
    for candidate in inflated:
        planes = math.log2(float(candidate.params["accuracy"]) / float(candidate.params["tolerance"]))
        reach = min((predicted(c) for c in plain), default=0.0) - ZFP_PLANE_BITS * planes * values / 8
        if reach < best:
            code(candidate)
        else:
            candidate.pruned = True
            untried.append(candidate)
    return untried


def _run(
    candidates: list[Candidate],
    blocks: list[int],
    array: np.ndarray,
    sample: Sample,
    fill_value: Any,
    threads: int,
    decode: bool,
    sizer: Callable[[Any, np.ndarray], int] | None = None,
) -> None:
    tasks = [(c, b) for c in candidates for b in blocks if b not in c.sizes]
    if not tasks:
        return
    codecs = {id(c): c.make(fill_value) for c in candidates}
    work = sum(sample.sizes[b] for _, b in tasks)
    if work < PARALLEL_ELEMENTS:
        threads = 1

    def code(i: int) -> tuple[int, float, float]:
        candidate, index = tasks[i]
        part = np.ascontiguousarray(array[sample.blocks[index]])
        codec = codecs[id(candidate)]
        start = time.perf_counter()
        if sizer is not None:  # the bytes the target container stores for this block
            try:
                size = sizer(codec, part)
            except (CodecError, ValueError, TypeError, OSError):  # this filter refuses the block: it cannot win
                size = _REFUSED
            return size, time.perf_counter() - start, 0.0
        return _block_bytes(codec, part, decode)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks are paid for in the sizes; the final encode warns
        results = run_parallel(code, len(tasks), threads)
    for (candidate, index), (size, encode_s, decode_s) in zip(tasks, results, strict=True):
        candidate.sizes[index] = size
        candidate.encode_s += encode_s
        candidate.decode_s += decode_s


def _better_order(winner: Candidate, array: np.ndarray, fill: Any, threads: int) -> Candidate | None:
    """The winner with the engine seeing the axes reversed (the last, fastest axis first), if that
    codes a central block of ``array.size / 16`` values (at most ``LAYOUT_ELEMENTS``) shaped like
    the array at least ``LAYOUT_GAIN`` times smaller; its predicted sizes are the winner's divided
    by that gain. Skipped where that block would hold under ``LAYOUT_MIN`` values.

    Measured (sperr, the winner of every large benchmark case; gain on the whole array / on such a
    block): the ASD video at 1e-3 1.27 / 1.12 (80000 values; 1.01 on 65536, so smaller blocks do not
    show it); on the climate fields every order loses on the whole (0.70-1.01, 1.08 once) and on
    the block (0.5-0.9). The rotations never won on a whole array, so only the reversal is tried:
    two encodes of one block, about 12 % of the winner's own whole encode."""
    elements = min(LAYOUT_ELEMENTS, array.size // 16)
    axes = [axis for axis, n in enumerate(array.shape) if n > 1]
    if elements < LAYOUT_MIN or len(axes) < 2:
        return None
    order = list(range(array.ndim))
    for position, axis in zip(axes, axes[::-1], strict=True):
        order[position] = axis
    extent = _block_shape(array.shape, elements)
    where = tuple(slice((n - b) // 2, (n - b) // 2 + b) for n, b in zip(array.shape, extent, strict=True))
    part = np.ascontiguousarray(array[where])
    reversed_ = Candidate(winner.codec, winner.params, f"{winner.label} order={order}", order=tuple(order))
    made = [winner.make(fill), reversed_.make(fill)]

    def size(i: int) -> int:
        return _block_bytes(made[i], part)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        natural, other = run_parallel(size, 2, threads)
    gain = natural / max(1, other)
    if gain < LAYOUT_GAIN:
        return None
    reversed_.sizes = {i: round(n / gain) for i, n in winner.sizes.items()}
    reversed_.encode_s, reversed_.decode_s, reversed_.gain = winner.encode_s, winner.decode_s, gain
    return reversed_


def _sample_psnr(candidate: Candidate, array: np.ndarray, sample: Sample, fill_value: Any) -> float:
    """PSNR of a rate-mode candidate on the sample blocks (rate modes promise no error)."""
    from ..quality import psnr

    codec = candidate.make(fill_value)
    worst = math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in sample.blocks:
            part = np.ascontiguousarray(array[block])
            restored = decode_stream(codec.encode(part), None, CodecError, isolated=False)
            worst = min(worst, psnr(part, restored, fill_value=fill_value))
    return worst


def choose(
    data: Any,
    *,
    tolerance: float | None = None,
    rel_tolerance: float | None = None,
    psnr: float | None = None,
    ratio: float | None = None,
    objective: str = "ratio",
    candidates: Sequence[str] | None = None,
    fill_value: float | None = None,
    numthreads: int | None = None,
    layouts: bool | None = None,
    container: str = "sciz",
    chunks: Sequence[int] | None = None,
    measure: Callable[..., int] | None = None,
) -> Any:
    """The codec (configured) that best codes ``data`` within the bound; see the module docstring.

    Give exactly one bound: ``tolerance`` (absolute), ``rel_tolerance`` (times the valid data's
    range), ``psnr`` (dB; met by the absolute tolerance ``range * 10^(-psnr/20)``, which bounds the
    RMSE) or ``ratio`` (a rate mode at ``bits / ratio`` bits per value, the one with the best PSNR
    on the sample; no error bound). ``objective`` is one of :data:`OBJECTIVES`; ``candidates``
    restricts the codecs; ``fill_value`` marks missing data (kept exactly by the chosen codec);
    ``numthreads`` codes the sample on that many threads (None or 0: every core). ``layouts``: also
    try the contenders with the engine seeing the axes in other orders (:attr:`Codec.order`); None
    (default) does where the array is coded whole (up to :data:`WHOLE_ELEMENTS` values), where the
    ranking is exact. On sample blocks the gain of an order does not show reliably (measured: on the
    ASD video sperr gains 48 % with the x axis first on the whole array, but not on 8x56x56 blocks;
    blocks keeping the 32 frames whole show it, and then rank a wrong order first on the CCSM field).
    So on larger arrays (with ``objective="ratio"``) the winner is tried with its axes reversed on
    one central block of a sixteenth of the array (:func:`_better_order`), which does show it: the
    ASD video at 1e-3 is then coded 1.27x smaller than by the best codec in the array's own order.
    ``layouts=False`` tries no other order.

    ``container="hdf5"``: the chosen codec will be written through its registered HDF5 filter (hspy,
    AFM .h5 bundles), so only codecs with one compete, in the array's own axis order. ``measure``:
    the bytes a candidate takes for one sample block in the target container,
    ``measure(codec, block, chunks=...)``; the HDF5 containers pass
    :func:`sciz.formats._hdf5.filtered_size` (what the filter stores for the block written as sciz
    writes HDF5 datasets: the filter's own behaviour on chunks, NaN and fill values), so that the
    predicted ratio is the file's (default: the coded sections of sciz's own stream; the codecs
    layer does not import the formats above it). ``chunks``: the container's chunk shape; the sample
    blocks are then whole chunks, edge chunks too (default: blocks of about 2^15 values).

    Example
    -------
    >>> import numpy as np
    >>> from sciz.codecs import choose
    >>> field = np.cumsum(np.ones((64, 64), np.float32), axis=1)
    >>> codec = choose(field, rel_tolerance=1e-3)
    >>> codec.tolerance == codec.get_config()["choice"]["tolerance"]
    True
    """
    started = time.perf_counter()
    if objective not in OBJECTIVES:
        raise argument_error("objective", objective, f"must be one of {', '.join(OBJECTIVES)}", cls=CodecError)
    fill = check_fill_value(fill_value, CodecError)
    threads = usable_cores() if numthreads is None else check_numthreads(numthreads)
    if isinstance(data, bytes | bytearray | memoryview | str) or data is None:
        raise argument_error("data", data, "must be a numeric array", cls=CodecError)
    array = np.asarray(data)
    if array.dtype.kind not in "iuf" or array.size == 0:
        raise argument_error(
            "data", f"{array.dtype} array of shape {array.shape}", "must be a non-empty numeric array", cls=CodecError
        )
    from ..quality import valid_mask

    if container not in CONTAINERS:
        raise argument_error("container", container, f"must be one of {', '.join(CONTAINERS)}", cls=CodecError)
    hdf5 = container == "hdf5"
    if hdf5 and layouts:
        raise argument_error("layouts", layouts, "an HDF5 filter codes the array's own axis order", cls=CodecError)
    block = _check_chunks(chunks, array.shape)
    sizer = None
    if measure is not None:
        if not callable(measure):
            raise argument_error(
                "measure", measure, "must be None or a function (codec, block, chunks=)", cls=CodecError
            )

        def sizer(codec: Any, part: np.ndarray) -> int:
            return int(measure(codec, part, chunks=block or tuple(part.shape)))

    valid = valid_mask(array, fill)
    kind, given, level = _bound(array, valid, tolerance, rel_tolerance, psnr, ratio)
    if kind in ("rel_tolerance", "psnr"):
        from ..quality import range_outlier, range_outlier_message

        found = range_outlier(array, fill, valid=valid)
        if found is not None:
            warnings.warn(range_outlier_message(found), RangeOutlierWarning, stacklevel=2)
    # lossless candidates cannot win on ratio where the bound spans many steps of the data's
    # resolution: they are not coded at all (other objectives weigh speed too)
    lossy_wins = (
        objective == "ratio"
        and kind != "ratio"
        and level > 0
        and _resolution_bits(array, valid, level) >= LOSSLESS_GAP_BITS
    )
    pool = _candidates(array, kind, level, candidates, hdf5, fill, skip_lossless=lossy_wins)
    sample = _plan_sample(array, valid, SAMPLE_SHARE, block)
    if (
        objective == "ratio"
        and block is None
        and len(sample.blocks) == 1
        and SZ3_MIN_VALUES > sample.sizes[0] < array.size
        and any(c.codec == "sperr" and not c.pruned for c in pool)
    ):  # a small array's probe too small to measure sz3 (see SZ3_MIN_VALUES)
        for c in pool:
            c.pruned = c.pruned or c.codec == "sz3"
    pool, unreachable = [c for c in pool if not c.pruned], [c for c in pool if c.pruned]
    everything = list(range(len(sample.blocks)))
    timed = objective != "ratio"
    # One typical block (the middle stratum's; a small array's probe) for every candidate, and the
    # rest of the sample for the survivors.
    first = [everything[len(everything) // 2]]
    inflated = [c for c in pool if "accuracy" in c.params] if objective == "ratio" else []
    _run([c for c in pool if c not in inflated], first, array, sample, fill, threads, timed, sizer)
    if inflated:
        untried = _inflate_zfp(
            pool,
            inflated,
            lambda c: _run([c], first, array, sample, fill, threads, timed, sizer),
            lambda c: _predicted_bytes(c, sample, array.itemsize),
            array.size,
        )
        pool = [c for c in pool if c not in untried]
        unreachable += untried
    whole = sample.elements == array.size  # the block is the array: the final ranking is exact
    # the contenders in other axis orders
    if kind != "ratio" and not hdf5 and (layouts if layouts is not None else whole):
        best = min(_predicted_bytes(c, sample, array.itemsize) for c in pool)
        contenders = [c for c in pool if _predicted_bytes(c, sample, array.itemsize) <= PRUNE_FACTOR * best]
        variants = [
            Candidate(c.codec, c.params, f"{c.label} order={list(order)}", order=order)
            for c in contenders
            for order in _layouts(array.shape)
        ]
        _run(variants, first, array, sample, fill, threads, timed)
        pool += variants
    if len(pool) > 1 and kind != "ratio" and first != everything:
        best = min(_predicted_bytes(c, sample, array.itemsize) for c in pool)
        for c in pool:
            c.pruned = _predicted_bytes(c, sample, array.itemsize) > PRUNE_FACTOR * best
    survivors = [c for c in pool if not c.pruned]
    _run(survivors, everything, array, sample, fill, threads, timed, sizer)
    raw = array.nbytes
    sample_bytes = sample.elements * array.itemsize

    def predicted_ratio(c: Candidate) -> float:
        return raw / _predicted_bytes(c, sample, array.itemsize)

    def record(c: Candidate) -> dict[str, Any]:
        coded = sum(sample.sizes[i] for i in c.sizes)
        return {
            "codec": c.codec,
            "params": c.params,
            "order": None if c.order is None else list(c.order),
            "label": c.label,
            "predicted_ratio": round(predicted_ratio(c), 3) if c.sizes else None,
            "encode_mb_s": round(coded * array.itemsize / max(c.encode_s, 1e-9) / 1e6, 1) if c.sizes else None,
            "blocks": len(c.sizes),
            "pruned": c.pruned,
        }

    if kind == "ratio":
        scores = {id(c): _sample_psnr(c, array, sample, fill) for c in survivors}
        winner = max(survivors, key=lambda c: scores[id(c)])
        reason = f"best sample PSNR ({scores[id(winner)]:.1f} dB) at {level:g}x"
    elif objective == "ratio":
        winner = max(survivors, key=predicted_ratio)
        reason = "highest predicted ratio"
        if not hdf5 and not whole and layouts is None and winner.order is None:
            ordered = _better_order(winner, array, fill, threads)
            if ordered is not None:
                pool.append(ordered)
                winner = ordered
                reason += f" ({ordered.label.split('order=')[1]}: {ordered.gain:.2f}x on a central block)"
    else:
        best_ratio = max(predicted_ratio(c) for c in survivors)
        fast_enough = [c for c in survivors if objective == "balanced" or predicted_ratio(c) >= best_ratio / 2]

        def cost(c: Candidate) -> float:
            seconds = c.encode_s + c.decode_s
            if objective == "balanced":
                seconds += sample_bytes / predicted_ratio(c) / _LINK_BYTES_PER_S
            return seconds

        winner = min(fast_enough, key=cost)
        reason = (
            "fastest encode + decode within half the best ratio"
            if objective == "speed"
            else "least time to encode, move at 100 MB/s and decode"
        )
    codec = winner.make(fill)
    codec.choice = {
        "bound": {kind: given},
        "tolerance": None if kind == "ratio" else level,
        "objective": objective,
        "layouts": (bool(layouts if layouts is not None else whole) or winner.order is not None) and not hdf5,
        "container": container,
        "chosen": winner.label,
        "reason": reason,
        "sample": {
            "blocks": len(sample.blocks),
            "block_shape": list(sample.block_shape),
            "share": round(sample.elements / array.size, 4),
        },
        "search_seconds": round(time.perf_counter() - started, 4),
        "candidates": [record(c) for c in pool + unreachable],
    }
    return codec


class AutoCodec:
    """A codec that chooses the best codec of the table (:func:`choose`) for each array it encodes.

    ``sciz.codecs.get("auto", tolerance=1e-3)``. Its streams are those of the chosen codec: any sciz
    decodes them (:func:`sciz.codecs.decode`). :attr:`chosen` is the last codec chosen.
    """

    name = "auto"
    error = CodecError

    def __init__(
        self,
        *,
        tolerance: float | None = None,
        rel_tolerance: float | None = None,
        psnr: float | None = None,
        ratio: float | None = None,
        objective: str = "ratio",
        candidates: Sequence[str] | None = None,
        fill_value: float | None = None,
    ) -> None:
        kind, value = _one_bound(tolerance, rel_tolerance, psnr, ratio, "auto: ")
        if objective not in OBJECTIVES:
            raise argument_error("objective", objective, f"must be one of {', '.join(OBJECTIVES)}", cls=CodecError)
        self._bound = {kind: value}
        self.objective = objective
        self.candidates = None if candidates is None else list(candidates)
        self.fill_value = check_fill_value(fill_value, CodecError)
        self.chosen: Any = None

    @property
    def codec_id(self) -> str:
        return "sciz_auto"

    @property
    def tolerance(self) -> float | None:
        """The absolute bound when one was given (a relative or PSNR bound depends on each array)."""
        return self._bound.get("tolerance")

    @property
    def lossless(self) -> bool:
        return self.tolerance == 0.0

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = dict(self._bound)
        if self.objective != "ratio":
            params["objective"] = self.objective
        if self.candidates is not None:
            params["candidates"] = self.candidates
        return params

    def get_config(self) -> dict[str, Any]:
        config = {"id": self.name, **self.params()}
        if self.fill_value is not None:
            config["fill_value"] = self.fill_value
        return config

    def choose(
        self,
        data: Any,
        *,
        numthreads: int | None = None,
        hdf5: bool = False,
        chunks: Sequence[int] | None = None,
        measure: Callable[..., int] | None = None,
    ) -> Any:
        """The codec :func:`choose` picks for ``data`` (also kept as :attr:`chosen`).

        ``hdf5=True`` chooses for a container that stores it through its registered HDF5 filter
        (``container="hdf5"``: the codecs with one), in ``chunks`` if given, each measured by
        ``measure`` (the container's :func:`sciz.formats._hdf5.filtered_size`).
        """
        self.chosen = choose(
            data,
            tolerance=self._bound.get("tolerance"),
            rel_tolerance=self._bound.get("rel_tolerance"),
            psnr=self._bound.get("psnr"),
            ratio=self._bound.get("ratio"),
            objective=self.objective,
            candidates=self.candidates,
            fill_value=self.fill_value,
            numthreads=numthreads,
            container="hdf5" if hdf5 else "sciz",
            chunks=chunks,
            measure=measure,
        )
        return self.chosen

    def encode(self, data: Any, *, out: Any = None, numthreads: int | None = None) -> Any:
        """Choose for ``data`` and encode it with the chosen codec (its sciz stream)."""
        return self.choose(data, numthreads=numthreads).encode(data, out=out, numthreads=numthreads)

    def decode(self, data: Any, **kwargs: Any) -> np.ndarray:
        """Decode a stream of any sciz codec (:func:`sciz.codecs.decode`)."""
        return decode_stream(data, None, CodecError, **kwargs)

    def hdf5_filter(self, array: Any) -> dict[str, Any] | None:
        """The registered HDF5 filter of the codec chosen for ``array``, if it has one."""
        result: dict[str, Any] | None = self.choose(array, hdf5=True).hdf5_filter(array)
        return result

    def check_array(self, data: Any) -> np.ndarray:
        return np.asarray(data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AutoCodec) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.get_config().items())))

    def __repr__(self) -> str:
        return f"AutoCodec({', '.join(f'{k}={v!r}' for k, v in self.get_config().items() if k != 'id')})"
