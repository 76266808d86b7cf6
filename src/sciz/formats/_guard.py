"""Guards every reader and writer of a file format shares: declared sizes before allocation, write errors named.

A reader calls :func:`check_declared_size` with the size a header declares before it allocates
anything of that size, so a hostile header (a 65535 x 65535 TIFF page, a huge HDF5 dataset) is a
clean :class:`~sciz.errors.FormatError` instead of a MemoryError, an OOM kill or a long hang. A
writer wraps its work in :func:`write_errors`, so a full disk is an error naming the file.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

from .._util import memory_budget
from ..atomic import write_error
from ..errors import FormatError

__all__ = ["check_declared_size", "check_tiff_series_size", "write_errors"]


def check_declared_size(nbytes: int, where: str, what: str = "", *, file_size: int | None = None) -> None:
    """Refuse ``nbytes`` declared by a file before allocating them.

    Parameters
    ----------
    nbytes
        The bytes the header asks for.
    where
        The file (and entry) named in the error.
    what
        How the size arises (e.g. ``"(65535, 65535) x 4 bytes"``), shown in the error.
    file_size
        The most the file can hold: its size for data stored uncompressed (or its size times the
        compression's largest ratio).
    """
    shown = f"{what} = " if what else ""
    if file_size is not None and nbytes > file_size:
        raise FormatError(f"{where}: declares {shown}{nbytes} bytes, but the file can hold at most {file_size}")
    budget = memory_budget()
    if nbytes > budget:
        raise FormatError(
            f"{where}: declares {shown}{nbytes / 2**30:.3g} GiB, more than this process can allocate "
            f"({budget / 2**30:.3g} GiB available)"
        )


#: TIFF compressions whose ratio is bounded (deflate cannot exceed about 1032:1; PackBits 64:1).
_TIFF_MAX_RATIO = {1: 1, 8: 1100, 32946: 1100, 50013: 1100, 32773: 70}


def check_tiff_series_size(tif: Any, series: Any, source: Any) -> None:
    """Refuse a tifffile series whose declared size this process cannot hold, or that its file cannot
    encode (call before ``series.asarray()``: an OME-XML or shaped description may claim any shape)."""
    import numpy as np

    shape = tuple(int(n) for n in series.shape)
    nbytes = math.prod(shape) * np.dtype(series.dtype).itemsize
    kinds = {int(getattr(page, "compression", 1)) for page in series.pages if page is not None}
    bounded = kinds <= _TIFF_MAX_RATIO.keys()
    ratio = max((_TIFF_MAX_RATIO.get(kind, 0) for kind in kinds), default=1) if bounded else 0
    size = os.fstat(tif.filehandle.fileno()).st_size
    check_declared_size(
        nbytes, str(source), f"a {series.dtype} series of shape {shape}", file_size=ratio * size if ratio else None
    )
    for page in series.pages:
        counts = getattr(page, "databytecounts", None)
        if nbytes and counts is not None and (not len(counts) or not all(int(c) > 0 for c in counts)):
            # tifffile reads missing strips as zeros: a 202-byte file declaring a 30000x30000 LZW page
            # with empty strips made sciz allocate 3.6 GB of zeros (found by attack).
            raise FormatError(f"{source}: a page declares image data but some of its strips or tiles hold no bytes")


@contextlib.contextmanager
def write_errors(target: Any) -> Iterator[None]:
    """Turn an OSError of the writes inside (full disk, h5py's and tifffile's write errors) into :func:`write_error`.

    Put it outside :func:`sciz.atomic.atomic_file`, so the temporary file is gone when the error is raised.
    """
    try:
        yield
    except FormatError:
        raise
    except (OSError, RuntimeError) as exc:  # h5py raises RuntimeError when a flush at close fails
        raise write_error(target, exc) from None
