"""sciz's one HDF5 chunk path: the chunk writer and reader of hspy files and AFM ``.h5`` bundles, kept safe.

* Writing: :func:`write_deflate_chunks` compresses (shuffle +) deflate chunks on all cores and stores
  them directly; :class:`LossyDatasetWriter` writes through the lossy filters (below).
* Reading: :func:`read_dataset` is the one read path. Chunks sciz decodes itself (deflate with or
  without shuffle, the lossy filters; optional Fletcher-32) are read by the calling thread through
  the one open file handle and decoded on all cores from plain bytes: worker threads never call
  h5py (whose global lock the caller may hold), and a file replaced during the read is never mixed
  in. Other layouts are read by h5py; every failure is a FormatError naming the file and object.
* Safety: :func:`get` and :func:`items` resolve names link by link inside the file (external links,
  soft-link cycles refused), :func:`check_dataset` refuses external raw storage, virtual datasets
  and sizes beyond this process's memory, :func:`open_file` wraps HDF5's open errors.

The rest of these notes concern the lossy filters (ZFP 32013, SZ3 32024, SPERR 32028), safe both ways.

Writing. The lossy filters must never see NaN, +-Inf or a fill value: they destroy them silently
(hdf5plugin's SZ3 returns NaN as about -2.1e7..-2.1e12 and is ~100x slower on NaN chunks; ZFP and
SPERR mangle them). Such elements are replaced smoothly (:func:`sciz.codecs.driver.fill_invalid`)
before the filter runs, and their kind is kept exactly in a small ``uint8`` *mask dataset*:

* ``<data>`` carries the attributes ``sciz_mask`` and ``ancillary_variables`` (the CF-1.8 way of
  naming an associated variable; both hold the mask's absolute path) and, when one was given,
  ``sciz_fill_value``;
* the mask (default ``<data>_mask`` beside it; same shape and chunks, gzip) holds ``0`` valid,
  ``1`` NaN, ``2`` +Inf, ``3`` -Inf, ``4`` the fill value, described by the CF attributes
  ``flag_values`` and ``flag_meanings``.

A plain h5py + hdf5plugin reader therefore sees finite, smoothly filled data plus the mask that
says which elements are not data (``np.where(mask == 1, np.nan, data)``); sciz's readers restore
the exact values. Every chunk is read back after writing and checked element by element against
the bound; a chunk the filter cannot keep within it is stored unfiltered instead (HDF5's per-chunk
filter mask, which every HDF5 reader honours), so the bound always holds.

Reading. Chunks of these filters are read directly (``read_direct_chunk``), their filter
parameters (``cd_values``) and headers checked against the dataset's shape and dtype, and decoded
through :func:`sciz.codecs.driver.decode_payload`, never by the filter itself:

* ZFP: H5Z-ZFP keeps the zfp header in ``cd_values[1:]`` (``cd_values[0]`` packs the zfp,
  codec and filter versions) and only the bit stream in the chunk; header + chunk is a zfp stream.
* SPERR: an H5Z-SPERR chunk is one missing-value-mode byte (only mode 0, no missing values, is
  accepted) and a SPERR stream: 3-D with its own header, 2-D without (its 10-byte header is
  rebuilt from ``cd_values``). The filter passes the chunk's axes to SPERR in HDF5 order unless
  the swap bit of ``cd_values[1]`` is set; the stream is decoded in the order it was coded.
* SZ3: hdf5plugin embeds a 2022 SZ3 whose streams no other SZ3 engine reads (imagecodecs' SZ3 3.3
  aborts the process on them). The chunk's framing (8-byte length + zstd frame) is checked and
  fully unpacked here first; the SZ3 step then runs in a forked child process, so a hostile chunk
  that crashes or hangs SZ3 (or makes it call ``exit``) becomes an error instead.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from .._util import usable_cores
from ..codecs.driver import run_parallel
from ..errors import CodecError, FormatError
from ._guard import check_declared_size

__all__ = [
    "FILTER_CODECS",
    "LossyDatasetWriter",
    "apply_mask",
    "check_dataset",
    "chunk_origins",
    "chunk_plan",
    "dataset_storage",
    "deflate_chunk",
    "filter_codec",
    "get",
    "is_mask_dataset",
    "items",
    "mask_path",
    "open_file",
    "read_dataset",
    "read_lossy",
    "write_deflate_chunks",
]

FILTER_ZFP, FILTER_SZ3, FILTER_SPERR = 32013, 32024, 32028
#: The lossy HDF5 filters whose chunks sciz decodes itself, and the sciz codec of each.
FILTER_CODECS = {FILTER_ZFP: "zfp", FILTER_SZ3: "sz3", FILTER_SPERR: "sperr"}

VALID, NAN, POSINF, NEGINF, FILL = 0, 1, 2, 3, 4
FLAG_MEANINGS = "valid nan positive_infinity negative_infinity fill_value"
MASK_ATTR, FILL_ATTR = "sciz_mask", "sciz_fill_value"

#: A forked SZ3 decoding child gets this long, plus a second per MiB of output.
_CHILD_SECONDS = 60.0
#: Decoded bytes of chunks read before they are decoded and placed (a batch; one SZ3 child each).
_BATCH_BYTES = 64 << 20


def chunk_origins(
    shape: tuple[int, ...], chunks: tuple[int, ...], region: tuple[slice, ...] | None = None
) -> Iterator[tuple[int, ...]]:
    """Origins of the chunks that intersect ``region`` (all of ``shape`` by default), in C order."""
    region = _full_region(shape) if region is None else region
    ranges = [
        range((r.start // c) * c, r.stop, c) if r.stop > r.start else range(0)
        for r, c in zip(region, chunks, strict=True)
    ]
    yield from itertools.product(*ranges)


def _full_region(shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in shape)


# ----- masks -------------------------------------------------------------------------------------
def invalid_codes(block: np.ndarray, fill_value: Any = None) -> np.ndarray | None:
    """The mask codes of ``block`` (uint8, same shape), or None when every element is valid data."""
    if block.dtype.kind != "f":
        return None
    finite = np.isfinite(block)
    fill = None if fill_value is None else block.dtype.type(fill_value)
    is_fill = (block == fill) if fill is not None and np.isfinite(fill) else None
    if finite.all() and (is_fill is None or not is_fill.any()):
        return None
    codes = np.zeros(block.shape, np.uint8)
    codes[np.isnan(block)] = NAN
    codes[np.isposinf(block)] = POSINF
    codes[np.isneginf(block)] = NEGINF
    if is_fill is not None:
        codes[is_fill] = FILL
    return codes


def _text_attr(dataset: Any, name: str) -> str | None:
    value = dataset.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, bytes | np.bytes_):
        value = bytes(value).decode("utf-8", "replace")
    return str(value)


def mask_path(dataset: Any, where: str = "") -> str | None:
    """The absolute path of ``dataset``'s sciz mask, or None when it has none.

    The writer names the mask twice (``sciz_mask`` and CF's ``ancillary_variables``), so one damaged
    attribute is found instead of silently dropping the mask: when both are present they must agree,
    and an ``ancillary_variables`` alone counts when it names a sciz mask dataset.
    """
    own, cf = _text_attr(dataset, MASK_ATTR), _text_attr(dataset, "ancillary_variables")
    if own is not None and cf is not None and own != cf:
        raise FormatError(
            f"{where or dataset.name}: its mask is named {own!r} by {MASK_ATTR} but {cf!r} by ancillary_variables"
        )
    if own is None and cf is not None and cf.startswith("/"):
        target = get(dataset.file, cf, where or dataset.name)
        import h5py

        return cf if isinstance(target, h5py.Dataset) and is_mask_dataset(target) else None
    return own


def is_mask_dataset(dataset: Any) -> bool:
    """Whether ``dataset`` is a sciz NaN/Inf mask (written by :class:`LossyDatasetWriter`)."""
    meanings = dataset.attrs.get("flag_meanings")
    if isinstance(meanings, bytes | np.bytes_):
        meanings = bytes(meanings).decode("utf-8", "replace")
    return bool(meanings == FLAG_MEANINGS and dataset.dtype == np.uint8)


def apply_mask(dataset: Any, array: np.ndarray, region: tuple[slice, ...] | None = None, *, where: str = "") -> None:
    """Put the exact NaN/Inf/fill values back into ``array`` (``dataset[region]``), in place."""
    where = where or dataset.name
    path = mask_path(dataset, where)
    if path is None:
        return
    import h5py

    mask = get(dataset.file, path, where)
    if not isinstance(mask, h5py.Dataset) or mask.shape != dataset.shape or mask.dtype != np.uint8:
        raise FormatError(f"{where}: its mask {path!r} is missing or is not a uint8 array of shape {dataset.shape}")
    codes = np.asarray(mask[region if region is not None else ()])
    if codes.size and int(codes.max()) > FILL:
        raise FormatError(f"{where}: its mask {path!r} holds code {int(codes.max())}; codes are 0-4 ({FLAG_MEANINGS})")
    if not codes.any():
        return
    if array.dtype.kind != "f":
        raise FormatError(f"{where}: a NaN/Inf mask on {array.dtype} data")
    array[codes == NAN] = np.nan
    array[codes == POSINF] = np.inf
    array[codes == NEGINF] = -np.inf
    if (codes == FILL).any():
        if FILL_ATTR not in dataset.attrs:
            raise FormatError(f"{where}: its mask marks fill values but the data has no {FILL_ATTR} attribute")
        fill = np.asarray(dataset.attrs[FILL_ATTR])
        if fill.size != 1 or fill.dtype.kind not in "biuf":  # an empty one was a raw IndexError
            raise FormatError(f"{where}: its {FILL_ATTR} attribute {fill!r} is not one real number")
        array[codes == FILL] = fill.astype(array.dtype).reshape(-1)[0]


# ----- safe access -------------------------------------------------------------------------------
#: Deepest group nesting, soft links followed per lookup, and objects visited by a walk that sciz
#: accepts: deep, cyclic or exploding structures are a clean error, never a RecursionError or a hang.
MAX_DEPTH, MAX_SOFT_LINKS, MAX_OBJECTS = 64, 32, 1_000_000


def open_file(path: Any) -> Any:
    """``path`` opened read-only with h5py (hdf5plugin's filters registered when installed).

    Raises :class:`~sciz.errors.FormatError` naming the file when HDF5 cannot open it.
    """
    from ._base import require

    h5py = require("h5py", "hdf5")
    with contextlib.suppress(ImportError):
        import hdf5plugin  # noqa: F401  (registers the plugin filters: zfp, sz3, blosc...)
    try:
        handle = h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        raise FormatError(f"{path}: not a readable HDF5 file ({type(exc).__name__}: {exc})") from None
    try:
        probe(handle, str(path))
    except BaseException:
        handle.close()
        raise
    return handle


#: Seconds the probe of a file's structure may take (it reads metadata only).
PROBE_TIMEOUT = 120.0


def probe(handle: Any, where: str) -> None:
    """Walk everything the HDF5 library will parse for a read — every object's header, attribute and
    chunk index — in a forked child first, so that a damaged file crashes the child, not the caller.

    The HDF5 library is the only parser of these structures and it is not hardened: a flipped bit
    in an attribute's header made it dereference garbage (SIGSEGV in ``attrs[...]``, found by the
    mutation suite). The child runs the same deterministic code on the same bytes through the
    caller's open handle, so a file the child walks cleanly is safe to walk here. Where processes
    cannot be forked, there is no probe.
    """
    import os

    if not hasattr(os, "fork"):
        return
    from h5py import _objects

    from ..codecs._isolate import run_in_child

    def walk(result: np.ndarray) -> None:
        import h5py

        seen: set[int] = set()

        def attributes(node: Any) -> None:
            for key in node.attrs:
                with contextlib.suppress(Exception):  # an unreadable value is the reader's error to raise
                    node.attrs[key]

        def visit(node: Any, depth: int) -> None:
            # Hop by hop from the parent (h5py's visititems opens each object by its full path:
            # 9 s for 3000 nested groups), hard links only, as deep as the readers go.
            attributes(node)
            if isinstance(node, h5py.Dataset):
                node.dtype, node.shape, node.chunks, node.external, node.is_virtual  # noqa: B018
                dataset_id = node.id
                for index in range(min(dataset_id.get_num_chunks(), MAX_OBJECTS) if node.chunks else 0):
                    dataset_id.get_chunk_info(index)
                return
            if not isinstance(node, h5py.Group) or depth >= MAX_DEPTH:
                return
            for name in list(node):
                if not isinstance(node.get(name, getlink=True), h5py.HardLink):
                    continue
                child = node[name]
                address = h5py.h5o.get_info(child.id).addr
                if address in seen or len(seen) >= MAX_OBJECTS:
                    continue
                seen.add(address)
                with contextlib.suppress(Exception):  # the reader raises its own error for this object
                    visit(child, depth + 1)

        with contextlib.suppress(Exception):
            visit(handle["/"], 0)

    def crashed(message: str) -> FormatError:
        return FormatError(f"{where}: the HDF5 library fails on this file's structure ({message})")

    # h5py's global lock is held across the fork: a thread holding it then would leave it locked in the child.
    run_in_child(
        walk, (0,), np.dtype("u1"), error=crashed, timeout=PROBE_TIMEOUT, what="reading it", locks=[_objects.phil]
    )


def get(group: Any, name: str, where: str) -> Any:
    """``group[name]`` (or None when it does not exist), resolved link by link inside the file.

    External links are refused (they read other files), soft links are followed only within the
    file and at most :data:`MAX_SOFT_LINKS` deep (a cycle is an error), and a dataset found is
    checked with :func:`check_dataset`. Errors name ``where`` and the entry.
    """
    import h5py

    absolute = name.startswith("/")
    node = group.file["/"] if absolute else group
    base = "" if absolute else group.name.rstrip("/")
    parts = [part for part in name.split("/") if part and part != "."]
    hops = 0
    position = 0
    while position < len(parts):
        part = parts[position]
        entry = f"{base}/{part}"
        if not isinstance(node, h5py.Group):
            raise FormatError(f"{where}: {base or '/'} is not a group, so {name!r} cannot be found in it")
        try:
            link = node.get(part, getlink=True)
            if link is None:
                return None
            if isinstance(link, h5py.ExternalLink):
                raise FormatError(
                    f"{where}: {entry} is an external link to {link.filename}:{link.path}; sciz reads nothing "
                    "outside the file"
                )
            if isinstance(link, h5py.SoftLink):
                hops += 1
                if hops > MAX_SOFT_LINKS:
                    raise FormatError(f"{where}: {entry} is a soft link in a cycle (over {MAX_SOFT_LINKS} links)")
                target = str(link.path)
                rest = parts[position + 1 :]
                if target.startswith("/"):
                    node, base = group.file["/"], ""
                parts = [p for p in target.split("/") if p and p != "."] + rest
                position = 0
                continue
            if not isinstance(link, h5py.HardLink):
                raise FormatError(f"{where}: {entry} is a {type(link).__name__}; sciz follows hard and soft links only")
            node = node[part]
        except FormatError:
            raise
        except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise FormatError(f"{where}: {entry} cannot be read ({type(exc).__name__}: {exc})") from None
        base = entry
        position += 1
    if isinstance(node, h5py.Dataset):
        check_dataset(node, f"{where}: {node.name}" if node.name else where)
    return node


def items(group: Any, where: str) -> list[tuple[str, Any]]:
    """The (name, object) pairs of ``group``, each found through :func:`get`.

    The names are listed first and the objects looked up one by one: h5py's ``items()`` holds the
    HDF5 lock while its caller works on each item, which stalls any thread that then calls h5py.
    """
    try:
        names = list(group.keys())
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise FormatError(f"{where}: group {group.name} cannot be listed ({type(exc).__name__}: {exc})") from None
    return [(name, get(group, name, where)) for name in names]


def check_dataset(dataset: Any, where: str) -> None:
    """Refuse a dataset whose data lives outside the file or cannot fit in this machine's memory.

    External raw storage (``dataset.external``, e.g. ``/etc/passwd``) and virtual datasets (which
    map other files) are refused; so are sizes above :func:`sciz._util.memory_budget` (chunks
    may compress far, so the file's size is no bound; HDF5 itself refuses reads past its end).
    """
    try:
        external = dataset.external
        virtual = dataset.is_virtual
        shape = tuple(int(n) for n in dataset.shape) if dataset.shape is not None else ()
        itemsize = int(dataset.dtype.itemsize)
        # A damaged attribute table hides attributes from attrs.get (e.g. the NaN mask's name).
        list(dataset.attrs.keys())
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise FormatError(f"{where}: its layout or attributes cannot be read ({type(exc).__name__}: {exc})") from None
    if external:
        files = ", ".join(str(entry[0]) for entry in external)
        raise FormatError(f"{where}: its data is stored in other files ({files}); sciz reads nothing outside the file")
    if virtual:
        raise FormatError(f"{where}: a virtual dataset (it maps other datasets or files); sciz does not read those")
    nbytes = math.prod(shape) * itemsize
    check_declared_size(nbytes, where, f"{shape} x {itemsize} bytes")


# ----- writing -----------------------------------------------------------------------------------
class LossyDatasetWriter:
    """Writes one float dataset through a codec's HDF5 filter, block by block (chunk-aligned blocks).

    NaN/Inf (and ``fill_value``) never reach the filter: they are filled smoothly and recorded in
    the mask dataset (``mask_name``, default ``<name>_mask`` beside the data), created on the
    first block that needs it. Each block is read back and checked against the codec's bound;
    chunks that miss it are rewritten unfiltered.
    """

    def __init__(
        self,
        group: Any,
        name: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        chunks: tuple[int, ...],
        codec: Any,
        sample: np.ndarray,
        *,
        mask_name: str | None = None,
        fill_value: Any = None,
        filter_options: dict[str, Any] | None = None,
    ) -> None:
        self.codec = codec
        # The codec's own fill value (sciz.codecs.get(..., fill_value=1e20)) serves when none is given here.
        fill_value = _fill_value(codec, fill_value)
        self.fill_value = fill_value
        self.tolerance = codec.tolerance if dtype.kind == "f" else None
        options = filter_options if filter_options is not None else hdf5_filter_options(codec, sample, fill_value)
        # Fletcher-32 after the lossy filter: every HDF5 reader (and sciz's) detects damaged chunks.
        # Almost no chunk cache (h5py ignores 0; chunks above the cache size bypass it): each write
        # goes through the filter to the file and each read-back decodes what was stored. A cached
        # chunk would verify the values before the filter, and be flushed over an unfiltered chunk.
        self.dataset = group.create_dataset(
            name, shape=shape, dtype=dtype, chunks=chunks, fletcher32=True, rdcc_nbytes=1, **options
        )
        self.group = group
        self.mask_name = mask_name or f"{name}_mask"
        self.mask: Any = None
        #: Chunks stored unfiltered because the filter missed the bound on them.
        self.unfiltered_chunks = 0
        if fill_value is not None:
            self.dataset.attrs[FILL_ATTR] = np.asarray(fill_value, dtype=dtype)
        self.dataset.attrs["sciz_codec"] = _config_text(codec)

    def _mask_dataset(self) -> Any:
        if self.mask is None:
            dataset = self.dataset
            mask = self.group.create_dataset(
                self.mask_name,
                shape=dataset.shape,
                dtype=np.uint8,
                chunks=dataset.chunks,
                compression="gzip",
                compression_opts=4,
            )
            mask.attrs["flag_values"] = np.arange(FILL + 1, dtype=np.uint8)
            mask.attrs["flag_meanings"] = FLAG_MEANINGS
            mask.attrs["long_name"] = f"which elements of {dataset.name} are not data (0 = data)"
            dataset.attrs[MASK_ATTR] = mask.name
            dataset.attrs["ancillary_variables"] = mask.name
            self.mask = mask
        return self.mask

    def write(self, region: tuple[slice, ...], block: np.ndarray) -> None:
        """Write ``block`` at ``region`` (chunk-aligned), keeping its NaN/Inf exact and the bound."""
        block = np.asarray(block, dtype=self.dataset.dtype)
        codes = invalid_codes(block, self.fill_value)
        filled = block
        if codes is not None:
            self._mask_dataset()[region] = codes
            from ..codecs.driver import fill_invalid

            filled = fill_invalid(block, codes != VALID, _fill_method(self.codec))
        self.dataset[region] = filled
        if self.tolerance is not None:
            self._verify(region, filled, codes)

    def _verify(self, region: tuple[slice, ...], filled: np.ndarray, codes: np.ndarray | None) -> None:
        # What every reader decodes (the filter, on chunks this process just wrote), element by element.
        decoded = self.dataset[region]
        error = np.abs(decoded.astype(np.float64) - filled.astype(np.float64))
        misses = ~(error <= self.tolerance)
        if codes is not None:
            misses &= codes == VALID
        if not misses.any():
            return
        chunks = tuple(self.dataset.chunks)
        origins = {
            tuple(int(p) // c * c for p, c in zip(position, chunks, strict=True))
            for position in zip(*np.nonzero(misses), strict=True)
        }
        for local in sorted(origins):
            self._store_unfiltered(region, local, filled)

    def _store_unfiltered(self, region: tuple[slice, ...], local: tuple[int, ...], filled: np.ndarray) -> None:
        """Store the chunk at ``local`` (relative to ``region``) exactly, with every filter skipped."""
        dataset = self.dataset
        chunks = tuple(dataset.chunks)
        origin = tuple(r.start + o for r, o in zip(region, local, strict=True))
        part = filled[tuple(slice(o, o + c) for o, c in zip(local, chunks, strict=True))]
        full = np.zeros(chunks, dataset.dtype)  # HDF5 stores edge chunks at full size
        full[tuple(slice(0, n) for n in part.shape)] = part
        raw = full.tobytes()
        # Filter mask 1: the lossy filter skipped, the checksum kept.
        dataset.id.write_direct_chunk(origin, raw + struct.pack("<I", fletcher32(raw)), filter_mask=1)
        self.unfiltered_chunks += 1

    def write_array(self, array: np.ndarray) -> None:
        """Write a whole in-memory array, a few chunk rows (at most ~64 MiB) at a time."""
        if array.size == 0:
            return
        chunks = tuple(self.dataset.chunks)
        row_bytes = math.prod(array.shape[1:]) * chunks[0] * array.dtype.itemsize
        step = chunks[0] * max(1, (64 << 20) // max(1, row_bytes))
        for start in range(0, array.shape[0], step):
            region = (slice(start, min(start + step, array.shape[0])), *_full_region(array.shape[1:]))
            self.write(region, array[region])


def deflate_chunk(block: np.ndarray, chunks: tuple[int, ...], level: int, shuffle: bool) -> bytes:
    """One chunk as HDF5's (shuffle +) deflate filters store it, compressed with libdeflate.

    Edge blocks are padded to the full chunk (HDF5 stores edge chunks whole; the part outside the
    dataset is never read). Runs in worker threads: pure numpy and imagecodecs, no h5py.
    """
    import imagecodecs

    if block.shape != chunks:
        padded = np.zeros(chunks, dtype=block.dtype)
        padded[tuple(slice(0, n) for n in block.shape)] = block
        block = padded
    raw = np.ascontiguousarray(block).reshape(-1).view(np.uint8)
    if shuffle and block.dtype.itemsize > 1:  # the first bytes of all elements, then all second bytes, ...
        raw = np.ascontiguousarray(raw.reshape(-1, block.dtype.itemsize).T)
    encode: Any = imagecodecs.deflate_encode  # zlib-wrapped, as HDF5's deflate filter stores it
    return bytes(encode(raw, level=max(1, min(int(level), 12))))


def write_deflate_chunks(
    dataset: Any,
    blocks: Iterable[tuple[tuple[int, ...], np.ndarray]],
    *,
    level: int,
    shuffle: bool,
    pool: Executor | None = None,
    advance: Callable[[int], None] | None = None,
) -> None:
    """Write ``(origin, block)`` pairs of a deflate (+ shuffle) ``dataset``, compressed on all cores.

    The one HDF5 chunk writer: HDF5 compresses on one thread, so the blocks are compressed by
    :func:`deflate_chunk` in worker threads and only this thread calls h5py, storing each finished
    chunk as it is (``write_direct_chunk``) with a bounded look-ahead (a few chunks per worker,
    never the whole array). ``advance(nbytes)`` is called per chunk written (progress bars).
    """
    chunks = tuple(int(c) for c in dataset.chunks)
    workers = usable_cores()
    owned = pool is None
    executor = ThreadPoolExecutor(workers, thread_name_prefix="sciz-h5-write") if pool is None else pool
    pending: deque[tuple[tuple[int, ...], int, Future[bytes]]] = deque()

    def store_oldest() -> None:
        origin, nbytes, future = pending.popleft()
        dataset.id.write_direct_chunk(origin, future.result())
        if advance is not None:
            advance(nbytes)

    try:
        for origin, block in blocks:
            pending.append((origin, block.nbytes, executor.submit(deflate_chunk, block, chunks, level, shuffle)))
            while len(pending) > 2 * workers:
                store_oldest()
        while pending:
            store_oldest()
    finally:
        for _, _, future in pending:
            future.cancel()
        if owned:
            executor.shutdown(wait=True)


def _fill_value(codec: Any, fill_value: Any) -> Any:
    return fill_value if fill_value is not None else getattr(codec, "fill_value", None)


def _fill_method(codec: Any) -> str:
    """How the codec's engine likes masked elements filled (see sciz.codecs.driver.fill_invalid)."""
    return str(getattr(codec, "fill_method", "linear"))


def _config_text(codec: Any) -> str:
    import json

    return json.dumps(codec.get_config())


def hdf5_filter_options(codec: Any, sample: np.ndarray, fill_value: Any = None) -> dict[str, Any]:
    """The codec's h5py filter keywords, planned on ``sample`` as the filter will see it (filled)."""
    values = np.asarray(sample)
    codes = invalid_codes(values, _fill_value(codec, fill_value))
    if codes is not None:
        from ..codecs.driver import fill_invalid

        values = fill_invalid(values, codes != VALID, _fill_method(codec))
    options = codec.hdf5_filter(values)
    if options is None:
        raise CodecError(
            f"the {codec.name} codec has no registered HDF5 filter, so other HDF5 readers could not decode it; "
            "save as .zspy (compressor=...) or pick zfp, sz3, sperr or szip"
        )
    return dict(options)


# ----- reading -----------------------------------------------------------------------------------
FILTER_FLETCHER32 = 3


def fletcher32(data: bytes) -> int:
    """HDF5's Fletcher-32 checksum of ``data`` (H5_checksum_fletcher32: big-endian 16-bit words,
    sums folded every 360 words), as its filter appends it (little-endian) to each chunk."""
    octets = np.frombuffer(data, np.uint8)
    odd = octets.size % 2
    words = (octets[: octets.size - odd : 2].astype(np.uint64) << np.uint64(8)) | octets[1 : octets.size - odd : 2]
    sum1 = sum2 = 0
    for start in range(0, words.size, 360):
        block = words[start : start + 360]
        sum2 += block.size * sum1 + int(block @ np.arange(block.size, 0, -1, dtype=np.uint64))
        sum1 += int(block.sum())
        sum1, sum2 = (sum1 & 0xFFFF) + (sum1 >> 16), (sum2 & 0xFFFF) + (sum2 >> 16)
    if odd:
        sum1 += int(octets[-1]) << 8
        sum2 += sum1
        sum1, sum2 = (sum1 & 0xFFFF) + (sum1 >> 16), (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1, sum2 = (sum1 & 0xFFFF) + (sum1 >> 16), (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


def _filters(dataset: Any) -> list[tuple[int, int, tuple[int, ...]]]:
    plist = dataset.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, flags, values, _ = plist.get_filter(i)
        out.append((int(code), int(flags), tuple(int(v) for v in values)))
    return out


def filter_codec(dataset: Any) -> str | None:
    """The sciz codec whose lossy HDF5 filter ``dataset`` uses (decoded by :func:`read_lossy`), or None."""
    if dataset.chunks is None:
        return None
    filters = _filters(dataset)
    lossy = [code for code, _, _ in filters if code in FILTER_CODECS]
    if not lossy:
        return None
    if len(filters) != 1 and [code for code, _, _ in filters[1:]] != [FILTER_FLETCHER32]:
        names = ", ".join(str(code) for code, _, _ in filters)
        raise FormatError(
            f"{dataset.name}: the lossy filter {lossy[0]} is combined with other filters ({names}); sciz reads "
            "these filters only on their own or followed by fletcher32"
        )
    return FILTER_CODECS[lossy[0]]


#: HDF5's own filters by id (h5py names them), for ``sciz info``.
_BUILTIN_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset", 32000: "lzf"}
#: Filters that protect or rearrange bytes; the codec is the other one.
_HELPER_FILTERS = {2, 3}


def dataset_storage(dataset: Any) -> Any:
    """How an h5py dataset is stored, for ``sciz info``: codec, its parameters, bytes on disk, chunks.

    The codec is named by the sciz codec table (``32024`` -> ``sz3``, the hdf5plugin ids) or by
    HDF5 (``gzip``); its parameters come from the ``sciz_codec`` attribute sciz writes beside its
    lossy filters, else from the filter's own values (``cd_values``, as other writers leave them).
    """
    import json

    from ..codecs.registry import CODECS
    from ..model import StoredArray

    by_filter = {spec.hdf5_filter_id: name for name, spec in CODECS.items() if spec.hdf5_filter_id is not None}
    by_filter.update({code: name for code, name in _BUILTIN_FILTERS.items() if code not in by_filter})
    filters = _filters(dataset)
    names = [by_filter.get(code, f"HDF5 filter {code}") for code, _, _ in filters]
    main = [(code, values) for code, _, values in filters if code not in _HELPER_FILTERS]
    codec = by_filter.get(main[0][0], f"HDF5 filter {main[0][0]}") if main else "none"
    parameters: dict[str, Any] = {}
    text = _text_attr(dataset, "sciz_codec")
    if text:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            parameters = {k: v for k, v in json.loads(text).items() if k != "id"}
    elif main and main[0][0] not in _BUILTIN_FILTERS:
        parameters = {"cd_values": list(main[0][1])}
    elif main and main[0][0] == 1 and main[0][1]:
        parameters = {"level": main[0][1][0]}
    details: dict[str, Any] = {
        "HDF5 filters": ", ".join(f"{c} ({n})" for (c, _, _), n in zip(filters, names, strict=True))
    }
    if not filters:
        details = {}
    return StoredArray(
        codec=codec,
        stored_bytes=int(dataset.id.get_storage_size()),
        chunks=tuple(dataset.chunks) if dataset.chunks else None,
        parameters=parameters,
        details=details,
    )


class _ChunkPlan:
    """How to turn one stored chunk of a dataset into an engine payload (validated against the dataset)."""

    codec = ""

    def __init__(self, dataset: Any, values: tuple[int, ...], where: str) -> None:
        self.where = where
        self.chunks = tuple(int(c) for c in dataset.chunks)
        self.dtype = np.dtype(dataset.dtype)
        self.values = values

    def fail(self, message: str) -> FormatError:
        return FormatError(f"{self.where}: {message}")

    def payload(self, raw: bytes, origin: tuple[int, ...], filter_mask: int = 0) -> Any:
        """The engine payload for a chunk stored at ``origin``; raises FormatError on a bad chunk."""
        raise NotImplementedError

    def target(self, chunk: np.ndarray) -> np.ndarray:
        """The view of a C-contiguous chunk buffer that the engine decodes into."""
        return chunk

    def decode(self, items: list[tuple[Any, np.ndarray, str]]) -> None:
        """Decode (payload, chunk buffer, where) items into their buffers."""
        from ..codecs.driver import decode_payload
        from ..codecs.registry import spec

        row = spec(self.codec)
        method = row.method
        assert method is not None

        def one(item: tuple[Any, np.ndarray, str]) -> None:
            payload, chunk, where = item
            decode_payload(method, payload, self.target(chunk), {}, row.error, where)

        run_parallel(lambda i: one(items[i]), len(items), usable_cores())


def _used_dims(chunks: tuple[int, ...]) -> list[int]:
    return [c for c in chunks if c != 1]


class _ZfpPlan(_ChunkPlan):
    """H5Z-ZFP: ``cd_values[0]`` packs the zfp, codec and filter versions; ``cd_values[1:]`` is the zfp header."""

    codec = "zfp"
    _TYPES: ClassVar[dict[int, str]] = {1: "i4", 2: "i8", 3: "f4", 4: "f8"}

    def __init__(self, dataset: Any, values: tuple[int, ...], where: str) -> None:
        super().__init__(dataset, values, where)
        if len(values) < 4:
            raise self.fail(f"ZFP filter parameters {list(values)} are too short to hold a zfp header")
        filter_version, codec, library = values[0] & 0xFFF, (values[0] >> 12) & 0xF, values[0] >> 16
        if filter_version < 0x110:  # older filters stored only the library version: the codec follows from it
            codec = 5 if (library << 4) >= 0x500 else 4
        if codec != 5:
            raise self.fail(f"chunks were written with zfp codec version {codec}; sciz's zfp decodes version 5")
        header = np.array(values[1:], dtype="<u4").tobytes()
        if header[:3] != b"zfp":
            header = np.array(values[1:], dtype=">u4").tobytes()  # written on a big-endian machine
        if header[:3] != b"zfp" or header[3] != 5:
            raise self.fail("ZFP filter parameters hold no zfp (codec 5) header")
        bits = np.unpackbits(np.frombuffer(header, np.uint8), bitorder="little")

        def field(start: int, count: int) -> int:
            return int(sum(int(b) << i for i, b in enumerate(bits[start : start + count])))

        meta = field(32, 52)
        scalar, dims = (meta & 3) + 1, ((meta >> 2) & 3) + 1
        width = {1: 48, 2: 24, 3: 16, 4: 12}[dims]
        sizes = [((meta >> (4 + width * i)) & ((1 << width) - 1)) + 1 for i in range(dims)]  # x (fastest) first
        expected = _used_dims(self.chunks)[::-1] or [1]
        if self._TYPES[scalar] != self.dtype.str[1:] or sizes != expected:
            raise self.fail(
                f"ZFP header describes {self._TYPES[scalar]} blocks of {sizes[::-1]}, but the dataset is "
                f"{self.dtype} in chunks of {list(self.chunks)}"
            )
        # The mode: 12 bits, or 64 when the short code is above ZFP_MODE_SHORT_MAX (4094).
        self.header_bits = 32 + 52 + (12 if field(84, 12) <= 4094 else 64)
        if bits.size < self.header_bits:
            raise self.fail("ZFP filter parameters hold a truncated zfp header")
        self.header = bits[: self.header_bits]
        # zfp never checks the end of its buffer: sciz's zfp decoder pads each payload to the most
        # the decoder can read (sciz.codecs.zfp), so a short chunk cannot make it read past it.

    def payload(self, raw: bytes, origin: tuple[int, ...], filter_mask: int = 0) -> Any:
        if self.header_bits % 8 == 0:
            head = np.packbits(self.header, bitorder="little").tobytes()
            stream = bytearray(head + raw)
        else:
            joined = np.concatenate([self.header, np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")])
            stream = bytearray(np.packbits(joined, bitorder="little").tobytes())
        return stream


class _SperrPlan(_ChunkPlan):
    """H5Z-SPERR: ``cd_values`` = (rank/type/missing-mode/version bits, mode+quality+swap, chunk dims...)."""

    codec = "sperr"

    def __init__(self, dataset: Any, values: tuple[int, ...], where: str) -> None:
        super().__init__(dataset, values, where)
        if len(values) not in (4, 5):
            raise self.fail(f"SPERR filter parameters {list(values)} are not 4 or 5 values")
        meta = values[0]
        rank = {0b10: 2, 0b11: 3}.get(meta & 0b11)
        is_float = bool(meta & 0x10)
        self.magic = (meta >> 10) & 0x3F
        if rank is None or len(values) != 2 + rank:
            raise self.fail(f"SPERR filter parameters {list(values)} describe no 2-D or 3-D chunk")
        if self.magic > 1:
            raise self.fail(f"chunks written by an H5Z-SPERR of compatibility version {self.magic}; sciz reads 0 and 1")
        if is_float != (self.dtype == np.float32) or self.dtype not in (np.float32, np.float64):
            raise self.fail(f"SPERR parameters say {'float32' if is_float else 'float64'}, the dataset is {self.dtype}")
        dims = list(values[2:])
        if dims != _used_dims(self.chunks):
            raise self.fail(f"SPERR parameters describe chunks of {dims}, the dataset's chunks are {list(self.chunks)}")
        if values[1] >> 31:  # the filter's swap bit: axes passed to SPERR fastest first
            dims = dims[::-1]
        self.is_float = is_float
        self.dims = dims  # (x, y[, z]) as SPERR was told: x fastest
        self.engine_shape = tuple(dims[::-1])

    def payload(self, raw: bytes, origin: tuple[int, ...], filter_mask: int = 0) -> Any:
        offset = 1 if self.magic >= 1 else 0
        if len(raw) <= offset:
            raise self.fail(f"SPERR chunk at {origin} is empty")
        if offset and raw[0] != 0:
            raise self.fail(
                f"SPERR chunk at {origin} carries a missing-value mask (mode {raw[0]}), which sciz's reader does "
                "not decode; read it with h5py + hdf5plugin, or rewrite it without missing_value_mode"
            )
        body = memoryview(raw)[offset:]
        flags = 0x20 if self.is_float else 0
        if len(self.dims) == 2:  # 2-D chunks are stored without SPERR's 10-byte header: rebuild it
            return struct.pack("<BBII", 0, flags, *self.dims) + bytes(body)
        if len(body) < 14 or body[1] & 0x60 != 0x40 | flags or list(struct.unpack("<III", body[2:14])) != self.dims:
            raise self.fail(f"SPERR chunk at {origin} has a header that does not match chunks of {self.dims[::-1]}")
        return body

    def target(self, chunk: np.ndarray) -> np.ndarray:
        return chunk.reshape(self.engine_shape)


class _Sz3Plan(_ChunkPlan):
    """H5Z-SZ3 (hdf5plugin's, SZ3 of 2022): ``cd_values`` = (ndim, type, dims slowest-last..., 9 error values)."""

    codec = "sz3"
    _TYPES: ClassVar[dict[int, str]] = {
        0: "f4",
        1: "f8",
        2: "u1",
        3: "i1",
        4: "u2",
        5: "i2",
        6: "u4",
        7: "i4",
        8: "u8",
        9: "i8",
    }

    def __init__(self, dataset: Any, values: tuple[int, ...], where: str) -> None:
        super().__init__(dataset, values, where)
        if len(values) < 4:
            raise self.fail(f"SZ3 filter parameters {list(values)} are too short")
        ndim, code = values[0], values[1]
        count = 2 if ndim == 1 else ndim
        if not 1 <= ndim <= 5 or len(values) not in (2 + count, 2 + count + 9):
            raise self.fail(
                f"SZ3 filter parameters {list(values)} are not those of hdf5plugin's H5Z-SZ3 (ndim, type, dims"
                ", 9 error values); files of newer SZ3 filters are not read by this sciz"
            )
        if self._TYPES.get(code) != self.dtype.str[1:]:
            raise self.fail(f"SZ3 parameters say type {code}, the dataset is {self.dtype}")
        dims = [(values[2] << 32) | values[3]] if ndim == 1 else list(values[2 : 2 + ndim])
        self.mismatch = ""
        if math.prod(dims) != math.prod(self.chunks) or sorted(dims) != sorted(_used_dims(self.chunks) or [1]):
            # H5Z-SZ3 writes such parameters for chunks like (1, 64) (dims [1]): it then leaves every
            # chunk as it is (below), which reads as it is; a chunk it coded is refused.
            self.mismatch = f"SZ3 parameters describe chunks of {dims}, the dataset's chunks are {list(self.chunks)}"
        self.error_values = values[2 + count :]
        self.elements = math.prod(self.chunks)
        #: The filter leaves chunks it sizes at fewer than 20 values as they are.
        self.passthrough = math.prod(dims) < 20

    def payload(self, raw: bytes, origin: tuple[int, ...], filter_mask: int = 0) -> Any:
        nbytes = self.elements * self.dtype.itemsize
        if self.passthrough:
            if len(raw) != nbytes:
                raise self.fail(f"SZ3 chunk at {origin} holds {len(raw)} bytes, expected {nbytes}")
            return raw
        if self.mismatch:
            raise self.fail(self.mismatch)
        # Framing of this SZ3: the inner stream's length (uint64), the stream as one zstd frame, then
        # the SZ3 configuration (dimension count, dims as uint64 slowest first, ...). SZ3 decodes into
        # a buffer sized from cd_values using the dims found here: they must agree.
        if len(raw) < 12:
            raise self.fail(f"SZ3 chunk at {origin} is truncated ({len(raw)} bytes)")
        (inner,) = struct.unpack("<Q", raw[:8])
        if not 0 < inner <= 4 * nbytes + (1 << 20):
            raise self.fail(f"SZ3 chunk at {origin} declares an implausible stream of {inner} bytes")
        end = _zstd_frame_end(raw, 8)
        if end is None:
            raise self.fail(f"SZ3 chunk at {origin} is damaged or truncated (its zstd frame is incomplete)")
        config = raw[end:]
        ndim = config[0] if config else 0
        dims = list(struct.unpack(f"<{ndim}Q", config[1 : 1 + 8 * ndim])) if len(config) >= 1 + 8 * ndim else []
        if not dims or (dims != (_used_dims(self.chunks) or [1]) and dims != list(self.chunks)):
            raise self.fail(f"SZ3 chunk at {origin} describes a block of {dims}, the chunks are {list(self.chunks)}")
        import imagecodecs

        buffer = bytearray(inner)
        try:
            size = len(imagecodecs.zstd_decode(raw[8:end], out=buffer))
        except Exception as exc:  # imagecodecs raises ZstdError and friends
            raise self.fail(f"SZ3 chunk at {origin} is damaged (its zstd frame: {exc})") from None
        if size != inner:
            raise self.fail(f"SZ3 chunk at {origin} unpacks to {size} bytes, its header says {inner}")
        return raw

    def decode(self, items: list[tuple[Any, np.ndarray, str]]) -> None:
        raw = [(payload, chunk) for payload, chunk, _ in items if self.elements >= 20]
        for payload, chunk, _ in items:
            if self.elements < 20:
                chunk.reshape(-1)[:] = np.frombuffer(payload, self.dtype)
        if raw:
            _sz3_in_child(self, raw)


def _zstd_frame_end(data: bytes, start: int) -> int | None:
    """Where the zstd frame starting at ``start`` ends (walking its block headers), or None if it is cut short."""
    if data[start : start + 4] != b"\x28\xb5\x2f\xfd" or len(data) < start + 6:
        return None
    descriptor = data[start + 4]
    single_segment, checksum = descriptor & 0x20, descriptor & 0x04
    content_size = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    position = start + 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3] + content_size
    while True:
        if position + 3 > len(data):
            return None
        header = int.from_bytes(data[position : position + 3], "little")
        kind, size = (header >> 1) & 3, header >> 3
        if kind == 3:
            return None
        position += 3 + (1 if kind == 1 else size)
        if header & 1:
            break
    position += 4 if checksum else 0
    return position if position <= len(data) else None


def _sz3_in_child(plan: _Sz3Plan, items: list[tuple[bytes, np.ndarray]]) -> None:
    """Run hdf5plugin's SZ3 filter on checked chunks in a forked child; a crash, hang or exit is an error."""
    import h5py

    from ..codecs._isolate import run_in_child

    def decode(outputs: np.ndarray) -> None:  # runs in the child
        import hdf5plugin  # noqa: F401  (registers the SZ3 filter)

        with h5py.File(f"sciz-sz3-{os.getpid()}", "w", driver="core", backing_store=False) as scratch:
            dataset = scratch.create_dataset(
                "chunk",
                shape=plan.chunks,
                dtype=plan.dtype,
                chunks=plan.chunks,
                compression=FILTER_SZ3,
                compression_opts=plan.error_values,
            )
            origin = (0,) * len(plan.chunks)
            for index, (payload, _) in enumerate(items):
                dataset.id.write_direct_chunk(origin, bytes(payload))
                dataset.read_direct(outputs[index])

    nbytes = plan.elements * plan.dtype.itemsize * len(items)
    outputs = run_in_child(
        decode,
        (len(items), *plan.chunks),
        plan.dtype,
        error=plan.fail,
        timeout=_CHILD_SECONDS + nbytes / (1 << 20),
        what="hdf5plugin's SZ3 filter",
        # No other thread inside HDF5 at the fork (h5py's own lock).
        locks=[lock] if (lock := getattr(getattr(h5py, "_objects", None), "phil", None)) is not None else [],
    )
    for (_, chunk), decoded in zip(items, outputs, strict=True):
        chunk[...] = decoded


class _DeflatePlan(_ChunkPlan):
    """HDF5's own deflate (optionally after shuffle): decoded with libdeflate on all cores."""

    codec = "deflate"

    def __init__(self, dataset: Any, values: tuple[int, ...], where: str, *, shuffle: bool) -> None:
        super().__init__(dataset, values, where)
        self.shuffle = shuffle and self.dtype.itemsize > 1
        #: Bits of a chunk's filter mask that say the shuffle / deflate filter was skipped.
        self.shuffle_bit, self.deflate_bit = (1, 2) if shuffle else (0, 1)
        self.chunk_bytes = math.prod(self.chunks) * self.dtype.itemsize

    def payload(self, raw: bytes, origin: tuple[int, ...], filter_mask: int = 0) -> Any:
        return (raw, origin, filter_mask)

    def decode(self, items: list[tuple[Any, np.ndarray, str]]) -> None:
        import imagecodecs

        def one(item: tuple[Any, np.ndarray, str]) -> None:  # pure data only: never h5py in a worker
            (raw, _, filter_mask), chunk, where = item
            flat = chunk.reshape(-1).view(np.uint8)
            if filter_mask & self.deflate_bit:
                if len(raw) != self.chunk_bytes:
                    raise FormatError(f"{where}: uncompressed chunk of {len(raw)} bytes, expected {self.chunk_bytes}")
                stored = np.frombuffer(raw, np.uint8)
            else:
                stored = np.empty(self.chunk_bytes, np.uint8) if self.shuffle else flat
                try:
                    size = len(imagecodecs.deflate_decode(raw, out=stored.data))
                except Exception as exc:  # imagecodecs raises DeflateError and friends
                    raise FormatError(f"{where}: damaged ({type(exc).__name__}: {exc})") from None
                if size != self.chunk_bytes:
                    raise FormatError(f"{where}: inflates to {size} bytes, expected {self.chunk_bytes}")
            if self.shuffle and not filter_mask & self.shuffle_bit:
                flat[:] = stored.reshape(self.dtype.itemsize, -1).T.reshape(-1)
            elif stored is not flat:
                flat[:] = stored

        run_parallel(lambda i: one(items[i]), len(items), usable_cores())


_PLANS: dict[int, type[_ChunkPlan]] = {FILTER_ZFP: _ZfpPlan, FILTER_SZ3: _Sz3Plan, FILTER_SPERR: _SperrPlan}
FILTER_DEFLATE, FILTER_SHUFFLE = 1, 2


def chunk_plan(dataset: Any, where: str) -> _ChunkPlan | None:
    """How sciz decodes ``dataset``'s chunks itself, or None when h5py (HDF5's filters) should read it.

    sciz decodes the lossy filters (never run on untrusted chunks, see the module notes) and HDF5's
    deflate with or without shuffle (on all cores); each optionally followed by Fletcher-32.
    """
    if dataset.chunks is None or dataset.dtype.kind not in "fiub" or dataset.dtype.byteorder == ">":
        if dataset.chunks is not None and filter_codec(dataset) is not None:
            raise FormatError(f"{where}: big-endian {dataset.dtype} data through a lossy filter is not read by sciz")
        return None
    filters = _filters(dataset)
    codes = [code for code, _, _ in filters]
    if codes[-1:] == [FILTER_FLETCHER32]:
        codes = codes[:-1]
    if len(codes) == 1 and codes[0] in _PLANS:
        return _PLANS[codes[0]](dataset, filters[0][2], where)
    if codes in ([FILTER_DEFLATE], [FILTER_SHUFFLE, FILTER_DEFLATE]):
        return _DeflatePlan(dataset, (), where, shuffle=codes[0] == FILTER_SHUFFLE)
    if any(code in FILTER_CODECS for code in codes):
        filter_codec(dataset)  # raises: a lossy filter combined with others
    return None


def read_lossy(dataset: Any, region: tuple[slice, ...] | None = None, *, where: str | None = None) -> np.ndarray:
    """``dataset[region]`` of a dataset stored through a lossy filter, decoded without the filter.

    Chunks are read directly, checked against the dataset and decoded through
    :func:`sciz.codecs.driver.decode_payload` (SZ3: in a forked child, see the module notes); the
    exact NaN/Inf/fill values of a sciz mask are put back. Damaged or hostile chunks raise
    :class:`~sciz.errors.FormatError` or the codec's :class:`~sciz.errors.CodecError`.
    """
    where = where or dataset.name
    if filter_codec(dataset) is None:
        raise FormatError(f"{where}: not a dataset of one of the lossy filters {sorted(_PLANS)} (+ fletcher32)")
    return read_dataset(dataset, region, where=where)


def read_dataset(dataset: Any, region: tuple[slice, ...] | None = None, *, where: str | None = None) -> np.ndarray:
    """``dataset[region]`` (all of it by default): the one HDF5 read path of sciz's formats.

    The dataset is checked first (:func:`check_dataset`: no storage outside the file, a size this
    machine can hold). Chunks sciz decodes itself (:func:`chunk_plan`) are read by this thread
    through the one open file handle, then decoded on all cores from plain bytes: worker threads
    never call h5py, so they cannot wait for the HDF5 lock this thread may hold (a damaged chunk is
    an error, not a deadlock). Other layouts are read by h5py. Every failure is a
    :class:`~sciz.errors.FormatError` (or the codec's error) naming ``where`` and the chunk.
    """
    where = where or dataset.name
    check_dataset(dataset, where)
    shape = tuple(int(n) for n in dataset.shape)
    plan = chunk_plan(dataset, where)
    if plan is None:
        try:
            return np.asarray(dataset[region if region is not None else ()])
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise FormatError(f"{where}: cannot be read ({type(exc).__name__}: {exc})") from None
    out = _read_chunks(dataset, plan, shape, region, where)
    apply_mask(dataset, out, region, where=where)
    return out


def _stored_chunks(dataset: Any, shape: tuple[int, ...], chunks: tuple[int, ...], where: str) -> list[tuple[int, ...]]:
    """Origins of the chunks the file stores (its chunk index, checked against the dataset's shape)."""
    origins: list[tuple[int, ...]] = []
    try:
        if hasattr(dataset.id, "chunk_iter"):
            dataset.id.chunk_iter(lambda info: origins.append(tuple(int(o) for o in info.chunk_offset)))
        else:
            for index in range(dataset.id.get_num_chunks()):
                origins.append(tuple(int(o) for o in dataset.id.get_chunk_info(index).chunk_offset))
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise FormatError(f"{where}: its chunk index cannot be read ({type(exc).__name__}: {exc})") from None
    for origin in origins:
        if len(origin) != len(shape) or any(
            o % c or not 0 <= o < n for o, c, n in zip(origin, chunks, shape, strict=True)
        ):
            raise FormatError(f"{where}: its chunk index lists a chunk at {origin}, outside shape {shape}")
    return list(dict.fromkeys(origins))


def _read_chunks(
    dataset: Any, plan: _ChunkPlan, shape: tuple[int, ...], region: tuple[slice, ...] | None, where: str
) -> np.ndarray:
    chunks, dtype = plan.chunks, plan.dtype
    chunk_bytes = math.prod(chunks) * dtype.itemsize
    if region is None:
        region = _full_region(shape)
        listed = _stored_chunks(dataset, shape, chunks, where)
        count = math.prod(-(-n // c) for n, c in zip(shape, chunks, strict=True)) if all(shape) else 0
        out = np.empty(shape, dtype) if len(listed) == count else np.full(shape, dataset.fillvalue, dtype)
        origins: Iterator[tuple[int, ...]] = iter(listed)
        indexed = True
    else:
        indexed = False
        out = np.empty(tuple(r.stop - r.start for r in region), dtype)
        origins = chunk_origins(shape, chunks, region)
    filters = _filters(dataset)
    checksum_bit = 1 << (len(filters) - 1) if filters[-1][0] == FILTER_FLETCHER32 else 0
    lossy = not isinstance(plan, _DeflatePlan)
    pending: list[tuple[Any, np.ndarray, str]] = []
    placements: list[tuple[np.ndarray, tuple[int, ...]]] = []

    def flush() -> None:
        # Decode what is pending and place it: memory stays near out + one batch (found by review:
        # all padded zfp payloads and chunk buffers at once took 8x the array).
        plan.decode(pending)
        for chunk, origin in placements:
            inside = tuple(
                slice(max(o, r.start), min(o + c, r.stop)) for o, c, r in zip(origin, chunks, region, strict=True)
            )
            out[tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(inside, region, strict=True))] = chunk[
                tuple(slice(s.start - o, s.stop - o) for s, o in zip(inside, origin, strict=True))
            ]
        pending.clear()
        placements.clear()

    for origin in origins:
        if len(placements) * chunk_bytes >= _BATCH_BYTES:
            flush()
        chunk_where = f"{where} chunk at {origin}"
        try:
            if not indexed:
                info = dataset.id.get_chunk_info_by_coord(origin)
                if info.byte_offset is None:  # never written: the fill value
                    placements.append((np.full(chunks, dataset.fillvalue, dtype), origin))
                    continue
            filter_mask, raw = dataset.id.read_direct_chunk(origin)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:  # h5py's errors on a damaged index
            raise FormatError(f"{chunk_where}: cannot be read ({exc})") from None
        chunk = np.empty(chunks, dtype)
        placements.append((chunk, origin))
        if checksum_bit and not filter_mask & checksum_bit:
            if len(raw) < 4 or fletcher32(raw[:-4]) != struct.unpack("<I", raw[-4:])[0]:
                raise FormatError(f"{chunk_where}: damaged (its Fletcher-32 checksum does not match)")
            raw = raw[:-4]
        if lossy and filter_mask & 1:  # stored unfiltered (sciz does this where the filter missed the bound)
            if len(raw) != chunk_bytes:
                raise FormatError(f"{chunk_where}: unfiltered chunk of {len(raw)} bytes, expected {chunk_bytes}")
            chunk.reshape(-1)[:] = np.frombuffer(raw, dtype)
            continue
        pending.append((plan.payload(raw, origin, filter_mask), chunk, chunk_where))
    flush()
    return out


def filtered_size(codec: Any, block: np.ndarray, fill_value: Any = None, chunks: tuple[int, ...] | None = None) -> int:
    """Bytes ``block`` takes in an HDF5 file as one chunk through ``codec``'s registered filter, written
    the way sciz writes it (:class:`LossyDatasetWriter` for the lossy filters: NaN/Inf and fill
    values filled and kept in a gzip mask dataset, chunks that miss the bound stored unfiltered,
    Fletcher-32; the filter's own options for the others). What :func:`sciz.codecs.choose` predicts
    a container's HDF5 dataset from (``container="hdf5"``), so that its predicted ratio is that of
    the file, not of sciz's own stream (measured: the SPERR filter stores 8.9 where sciz's stream
    of the same chunk stores 76.7). ``chunks``: the file's chunk shape, when ``block`` is an edge
    chunk smaller than it (HDF5 pads it to the full chunk before the filter, as here)."""
    import io

    import h5py

    block = np.ascontiguousarray(block)
    chunks = tuple(block.shape) if chunks is None else tuple(chunks)
    # an edge block in a dataset of its own size, chunked (and so padded) as the file's chunks
    shape = {"maxshape": chunks} if chunks != block.shape else {}
    with h5py.File(io.BytesIO(), "w") as h5:
        options = {**hdf5_filter_options(codec, block, fill_value), **shape}
        if codec.spec.hdf5_filter_id in FILTER_CODECS:
            writer = LossyDatasetWriter(
                h5, "d", block.shape, block.dtype, chunks, codec, block, mask_name="m", fill_value=fill_value,
                filter_options=options,
            )  # fmt: skip
            writer.write_array(block)
            size = int(writer.dataset.id.get_storage_size())
            return size + (int(writer.mask.id.get_storage_size()) if writer.mask is not None else 0)
    return stored_size(block, chunks, options)


def stored_size(values: np.ndarray, chunks: tuple[int, ...] | None, options: dict[str, Any]) -> int:
    """Bytes an HDF5 dataset of ``values`` takes in ``chunks`` through the filter ``options`` (h5py's
    ``create_dataset`` keywords), written in memory: what a filter really stores, not an estimate."""
    import io

    import h5py
    import hdf5plugin  # noqa: F401  (registers the filters with h5py)

    with h5py.File(io.BytesIO(), "w") as h5:
        dataset = h5.create_dataset("d", data=values, chunks=chunks, **options)
        return int(dataset.id.get_storage_size())
