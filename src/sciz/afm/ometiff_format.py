"""Registry format for OME-TIFF stacks (``.ome.tif``): single-channel frame stacks with calibration.

Reading takes the frames, pixel size, per-plane times and channel name from the OME-XML (any
single-channel T or Z series; playNano's extra tags are kept too). Writing stores a 2-D or 3-D
dataset as a playNano-compatible OME-TIFF via :func:`sciz.afm.save_ome_tiff_stack`. The registry
names this class in ``BUILTIN_FORMATS``; the storage layer never imports :mod:`sciz.afm`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..formats._base import Format
from ..model import Axis, Dataset, StoredArray
from ..stack import _NM_PER_UNIT, _SECONDS_PER_UNIT, METADATA_KEY, ImageStack, height_unit_not_nm

__all__ = ["OmeTiffFormat"]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _exact_in_float32(data: Any) -> bool:
    """Whether ``data`` (a numpy array) survives the cast to float32 unchanged; lazy data counts as not."""
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "biuf":
        return False
    with np.errstate(all="ignore"):
        return bool(np.array_equal(data.astype(np.float32).astype(data.dtype), data, equal_nan=True))


def _physical(axis: Axis) -> tuple[str, float, float]:
    """An axis as (unit kind, scale, offset) in nm or s when its unit is a length or a time."""
    unit = axis.units.strip()
    for kind, table in (("length", _NM_PER_UNIT), ("time", _SECONDS_PER_UNIT)):
        factor = table.get(unit)
        if factor is not None:
            return kind, axis.scale * factor, axis.offset * factor
    return unit, float(axis.scale), float(axis.offset)


def _stored(path: Path, *, every_page: bool = False) -> StoredArray:
    """How the first series' planes (``every_page``: all pages) are stored: TIFF compression
    (``none``, ``zlib``...) and bytes."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = [page for page in (tif.pages if every_page else tif.series[0].pages) if page is not None]
        codecs = sorted({_compression_name(page.compression) for page in pages})
        stored = sum(int(n) for page in pages for n in page.databytecounts)
    return StoredArray(codec="/".join(codecs) or "none", stored_bytes=stored)


def _compression_name(compression: Any) -> str:
    """tifffile's COMPRESSION member as a short name: NONE -> none, ADOBE_DEFLATE -> zlib."""
    name = str(getattr(compression, "name", compression)).lower()
    return {"adobe_deflate": "zlib", "deflate": "zlib"}.get(name, name)


def changed_axes(before: list[Axis], after: list[Axis]) -> list[str]:
    """Names of the axes in ``before`` whose calibration ``after`` does not keep (physically: 1 um == 1000 nm)."""
    changed = []
    for old, new in zip(before, after, strict=False):
        (kind_a, scale_a, offset_a), (kind_b, scale_b, offset_b) = _physical(old), _physical(new)
        same = kind_a == kind_b and math.isclose(scale_a, scale_b, rel_tol=1e-6)
        same = same and math.isclose(offset_a, offset_b, rel_tol=1e-6, abs_tol=1e-9 * abs(scale_a))
        if not same:
            changed.append(old.name or "?")
    return changed


def stack_problems(dataset: Dataset, label: str, *, keeps_layers: bool) -> list[str]:
    """What an AFM stack file (``label``: OME-TIFF, AFM .npz bundle...) cannot keep of ``dataset``.

    The file holds what :meth:`ImageStack.from_dataset` keeps, as float32 (frames, H, W) arrays, so
    the dataset goes through that model in memory (arrays shared, nothing copied) and every
    difference is listed: dtype, shape, axis calibration, title, metadata, provenance, layers.
    """
    found: list[str] = []
    if dataset.ndim not in (2, 3):
        return [f"data of shape {dataset.shape}: {label} holds 2-D frames or 3-D (frames, H, W) stacks"]
    if dataset.dtype != np.float32:
        change = "the values are kept" if _exact_in_float32(dataset.data) else "the values would change"
        found.append(f"data of dtype {dataset.dtype} ({label} stores float32; {change})")
    if dataset.ndim == 2:
        found.append(f"the 2-D image becomes a stack of one frame, shape (1, {dataset.shape[0]}, {dataset.shape[1]})")
    unit = height_unit_not_nm(dataset)
    if unit is not None:
        found.append(
            f"heights in {unit} ({label} converts the {unit} pixel size to nm but holds heights as nm, unconverted)"
        )
    saved = dataset.metadata.get(METADATA_KEY)
    other = sorted(str(k) for k in dataset.metadata if k != METADATA_KEY)
    if other:
        found.append(f"metadata {other} ({label} keeps only an AFM stack's pixel size, channel and frame metadata)")
    layers = {k: v for k, v in dataset.layers.items() if keeps_layers and v.ndim in (2, 3)}
    masks = {k: v for k, v in dataset.masks.items() if keeps_layers and v.ndim in (2, 3)}
    dropped = sorted(set(dataset.layers) - set(layers)) + sorted(set(dataset.masks) - set(masks))
    if dropped:
        kept = "2-D or 3-D layers and masks" if keeps_layers else "no layers or masks (use an AFM .npz/.h5 bundle)"
        found.append(f"layers/masks {dropped} ({label} keeps {kept})")
    odd = [k for k, v in layers.items() if v.dtype != np.float32 and not _exact_in_float32(v)]
    if odd:
        found.append(f"layers {sorted(odd)} whose values float32 cannot hold exactly")
    try:
        model = ImageStack.from_dataset(dataset.copy(layers=layers, masks=masks)).to_dataset()
    except ValueError as exc:
        return [*found, f"it is not an AFM stack: {exc}"]
    axes = dataset.axes if dataset.ndim == 3 else dataset.axes[-2:]
    changed = changed_axes(axes, model.axes[-len(axes) :])
    if changed:
        found.append(
            f"axis calibration of {changed} ({label} keeps a square pixel size in a length unit and "
            "evenly spaced frame times in a time unit; offsets only for time)"
        )
    if not isinstance(saved, dict):
        if dataset.provenance:
            found.append(f"provenance ({len(dataset.provenance)} steps; {label} keeps only an AFM stack's own)")
        if dataset.name and model.name != dataset.name:
            found.append(f"title {dataset.name!r}")
    return found


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
        dataset = load_ome_tiff_stack(path, channel=channel).to_dataset()
        dataset.storage = {"data": _stored(path)}
        return dataset

    def problems(self, dataset: Dataset) -> list[str]:
        return stack_problems(dataset, "OME-TIFF", keeps_layers=False)

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
