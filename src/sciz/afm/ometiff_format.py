"""Registry format for OME-TIFF stacks (``.ome.tif``): single-channel frame stacks with calibration.

Reading takes the frames, pixel size, per-plane times and channel name from the OME-XML (any
single-channel T or Z series; playNano's extra tags are kept too). Writing stores a 2-D or 3-D
dataset as a playNano-compatible OME-TIFF via :func:`sciz.afm.save_ome_tiff_stack`. The registry
names this class in ``BUILTIN_FORMATS``; the storage layer never imports :mod:`sciz.afm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..formats._base import Format
from ..model import Dataset
from ..stack import _NM_PER_UNIT, _SECONDS_PER_UNIT, METADATA_KEY, ImageStack

__all__ = ["OmeTiffFormat"]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _exact_in_float32(data: Any) -> bool:
    """Whether ``data`` (a numpy array) survives the cast to float32 unchanged; lazy data counts as not."""
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "biuf":
        return False
    with np.errstate(all="ignore"):
        return bool(np.array_equal(data.astype(np.float32).astype(data.dtype), data, equal_nan=True))


def _lost_calibration(dataset: Dataset) -> list[str]:
    """Axes whose calibration an OME-TIFF stack made by :meth:`ImageStack.from_dataset` cannot keep."""
    axes = list(dataset.axes)
    spatial, time = axes[-2:], axes[0] if dataset.ndim == 3 else None
    lost = []
    nm = [_NM_PER_UNIT.get(a.units.strip()) for a in spatial]
    for axis, factor in zip(spatial, nm, strict=True):
        calibrated = bool(axis.units) or axis.scale != 1.0 or axis.offset != 0.0
        if calibrated and (factor is None or axis.offset != 0.0 or axis.scale <= 0):
            lost.append(axis.name)
    if not lost and None not in nm:
        y, x = (a.scale * f for a, f in zip(spatial, nm, strict=True) if f is not None)
        if not np.isclose(y, x, rtol=1e-6):
            lost.append(spatial[0].name)
    calibrated_time = time is not None and (bool(time.units) or time.scale != 1.0 or time.offset != 0.0)
    if time is not None and calibrated_time and _SECONDS_PER_UNIT.get(time.units.strip()) is None:
        lost.append(time.name)
    return lost


class OmeTiffFormat(Format):
    """OME-TIFF frame stack (ImageJ/Fiji, Bio-Formats and playNano open it)."""

    name = "ome-tiff"
    description = "OME-TIFF frame stack (pixel size, DeltaT per plane, channel name)"
    extensions = (".ome.tif", ".ome.tiff")
    magic = _TIFF_MAGIC
    priority = 10
    afm_stack: ClassVar[bool] = True
    stack_export: ClassVar[tuple[str, ...]] = ("tif", "tiff", "ome-tiff", "ome.tif")
    stack_options: ClassVar[tuple[str, ...]] = ("compression",)

    def sniff(self, path: Path, head: bytes) -> bool:
        if not head.startswith(_TIFF_MAGIC):
            return False
        try:
            import tifffile
        except ImportError:
            return self.matches_extension(path) > 0
        try:
            with tifffile.TiffFile(path) as tif:
                return bool(tif.is_ome)
        except Exception:  # tifffile raises many kinds on damaged files; then it is not ours
            return False

    def read(self, path: Path, **options: Any) -> Dataset:
        from .ome_tiff import load_ome_tiff_stack

        channel = options.pop("channel", "height_trace")
        if options:
            from ..errors import argument_error

            raise argument_error("options", sorted(options), "the ome-tiff reader takes only 'channel'")
        return load_ome_tiff_stack(path, channel=channel).to_dataset()

    def problems(self, dataset: Dataset) -> list[str]:
        found = []
        if dataset.ndim not in (2, 3):
            found.append(f"it holds 2-D frames or 3-D (frames, H, W) stacks, not {dataset.ndim}-D data")
        other = sorted(str(k) for k in dataset.metadata if k != METADATA_KEY)
        if other:
            found.append(f"metadata {other} (OME-TIFF keeps only an AFM stack's pixel size, channel and frame times)")
        if dataset.data.dtype != np.float32 and not _exact_in_float32(dataset.data):
            found.append(f"data of dtype {dataset.data.dtype} (OME-TIFF stacks are float32; the values would change)")
        if METADATA_KEY not in dataset.metadata and dataset.ndim in (2, 3):
            lost = _lost_calibration(dataset)
            if lost:
                found.append(f"axis calibration of {lost} (OME-TIFF keeps a pixel size in nm and frame times)")
        extra = sorted(k for k in dataset.layers if k != "raw")
        if extra or dataset.masks:
            found.append(
                "it keeps no processed layers or masks "
                f"({', '.join(extra + sorted(dataset.masks))}); use an AFM .npz/.h5 bundle (sciz.afm)"
            )
        return found

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        from .ome_tiff import save_ome_tiff_stack

        raw = bool(options.pop("raw", False))
        compression = options.pop("compression", None)
        if options:
            from ..errors import argument_error

            raise argument_error("options", sorted(options), "the ome-tiff writer takes 'raw' and 'compression'")
        return save_ome_tiff_stack(path, ImageStack.from_dataset(dataset), raw, compression=compression)

    def read_stack(self, path: Path, channel: str | None = None, pixel_size_nm: float | None = None) -> ImageStack:
        from .ome_tiff import load_ome_tiff_stack

        stack = load_ome_tiff_stack(path, channel=channel or "height_trace")
        if pixel_size_nm is not None:
            stack.pixel_size_nm = pixel_size_nm
        return stack

    def write_stack(self, stack: ImageStack, path: Path, raw: bool = False, **options: Any) -> Path:
        """Options: ``compression`` as :func:`~sciz.afm.save_ome_tiff_stack`."""
        from .ome_tiff import save_ome_tiff_stack

        return save_ome_tiff_stack(path, stack, raw, **options)
