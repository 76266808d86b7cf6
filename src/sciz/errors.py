"""The sciz error hierarchy: one base class, each error also a fitting built-in exception.

Users can catch ``sciz.errors.SciZError`` for anything sciz raises, or the built-in they already
know (``ValueError`` for bad data or arguments, ``OSError`` for unreadable files, ``ImportError``
for a missing optional dependency).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArgumentError",
    "CodecError",
    "DataWarning",
    "FloatpredError",
    "FormatError",
    "JetrawError",
    "LercError",
    "LosslessFallbackWarning",
    "MissingDependencyError",
    "PcodecError",
    "RangeOutlierWarning",
    "SciZError",
    "SciZWarning",
    "SperrError",
    "StreamKeyWarning",
    "Sz3Error",
    "SzipError",
    "UnknownFormatError",
    "ZfpError",
    "argument_error",
]


class SciZError(Exception):
    """Base class of every error sciz raises on purpose."""


class ArgumentError(SciZError, ValueError):
    """An argument has a value sciz cannot use; the message names it, its value and what is allowed."""


class MissingDependencyError(SciZError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class FormatError(SciZError, OSError, ValueError):
    """A file is unreadable, corrupt, truncated, or cannot hold what was asked of it."""


class UnknownFormatError(FormatError):
    """No registered format recognises the file (by magic bytes or extension)."""


class CodecError(SciZError, ValueError):
    """A codec cannot encode the data or decode the stream."""


class ZfpError(CodecError):
    """ZFP codec exception."""


class SperrError(CodecError):
    """SPERR codec exception."""


class Sz3Error(CodecError):
    """SZ3 codec exception."""


class FloatpredError(CodecError):
    """Floating-point predictor exception."""


class LercError(CodecError):
    """LERC codec exception."""


class SzipError(CodecError):
    """SZIP codec exception."""


class PcodecError(CodecError):
    """PCODEC codec exception."""


class JetrawError(CodecError):
    """JETRAW codec exception (the proprietary engine is usually not installed)."""


class SciZWarning(Warning):
    """Base class of every warning sciz emits; filter it to silence them all."""


class RangeOutlierWarning(SciZWarning, UserWarning):
    """One value far outside all the others (an unmarked fill such as 1e20 land) sets the data range
    that a relative or PSNR bound is a share of; the message says how to mark it (``fill_value=``)."""


class LosslessFallbackWarning(SciZWarning, UserWarning):
    """A lossy codec stored some chunks exactly instead (the result is correct but larger than asked for).

    The message names the codec, how many chunks and why: the engine refused the data, it missed the
    bound on too many elements, or the tolerance is below the data's float precision (often because
    a fill value such as 1e20 marks missing data: pass ``fill_value=`` to exclude it).
    """


class StreamKeyWarning(SciZWarning, RuntimeWarning):
    """This user's stream key (``~/.config/sciz/stream.key`` or ``SCIZ_KEY_FILE``) cannot be used:
    a symbolic link, not a private 32-byte file of this user, or a relative setting. sz3 streams are
    then neither tagged nor trusted, and decode in a child process (slower, never wrong)."""


class DataWarning(SciZWarning, UserWarning):
    """The data or what was found about them needs a look: no pixel size in the file (1 nm/px assumed),
    blank (constant) frames, a blank alignment reference, values rounded when stored as float32.

    The message names the file or argument and what sciz did instead of stopping.
    """


def argument_error(name: str, value: Any, allowed: str, *, cls: type[SciZError] = ArgumentError) -> SciZError:
    """Build an error that names the argument, shows its value, and says what is allowed."""
    try:
        shown = repr(value)
    except ValueError:  # an int beyond Python's digit limit for conversion to text
        shown = f"<{type(value).__name__} of about {value.bit_length() * 0.30103:.0f} digits>"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return cls(f"{name}={shown} is not allowed: {allowed}")
