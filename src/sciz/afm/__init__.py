"""AFM video stacks: playNano-compatible NPZ/HDF5/OME-TIFF bundles and annotated GIFs.

The public functions keep playNano 0.5.0's names and arguments, so code written for
``playnano.io.export_data`` / ``playnano.io.data_loaders`` works with sciz, and files go both ways.
Heavy libraries (h5py, tifffile, Pillow, matplotlib) load only when a function needs them.

Example
-------
>>> import numpy as np
>>> from sciz.stack import ImageStack
>>> from sciz.afm import save_npz_bundle, load_npz_bundle
>>> stack = ImageStack(np.zeros((4, 8, 8), np.float32), pixel_size_nm=2.0)
>>> path = save_npz_bundle("stack.npz", stack)  # doctest: +SKIP
>>> load_npz_bundle(path).n_frames  # doctest: +SKIP
4
"""

from __future__ import annotations

from ..stack import ImageStack
from .bundles_h5 import load_h5_bundle, save_h5_bundle
from .bundles_npz import load_npz_bundle, save_npz_bundle
from .export import export_bundles
from .gif import export_gif, save_gif
from .layers import select_layers
from .ome_tiff import load_ome_tiff_stack, save_ome_tiff_stack

__all__ = [
    "ImageStack",
    "export_bundles",
    "export_gif",
    "load_h5_bundle",
    "load_npz_bundle",
    "load_ome_tiff_stack",
    "save_gif",
    "save_h5_bundle",
    "save_npz_bundle",
    "save_ome_tiff_stack",
    "select_layers",
]
