"""sciz codec streams on disk (``.scz``): one array compressed by one codec, readable in any process.

A ``.scz`` file is exactly the bytes a ``*_encode`` function returns (the self-describing sciz
stream of :mod:`sciz.codecs`), so ``zfp_decode(path.read_bytes())`` and ``sciz.load(path)`` read
the same file. The stream holds the array's codec, parameters, dtype, shape and checksums, but no
axes, layers or metadata: writing a dataset that has them is refused unless the loss is accepted.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file
from ..errors import CodecError, FormatError, argument_error
from ..model import Dataset, StoredArray
from ._base import Format, single_array_problems

__all__ = ["SczFormat", "read_scz", "write_scz"]

_READ_OPTIONS = ("numthreads",)


def read_scz(path: str | os.PathLike[str], *, numthreads: int | None = None) -> tuple[np.ndarray, StoredArray]:
    """Decode a ``.scz`` file; return the array and how it is stored (codec, parameters, chunks).

    The stream is read into memory first (it is the compressed size): a memory-mapped file that
    another process truncates meanwhile would kill this one with SIGBUS instead of raising.
    """
    from ..codecs._stream import parse_stream
    from ..codecs.driver import decode_stream

    source = Path(os.fspath(path))
    try:
        with source.open("rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise FormatError(f"{source}: not a regular file (a FIFO or device is never read as a stream)")
            stream = bytearray(status.st_size)
            if status.st_size == 0 or handle.readinto(stream) != status.st_size:
                raise FormatError(f"{source}: empty or truncated while being read, not a complete sciz stream")
        header = parse_stream(stream, CodecError)  # once, for the report and the decode
        stored = _storage(stream, header)
        return decode_stream(stream, None, CodecError, numthreads=numthreads, header=header), stored
    except CodecError as exc:
        raise FormatError(f"{source}: {exc}") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {source}") from None


def _storage(data: Any, header: Any) -> StoredArray:
    """What ``sciz info`` reports of a stream: codec, parameters, chunks and what was kept exactly."""
    from ..codecs._stream import describe_stream
    from ..codecs._trust import explain
    from ..codecs.driver import isolates

    described = describe_stream(data, header=header)
    details: dict[str, Any] = {"chunks": described["chunks"]}
    if described["chunks"] > 1:
        details["chunks cut axis"] = described["split_axis"]
    for reason, count in described["fallbacks"].items():
        details[f"chunks stored losslessly ({reason})"] = count
    if described["lossless_chunks"] and not described["fallbacks"]:
        details["chunks stored losslessly"] = described["lossless_chunks"]
    if described["masked_elements"]:
        details["NaN/Inf/fill elements kept apart"] = described["masked_elements"]
    if described["patched_elements"]:
        details["elements stored exactly"] = described["patched_elements"]
    if hasattr(os, "fork") and isolates(header):  # where the default decode runs it, and why (codecs/_trust.py)
        details["tag"] = explain(described["tagged"], described["own"])
    parameters = {k: v for k, v in described["params"].items() if v is not None}
    return StoredArray(
        codec=described["codec"], stored_bytes=described["stored_bytes"], parameters=parameters, details=details
    )


def write_scz(
    path: str | os.PathLike[str], array: Any, *, codec: Any = None, numthreads: int | None = None, **params: Any
) -> Path:
    """Encode ``array`` with ``codec`` (a name with ``params``, or a codec object) into ``path`` atomically.

    The default codec is lossless pcodec; e.g. ``codec="sz3", tolerance=0.01`` bounds every element.
    """
    from .. import codecs

    if codec is None:
        bounded = sorted(set(params) & {"tolerance", "rate", "precision", "mode", "quality"})
        if bounded:
            raise argument_error(
                bounded[0],
                params[bounded[0]],
                "needs a lossy codec, e.g. codec='sz3' (the default, pcodec, is lossless)",
            )
        codec = "pcodec"
    if isinstance(codec, str):
        known = codecs.list_codecs()
        if codec.lower().removeprefix("sciz_") not in (*known, "auto"):
            raise argument_error("codec", codec, f"known codecs are {', '.join(known)} and auto")
        chosen = codecs.get(codec, **params)
    elif hasattr(codec, "get_config") and not params:
        chosen = codec
    else:
        raise argument_error("codec", codec, "must be a codec name (with its parameters) or a sciz codec object")
    array = np.asarray(array)
    if getattr(chosen, "name", None) == "auto":  # the stream records the codec auto chose, not "auto"
        chosen = chosen.choose(array, numthreads=numthreads)
    if getattr(chosen, "spec", None) is None or chosen.spec.method is None:
        raise argument_error("codec", codec, "must be a stream codec (floatpred and jetraw write no sciz stream)")
    stream = chosen.encode(array, numthreads=numthreads)
    with atomic_file(path) as handle:
        handle.write(stream)
    return Path(os.fspath(path))


class SczFormat(Format):
    """A sciz codec stream (``.scz``): one array, its codec and parameters; no axes, layers or metadata.

    Read options: ``numthreads``. Write options: ``codec`` (default ``"pcodec"``, lossless), the codec's
    parameters (``tolerance``, ``rate``, ``mode``/``quality``, ``level``...) and ``numthreads``.
    """

    name = "scz"
    description = "sciz codec stream (one array, compressed by a sciz codec)"
    extensions = (".scz",)
    magic = (b"\x89SZC",)

    def read(self, path: Path, **options: Any) -> Dataset:
        unknown = sorted(set(options) - set(_READ_OPTIONS))
        if unknown:
            raise argument_error(f"option {unknown[0]}", options[unknown[0]], "reading .scz files takes: numthreads")
        array, stored = read_scz(path, **options)
        dataset = Dataset(array)  # a stream holds no title
        dataset.storage = {"data": stored}
        return dataset

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        return write_scz(path, dataset.data, **options)

    def problems(self, dataset: Dataset) -> list[str]:
        return single_array_problems(dataset, ".scz")
