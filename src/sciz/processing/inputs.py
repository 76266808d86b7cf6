"""Open anything an AFM video comes in as an :class:`~sciz.stack.ImageStack`.

Every format the registry marks as holding an AFM stack (``Format.afm_stack``) is read through
its ``read_stack``: vendor files through AFMReader (the ``afm`` extra; JPK HDF5 videos
``.h5-jpk``, high-speed AFM ``.asd`` videos, single images ``.spm``, ``.jpk``, ``.ibw``,
``.gwy``) and sciz's and playNano's bundles (``.npz``, ``.h5``, ``.ome.tif``). Plain TIFF stacks,
``.npy``/``.npz`` arrays and folders of single frames are read here, and any other registered
format holding 2-D or 3-D data (zspy, hspy, TMD...) through ``sciz.load``.

Example
-------
>>> from sciz.processing import load_stack
>>> stack = load_stack("video.asd")  # doctest: +SKIP
>>> stack.n_frames, stack.pixel_size_nm, stack.channel  # doctest: +SKIP
(32, 0.5, 'TP')
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._util import require
from ..errors import DataWarning, FormatError, UnknownFormatError, argument_error
from ..formats import Format, detect_format, get_format, list_formats
from ..formats.afm_vendor import VENDOR_FORMATS
from ..stack import _NM_PER_UNIT, METADATA_KEY, ImageStack, height_unit_not_nm

__all__ = ["DEFAULT_CHANNELS", "input_suffixes", "load_stack"]

#: Channel read when none is given, per vendor format (the names AFMReader uses).
DEFAULT_CHANNELS = {cls.extensions[0]: cls.default_channel for cls in VENDOR_FORMATS}
#: File endings read as plain arrays when the registry finds no AFM stack in them.
_ARRAY_SUFFIXES = (".npz", ".npy", ".ome.tif", ".ome.tiff", ".tif", ".tiff")
#: Endings of files that hold one frame each (a folder of them is a stack).
_FRAME_SUFFIXES = (
    *(ext for cls in VENDOR_FORMATS if not cls.video for ext in cls.extensions),
    ".npy",
    ".tif",
    ".tiff",
    ".ome.tif",
    ".ome.tiff",
)


def input_suffixes() -> tuple[str, ...]:
    """File endings :func:`load_stack` understands: those of every registered format holding an AFM
    stack, then plain arrays (a folder of single frames is also accepted)."""
    found = [ext for plugin in list_formats("afm-stack") for ext in plugin.extensions]
    return tuple(dict.fromkeys([*found, *_ARRAY_SUFFIXES]))


def _suffix(path: Path) -> str:
    """The file's ending as the registry spells it (the longest known one: ``.ome.tif`` over ``.tif``)."""
    name = path.name.lower()
    known = [ending for ending in input_suffixes() if name.endswith(ending)]
    return max(known, key=len) if known else path.suffix.lower()


def load_stack(
    path: str | os.PathLike[str], channel: str | None = None, *, pixel_size_nm: float | None = None
) -> ImageStack:
    """Read an AFM video (or a single image, or a folder of frames) into an :class:`ImageStack`.

    Parameters
    ----------
    path
        A file (``.asd``, ``.h5-jpk``, ``.spm``, ``.jpk``, ``.ibw``, ``.gwy``, ``.npz``, ``.npy``,
        ``.h5``, ``.ome.tif``, ``.tif``; see :func:`input_suffixes`), a folder of single-frame
        files (sorted by name, numbers in natural order), or any file :func:`sciz.load` reads that
        holds 2-D or 3-D data (pixel size from a length unit on its last axis).
    channel
        The data channel (e.g. ``TP`` for .asd, ``height_trace`` for JPK); ``None`` takes the
        format's default (see :data:`DEFAULT_CHANNELS`).
    pixel_size_nm
        Pixel size to use instead of the file's (plain arrays and TIFFs carry none: then 1 nm, with
        a :class:`~sciz.errors.DataWarning`).

    Returns
    -------
    ImageStack
        Frames, pixel size, channel, per-frame timestamps where the file has them, and the
        source path.

    Warns
    -----
    sciz.errors.DataWarning
        When no pixel size was found (1 nm/px is used) and when frames are blank (every pixel
        one value, as at the start of many high-speed AFM recordings).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    sciz.errors.FormatError
        If the file is unreadable, of an unknown kind, or lacks the channel (the message lists the
        channels it has where AFMReader reports them).
    sciz.errors.MissingDependencyError
        If a vendor format needs the ``afm`` extra and it is not installed.
    """
    if not isinstance(path, str | os.PathLike):
        raise argument_error("path", path, "must be a str or os.PathLike path")
    if channel is not None and (not isinstance(channel, str) or not channel):
        raise argument_error("channel", channel, "must be a non-empty channel name or None")
    source = Path(os.fspath(path)).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    # Warnings of the readers below are said once, as the caller's (not from deep inside a reader).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stack = _load_path(source, channel, pixel_size_nm)
    for said in {str(w.message): w for w in caught}.values():
        warnings.warn(said.message, stacklevel=2)
    blank = _blank_frames_note(stack, source)
    if blank:
        warnings.warn(DataWarning(blank), stacklevel=2)
    return stack


def _load_path(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    if source.is_dir():
        try:
            store = detect_format(source)  # a directory format (a zspy store) is one file
        except UnknownFormatError:
            return _load_folder(source, channel, pixel_size_nm)
        if store.afm_stack:
            return store.read_stack(source, channel, pixel_size_nm)
        return _dataset_stack(store, source, channel, pixel_size_nm)
    return _load_file(source, channel, pixel_size_nm)


def _blank_frames_note(stack: ImageStack, source: Path) -> str | None:
    """What to say about blank (constant) frames of an in-memory stack, if it has any."""
    from .video import constant_frames

    if not isinstance(stack.data, np.ndarray) or stack.data.size == 0:
        return None  # lazy data: not read just to look
    blank = constant_frames(stack.data).tolist()
    if not blank:
        return None
    shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
    return (
        f"{source}: {len(blank)} of {stack.n_frames} frames are blank (every pixel one value): frame(s) {shown}; "
        "they carry no image (align_frames:reference_frame=auto skips them as reference)"
    )


#: How a reader says it found no pixel size (a folder of frames says it once for all its files).
_NO_PIXEL_SIZE = "no pixel size found"


def _no_pixel_size(source: Path, files: str = "") -> DataWarning:
    return DataWarning(
        f"{source}: {_NO_PIXEL_SIZE}{files}; using 1 nm per pixel (give pixel_size_nm=...; on the command "
        "line sciz process --pixel-size-nm, sciz info/convert -r pixel_size_nm=...)"
    )


def _load_file(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    """One file, in this order: a registered AFM-stack format found by content; a plain array
    (``.npz``/``.npy``/TIFF); an AFM-stack format named by the extension (its reader says what is
    wrong with the content); any other registered format holding 2-D or 3-D data."""
    try:
        detected: Format | None = detect_format(source)
    except UnknownFormatError:
        detected = None
    if detected is not None and detected.afm_stack:
        return detected.read_stack(source, channel, pixel_size_nm)
    suffix = _suffix(source)
    loader = _ARRAY_LOADERS.get(suffix)
    if loader is not None:
        return loader(source, channel, pixel_size_nm)
    by_extension = _stack_format_by_extension(source)
    if by_extension is not None:
        return by_extension.read_stack(source, channel, pixel_size_nm)
    if detected is not None and detected.can_read:
        return _dataset_stack(detected, source, channel, pixel_size_nm)
    raise FormatError(
        f"{source}: sciz cannot read {suffix or 'files without an extension'} as an AFM stack; "
        f"readable: {', '.join(input_suffixes())}, a folder of frames, or any file sciz.load reads "
        "that holds 2-D or 3-D data"
    )


def _stack_format_by_extension(source: Path) -> Format | None:
    ranked = [(f.matches_extension(source), f.priority, -i, f) for i, f in enumerate(list_formats("afm-stack"))]
    best = max(ranked, key=lambda m: m[:3], default=None)
    return best[3] if best is not None and best[0] > 0 else None


def _dataset_stack(plugin: Format, source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    """A stack from any registered format: pixel size from a length unit on the last axis, times
    from a time unit on the first (see :meth:`ImageStack.from_dataset`)."""
    dataset = plugin.read(source)
    if dataset.ndim not in (2, 3) or np.dtype(dataset.dtype).kind not in "biuf":
        raise FormatError(
            f"{source}: holds {dataset.ndim}-D {dataset.dtype} data ({plugin.name}); an AFM stack is a real "
            "(frames, H, W) array or one (H, W) image"
        )
    last = dataset.axes[-1] if dataset.axes else None
    calibrated = isinstance(dataset.metadata.get(METADATA_KEY), dict) or (
        last is not None and last.units.strip() in _NM_PER_UNIT and last.scale > 0
    )
    if pixel_size_nm is None and not calibrated:
        warnings.warn(_no_pixel_size(source, " (its last axis has no length unit)"), stacklevel=2)
    unit = height_unit_not_nm(dataset)
    if unit is not None:
        warnings.warn(
            DataWarning(
                f"{source}: its lengths are in {unit}: the pixel size is converted to nm, the height values are "
                "not (kept as stored, in the file's own unit), yet GIF colour bars, AFM bundles and playNano "
                "read heights as nm"
            ),
            stacklevel=2,
        )
    stack = ImageStack.from_dataset(dataset, pixel_size_nm=pixel_size_nm)
    if channel is not None:
        stack.channel = channel
    stack.file_path = source
    return stack


# -- bundles and plain arrays -------------------------------------------------------------------
def _load_npz(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    from ..formats._zip import ZipReader
    from ..formats.npz import read_npy_member

    # The checked ZIP reader: sizes, names and methods are verified before anything is inflated.
    with ZipReader(source) as archive:
        arrays = {Path(m.name).stem: m for m in archive.members.values() if m.name.endswith(".npy")}
        if {"data", "pixel_size_nm"} <= arrays.keys():
            bundle = True
        else:
            bundle = False
            names = sorted(arrays)
            key = "data" if "data" in arrays else (names[0] if len(names) == 1 else None)
            if key is None:
                raise FormatError(
                    f"{source}: holds several arrays ({', '.join(names) or 'none'}) and none is called 'data'; "
                    "save the stack as 'data' or as the only array"
                )
            values = read_npy_member(archive, arrays[key])
    if bundle:
        # Has a bundle's keys but not all of them: the bundle reader says which are missing.
        return get_format("afm-npz").read_stack(source, channel, pixel_size_nm)
    return _array_stack(values, source, channel, pixel_size_nm)


def _load_npy(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    from .._util import memory_budget
    from ..formats.npy import read_npy
    from .blocks import FrameFile

    if source.stat().st_size > memory_budget() // 4:
        # Too big to hold with its layers: read by frame blocks from the file (out-of-core processing).
        return _array_stack(FrameFile.open(source), source, channel, pixel_size_nm)
    return _array_stack(read_npy(source), source, channel, pixel_size_nm)


def _load_tiff(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    tifffile = require("tifffile", "tiff")
    try:
        with tifffile.TiffFile(source) as tif:
            is_ome = bool(tif.is_ome and tif.ome_metadata)
            if not is_ome:
                from ..formats._guard import check_tiff_series_size

                frames = _uniform_pages(tif) if len(tif.pages) > _MANY_PAGES and not tif.is_imagej else None
                if frames is not None:
                    check_tiff_series_size(tif, frames, source)
                    values = np.stack([page.asarray() for page in frames.pages])
                else:
                    series = tif.series[0]
                    _check_tiff_layout(tif, series.axes, tuple(series.shape), source)  # both squeezed
                    parts = tif.series if len(tif.series) > 1 else [series]
                    for part in parts:
                        check_tiff_series_size(tif, part, source)  # a forged shape is refused before allocating
                    # Frames written one call each (tifffile's loop idiom) are one series each: stacked.
                    values = series.asarray() if len(parts) == 1 else np.stack([part.asarray() for part in parts])
                resolution = _tiff_pixel_nm(tif)
    except FormatError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # tifffile and its codecs raise many kinds on damaged files (struct, Imcd...)
        raise FormatError(f"{source}: unreadable TIFF ({type(exc).__name__}: {exc})") from None
    if is_ome:
        return get_format("ome-tiff").read_stack(source, channel, pixel_size_nm)
    values = np.asarray(values)
    values = values.reshape((-1, *values.shape[-2:])) if values.ndim >= 2 else values
    return _array_stack(values, source, channel, pixel_size_nm or resolution)


#: From this many pages a TIFF of single 2-D pages of one shape is read page by page: tifffile's
#: series detection takes quadratic time over many one-page series (found by attack: 20,000 pages of
#: a 4.8 MB file took 86 s; 5,000 pages 2.3 s, page by page 0.01 s).
_MANY_PAGES = 256


def _uniform_pages(tif: Any) -> Any:
    """The pages of ``tif`` as one (frames, Y, X) stack when they are single-sample 2-D images of one
    shape and type (a ``shape``/``dtype``/``pages`` record, as a tifffile series has), else None."""
    from types import SimpleNamespace

    pages = [page for page in tif.pages if page is not None]
    kinds = {(tuple(page.shape), str(page.dtype), int(getattr(page, "samplesperpixel", 1))) for page in pages}
    if len(kinds) != 1:
        return None
    ((shape, dtype, samples),) = kinds
    if len(shape) != 2 or samples != 1:
        return None
    return SimpleNamespace(shape=(len(pages), *shape), dtype=np.dtype(dtype), pages=pages)


#: TIFF series axes (tifffile's letters) a stack of height frames may have: frames (T, Z, Q, I) and Y X.
_STACK_AXES = set("TZQIYX")


def _check_tiff_layout(tif: Any, axes: str, shape: tuple[int, ...], source: Path) -> None:
    """Refuse TIFFs that are not one stack of single-channel frames, before reading them (found by a
    trial user: RGB stacks read as 3x the frames, a TCYX hyperstack's channels as frames, and a
    second series of another size was dropped without a word)."""
    if "S" in axes:
        raise FormatError(f"{source}: RGB/multi-sample images (axes {axes}), not height maps; export the raw heights")
    frames = [a for a, n in zip(axes, shape, strict=False) if a in "TZQI" and n > 1]
    channels = shape[axes.index("C")] if "C" in axes else 1
    if channels > 1 and frames:  # a plain (3, H, W) TIFF is "CYX" to tifffile: its planes are the frames
        raise FormatError(
            f"{source}: a hyperstack with {channels} channels (axes {axes}): save each channel "
            "as its own stack, or export one channel"
        )
    other = [a for a, n in zip(axes, shape, strict=False) if a not in _STACK_AXES and a != "C" and n > 1]
    if other:
        raise FormatError(f"{source}: axes {axes} are not a stack of frames (frames, Y, X)")
    if len(frames) > 1:
        raise FormatError(f"{source}: a hyperstack with axes {axes} ({len(frames)} frame axes): save one series")
    if len(tif.series) > 1:
        kinds = {(tuple(s.shape), str(s.dtype)) for s in tif.series}
        if len(kinds) > 1 or len(shape) != 2:
            sizes = sorted({tuple(s.shape) for s in tif.series})
            raise FormatError(
                f"{source}: {len(tif.series)} image series of shapes {sizes}; sciz reads a TIFF holding one "
                "stack (or single frames of one shape and type)"
            )


def _tiff_pixel_nm(tif: Any) -> float | None:
    """Pixel size from an ImageJ ``unit`` and the X resolution tag (pixels per unit), if both exist."""
    imagej = tif.imagej_metadata or {}
    unit = str(imagej.get("unit", "")).replace("\\u00B5", "µ").strip().lower()
    per_unit = {"nm": 1.0, "nanometer": 1.0, "µm": 1e3, "um": 1e3, "micron": 1e3}.get(unit)
    tag = tif.pages[0].tags.get("XResolution")
    if per_unit is None or tag is None:
        return None
    numerator, denominator = tag.value
    if not numerator or not denominator:
        return None
    return per_unit * denominator / numerator


def _array_stack(values: Any, source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    from .blocks import FrameFile

    array = values if isinstance(values, FrameFile) else np.asarray(values)
    if array.ndim not in (2, 3) or array.dtype.kind not in "biuf":
        raise FormatError(
            f"{source}: holds a {array.ndim}-D {array.dtype} array; an AFM stack is a real (frames, H, W) "
            "array or one (H, W) image"
        )
    if pixel_size_nm is None:
        warnings.warn(_no_pixel_size(source), stacklevel=2)
    return ImageStack(array, pixel_size_nm or 1.0, channel or "height_trace", file_path=source)


# -- folders of frames --------------------------------------------------------------------------
def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _load_folder(folder: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    links = [p for p in entries if p.is_symlink()]
    if links:  # a folder of frames is read as it is; a link could read any file on the machine (attack)
        raise FormatError(f"{links[0]}: a symbolic link in a folder of frames; copy the frame into the folder instead")
    candidates = [p for p in entries if p.is_file()]
    frame_suffixes = _FRAME_SUFFIXES
    by_suffix: dict[str, list[Path]] = {}
    for path in candidates:
        if _suffix(path) in frame_suffixes:
            by_suffix.setdefault(_suffix(path), []).append(path)
    if not by_suffix:
        raise FormatError(
            f"{folder}: no frame files found; a folder of frames holds one image per file ({', '.join(frame_suffixes)})"
        )
    if len(by_suffix) > 1:
        counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_suffix.items()))
        raise FormatError(f"{folder}: mixes frame formats ({counts}); keep one kind of file per folder")
    files = sorted(next(iter(by_suffix.values())), key=_natural_key)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stacks = [_load_file(path, channel, pixel_size_nm) for path in files]
    uncalibrated = [w for w in caught if _NO_PIXEL_SIZE in str(w.message)]
    if uncalibrated:
        count = f" in {len(uncalibrated)} of its {len(files)} frame files"
        warnings.warn(_no_pixel_size(folder, count), stacklevel=2)
    for said in caught:
        if said not in uncalibrated:
            warnings.warn(said.message, stacklevel=2)
    first = stacks[0]
    for path, stack in zip(files, stacks, strict=True):
        if stack.image_shape != first.image_shape:
            raise FormatError(
                f"{folder}: {path.name} is {stack.height}x{stack.width} but {files[0].name} is "
                f"{first.height}x{first.width}; all frames must have one size"
            )
    dtypes = {np.dtype(s.data.dtype) for s in stacks}
    if len(dtypes) > 1:
        # numpy would promote them silently (int64 and uint64 frames to float64, past 2**53 inexactly)
        kinds = ", ".join(sorted(str(d) for d in dtypes))
        raise FormatError(
            f"{folder}: its frames are of different types ({kinds}); save them in one type to read them as one stack"
        )
    data = np.concatenate([np.asarray(s.data) for s in stacks], axis=0)
    frames = []
    for path, stack in zip(files, stacks, strict=True):
        for frame in stack.frame_metadata:
            frames.append({**frame, "source_file": path.name})
    return ImageStack(data, first.pixel_size_nm, first.channel, frames, file_path=folder)


_Loader = Callable[[Path, "str | None", "float | None"], ImageStack]
_ARRAY_LOADERS: dict[str, _Loader] = {
    ".npz": _load_npz,
    ".npy": _load_npy,
    ".ome.tif": _load_tiff,
    ".ome.tiff": _load_tiff,
    ".tif": _load_tiff,
    ".tiff": _load_tiff,
}
