"""HyperSpy's HDF5 signal format (``.hspy``) with RosettaSciIO's API: ``file_writer`` and ``file_reader``.

The same signal dictionaries and the same exact metadata as :mod:`sciz.zspy`, stored with h5py.
"""

from __future__ import annotations

from .formats.hspy import file_reader, file_writer, resolve_compression

__all__ = ["file_reader", "file_writer", "resolve_compression"]
