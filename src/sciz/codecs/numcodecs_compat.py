"""numcodecs bridge: any sciz codec as one numcodecs codec (id ``"sciz"``), so zarr can store and rebuild it.

The configuration is ``{"id": "sciz", "codec": <the sciz codec's config>}``; the codec is registered
with numcodecs on import and through the ``numcodecs.codecs`` entry point, so a zarr reader finds
it from the stored config alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numcodecs.abc import Codec as NumcodecsCodec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy
from numcodecs.registry import register_codec

from .registry import from_config

__all__ = ["SciZNumcodec"]


class SciZNumcodec(NumcodecsCodec):
    """A numcodecs codec that encodes each chunk as a self-describing sciz stream."""

    codec_id = "sciz"

    def __init__(self, codec: dict[str, Any]):
        self.codec = dict(codec)
        self._codec = from_config(self.codec)

    def encode(self, buf: Any) -> bytes:
        array = buf if isinstance(buf, np.ndarray) else np.asarray(buf)
        return bytes(self._codec.encode(array))

    def decode(self, buf: Any, out: Any = None) -> Any:
        decoded = self._codec.decode(ensure_contiguous_ndarray(buf))
        if out is None:
            return decoded
        target = np.asarray(out)
        # numcodecs' ndarray_copy reinterprets bytes: a stream of another dtype or size (a forged or
        # misplaced chunk) would come back as garbage, not as an error.
        if target.dtype.itemsize != decoded.dtype.itemsize or target.size != decoded.size:
            raise self._codec.error(
                f"the chunk holds a {decoded.dtype} array of {decoded.size} elements, the store expects "
                f"{target.dtype} x {target.size}: the store is damaged or forged"
            )
        if target.dtype.kind in "biufc" and target.dtype.newbyteorder("=") != decoded.dtype.newbyteorder("="):
            raise self._codec.error(f"the chunk holds {decoded.dtype}, the store expects {target.dtype}")
        return ndarray_copy(decoded, out)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "codec": self.codec}

    def __repr__(self) -> str:
        return f"SciZNumcodec({self._codec!r})"


register_codec(SciZNumcodec)
