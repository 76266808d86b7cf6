"""HyperSpy's Zarr signal format (``.zspy``) with RosettaSciIO's API: ``file_writer`` and ``file_reader``.

Signals are RosettaSciIO-style dictionaries (``data``, ``axes``, ``metadata``, ``original_metadata``,
``attributes``, ...). Files sciz writes are read by HyperSpy/RosettaSciIO, and their files by sciz;
metadata round-trips exactly through sciz (tuples, bytes, datetimes, numpy scalars, list order).
``sciz.save(dataset, "x.zspy")`` / ``sciz.load("x.zspy")`` use the same code for a
:class:`~sciz.model.Dataset`.

Example
-------
>>> import numpy as np
>>> from sciz.zspy import file_writer, file_reader
>>> signal = {"data": np.zeros((4, 8, 8), np.float32), "metadata": {"General": {"title": "scan"}}}
>>> file_writer("scan.zspy", signal, show_progressbar=False)  # doctest: +SKIP
>>> file_reader("scan.zspy", lazy=True)[0]["data"]  # doctest: +SKIP
dask.array<...>
"""

from __future__ import annotations

from .formats.hyperspy_tree import dataset_to_signal, signal_to_dataset
from .formats.zspy import default_compressor, file_reader, file_writer, resolve_compressor

__all__ = [
    "dataset_to_signal",
    "default_compressor",
    "file_reader",
    "file_writer",
    "resolve_compressor",
    "signal_to_dataset",
]
