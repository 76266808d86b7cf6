"""Vendor AFM files read through AFMReader (the ``afm`` extra): registry formats that hold an AFM stack.

High-speed AFM videos (``.asd``), JPK HDF5 videos (``.h5-jpk``) and single images (Bruker
``.spm``, JPK ``.jpk``, Igor ``.ibw``, Gwyddion ``.gwy``) read into an
:class:`~sciz.stack.ImageStack` (:meth:`Format.read_stack`) or a :class:`~sciz.model.Dataset`
(:meth:`Format.read`, what ``sciz.load`` and ``sciz info`` use). Each file is checked for its
format's signature before AFMReader sees it: AFMReader loops forever on some non-Gwyddion input.

Example
-------
>>> import sciz
>>> ds = sciz.load("video.asd")  # doctest: +SKIP
>>> ds.metadata["afm_stack"]["channel"], ds.shape  # doctest: +SKIP
('TP', (32, 200, 200))
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .._util import require
from ..errors import FormatError, MissingDependencyError, argument_error
from ..metadata import decode_text
from ..model import Dataset, StoredArray
from . import _hdf5
from ._base import Format

if TYPE_CHECKING:
    from ..stack import ImageStack

__all__ = [
    "VENDOR_FORMATS",
    "AsdFormat",
    "GwyFormat",
    "H5JpkFormat",
    "IbwFormat",
    "JpkFormat",
    "SpmFormat",
    "VendorAfmFormat",
]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class VendorAfmFormat(Format):
    """A vendor AFM file read through AFMReader; subclasses name the module, function and signature."""

    can_write: ClassVar[bool] = False
    afm_stack: ClassVar[bool] = True
    extra: ClassVar[str | None] = "afm"
    #: The channel read when none is given (AFMReader's name for the height channel).
    default_channel: ClassVar[str]
    #: AFMReader module and loader function, ``loader(path, channel)``.
    reader: ClassVar[tuple[str, str]]
    #: Whether a file holds a video (many frames) rather than one image.
    video: ClassVar[bool] = False

    def looks_like(self, head: bytes) -> bool:
        """Whether the first bytes ``head`` are this format's signature."""
        return True

    def sniff(self, path: Path, head: bytes) -> bool:
        # Vendor signatures are weak (an .asd starts with a small integer): the extension must agree.
        return self.matches_extension(path) > 0 and self.looks_like(head)

    def read(self, path: Path, **options: Any) -> Dataset:
        """The stack as a Dataset; options ``channel`` and ``pixel_size_nm`` as :meth:`read_stack`."""
        unknown = sorted(set(options) - {"channel", "pixel_size_nm"})
        if unknown:
            raise argument_error("options", unknown, f"the {self.name} reader takes 'channel' and 'pixel_size_nm'")
        stack = self.read_stack(path, **options)
        dataset = stack.to_dataset()
        channels = self.channels(path)
        if channels:
            dataset.metadata["afm_stack"]["channels"] = channels
        # What sciz info can say of the storage: the vendor's own encoding, all channels in one file.
        listed = ", ".join(channels) if channels else "not listed without reading them"
        dataset.storage["data"] = StoredArray(
            codec=f"{self.name} vendor data", details={f"channels in the file ({len(channels)})": listed}
        )
        return dataset

    def read_stack(self, path: Path, channel: str | None = None, pixel_size_nm: float | None = None) -> ImageStack:
        with _afmreader(path, self) as module:
            return self._load(module, path, channel or self.default_channel, pixel_size_nm)

    def channels(self, path: Path) -> list[str]:
        """The channels the file holds, where the format tells them without reading the data (else [])."""
        return []

    def _load(self, module: Any, path: Path, channel: str, pixel_size_nm: float | None) -> ImageStack:
        from ..stack import ImageStack

        image, pixel = getattr(module, self.reader[1])(path, channel)[:2]
        frames = [{"timestamp": None, "frame_pixel_size_nm": float(pixel)}]
        return ImageStack(np.asarray(image)[np.newaxis], pixel_size_nm or float(pixel), channel, frames, file_path=path)


@contextlib.contextmanager
def _afmreader(source: Path, plugin: VendorAfmFormat) -> Iterator[Any]:
    """Check the signature, import the AFMReader module quietly, and turn its errors into FormatError.

    AFMReader logs every header field through loguru and re-enables its logger when each module is
    imported, so the logger is disabled after the import and enabled again afterwards.
    """
    suffix = plugin.extensions[0]
    try:
        with source.open("rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise FormatError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    if not plugin.looks_like(head):
        raise FormatError(f"{source}: does not start like a {suffix} file (corrupt, or another format renamed)")
    require("AFMReader", "afm")
    module = importlib.import_module(plugin.reader[0])
    quiet: Any = None
    with contextlib.suppress(ImportError):
        from loguru import logger as quiet

        quiet.disable("AFMReader")
    try:
        yield module
    except (FileNotFoundError, FormatError, MissingDependencyError):
        raise
    except Exception as exc:  # AFMReader is third-party code: any failure on a file is "unreadable"
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        text = text or type(exc).__name__
        raise FormatError(f"{source}: AFMReader could not read it ({text})") from exc
    finally:
        if quiet is not None:
            quiet.enable("AFMReader")


# -- videos ---------------------------------------------------------------------------------------
class AsdFormat(VendorAfmFormat):
    """High-speed AFM video (``.asd``, versions 0-2; channels TP, ER, PH)."""

    name = "asd"
    description = "high-speed AFM video (.asd, read with AFMReader)"
    extensions = (".asd",)
    default_channel = "TP"
    reader = ("AFMReader.asd", "load_asd")
    video = True

    def looks_like(self, head: bytes) -> bool:
        return len(head) >= 4 and int.from_bytes(head[:4], "little") in (0, 1, 2)

    def channels(self, path: Path) -> list[str]:
        # The header names the two channels the file holds; reading it needs AFMReader's parser.
        with _afmreader(path, self) as module, path.open("rb") as handle:
            version = module.read_file_version(handle)
            parse = getattr(module, f"read_header_file_version_{version}", None)
            header = parse(handle) if parse is not None else {}
        return [str(header[k]) for k in ("channel1", "channel2") if str(header.get(k, "")).strip()]

    def _load(self, module: Any, path: Path, channel: str, pixel_size_nm: float | None) -> ImageStack:
        from ..stack import ImageStack

        data, pixel, header = module.load_asd(path, channel)
        data = np.asarray(data)
        # The header holds one frame time (ms) for the whole video and the date the file was
        # written, i.e. when the last frame finished; frame 0 started n * frame_time earlier.
        frame_time_s = float(header.get("frame_time", 0.0)) / 1000.0
        n = int(data.shape[0])
        extra: dict[str, Any] = {"frame_pixel_size_nm": float(pixel)}
        if frame_time_s > 0:
            extra["frame_duration_s"] = frame_time_s
            extra["line_rate"] = float(header.get("y_pixels", data.shape[1])) / frame_time_s
        frames = [{"timestamp": i * frame_time_s if frame_time_s > 0 else None, **extra} for i in range(n)]
        start = _asd_start_ms(header, n * frame_time_s)
        if start is not None:
            for i, frame in enumerate(frames):
                frame["start_epoch_ms"] = start + round(i * frame_time_s * 1000)
        return ImageStack(data, pixel_size_nm or float(pixel), channel, frames, file_path=path)


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


class H5JpkFormat(VendorAfmFormat):
    """JPK HDF5 AFM video (``.h5-jpk``): frames with their recorded start and end times."""

    name = "h5-jpk"
    description = "JPK HDF5 AFM video (.h5-jpk, read with AFMReader)"
    extensions = (".h5-jpk",)
    default_channel = "height_trace"
    reader = ("AFMReader.h5_jpk", "load_h5jpk")
    video = True

    def looks_like(self, head: bytes) -> bool:
        return head.startswith(_HDF5_MAGIC)

    def channels(self, path: Path) -> list[str]:
        """Channel names as AFMReader spells them (``<name>_trace``/``<name>_retrace``), from the
        ``channel.name`` and ``retrace`` attributes of each ``Measurement_*/Channel_*`` group.

        The whole file is checked first (:func:`_check_h5_tree`): AFMReader opens it with plain h5py,
        which follows external links and external raw storage (another file's bytes came back as
        heights) and blocks forever on a FIFO named as external storage.
        """
        from . import _hdf5

        h5py = require("h5py", "hdf5")
        names: list[str] = []
        where = str(path)
        handle = _hdf5.open_file(path)
        try:
            _check_h5_tree(handle, where)
            for key, measurement in _hdf5.items(handle, where):
                if not key.startswith("Measurement_") or not isinstance(measurement, h5py.Group):
                    continue
                for child_key, child in _hdf5.items(measurement, where):
                    attrs = child.attrs if child_key.startswith("Channel_") else {}
                    if "channel.name" not in attrs:
                        continue
                    name = decode_text(attrs["channel.name"]).lower()
                    retrace = decode_text(attrs.get("retrace", "false")).lower() in ("true", "1")
                    names.append(f"{name}_{'retrace' if retrace else 'trace'}")
        except FormatError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:  # h5py on a damaged file
            raise FormatError(f"{path}: unreadable JPK HDF5 file ({type(exc).__name__}: {exc})") from None
        finally:
            handle.close()
        return names

    def read_stack(self, path: Path, channel: str | None = None, pixel_size_nm: float | None = None) -> ImageStack:
        channel = channel or self.default_channel
        known = self.channels(path)
        if known and channel not in known:
            raise FormatError(f"{path}: no channel {channel!r}; the file has {', '.join(known)}")
        return super().read_stack(path, channel, pixel_size_nm)

    def _load(self, module: Any, path: Path, channel: str, pixel_size_nm: float | None) -> ImageStack:
        from ..stack import ImageStack

        data, pixel, approximate = module.load_h5jpk(path, channel)
        data = np.asarray(data)
        n = int(data.shape[0])
        # AFMReader estimates times from the line rate (lines / rate per frame), which ignores the
        # pause between frames; the file records each frame's real start and end (epoch ms).
        starts, ends, line_rate = _jpk_frame_times(path, n)
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
        return ImageStack(data, pixel_size_nm or float(pixel), channel, frames, file_path=path)


def _check_h5_tree(handle: Any, where: str) -> None:
    """Visit every object of an HDF5 file through :func:`sciz.formats._hdf5.items`: external links,
    external raw storage, virtual datasets and oversized datasets are FormatErrors, and so are
    nesting, cycles and object counts beyond the limits sciz's own HDF5 readers apply."""
    from . import _hdf5

    h5py = require("h5py", "hdf5")
    pending: list[tuple[Any, int]] = [(handle["/"], 0)]
    seen: set[Any] = set()
    while pending:
        group, depth = pending.pop()
        if group.id in seen:
            continue
        seen.add(group.id)
        if depth >= _hdf5.MAX_DEPTH or len(seen) > _hdf5.MAX_OBJECTS:
            raise FormatError(f"{where}: {group.name}: groups nest or number beyond what sciz reads")
        pending.extend((child, depth + 1) for _, child in _hdf5.items(group, where) if isinstance(child, h5py.Group))


def _jpk_frame_times(source: Path, n: int) -> tuple[np.ndarray | None, np.ndarray | None, float | None]:
    try:
        with _hdf5.open_file(source) as handle:
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
    except (FileNotFoundError, FormatError):
        raise
    except Exception as exc:  # h5py raises KeyError/OSError/ValueError... on damaged files
        raise FormatError(f"{source}: unreadable JPK HDF5 file ({type(exc).__name__}: {exc})") from None
    if starts.size != n:
        return None, None, line_rate
    return starts, ends if ends is not None and ends.size == n else None, line_rate


# -- single images --------------------------------------------------------------------------------
class SpmFormat(VendorAfmFormat):
    """Bruker/Veeco Nanoscope image (``.spm``)."""

    name = "spm"
    description = "Bruker Nanoscope AFM image (.spm, read with AFMReader)"
    extensions = (".spm",)
    default_channel = "Height"
    reader = ("AFMReader.spm", "load_spm")

    def looks_like(self, head: bytes) -> bool:
        return head.startswith(b"\\*")  # Bruker headers open with "\*File list"


class JpkFormat(VendorAfmFormat):
    """JPK image (``.jpk``, a TIFF with JPK tags)."""

    name = "jpk"
    description = "JPK AFM image (.jpk, read with AFMReader)"
    extensions = (".jpk",)
    default_channel = "height_trace"
    reader = ("AFMReader.jpk", "load_jpk")

    def looks_like(self, head: bytes) -> bool:
        return head[:4] in (b"II*\x00", b"MM\x00*")


class IbwFormat(VendorAfmFormat):
    """Igor binary wave image (``.ibw``, Asylum Research)."""

    name = "ibw"
    description = "Igor binary wave AFM image (.ibw, read with AFMReader)"
    extensions = (".ibw",)
    default_channel = "HeightTracee"
    reader = ("AFMReader.ibw", "load_ibw")

    def looks_like(self, head: bytes) -> bool:
        # Igor binary waves start with their version (1, 2, 3 or 5) as a 16-bit int, either byte order.
        return len(head) >= 2 and (
            (head[0] in (1, 2, 3, 5) and head[1] == 0) or (head[0] == 0 and head[1] in (1, 2, 3, 5))
        )


class GwyFormat(VendorAfmFormat):
    """Gwyddion native file (``.gwy``)."""

    name = "gwy"
    description = "Gwyddion AFM image (.gwy, read with AFMReader)"
    extensions = (".gwy",)
    default_channel = "ZSensor"
    reader = ("AFMReader.gwy", "load_gwy")

    def looks_like(self, head: bytes) -> bool:
        return head[:4] in (b"GWYP", b"GWYO")


#: Every vendor format, videos first (the registry lists them in ``BUILTIN_FORMATS``).
VENDOR_FORMATS: tuple[type[VendorAfmFormat], ...] = (AsdFormat, H5JpkFormat, SpmFormat, JpkFormat, IbwFormat, GwyFormat)
