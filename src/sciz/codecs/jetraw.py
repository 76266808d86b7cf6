"""JETRAW: Dotphoton's proprietary lossless image codec.

No open implementation is installable from any registry sciz can use; the engine exists only as
the vendor's licensed library. When imagecodecs was built with it, sciz passes calls through;
otherwise every function raises JetrawError saying what is missing.
"""

from __future__ import annotations

from typing import Any

from ..errors import JetrawError

__all__ = ["JetrawCodec", "available", "jetraw_check", "jetraw_decode", "jetraw_encode"]

_MISSING = (
    "JETRAW needs Dotphoton's proprietary jetraw library and a licence; it is not part of imagecodecs' "
    "public wheels and no open implementation exists. Install the vendor library and an imagecodecs "
    "built against it, or use a lossless open codec (pcodec, szip, lerc tolerance=0, zfp tolerance=0)."
)


def available() -> bool:
    try:
        import imagecodecs

        return bool(getattr(imagecodecs.JETRAW, "available", False))
    except ImportError:
        return False


def _engine() -> Any:
    if not available():
        raise JetrawError(_MISSING)
    import imagecodecs

    return imagecodecs


def jetraw_encode(data: Any, *, identifier: str | None = None, out: Any = None) -> Any:
    """Return JETRAW encoded image data (needs the vendor library)."""
    if identifier is None:
        raise JetrawError("identifier= (the camera calibration identifier) is required by JETRAW")
    return _engine().jetraw_encode(data, identifier=identifier, out=out)


def jetraw_decode(data: Any, *, out: Any = None) -> Any:
    """Return decoded JETRAW image data (needs the vendor library)."""
    return _engine().jetraw_decode(data, out=out)


def jetraw_check(data: Any) -> bool:
    """True if ``data`` is a JETRAW stream; False when it is not or the engine is missing."""
    if not available():
        return False
    import imagecodecs

    return bool(imagecodecs.jetraw_check(data))


class JetrawCodec:
    """Registry entry: the vendor engine's lossless codec; raises JetrawError where it is not installed."""

    name = "jetraw"
    codec_id = "sciz_jetraw"
    lossless = True
    tolerance = 0.0

    def __init__(self, *, identifier: str | None = None) -> None:
        if not available():
            raise JetrawError(_MISSING)
        self.identifier = identifier

    def params(self) -> dict[str, Any]:
        return {"identifier": self.identifier}

    def get_config(self) -> dict[str, Any]:
        return {"id": self.name, **self.params()}

    def encode(self, data: Any, *, out: Any = None, numthreads: int | None = None) -> Any:
        return jetraw_encode(data, identifier=self.identifier, out=out)

    def decode(self, data: Any, *, out: Any = None, numthreads: int | None = None) -> Any:
        return jetraw_decode(data, out=out)

    def hdf5_filter(self, array: Any) -> None:
        return None
