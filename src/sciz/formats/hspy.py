"""HyperSpy's HDF5 format (``.hspy``): RosettaSciIO-compatible ``file_writer`` / ``file_reader`` and the sciz format.

The same tree as zspy (:mod:`sciz.formats.hyperspy_tree`) in an HDF5 file through h5py. Writes are
atomic (a temporary sibling renamed over the target). The default compression is gzip with shuffle,
as HyperSpy does; sciz codecs with a registered HDF5 filter (zfp 32013, sz3 32024, sperr...) are
usable by name, checked by the codec so that the bound holds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..atomic import atomic_file, prepare_target
from ..errors import FormatError, argument_error
from ..model import Dataset, StoredArray
from . import _hdf5
from ._base import Format, require
from ._guard import write_errors
from .hyperspy_tree import (
    SIDECAR_ATTR,
    ArrayNode,
    GroupNode,
    LayoutPolicy,
    dataset_to_signal,
    is_lazy_array,
    normalize_signal,
    read_signals,
    signal_chunks,
    signal_to_dataset,
    write_signal_tree,
)

__all__ = ["HSPY_CHUNK_BYTES", "HspyFormat", "file_reader", "file_writer", "resolve_compression"]

#: Default chunk size of the signal data (HyperSpy's hspy target).
HSPY_CHUNK_BYTES = 1e6
_POLICY = LayoutPolicy("hdf5")
_WRITE_OPTIONS = ("shuffle", "compression_opts", "tolerance", "level", "rate", "precision", "mode", "fill_value")
#: Key of the signal's create options that carries a sciz codec written through a lossy HDF5 filter.
_LOSSY = "_sciz_lossy_codec"


def _h5py() -> Any:
    h5py = require("h5py", "hdf5")
    with contextlib.suppress(ImportError):
        import hdf5plugin  # noqa: F401  (registers the plugin filters: zfp, sz3, blosc...)
    return h5py


def resolve_compression(
    compression: Any,
    array: Any,
    params: Mapping[str, Any],
    *,
    fill_value: Any = None,
    chunks: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """h5py ``create_dataset`` keywords for a ``compression`` argument.

    ``compression`` may be ``"gzip"`` (default, with shuffle), ``"lzf"``, an int (gzip level), None,
    an hdf5plugin filter object, a sciz codec object, or a sciz codec name with its parameters in
    ``params`` (``tolerance=``...). sciz codecs use their registered HDF5 filter after checking that
    it keeps the bound for this array; a codec without one is refused with the reason. The lossy
    filters (zfp, sz3, sperr) are written by :mod:`sciz.formats._hdf5` (NaN/Inf and ``fill_value``
    kept exactly in a mask dataset): their options carry the codec under a private key.
    ``chunks``: the dataset's chunk shape, which ``"auto"`` chooses for (the filter codes each chunk alone).
    """
    params = dict(params)
    if fill_value is not None and not (
        (isinstance(compression, str) and compression.lower() in _lossy_names()) or _is_lossy_codec(compression)
    ):
        raise argument_error(
            "fill_value", fill_value, "is only used with a lossy sciz codec (compression='zfp', 'sz3' or 'sperr')"
        )
    shuffle = params.pop("shuffle", None)
    compression_opts = params.pop("compression_opts", None)
    if compression is None:
        return {"shuffle": bool(shuffle)} if shuffle else {}
    if isinstance(compression, str) and compression.lower() in ("gzip", "lzf", "szip_builtin"):
        out: dict[str, Any] = {"compression": compression.lower(), "shuffle": shuffle is None or bool(shuffle)}
        if compression_opts is not None:
            out["compression_opts"] = compression_opts
        if params:
            raise argument_error(sorted(params)[0], params[sorted(params)[0]], f"not an option of {compression!r}")
        return out
    if isinstance(compression, int) and not isinstance(compression, bool):
        if not 0 <= compression <= 9:
            raise argument_error("compression", compression, "an int is a gzip level from 0 to 9")
        return {"compression": "gzip", "compression_opts": compression, "shuffle": shuffle is not False}
    if isinstance(compression, Mapping):
        return dict(compression)
    codec: Any
    if isinstance(compression, str):
        import sciz.codecs

        name = compression.lower()
        if name == "auto":  # the codec with a registered HDF5 filter that compresses this array best
            from ._hdf5 import filtered_size  # measured through the filter, as this file will store it

            chooser = sciz.codecs.get("auto", **params)
            chosen = chooser.choose(array, hdf5=True, chunks=chunks, measure=filtered_size)
            return resolve_compression(chosen, array, {}, fill_value=fill_value)
        if name not in sciz.codecs.list_codecs():
            raise argument_error(
                "compression",
                compression,
                f"must be 'gzip', 'lzf', None, an int, an hdf5plugin filter or a sciz codec "
                f"({', '.join(sciz.codecs.list_codecs())})",
            )
        codec = sciz.codecs.get(name, **params)
    elif hasattr(compression, "hdf5_filter"):
        if params:
            raise argument_error("compression", compression, f"a codec object takes no extra options {sorted(params)}")
        codec = compression
    else:
        raise argument_error("compression", compression, "not a compression h5py or sciz understands")
    from ._hdf5 import hdf5_filter_options

    options = hdf5_filter_options(codec, array, fill_value)
    return {**options, _LOSSY: (codec, fill_value)} if _is_lossy_codec(codec) else options


def _lossy_names() -> tuple[str, ...]:
    from ._hdf5 import FILTER_CODECS

    return tuple(FILTER_CODECS.values())


def _is_lossy_codec(codec: Any) -> bool:
    """Whether ``codec`` is a sciz codec object whose HDF5 filter is one of the lossy ones."""
    from ._hdf5 import FILTER_CODECS

    row = getattr(codec, "spec", None)
    return hasattr(codec, "hdf5_filter") and getattr(row, "hdf5_filter_id", None) in FILTER_CODECS


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
class H5Source:
    """Picklable array-like over one HDF5 dataset (opens the file per process) for dask."""

    _files: ClassVar[dict[tuple[int, str, int, int], Any]] = {}
    _lock = threading.RLock()

    def __init__(
        self, path: str, name: str, shape: tuple[int, ...], dtype: np.dtype, identity: tuple[int, int] | None = None
    ) -> None:
        self.path = path
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)
        # The file this array was read from (by default the one at ``path`` now): a file replaced
        # since then is not read by mistake.
        self.identity = identity or _identity(Path(path).stat())

    def __dask_tokenize__(self) -> Any:
        return ("sciz-h5", self.path, self.identity, self.name)

    def _dataset(self) -> Any:
        key = (os.getpid(), self.path, *self.identity)
        with H5Source._lock:
            handle = H5Source._files.get(key)
            if handle is None or not handle.id.valid:
                handle = _hdf5.open_file(self.path)
                # The file this handle holds (not the path, which may have been replaced since).
                if _identity(os.fstat(handle.id.get_vfd_handle())) != self.identity:
                    handle.close()
                    raise FormatError(f"{self.path} was replaced after it was opened lazily; open it again")
                H5Source._files[key] = handle
        dataset = _hdf5.get(handle, self.name, self.path)
        if dataset is None:
            raise FormatError(f"{self.path}: {self.name} is missing")
        return dataset

    def __getitem__(self, key: Any) -> np.ndarray:
        where = f"{self.path}: {self.name}"
        with H5Source._lock:
            dataset = self._dataset()
            region = _as_region(key, self.shape)
            if _hdf5.filter_codec(dataset) is None:
                try:
                    return np.asarray(dataset[key])
                except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
                    raise FormatError(f"{where}: cannot be read ({type(exc).__name__}: {exc})") from None
            if region is None:
                return _hdf5.read_dataset(dataset, where=where)[key]
            return _hdf5.read_dataset(dataset, region, where=where)

    @classmethod
    def close_all(cls, path: str) -> None:
        """Close cached handles of ``path`` (before the file is replaced)."""
        with cls._lock:
            for key in [k for k in cls._files if k[1] == path]:
                with contextlib.suppress(Exception):
                    cls._files.pop(key).close()


def _identity(status: os.stat_result) -> tuple[int, int]:
    return (int(status.st_ino), int(status.st_mtime_ns))


def _as_region(key: Any, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """``key`` as one step-1 slice per axis, or None when it is not such a box."""
    key = key if isinstance(key, tuple) else (key,)
    if len(key) > len(shape) or not all(isinstance(k, slice) for k in key):
        return None
    region = []
    for k, n in zip((*key, *(slice(None),) * (len(shape) - len(key))), shape, strict=True):
        start, stop, step = k.indices(n)
        if step != 1:
            return None
        region.append(slice(start, max(start, stop)))
    return tuple(region)


class _Walk:
    """Bounds of one walk over a file's groups: depth, objects visited, the groups on the current path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.visited = 0
        self.ancestors: list[Any] = []


def _tree_from_h5(node: Any, group: GroupNode, path: str, walk: _Walk | None = None) -> None:
    h5py = _h5py()
    walk = walk or _Walk(path)
    if len(walk.ancestors) >= _hdf5.MAX_DEPTH:
        raise FormatError(f"{node.name}: groups nest deeper than {_hdf5.MAX_DEPTH} levels")
    if node.id in walk.ancestors:  # a hard link back to a group that contains it
        raise FormatError(f"{node.name}: a group that contains itself (a cycle of hard links)")
    walk.ancestors.append(node.id)
    group.attrs = {k: node.attrs[k] for k in node.attrs}
    for name, child in _hdf5.items(node, path):
        walk.visited += 1
        if walk.visited > _hdf5.MAX_OBJECTS:
            raise FormatError(f"the file's groups reach more than {_hdf5.MAX_OBJECTS} objects")
        child_path = f"{group.path}/{name}" if group.path else name
        if isinstance(child, h5py.Group):
            sub = GroupNode(path=child_path)
            group.children[name] = sub
            _tree_from_h5(child, sub, path, walk)
        elif isinstance(child, h5py.Dataset):
            if _hdf5.is_mask_dataset(child):  # a sciz NaN/Inf mask: part of the dataset it describes
                continue
            if name == SIDECAR_ATTR and child.shape == ():
                group.attrs[SIDECAR_ATTR] = child.asstr()[()] if h5py.check_string_dtype(child.dtype) else child[()]
                continue
            dtype = child.dtype
            if h5py.check_vlen_dtype(dtype) is not None or h5py.check_string_dtype(dtype) is not None:
                dtype = np.dtype(object)
            group.children[name] = ArrayNode(
                shape=tuple(child.shape),
                dtype=np.dtype(dtype),
                handle=(path, child.name),
                attrs={k: child.attrs[k] for k in child.attrs},
                path=child_path,
            )
    walk.ancestors.pop()


def _read(path: str, dataset: Any) -> Any:
    """A whole dataset through the one HDF5 chunk reader (lossy chunks never run through the filter)."""
    return _hdf5.read_dataset(dataset, where=f"{path}: {dataset.name}")


def _loader(handle: Any) -> Any:
    h5py = _h5py()
    # Lazy arrays read the file this handle holds, not whatever is at the path later.
    identity = _identity(os.fstat(handle.id.get_vfd_handle()))

    def load(node: ArrayNode, lazy: bool) -> Any:
        path, name = node.handle
        dataset = _hdf5.get(handle, name, path)
        if lazy and node.dtype.kind != "O":
            import dask.array as da

            source = H5Source(path, name, node.shape, node.dtype, identity)
            return da.from_array(source, chunks=dataset.chunks or node.shape, asarray=False, fancy=False)
        if h5py.check_string_dtype(dataset.dtype) is not None:
            _hdf5.check_dataset(dataset, f"{path}: {name}")
            values = dataset.asstr()[()]
            return np.asarray(values, dtype=object) if not isinstance(values, str) else values
        data = _read(path, dataset)
        stored = node.attrs.get("_sciz_dtype")
        if stored is not None and isinstance(data, np.ndarray):
            with contextlib.suppress(TypeError, ValueError, UnicodeDecodeError):
                data = data.astype(str(stored.decode() if isinstance(stored, bytes) else stored))
        return data

    return load


def file_reader(filename: str | os.PathLike[str], lazy: bool = False, **kwds: Any) -> list[dict[str, Any]]:
    """Read a HyperSpy HDF5 file (``.hspy``) into RosettaSciIO signal dictionaries.

    Parameters
    ----------
    filename
        The file.
    lazy
        Return the data as dask arrays read chunk by chunk (in any process) on demand.
    **kwds
        ``exact`` (default True: use sciz's exact metadata record when it matches the file).

    Returns
    -------
    list of dict
        One signal dictionary per ``Experiments/<name>`` group.
    """
    exact = kwds.pop("exact", True)
    kwds.pop("mode", None)
    if kwds:
        name = sorted(kwds)[0]
        raise argument_error(name, kwds[name], "file_reader options are exact, mode")
    path = Path(os.fspath(filename))
    if not path.exists():
        raise FileNotFoundError(f"no such hspy file: {path}")
    handle = _hdf5.open_file(path)
    try:
        root = GroupNode(path="")
        _tree_from_h5(handle, root, os.fspath(path.absolute()))
        return read_signals(root, _loader(handle), _POLICY, lazy=lazy, exact=bool(exact))
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise FormatError(f"{path}: damaged or not a HyperSpy file ({type(exc).__name__}: {exc})") from None
    except RecursionError:
        raise FormatError(f"{path}: damaged or not a HyperSpy file (its structure nests too deeply)") from None
    finally:
        handle.close()


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _attr(value: Any) -> Any:
    return value


def _check_h5_name(h5: Any, name: str, *, child: bool = False) -> None:
    """HDF5 cuts names at a NUL (a key ``"a\\x00b"`` came back as ``"a"``, two such keys as one), and a
    group or dataset ``"."`` is the group itself (``{"g": {".": {"x": 5}, "x": 1}}`` came back as
    ``{"g": {"x": 5}}``, a layer ``"."`` was a raw ValueError)."""
    if "\x00" in name:
        raise FormatError(f"the name {name!r} in {h5.name!r} holds a NUL character, which HDF5 names cannot hold")
    if child and name == ".":
        raise FormatError(f"a group or dataset named '.' in {h5.name!r}: HDF5 takes it for {h5.name!r} itself")


def _write_node(h5: Any, group: GroupNode, signal_kwargs: dict[str, Any], options: dict[str, Any]) -> Iterator[Any]:
    """Create groups, attributes and datasets; yields (dataset, node) pairs whose data is still to write."""
    h5py = _h5py()
    for key, value in group.attrs.items():
        _check_h5_name(h5, key)
        try:
            if key == SIDECAR_ATTR:
                h5.create_dataset(SIDECAR_ATTR, data=value, dtype=h5py.string_dtype())
            else:
                h5.attrs[key] = value
        except (ValueError, TypeError, UnicodeError) as exc:  # a NUL inside a string, a lone surrogate...
            raise FormatError(f"attribute {key!r} of {h5.name!r} cannot be stored in HDF5 ({exc})") from None
    for name, child in group.children.items():
        _check_h5_name(h5, name, child=True)
        if isinstance(child, GroupNode):
            if h5.name.rstrip("/").count("/") + 1 >= _hdf5.MAX_DEPTH:  # written, the file could not be read back
                raise FormatError(
                    f"{h5.name}/{name}: groups would nest {_hdf5.MAX_DEPTH} levels deep or more, more than sciz reads"
                )
            sub = h5.require_group(name)
            yield from _write_node(sub, child, signal_kwargs, options)
            continue
        data = child.data
        if child.dtype.kind == "O":
            flat = np.asarray(data, dtype=object)
            items = [np.asarray(flat[i]) for i in np.ndindex(flat.shape)]
            kinds = {item.dtype.kind for item in items}
            if kinds & set("USO"):
                raise FormatError(f"{child.path}: ragged string arrays cannot be stored in hspy; use zspy")
            item_dtype = np.result_type(*[i.dtype for i in items]) if items else np.dtype("f8")
            dataset = h5.create_dataset(name, shape=child.shape, dtype=h5py.vlen_dtype(item_dtype))
            for index in np.ndindex(flat.shape):
                dataset[index] = np.asarray(flat[index], dtype=item_dtype).ravel()
            continue
        if child.dtype.kind == "U":
            values = np.asarray(data)
            dataset = h5.create_dataset(
                name, shape=child.shape, dtype=h5py.string_dtype(), data=values.astype(object), **options
            )
            dataset.attrs["_sciz_dtype"] = child.dtype.str
            continue
        kwargs = signal_kwargs if child.role == "signal" else options
        chunks = kwargs.get("chunks") if child.role == "signal" else None
        if child.role != "signal" and not child.shape:
            h5.create_dataset(name, data=np.asarray(data))
            continue
        if child.role == "signal" and _LOSSY in kwargs and all(child.shape):
            codec, fill_value = kwargs[_LOSSY]
            # Not ``options``: those are the metadata arrays' (a reused name gave them the lossy filter).
            filter_options = {k: v for k, v in kwargs.items() if k not in ("chunks", _LOSSY)}
            chunk_shape = tuple(chunks) if chunks is not None else child.shape
            yield (
                _hdf5.LossyDatasetWriter(
                    h5, name, child.shape, child.dtype, chunk_shape, codec, np.empty(0, child.dtype),
                    fill_value=fill_value, filter_options=filter_options,
                ),
                child,
            )  # fmt: skip
            continue
        dataset = h5.create_dataset(
            name,
            shape=child.shape,
            dtype=child.dtype,
            chunks=chunks if chunks is not None and all(child.shape) else (True if all(child.shape) else None),
            **{k: v for k, v in kwargs.items() if k != "chunks"} if all(child.shape) else {},
        )
        yield dataset, child


def _gzip_plan(dataset: Any) -> tuple[int, bool] | None:
    """(level, shuffle) when sciz can encode the chunks itself (gzip, optional shuffle, nothing else)."""
    filters = dict(dataset._filters)
    if dataset.compression != "gzip" or dataset.dtype.kind in "OUSV" or set(filters) - {"gzip", "shuffle"}:
        return None
    level = dataset.compression_opts
    return (4 if level is None else int(level)), bool(dataset.shuffle)


def _write_dataset(dataset: Any, node: ArrayNode, show_progressbar: bool) -> None:
    from ._streaming import iter_blocks, progress_bar

    data = node.data
    if not node.shape or 0 in node.shape:
        if node.shape:
            return
        dataset[()] = np.asarray(data)
        return
    lossy = dataset if isinstance(dataset, _hdf5.LossyDatasetWriter) else None
    if lossy is not None:
        dataset = lossy.dataset
    chunks = tuple(dataset.chunks or node.shape)
    show = show_progressbar and node.role == "signal"
    if is_lazy_array(data):
        blocks: Iterator[tuple[tuple[slice, ...], np.ndarray]] = iter_blocks(data, chunks, show_progressbar=show)
    else:
        array = np.asarray(data)
        boxes = (
            tuple(slice(o, min(o + c, n)) for o, c, n in zip(origin, chunks, node.shape, strict=True))
            for origin in _hdf5.chunk_origins(node.shape, chunks)
        )
        blocks = ((box, array[box]) for box in boxes)
    plan = None if lossy is not None else _gzip_plan(dataset)
    with progress_bar(
        int(np.prod(node.shape)) * node.dtype.itemsize, f"writing {node.path}", enabled=show and not is_lazy_array(data)
    ) as advance:
        if plan is None:
            for region, block in blocks:
                if lossy is not None:
                    lossy.write(region, block)
                else:
                    dataset[region] = block
                advance(block.nbytes)
            return
        # HDF5 compresses on one thread; the one chunk writer compresses on every core.
        level, shuffle = plan
        _hdf5.write_deflate_chunks(
            dataset,
            ((tuple(s.start for s in region), np.asarray(block)) for region, block in blocks),
            level=level,
            shuffle=shuffle,
            advance=advance,
        )


def file_writer(
    filename: str | os.PathLike[str],
    signal: Mapping[str, Any],
    chunks: Any = None,
    compression: Any = "gzip",
    close_file: bool = True,
    write_dataset: bool = True,
    show_progressbar: bool = True,
    **kwds: Any,
) -> None:
    """Write a signal dictionary to HyperSpy's HDF5 format (``.hspy``), atomically.

    Parameters
    ----------
    filename
        The file to write (replaced whole when the write succeeds).
    signal
        A RosettaSciIO signal dictionary (see :func:`sciz.zspy.file_writer`).
    chunks
        Chunk shape of the data; None chooses chunks of whole signals of about 1 MB.
    compression
        ``"gzip"`` (default, with shuffle), ``"lzf"``, an int gzip level, None, an hdf5plugin filter
        object, or a sciz codec name (with ``tolerance=``...) or object that has an HDF5 filter.
    close_file
        Accepted for RosettaSciIO compatibility; the file is always complete and closed.
    write_dataset
        False rewrites only the metadata and axes of an existing file, keeping its data.
    show_progressbar
        Show a progress bar while writing the data.
    **kwds
        ``shuffle``, ``compression_opts``, a named codec's parameters (``tolerance``...), and
        ``fill_value``: with a lossy codec (zfp, sz3, sperr), elements equal to it (e.g. a 1e20 land
        fill) are kept exactly like NaN/Inf instead of going through the filter.

    Notes
    -----
    Through the lossy filters (zfp, sz3, sperr), NaN, +-Inf and ``fill_value`` never reach the
    filter: they are replaced smoothly and their positions kept in ``<data>_mask`` (uint8: 0 data,
    1 NaN, 2 +Inf, 3 -Inf, 4 fill value; CF ``flag_values``/``flag_meanings``), named by the data's
    ``sciz_mask`` and ``ancillary_variables`` attributes. sciz reads the exact values back; other
    readers (h5py + hdf5plugin, RosettaSciIO) see the filled data and the mask.
    """
    h5py = _h5py()
    if not isinstance(write_dataset, bool):
        raise argument_error("write_dataset", write_dataset, "must be True or False")
    unknown = sorted(set(kwds) - set(_WRITE_OPTIONS))
    if unknown:
        raise argument_error(unknown[0], kwds[unknown[0]], f"file_writer options are {', '.join(_WRITE_OPTIONS)}")
    kwds.pop("mode", None)
    full = normalize_signal(signal)
    data = full["data"]
    signal_axes = [i for i, axis in enumerate(full["axes"]) if not axis.get("navigate", False)]
    if chunks is None or chunks is True:
        if is_lazy_array(data):
            chunk_shape = tuple(int(c[0]) if c else 1 for c in data.chunks)
        else:
            chunk_shape = signal_chunks(tuple(data.shape), data.dtype.itemsize, signal_axes, HSPY_CHUNK_BYTES)
    else:
        if not isinstance(chunks, tuple | list) or len(chunks) != data.ndim:
            raise argument_error("chunks", chunks, f"must be None or {data.ndim} positive ints")
        chunk_shape = tuple(int(c) for c in chunks)
    chunk_shape = tuple(max(1, min(c, n)) for c, n in zip(chunk_shape, data.shape, strict=True))
    sample = data if not is_lazy_array(data) else data.blocks[(0,) * data.ndim].compute() if data.size else data
    fill_value = kwds.pop("fill_value", None)
    signal_kwargs = resolve_compression(
        compression, np.asarray(sample) if data.ndim else sample, kwds, fill_value=fill_value, chunks=chunk_shape
    )
    signal_kwargs["chunks"] = chunk_shape
    meta_options = {"compression": "gzip"}
    root, experiment = write_signal_tree(full, _POLICY, file_format="HyperSpy")
    target = prepare_target(filename)
    H5Source.close_all(os.fspath(target))
    data_path = experiment.path + "/data"
    with _named(target), write_errors(target), atomic_file(target) as handle:
        if not write_dataset:
            if not target.is_file():
                raise FormatError(f"{target}: write_dataset=False needs an existing hspy file")
            shutil.copyfile(target, handle.name)
            h5 = h5py.File(handle.name, "r+")
            try:
                old = h5.get(data_path)
                if old is None or tuple(old.shape) != tuple(data.shape):
                    raise FormatError(
                        f"{target}: write_dataset=False needs the stored array {data_path!r} of shape "
                        f"{tuple(data.shape)}"
                    )
                keep_name = "__sciz_kept_data__"
                h5.move(data_path, keep_name)
                for name in list(h5.keys()):
                    if name != keep_name:
                        del h5[name]
                for name in list(h5.attrs.keys()):
                    del h5.attrs[name]
                experiment_node = experiment
                data_node = experiment_node.children.pop("data")
                pending = list(_write_node(h5, root, signal_kwargs, meta_options))
                h5.move(keep_name, data_path)
                experiment_node.children["data"] = data_node
                for dataset, node in pending:
                    _write_dataset(dataset, node, False)
            finally:
                h5.close()
            return
        with h5py.File(handle.name, "w") as h5:
            for dataset, node in list(_write_node(h5, root, signal_kwargs, meta_options)):
                _write_dataset(dataset, node, show_progressbar)


@contextlib.contextmanager
def _named(target: Path) -> Iterator[None]:
    """Errors about what the file cannot hold, naming it (the temporary file is gone by then)."""
    try:
        yield
    except FormatError as exc:
        if str(target) in str(exc):
            raise
        raise FormatError(f"{target}: {exc}") from None


def _storage(path: Path, signal: dict[str, Any]) -> dict[str, StoredArray]:
    from .hyperspy_convert import LAZY_DETAIL
    from .hyperspy_tree import experiment_name

    try:
        with _hdf5.open_file(path) as handle:
            data = _hdf5.get(handle, f"Experiments/{experiment_name(signal)}/data", str(path))
            if data is None:
                return {}
            stored: StoredArray = _hdf5.dataset_storage(data)
            attributes = _hdf5.get(handle, f"Experiments/{experiment_name(signal)}/attributes", str(path))
            lazy = attributes.attrs.get("_lazy") if attributes is not None else None
            if isinstance(lazy, bool | np.bool_):
                stored.details[LAZY_DETAIL] = bool(lazy)
            return {"data": stored}
    except (OSError, KeyError):
        return {}


def _ragged_strings(value: Any, where: str, depth: int = 0) -> str | None:
    """Where in ``value`` (nested dicts, lists, tuples) an object array holds strings, which hspy cannot store."""
    if depth > 64:
        return None
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        for item in value.ravel():
            if isinstance(item, str | bytes) or np.asarray(item).dtype.kind in "USO":
                return where
        return None
    if isinstance(value, dict):
        items: Iterable[tuple[str, Any]] = ((f"{where}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for label, item in items:
        found = _ragged_strings(item, label, depth + 1)
        if found:
            return found
    return None


class HspyFormat(Format):
    """HyperSpy's HDF5 signal format (``.hspy``).

    Read options: ``lazy``, ``exact``, ``signal`` (index, default 0). Write options: those of
    :func:`file_writer` (``chunks``, ``compression``, ``write_dataset``, ``show_progressbar``,
    ``tolerance``...).
    """

    name = "hspy"
    description = "HyperSpy hspy: HDF5 tree of signals (read/write by HyperSpy and RosettaSciIO)"
    extensions = (".hspy",)
    magic = (b"\x89HDF\r\n\x1a\n",)
    priority = 1
    lazy = True

    def sniff(self, path: Path, head: bytes) -> bool:
        if not head.startswith(self.magic[0]):
            return False
        try:
            h5py = _h5py()
            with h5py.File(path, "r") as handle:
                fmt = handle.attrs.get("file_format")
                if isinstance(fmt, bytes):
                    fmt = fmt.decode("utf-8", "replace")
                # A link is looked at, never followed (a hostile link is reported by the reader).
                experiments = handle.get("Experiments", getlink=True) is not None
                return fmt == "HyperSpy" or (experiments and self.matches_extension(path) > 0)
        except (OSError, ImportError, ValueError, KeyError, RuntimeError):
            return False

    def read(self, path: Path, **options: Any) -> Dataset:
        index = options.pop("signal", 0)
        signals = [s for s in file_reader(path, **options) if "data" in s]
        if not isinstance(index, int) or not -len(signals) <= index < len(signals):
            raise argument_error("signal", index, f"the file holds {len(signals)} signal(s)")
        dataset = signal_to_dataset(signals[index], source=os.fspath(path))
        dataset.storage.update(_storage(path, signals[index]))
        return dataset

    def problems(self, dataset: Dataset) -> list[str]:
        ragged = _ragged_strings(dataset.metadata, "metadata")
        if ragged:
            return [f"{ragged}: ragged string arrays cannot be stored in hspy (.zspy holds them)"]
        return []

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        options.setdefault("show_progressbar", False)
        file_writer(path, dataset_to_signal(dataset), **options)
        return path
