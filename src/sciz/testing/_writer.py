"""Write an array as one format the way sciz users do; loaded by path in writer processes (no pytest import).

:mod:`sciz.testing.reliability` imports :func:`write_as`; its writer processes load this file
alone (``importlib.util.spec_from_file_location``), since importing the ``sciz.testing`` package
would import pytest and make every killed or racing writer slower to start.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_as(name: str, path: Path, data: np.ndarray) -> Path:
    """Write ``data`` as format ``name`` at ``path`` (AFM bundles through ``sciz.afm``); return the path."""
    from sciz import formats
    from sciz.model import Dataset

    if name in ("afm-npz", "afm-h5"):
        from sciz.afm import save_h5_bundle, save_npz_bundle
        from sciz.stack import ImageStack

        stack = ImageStack(data.astype(np.float64), pixel_size_nm=2.0)
        return (save_npz_bundle if name == "afm-npz" else save_h5_bundle)(path, stack)
    return Path(formats.get_format(name).write(Dataset(data), path))
