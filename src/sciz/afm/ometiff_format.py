"""Registry format for OME-TIFF stacks (``.ome.tif``): single-channel frame stacks with calibration.

Reading takes the frames, pixel size, per-plane times and channel name from the OME-XML (any
single-channel T or Z series; playNano's extra tags are kept too). Writing stores a 2-D or 3-D
dataset as a playNano-compatible OME-TIFF via :func:`sciz.afm.save_ome_tiff_stack`. The registry
names this class in ``BUILTIN_FORMATS``; the storage layer never imports :mod:`sciz.afm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..formats._base import Format
from ..model import Dataset
from ..stack import ImageStack

__all__ = ["OmeTiffFormat"]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


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
