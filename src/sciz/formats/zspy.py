"""HyperSpy's Zarr format (``.zspy``): RosettaSciIO-compatible ``file_writer`` / ``file_reader`` and the sciz format.

Files are laid out as HyperSpy writes them (zarr format 2, nested directory store by default), so
HyperSpy and RosettaSciIO read what sciz writes and the other way round; sciz additionally keeps an
exact record of the metadata (see :mod:`sciz.formats.hyperspy_tree`). Writes are atomic: a directory
or zip is built beside the target and renamed over it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_directory, atomic_file, prepare_target, recover, scratch_sibling
from ..errors import CodecError, FormatError, SciZError, argument_error
from ..model import Dataset, StoredArray
from ._base import Format, require, zip_member_names
from .hyperspy_convert import LAZY_DETAIL
from .hyperspy_tree import (
    ArrayNode,
    GroupNode,
    LayoutPolicy,
    dataset_to_signal,
    experiment_name,
    normalize_signal,
    read_signals,
    signal_chunks,
    signal_to_dataset,
    write_signal_tree,
)

__all__ = [
    "ZSPY_CHUNK_BYTES",
    "ZspyFormat",
    "ZspyZipFormat",
    "default_compressor",
    "file_reader",
    "file_writer",
    "resolve_compressor",
]

#: Default chunk size of the signal data (HyperSpy's zspy target).
ZSPY_CHUNK_BYTES = 1e8
_STORE_TYPES = ("local", "zip")
#: file_writer options: the store's, then a named sciz codec's parameters.
_WRITE_OPTIONS = (
    "zarr_format",
    "checksum",
    "standard_codec",
    "threads",
    "tolerance",
    "fill_value",
    "level",
    "rate",
    "precision",
    "mode",
    "quality",
    "version",
    "coding",
    "pixels_per_block",
    "bits_per_pixel",
)


def default_compressor() -> Any:
    """HyperSpy's default: Blosc zstd, level 1, byte shuffle."""
    numcodecs = require("numcodecs", "zarr")
    return numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE)


def _is_sciz_codec(value: Any) -> bool:
    return hasattr(value, "get_config") and str(getattr(value, "codec_id", "")).startswith("sciz_")


def resolve_compressor(
    compressor: Any, params: Mapping[str, Any], *, standard_codec: bool = True, dtype: Any = None
) -> tuple[Any, Any]:
    """(numcodecs codec, chunk verifier or None) for a ``compressor`` argument.

    ``compressor`` may be None (the default), a numcodecs codec, a numcodecs config dict, a sciz
    codec object, or a name: a sciz codec (``"zfp"``, ``"sz3"``... with ``tolerance=`` etc. in
    ``params``) or any numcodecs codec id (``"zstd"``, ``"lz4"``...). sciz's zfp (with a tolerance)
    and pcodec are stored as the standard numcodecs ZFPY / PCodec codecs when ``standard_codec`` so
    other Zarr readers decode them; every chunk is then checked against the bound.
    """
    numcodecs = require("numcodecs", "zarr")
    from numcodecs.abc import Codec as NumcodecsCodec

    if compressor is None:
        if params:
            raise argument_error("compressor", None, f"options {sorted(params)} need a named compressor")
        return default_compressor(), None
    if isinstance(compressor, NumcodecsCodec):
        if params:
            raise argument_error("compressor", compressor, f"a codec object takes no extra options {sorted(params)}")
        return compressor, None
    if isinstance(compressor, Mapping):
        try:
            return numcodecs.get_codec(dict(compressor)), None
        except (ValueError, TypeError, KeyError) as exc:
            raise argument_error("compressor", compressor, f"not a numcodecs config ({exc})") from None
    codec: Any
    if _is_sciz_codec(compressor):
        if params:
            raise argument_error("compressor", compressor, f"a codec object takes no extra options {sorted(params)}")
        codec = compressor
    elif isinstance(compressor, str):
        import sciz.codecs

        name = compressor.lower()
        if name in sciz.codecs.list_codecs() or name == "auto":  # auto: chosen per chunk (AutoCodec)
            codec = sciz.codecs.get(name, **params)
        else:
            try:
                return numcodecs.get_codec({"id": name, **params}), None
            except (ValueError, TypeError, KeyError) as exc:
                known = ", ".join(sciz.codecs.list_codecs())
                raise argument_error(
                    "compressor", compressor, f"not a sciz codec ({known}) nor a numcodecs codec id ({exc})"
                ) from None
    else:
        raise argument_error(
            "compressor", compressor, "must be None, a codec name, a numcodecs codec or config, or a sciz codec"
        )
    # Standard codecs have no fill values: a codec given one stores sciz streams, which keep them.
    if standard_codec and getattr(codec, "fill_value", None) is None:
        tolerance = getattr(codec, "tolerance", None)
        if codec.name == "zfp" and tolerance:
            if dtype is not None:  # sciz's own error for a dtype ZFPY refuses ("Unknown dtype")
                codec.check_array(np.zeros(1, dtype))
            standard = numcodecs.ZFPY(mode=4, tolerance=float(tolerance))
            return standard, _bound_verifier(standard, float(tolerance))
        if codec.name == "pcodec":
            return numcodecs.PCodec(level=int(codec.get_config().get("level", 8))), None
    from sciz.codecs import numcodecs_codec

    return numcodecs_codec(codec), None


def _bound_verifier(codec: Any, tolerance: float) -> Any:
    """Checks that a chunk encoded by a standard lossy codec decodes within ``tolerance``."""

    def verify(block: np.ndarray, encoded: bytes, meta: Any) -> None:
        decoded = meta.decode(encoded).reshape(block.shape)  # through the checksum, if any
        original = np.asarray(block)
        finite = np.isfinite(original)
        if not np.array_equal(np.isfinite(decoded), finite) or not np.array_equal(
            original[~finite], decoded[~finite], equal_nan=True
        ):
            raise CodecError(
                f"{meta.path}: a chunk holds NaN or Inf, which numcodecs ZFPY does not keep; pass "
                "standard_codec=False to store sciz's zfp stream (exact NaN/Inf, bound kept)"
            )
        error = float(np.max(np.abs(decoded[finite].astype(np.float64) - original[finite]))) if finite.any() else 0.0
        if error > tolerance:
            raise CodecError(
                f"{meta.path}: ZFPY exceeded tolerance {tolerance} (max error {error}); pass standard_codec=False"
            )

    return verify


def _write_options(
    signal: dict[str, Any], chunks: Any, compressor: Any, show_progressbar: bool, kwds: dict[str, Any]
) -> Any:
    from .hyperspy_zarr import WriteOptions

    unknown = sorted(set(kwds) - set(_WRITE_OPTIONS))
    if unknown:
        raise argument_error(
            unknown[0], kwds[unknown[0]], f"file_writer options are compressor, chunks, {', '.join(_WRITE_OPTIONS)}"
        )
    zarr_format = kwds.pop("zarr_format", 2)
    if zarr_format not in (2, 3):
        raise argument_error("zarr_format", zarr_format, "must be 2 (HyperSpy's) or 3")
    threads = kwds.pop("threads", None)
    checksum = kwds.pop("checksum", True)
    if not isinstance(checksum, bool):
        raise argument_error("checksum", checksum, "must be True or False")
    standard = kwds.pop("standard_codec", True)
    codec, verify = resolve_compressor(
        compressor, kwds, standard_codec=bool(standard), dtype=getattr(signal["data"], "dtype", None)
    )
    data = signal["data"]
    signal_axes = [i for i, axis in enumerate(signal["axes"]) if not axis.get("navigate", False)]
    if chunks is not None and chunks is not True:
        if isinstance(chunks, int) and not isinstance(chunks, bool):
            chunks = (chunks,) * data.ndim
        if (
            not isinstance(chunks, tuple | list)
            or len(chunks) != data.ndim
            or not all(isinstance(c, int | np.integer) and not isinstance(c, bool) and c > 0 for c in chunks)
        ):
            raise argument_error("chunks", chunks, f"must be None or {data.ndim} positive ints")
        chunks = tuple(int(c) for c in chunks)
    else:
        chunks = None

    def choose(node: ArrayNode) -> tuple[int, ...]:
        return signal_chunks(node.shape, node.dtype.itemsize, signal_axes, ZSPY_CHUNK_BYTES)

    return WriteOptions(
        zarr_format=zarr_format,
        signal_compressor=codec,
        meta_compressor=default_compressor(),
        chunks=chunks,
        choose_chunks=choose,
        show_progressbar=bool(show_progressbar),
        verify=verify,
        threads=threads,
        checksum=checksum,
    )


def _is_store_object(filename: Any) -> bool:
    return not isinstance(filename, str | os.PathLike)


def file_writer(
    filename: Any,
    signal: Mapping[str, Any],
    chunks: Any = None,
    compressor: Any = None,
    close_file: bool = True,
    write_dataset: bool = True,
    store_type: str | None = None,
    show_progressbar: bool = True,
    **kwds: Any,
) -> None:
    """Write a signal dictionary to HyperSpy's Zarr format (``.zspy``).

    Parameters
    ----------
    filename
        A path (a nested directory store, or a zip file with ``store_type="zip"``), a zarr store
        object or a ``MutableMapping`` of bytes.
    signal
        A RosettaSciIO signal dictionary: ``data`` (numpy or dask), ``axes`` (one dict per dimension
        with ``name``, ``units``, ``scale``, ``offset``, ``size``, ``navigate``), ``metadata`` (with
        ``General.title``), and optionally ``original_metadata``, ``attributes``,
        ``learning_results``, ``models``, ``package_info``.
    chunks
        Chunk shape of the data; None chooses chunks of whole signals of about 100 MB (dask arrays
        keep their own chunks).
    compressor
        None (Blosc zstd level 1 with shuffle), any numcodecs codec or config, a sciz codec object,
        or a codec name: a sciz codec (``"zfp"``, ``"sz3"``, ``"lerc"``... with ``tolerance=``) or a
        numcodecs id. The bound of a sciz codec holds for every element.
    close_file
        Close a store object passed as ``filename`` after writing (if it can be closed).
    write_dataset
        False rewrites only the metadata and axes of an existing file, keeping its data.
    store_type
        ``"local"`` (nested directory, default) or ``"zip"``; None with a store object.
    show_progressbar
        Show a progress bar while writing the data.
    **kwds
        ``zarr_format`` (2, HyperSpy's, or 3), ``tolerance`` / ``level`` / ``rate`` / ``precision``
        for a named codec, ``standard_codec`` (default True: sciz zfp with a tolerance and pcodec are
        stored as numcodecs ZFPY / PCodec, which other readers decode), ``threads``, ``checksum``
        (default True, zarr format 2: every chunk of the data carries a CRC-32, stored as the
        standard ``crc32`` compressor around the real one, which RosettaSciIO, HyperSpy and
        zarr-python read and check; a damaged chunk is then an error, not different data).

    Example
    -------
    >>> import numpy as np
    >>> from sciz.zspy import file_writer, file_reader
    >>> signal = {"data": np.arange(12.0).reshape(3, 4), "metadata": {"General": {"title": "demo"}}}
    >>> file_writer("demo.zspy", signal, show_progressbar=False)  # doctest: +SKIP
    >>> file_reader("demo.zspy")[0]["data"].shape  # doctest: +SKIP
    (3, 4)
    """
    from . import hyperspy_zarr as engine

    if not isinstance(write_dataset, bool):
        raise argument_error("write_dataset", write_dataset, "must be True or False")
    if store_type not in (None, *_STORE_TYPES):
        raise argument_error("store_type", store_type, "must be None, 'local' or 'zip'")
    full = normalize_signal(signal)
    options = _write_options(full, chunks, compressor, show_progressbar, dict(kwds))
    root, experiment = write_signal_tree(full, LayoutPolicy("zarr"), file_format="ZSpy")
    data_path = experiment.path + "/data"

    if _is_store_object(filename):
        if store_type is not None:
            raise argument_error("store_type", store_type, "must be None when filename is a store object")
        kv = engine.kv_for(filename)
        with _as_format_error(kv.describe()):
            keep = _kept_data(kv, data_path, full) if not write_dataset else {}
            _clear_store(kv, keep_prefix=next(iter(keep.values())).path if keep else None)
            engine.write_tree(kv, root, options, keep=keep)
        if close_file and hasattr(filename, "close"):
            filename.close()
        return

    target = prepare_target(filename)
    as_zip = store_type == "zip" or (store_type is None and not write_dataset and target.is_file())
    require_replaceable(target, directory=not as_zip)
    with _as_format_error(str(target)):
        if as_zip:
            _write_zip(target, root, options, data_path, full, write_dataset)
        else:
            _write_directory(target, root, options, data_path, full, write_dataset)


@contextlib.contextmanager
def _as_format_error(where: str) -> Iterator[None]:
    """OS errors (ENOSPC...), codec and deep-nesting failures reach the user as a FormatError naming the file."""
    try:
        yield
    except FormatError as exc:
        if where in str(exc):
            raise
        raise FormatError(f"{where}: {exc}") from None
    except SciZError:
        raise
    except RecursionError:
        raise FormatError(f"{where}: the tree is nested too deeply to read or write") from None
    except MemoryError:
        raise FormatError(f"{where}: not enough memory") from None
    except OSError as exc:
        raise FormatError(f"{where}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")) from None
    except (ValueError, TypeError, KeyError, RuntimeError, AttributeError, ArithmeticError) as exc:
        # ArithmeticError: zarr's sharding codec divides by a forged inner chunk shape of 0
        raise FormatError(f"{where}: {type(exc).__name__}: {exc}") from None


def is_zspy_store(path: Path) -> bool:
    """Whether ``path`` is a zspy store: a directory or zip holding a Zarr group with an ``Experiments`` group."""
    if path.is_symlink():
        return False
    if path.is_dir():
        root = [(path / name) for name in (".zgroup", "zarr.json")]
        experiments = path / "Experiments"
        return any(p.is_file() and not p.is_symlink() for p in root) and experiments.is_dir()
    names = zip_member_names(path) if path.is_file() else None
    return bool(names and names & {".zgroup", "zarr.json"} and any(n.startswith("Experiments/") for n in names))


def require_replaceable(target: Path, *, directory: bool) -> None:
    """Refuse to overwrite anything at ``target`` but a zspy store, an empty directory or a plain file.

    A directory is replaced whole, so it must be a zspy store (or empty): an unrelated directory
    given by mistake is never deleted. A file that is not a zspy zip is not replaced by a directory.
    """
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_dir() and not target.is_symlink():
        if is_zspy_store(target) or not any(target.iterdir()):
            return
        raise FormatError(
            f"{target}: an existing directory that is not a zspy store; sciz replaces only zspy stores "
            "(remove it yourself or choose another path)"
        )
    if target.is_symlink():
        raise FormatError(f"{target}: a symbolic link; sciz does not replace it (remove it or choose another path)")
    if directory and not is_zspy_store(target):
        raise FormatError(f"{target}: an existing file that is not a zspy store; sciz does not replace it by a store")


def _kept_data(kv: Any, data_path: str, signal: dict[str, Any]) -> dict[str, Any]:
    """The stored data array that ``write_dataset=False`` keeps, checked against the signal."""
    from .hyperspy_zarr import read_tree

    try:
        root, _ = read_tree(kv)
    except FormatError as exc:
        raise FormatError(f"write_dataset=False needs an existing zspy file: {exc}") from None
    node = root
    for part in data_path.split("/"):
        if not isinstance(node, GroupNode) or part not in node.children:
            raise FormatError(
                f"{kv.describe()}: write_dataset=False needs the stored array {data_path!r}, which is missing"
            )
        node = node.children[part]  # type: ignore[assignment]
    if not isinstance(node, ArrayNode):
        raise FormatError(f"{kv.describe()}: {data_path!r} is not an array")
    data = signal["data"]
    if tuple(data.shape) != node.shape:
        raise FormatError(
            f"{kv.describe()}: write_dataset=False keeps the stored data of shape {node.shape}, but the signal's "
            f"data has shape {tuple(data.shape)}"
        )
    return {data_path: node.handle.meta}


def _clear_store(kv: Any, keep_prefix: str | None) -> None:
    """Empty a store object before writing: only a zspy store (a root group with Experiments) or an empty one."""
    from .hyperspy_zarr import is_document

    keys = list(kv.keys_under(""))
    is_zspy = (".zgroup" in keys or "zarr.json" in keys) and any(k.startswith("Experiments/") for k in keys)
    if keys and not is_zspy:
        raise FormatError(
            f"{kv.describe()}: the store holds {len(keys)} entries but is not a zspy store; sciz replaces only "
            "zspy stores (clear it yourself)"
        )
    for key in keys:
        if keep_prefix and key.startswith(keep_prefix + "/") and not is_document(key):
            continue
        kv.delete(key)


def _write_directory(
    target: Path, root: GroupNode, options: Any, data_path: str, signal: dict[str, Any], write_dataset: bool
) -> None:
    from . import hyperspy_zarr as engine

    keep: dict[str, Any] = {}
    old: Any = None
    held = contextlib.ExitStack()  # the old tree, read as one version until its chunks are linked
    try:
        if not write_dataset:
            if not target.is_dir():
                raise FormatError(f"{target}: write_dataset=False needs an existing zspy directory")
            old = engine.DirectoryKV(target)
            held.enter_context(old.reading())
            keep = _kept_data(old, data_path, signal)
        with atomic_directory(target, replace_if=is_zspy_store) as temporary:  # or an empty directory
            kv = engine.DirectoryKV(temporary, durable=True)  # chunks fsynced as written, overlapping encoding
            if keep:
                # Link (or copy) the stored chunks into the new tree: the data is not rewritten.
                for key in old.keys_under(next(iter(keep.values())).path):
                    if not engine.is_document(key):
                        old.link_into(key, temporary / key)
            held.close()  # before the swap: a tree this process still held would be left behind
            engine.write_tree(kv, root, options, keep=keep)
    finally:
        held.close()
        if old is not None:
            old.close()


def _write_zip(
    target: Path, root: GroupNode, options: Any, data_path: str, signal: dict[str, Any], write_dataset: bool
) -> None:
    from . import hyperspy_zarr as engine

    keep: dict[str, Any] = {}
    old: Any = None
    if not write_dataset:
        if not target.is_file():
            raise FormatError(f"{target}: write_dataset=False needs an existing zspy zip file")
        old = engine.ZipKV(target)
        keep = _kept_data(old, data_path, signal)
    staging = scratch_sibling(target)  # removed below, or by the next write if this process is killed
    try:
        engine.write_tree(engine.DirectoryKV(staging), root, options, keep=keep)

        def copy_kept(archive: zipfile.ZipFile) -> None:
            for key in old.keys_under(next(iter(keep.values())).path):
                if not engine.is_document(key):
                    archive.writestr(zipfile.ZipInfo(key, date_time=(1980, 1, 1, 0, 0, 0)), old.get(key) or b"")

        with atomic_file(target) as handle:
            engine.pack_zip(staging, handle, copy_kept if keep else None)
    finally:
        if old is not None:
            old.close()
        shutil.rmtree(staging, ignore_errors=True)


def file_reader(filename: Any, lazy: bool = False, **kwds: Any) -> list[dict[str, Any]]:
    """Read a HyperSpy Zarr file (directory, zip, or store object) into RosettaSciIO signal dictionaries.

    Parameters
    ----------
    filename
        A path to a ``.zspy`` directory or zip file (detected), a zarr store or a mapping of bytes.
    lazy
        Return the data as dask arrays read chunk by chunk on demand.
    **kwds
        ``exact`` (default True: use sciz's exact metadata record when it matches the file),
        ``threads`` (decoding threads). ``mode`` is accepted and ignored (files are read only).

    Returns
    -------
    list of dict
        One signal dictionary per ``Experiments/<name>`` group (``data``, ``axes``, ``metadata``,
        ``original_metadata``, ``attributes``, ``models``, ``package_info``).

    A directory store is read as the one tree its name held when it was opened, even while a
    writer replaces it (see :class:`~sciz.formats._zarr_stores.DirectoryKV`); lazy data of a store
    replaced since is refused with a :class:`~sciz.errors.FormatError`, never mixed.
    """
    return _read(filename, lazy, kwds)[0]


def _read(
    filename: Any, lazy: bool, kwds: dict[str, Any], then: Callable[[Any, list[dict[str, Any]]], Any] | None = None
) -> tuple[list[dict[str, Any]], Any]:
    """:func:`file_reader`, and ``then(store, signals)`` called on the same version of the store."""
    from . import hyperspy_zarr as engine

    exact = kwds.pop("exact", True)
    threads = kwds.pop("threads", None)
    kwds.pop("mode", None)
    if kwds:
        name = sorted(kwds)[0]
        raise argument_error(name, kwds[name], "file_reader options are exact, threads, mode")
    if not isinstance(lazy, bool):
        raise argument_error("lazy", lazy, "must be True or False")
    if isinstance(filename, str | os.PathLike):
        path = Path(os.fspath(filename))
        # A name missing for a moment while a writer swaps a new tree in: wait for it (or restore it).
        if not path.exists() and not recover(path) and not path.exists():
            raise FileNotFoundError(f"no such zspy file or directory: {os.fspath(filename)}")
    kv = engine.kv_for(filename)
    try:
        with _as_format_error(kv.describe()), kv.reading():  # one version of a directory for the whole read
            root, _ = engine.read_tree(kv)
            signals = read_signals(
                root,
                lambda node, as_lazy: engine.load_array(node, as_lazy, threads=threads),
                LayoutPolicy("zarr"),
                lazy=lazy,
                exact=bool(exact),
            )
            extra = then(kv, signals) if then is not None else None
    except FormatError as exc:
        where = kv.describe()
        raise FormatError(str(exc) if where in str(exc) else f"{where}: {exc}") from None
    finally:
        if not lazy and isinstance(kv, engine.ZipKV | engine.DirectoryKV) and kv is not filename:
            kv.close()
    return signals, extra


def _storage(signal: dict[str, Any], kv: Any) -> dict[str, StoredArray]:
    from . import hyperspy_zarr as engine

    try:
        root, _ = engine.read_tree(kv)
        experiments = root.children["Experiments"]
        assert isinstance(experiments, GroupNode)
        node = experiments.children[experiment_name(signal)]
        assert isinstance(node, GroupNode)
        data = node.children["data"]
        assert isinstance(data, ArrayNode)
        meta = data.handle.meta
        outer = meta.filters[-1] if (meta.compressor or {}).get("id") == "crc32" and meta.filters else meta.compressor
        codec = (outer or {}).get("id", "none") if meta.zarr_format == 2 else meta.codecs[-1]["name"]
        stored = sum(kv.size(key) for key in kv.keys_under(meta.path) if not engine.is_document(key))
        config = (outer or {}) if meta.zarr_format == 2 else meta.codecs[-1].get("configuration", {})
        parameters = {k: v for k, v in config.items() if k not in ("id", "name")}
        attributes = node.children.get("attributes")
        lazy = attributes.attrs.get("_lazy") if isinstance(attributes, GroupNode) else None
        details: dict[str, Any] = {LAZY_DETAIL: lazy} if isinstance(lazy, bool) else {}
        inner = parameters.get("codec")
        if isinstance(inner, dict) and inner.get("id") == "auto":  # chosen per chunk: say what each holds
            from ..codecs._stream import stored_codecs

            chunks = (kv.get(key) or b"" for key in kv.keys_under(meta.path) if not engine.is_document(key))
            found = stored_codecs(chunks)
            if found is not None:
                details["chosen by"] = "auto (" + ", ".join(f"{k}={v}" for k, v in inner.items() if k != "id") + ")"
                details["chunks by codec"] = ", ".join(f"{label}: {n}" for label, n in found["chunks"].items())
                parameters = {"codec": found["codec"]}
        return {
            "data": StoredArray(
                codec=str(codec), stored_bytes=stored, chunks=meta.chunks, parameters=parameters, details=details
            )
        }
    except (FormatError, KeyError, AssertionError, IndexError):
        return {}


class ZspyFormat(Format):
    """HyperSpy's Zarr signal format (nested directory store; zip with ``store_type="zip"``).

    Read options: ``lazy``, ``exact``, ``threads``, ``signal`` (index of the signal, default 0).
    Write options: those of :func:`file_writer` (``chunks``, ``compressor``, ``store_type``,
    ``write_dataset``, ``show_progressbar``, ``zarr_format``, ``tolerance``...).
    """

    name = "zspy"
    description = "HyperSpy zspy: Zarr tree of signals (read/write by HyperSpy and RosettaSciIO)"
    extensions = (".zspy",)
    directory = True
    priority = 1
    lazy = True

    def sniff(self, path: Path, head: bytes) -> bool:
        if not path.is_dir():
            return False
        if (path / ".zgroup").is_file():
            return (path / "Experiments").is_dir() or self.matches_extension(path) > 0
        if (path / "zarr.json").is_file():
            return (path / "Experiments").is_dir()
        return False

    def read(self, path: Path, **options: Any) -> Dataset:
        index = options.pop("signal", 0)
        lazy = options.pop("lazy", False)

        def storage(kv: Any, found: list[dict[str, Any]]) -> dict[str, StoredArray]:
            with_data = [s for s in found if "data" in s]
            if isinstance(index, int) and -len(with_data) <= index < len(with_data):
                return _storage(with_data[index], kv)
            return {}

        found, stored = _read(path, lazy, options, storage)
        signals = [s for s in found if "data" in s]
        if not signals:
            raise FormatError(f"{path}: no signal in the file")
        if not isinstance(index, int) or not -len(signals) <= index < len(signals):
            raise argument_error("signal", index, f"the file holds {len(signals)} signal(s)")
        dataset = signal_to_dataset(signals[index], source=os.fspath(path))
        dataset.storage.update(stored)
        return dataset

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        options.setdefault("show_progressbar", False)
        file_writer(path, dataset_to_signal(dataset), **options)
        return path


class ZspyZipFormat(ZspyFormat):
    """The zip variant of zspy, recognised by its content (a zip holding a Zarr tree with Experiments)."""

    name = "zspy-zip"
    description = "HyperSpy zspy in a single zip file"
    directory = False
    magic = (b"PK\x03\x04",)
    priority = 0

    def sniff(self, path: Path, head: bytes) -> bool:
        names = (zip_member_names(path) if head.startswith(b"PK\x03\x04") else None) or set()
        return bool(names & {".zgroup", "zarr.json"}) and any(n.startswith("Experiments/") for n in names)

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        options.setdefault("store_type", "zip")
        return super().write(dataset, path, **options)
