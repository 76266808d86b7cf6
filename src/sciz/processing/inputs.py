"""Open anything an AFM video comes in as an :class:`~sciz.stack.ImageStack`.

Vendor files are read through AFMReader (the ``afm`` extra): JPK HDF5 videos (``.h5-jpk``),
high-speed AFM ``.asd`` videos, and single images (``.spm``, ``.jpk``, ``.ibw``, ``.gwy``). sciz's
and playNano's bundles (``.npz``, ``.h5``, ``.ome.tif``) go through :mod:`sciz.afm`; plain TIFF
stacks, ``.npy``/``.npz`` arrays and folders of single frames are read directly.

Example
-------
>>> from sciz.processing import load_stack
>>> stack = load_stack("video.asd")  # doctest: +SKIP
>>> stack.n_frames, stack.pixel_size_nm, stack.channel  # doctest: +SKIP
(32, 0.5, 'TP')
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, MissingDependencyError, argument_error
from ..formats import require
from ..stack import ImageStack

__all__ = ["DEFAULT_CHANNELS", "INPUT_SUFFIXES", "load_stack"]

#: Channel read when none is given, per vendor format (the names AFMReader uses).
DEFAULT_CHANNELS = {
    ".asd": "TP",
    ".h5-jpk": "height_trace",
    ".jpk": "height_trace",
    ".spm": "Height",
    ".ibw": "HeightTracee",
    ".gwy": "ZSensor",
}
_VENDOR_SINGLE = (".spm", ".jpk", ".ibw", ".gwy")
_VENDOR_READERS = {
    ".spm": ("AFMReader.spm", "load_spm"),
    ".jpk": ("AFMReader.jpk", "load_jpk"),
    ".ibw": ("AFMReader.ibw", "load_ibw"),
    ".gwy": ("AFMReader.gwy", "load_gwy"),
}
_ARRAY_SINGLE = (".npy", ".tif", ".tiff")
#: File endings :func:`load_stack` understands (a folder of single frames is also accepted).
INPUT_SUFFIXES: tuple[str, ...] = (".asd", ".h5-jpk", *_VENDOR_SINGLE, ".npz", ".npy", ".h5", ".hdf5")
INPUT_SUFFIXES += (".ome.tif", ".ome.tiff", ".tif", ".tiff")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for ending in (".ome.tiff", ".ome.tif", ".h5-jpk"):
        if name.endswith(ending):
            return ending
    return path.suffix.lower()


def load_stack(
    path: str | os.PathLike[str], channel: str | None = None, *, pixel_size_nm: float | None = None
) -> ImageStack:
    """Read an AFM video (or a single image, or a folder of frames) into an :class:`ImageStack`.

    Parameters
    ----------
    path
        A file (``.asd``, ``.h5-jpk``, ``.spm``, ``.jpk``, ``.ibw``, ``.gwy``, ``.npz``, ``.npy``,
        ``.h5``, ``.ome.tif``, ``.tif``) or a folder of single-frame files (sorted by name, numbers
        in natural order).
    channel
        The data channel (e.g. ``TP`` for .asd, ``height_trace`` for JPK); ``None`` takes the
        format's default (see :data:`DEFAULT_CHANNELS`).
    pixel_size_nm
        Pixel size to use when the file carries none (plain arrays and TIFFs); by default 1 nm.

    Returns
    -------
    ImageStack
        Frames, pixel size, channel, per-frame timestamps where the file has them, and the
        source path.

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
    if source.is_dir():
        return _load_folder(source, channel, pixel_size_nm)
    suffix = _suffix(source)
    loader = _LOADERS.get(suffix)
    if loader is None:
        raise FormatError(
            f"{source}: sciz cannot read {suffix or 'files without an extension'} as an AFM stack; "
            f"readable: {', '.join(INPUT_SUFFIXES)} or a folder of frames"
        )
    return loader(source, channel, pixel_size_nm)


# -- AFMReader formats --------------------------------------------------------------------------
def _has_signature(head: bytes, suffix: str) -> bool:
    """Whether the first bytes look like ``suffix``'s format (AFMReader loops forever on some
    non-Gwyddion input, so files are checked before it sees them)."""
    if suffix == ".gwy":
        return head[:4] in (b"GWYP", b"GWYO")
    if suffix == ".asd":
        return len(head) >= 4 and int.from_bytes(head[:4], "little") in (0, 1, 2)
    if suffix == ".h5-jpk":
        return head.startswith(b"\x89HDF\r\n\x1a\n")
    if suffix == ".jpk":
        return head[:4] in (b"II*\x00", b"MM\x00*")
    if suffix == ".ibw":
        # Igor binary waves start with their version (1, 2, 3 or 5) as a 16-bit int, either byte order.
        return len(head) >= 2 and (
            (head[0] in (1, 2, 3, 5) and head[1] == 0) or (head[0] == 0 and head[1] in (1, 2, 3, 5))
        )
    if suffix == ".spm":
        return head.startswith(b"\\*")  # Bruker headers open with "\\*File list"
    return True


@contextlib.contextmanager
def _afmreader(source: Path, module: str) -> Iterator[Any]:
    """Import an AFMReader module quietly and turn its errors into FormatError naming the file.

    AFMReader logs every header field through loguru and re-enables its logger when each module is
    imported, so the logger is disabled after the import and enabled again afterwards.
    """
    suffix = _suffix(source)
    try:
        with source.open("rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise FormatError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    if not _has_signature(head, suffix):
        raise FormatError(f"{source}: does not start like a {suffix} file (corrupt, or another format renamed)")
    require("AFMReader", "afm")
    reader = importlib.import_module(module)
    quiet: Any = None
    with contextlib.suppress(ImportError):
        from loguru import logger as quiet

        quiet.disable("AFMReader")
    try:
        yield reader
    except (FileNotFoundError, FormatError, MissingDependencyError):
        raise
    except Exception as exc:  # AFMReader is third-party code: any failure on a file is "unreadable"
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        text = text or type(exc).__name__
        raise FormatError(f"{source}: AFMReader could not read it ({text})") from exc
    finally:
        if quiet is not None:
            quiet.enable("AFMReader")


def _frames_from_times(times: list[float | None], extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"timestamp": t, **extra} for t in times]


def _load_asd(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    channel = channel or DEFAULT_CHANNELS[".asd"]
    with _afmreader(source, "AFMReader.asd") as reader:
        data, pixel, header = reader.load_asd(source, channel)
    data = np.asarray(data)
    # The header holds one frame time (ms) for the whole video and the date the file was written,
    # i.e. when the last frame finished; frame 0 started n * frame_time earlier.
    frame_time_s = float(header.get("frame_time", 0.0)) / 1000.0
    n = int(data.shape[0])
    times: list[float | None] = [i * frame_time_s if frame_time_s > 0 else None for i in range(n)]
    extra: dict[str, Any] = {"frame_pixel_size_nm": float(pixel)}
    if frame_time_s > 0:
        extra["frame_duration_s"] = frame_time_s
        extra["line_rate"] = float(header.get("y_pixels", data.shape[1])) / frame_time_s
    frames = _frames_from_times(times, extra)
    start = _asd_start_ms(header, n * frame_time_s)
    if start is not None:
        for i, frame in enumerate(frames):
            frame["start_epoch_ms"] = start + round(i * frame_time_s * 1000)
    return ImageStack(data, pixel_size_nm or float(pixel), channel, frames, file_path=source)


def _asd_start_ms(header: dict[str, Any], duration_s: float) -> int | None:
    try:
        end = dt.datetime(
            int(header["year"]),
            int(header["month"]),
            int(header["day"]),
            int(header["hour"]),
            int(header["minute"]),
            int(header["second"]),
            tzinfo=dt.UTC,
        )
    except (KeyError, ValueError, TypeError):
        return None
    return round((end.timestamp() - duration_s) * 1000)


def _load_h5jpk(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    channel = channel or DEFAULT_CHANNELS[".h5-jpk"]
    known = _jpk_channels(source)
    if known and channel not in known:
        raise FormatError(f"{source}: no channel {channel!r}; the file has {', '.join(known)}")
    with _afmreader(source, "AFMReader.h5_jpk") as reader:
        data, pixel, approximate = reader.load_h5jpk(source, channel)
    data = np.asarray(data)
    n = int(data.shape[0])
    # AFMReader estimates times from the line rate (lines / rate per frame), which ignores the
    # pause between frames; the file records each frame's real start and end (epoch ms).
    starts, ends, line_rate = _jpk_frame_times(source, n)
    frames: list[dict[str, Any]] = []
    for i in range(n):
        frame: dict[str, Any] = {"frame_pixel_size_nm": float(pixel)}
        if starts is not None:
            frame["timestamp"] = (starts[i] - starts[0]) / 1000.0
            frame["start_epoch_ms"] = int(starts[i])
            if ends is not None:
                frame["frame_duration_s"] = float(ends[i] - starts[i]) / 1000.0
        else:
            frame["timestamp"] = float(approximate.get(f"frame {i}", i))
        if line_rate is not None:
            frame["line_rate"] = line_rate
        frames.append(frame)
    return ImageStack(data, pixel_size_nm or float(pixel), channel, frames, file_path=source)


def _jpk_channels(source: Path) -> list[str]:
    """Channel names as AFMReader spells them (``<name>_trace``/``<name>_retrace``), from the
    ``channel.name`` and ``retrace`` attributes of each ``Measurement_*/Channel_*`` group."""
    h5py = require("h5py", "hdf5")
    names: list[str] = []
    try:
        with h5py.File(source, "r") as handle:
            for measurement in (handle[k] for k in handle if k.startswith("Measurement_")):
                for key in measurement:
                    attrs = measurement[key].attrs if key.startswith("Channel_") else {}
                    if "channel.name" not in attrs:
                        continue
                    name = _text(attrs["channel.name"]).lower()
                    retrace = _text(attrs.get("retrace", "false")).lower() in ("true", "1")
                    names.append(f"{name}_{'retrace' if retrace else 'trace'}")
    except OSError as exc:
        raise FormatError(f"{source}: unreadable JPK HDF5 file ({exc})") from None
    return names


def _text(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes | np.bytes_) else str(value)


def _jpk_frame_times(source: Path, n: int) -> tuple[np.ndarray | None, np.ndarray | None, float | None]:
    h5py = require("h5py", "hdf5")
    try:
        with h5py.File(source, "r") as handle:
            names = sorted(k for k in handle if k.startswith("Measurement_"))
            if not names:
                return None, None, None
            group = handle[names[0]]
            rate = group.attrs.get("timing-settings.scanRate")
            line_rate = float(rate) if rate is not None else None
            if "meta-data/start-times" not in group:
                return None, None, line_rate
            starts = np.asarray(group["meta-data/start-times"][()], dtype=np.int64).ravel()
            ends = None
            if "meta-data/end-times" in group:
                ends = np.asarray(group["meta-data/end-times"][()], dtype=np.int64).ravel()
    except OSError as exc:
        raise FormatError(f"{source}: unreadable JPK HDF5 file ({exc})") from None
    if starts.size != n:
        return None, None, line_rate
    return starts, ends if ends is not None and ends.size == n else None, line_rate


def _load_vendor_image(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    suffix = _suffix(source)
    channel = channel or DEFAULT_CHANNELS[suffix]
    module, function = _VENDOR_READERS[suffix]
    with _afmreader(source, module) as reader:
        image, pixel = getattr(reader, function)(source, channel)[:2]
    frames = [{"timestamp": None, "frame_pixel_size_nm": float(pixel)}]
    return ImageStack(np.asarray(image)[np.newaxis], pixel_size_nm or float(pixel), channel, frames, file_path=source)


# -- bundles and plain arrays -------------------------------------------------------------------
def _load_npz(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    import zipfile

    try:
        with zipfile.ZipFile(source) as archive:
            members = {Path(n).stem for n in archive.namelist()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise FormatError(f"{source}: not a readable NPZ archive ({exc})") from None
    if {"data", "pixel_size_nm"} <= members:
        from ..afm import load_npz_bundle

        stack = load_npz_bundle(source, channel=channel or "height_trace")
        return _override_pixel(stack, pixel_size_nm)
    try:
        with np.load(source, allow_pickle=False) as archive:
            names = list(archive.files)
            key = "data" if "data" in names else (names[0] if len(names) == 1 else None)
            if key is None:
                raise FormatError(
                    f"{source}: holds several arrays ({', '.join(names)}) and none is called 'data'; "
                    "save the stack as 'data' or as the only array"
                )
            values = archive[key]
    except ValueError as exc:
        raise FormatError(f"{source}: unreadable NPZ member ({exc}); object arrays are never unpickled") from None
    return _array_stack(values, source, channel, pixel_size_nm)


def _load_npy(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    try:
        values = np.load(source, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{source}: not a readable .npy array ({exc}); object arrays are never unpickled") from None
    return _array_stack(values, source, channel, pixel_size_nm)


def _load_h5(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    from ..afm import load_h5_bundle

    return _override_pixel(load_h5_bundle(source, channel=channel or "height_trace"), pixel_size_nm)


def _load_tiff(source: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    tifffile = require("tifffile", "tiff")
    try:
        with tifffile.TiffFile(source) as tif:
            is_ome = bool(tif.is_ome and tif.ome_metadata)
            if not is_ome:
                series = tif.series[0]
                values = series.asarray()
                axes = series.get_axes(False) if hasattr(series, "get_axes") else series.axes
                resolution = _tiff_pixel_nm(tif)
    except (OSError, ValueError, KeyError, IndexError, tifffile.TiffFileError) as exc:
        raise FormatError(f"{source}: unreadable TIFF ({exc})") from None
    if is_ome:
        from ..afm import load_ome_tiff_stack

        return _override_pixel(load_ome_tiff_stack(source, channel=channel or "height_trace"), pixel_size_nm)
    values = np.asarray(values)
    if values.ndim == 3 and axes.endswith("S") and values.shape[-1] in (3, 4):
        raise FormatError(f"{source}: an RGB image, not a height map; export the raw heights instead")
    values = values.reshape((-1, *values.shape[-2:])) if values.ndim >= 2 else values
    return _array_stack(values, source, channel, pixel_size_nm or resolution)


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
    array = np.asarray(values)
    if array.ndim not in (2, 3) or array.dtype.kind not in "biuf":
        raise FormatError(
            f"{source}: holds a {array.ndim}-D {array.dtype} array; an AFM stack is a real (frames, H, W) "
            "array or one (H, W) image"
        )
    return ImageStack(array, pixel_size_nm or 1.0, channel or "height_trace", file_path=source)


def _override_pixel(stack: ImageStack, pixel_size_nm: float | None) -> ImageStack:
    if pixel_size_nm is not None:
        stack.pixel_size_nm = pixel_size_nm
    return stack


# -- folders of frames --------------------------------------------------------------------------
def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _load_folder(folder: Path, channel: str | None, pixel_size_nm: float | None) -> ImageStack:
    candidates = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    frame_suffixes = (*_VENDOR_SINGLE, *_ARRAY_SINGLE, ".ome.tif", ".ome.tiff")
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
    loader = _LOADERS[_suffix(files[0])]
    stacks = [loader(path, channel, pixel_size_nm) for path in files]
    first = stacks[0]
    for path, stack in zip(files, stacks, strict=True):
        if stack.image_shape != first.image_shape:
            raise FormatError(
                f"{folder}: {path.name} is {stack.height}x{stack.width} but {files[0].name} is "
                f"{first.height}x{first.width}; all frames must have one size"
            )
    data = np.concatenate([np.asarray(s.data) for s in stacks], axis=0)
    frames = []
    for path, stack in zip(files, stacks, strict=True):
        for frame in stack.frame_metadata:
            frames.append({**frame, "source_file": path.name})
    return ImageStack(data, first.pixel_size_nm, first.channel, frames, file_path=folder)


_Loader = Callable[[Path, "str | None", "float | None"], ImageStack]
_LOADERS: dict[str, _Loader] = {
    ".asd": _load_asd,
    ".h5-jpk": _load_h5jpk,
    ".spm": _load_vendor_image,
    ".jpk": _load_vendor_image,
    ".ibw": _load_vendor_image,
    ".gwy": _load_vendor_image,
    ".npz": _load_npz,
    ".npy": _load_npy,
    ".h5": _load_h5,
    ".hdf5": _load_h5,
    ".ome.tif": _load_tiff,
    ".ome.tiff": _load_tiff,
    ".tif": _load_tiff,
    ".tiff": _load_tiff,
}
