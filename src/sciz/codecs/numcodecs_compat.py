"""numcodecs bridge: any sciz codec as one numcodecs codec (id ``"sciz"``), so zarr can store and rebuild it.

The configuration is ``{"id": "sciz", "codec": <the sciz codec's config>}``; the codec is registered
with numcodecs on import and through the ``numcodecs.codecs`` entry point, so a zarr reader finds
it from the stored config alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from numcodecs.abc import Codec as NumcodecsCodec
from numcodecs.compat import ensure_contiguous_ndarray, ndarray_copy
from numcodecs.registry import register_codec

from .registry import from_config

__all__ = ["SciZNumcodec", "SciZZarr3Codec"]


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


def _zarr3_base() -> Any:
    try:
        from zarr.codecs.numcodecs import _NumcodecsBytesBytesCodec
    except ImportError:  # zarr 2 or no zarr: sciz's own zarr reader and writer still work
        return None
    return _NumcodecsBytesBytesCodec


_Zarr3Base = _zarr3_base()

if _Zarr3Base is not None:

    class SciZZarr3Codec(_Zarr3Base, codec_name="sciz"):  # type: ignore[misc,valid-type,call-arg]
        """zarr 3's ``numcodecs.sciz`` codec (after ``bytes``), as sciz writes zarr format 3 stores.

        A sciz stream carries its dtype and shape, so the chunk is coded as the typed array
        (the chunk spec's dtype, little-endian as the ``bytes`` codec lays it out), never as raw bytes.
        """

        async def _decode_single(self, chunk_data: Any, chunk_spec: Any) -> Any:
            decoded = await asyncio.to_thread(self._codec.decode, chunk_data.as_numpy_array())
            array = np.asarray(decoded)
            little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
            return chunk_spec.prototype.buffer.from_bytes(little.tobytes())

        async def _encode_single(self, chunk_data: Any, chunk_spec: Any) -> Any:
            dtype = chunk_spec.dtype
            native = np.dtype(dtype.to_native_dtype() if hasattr(dtype, "to_native_dtype") else dtype)
            raw = np.frombuffer(chunk_data.as_numpy_array(), dtype=native.newbyteorder("<"))
            typed = raw.reshape(chunk_spec.shape).astype(native.newbyteorder("="), copy=False)
            encoded = await asyncio.to_thread(self._codec.encode, typed)
            return chunk_spec.prototype.buffer.from_bytes(bytes(encoded))

    try:
        from zarr.registry import register_codec as _register_zarr_codec

        _register_zarr_codec("numcodecs.sciz", SciZZarr3Codec)
    except ImportError:  # pragma: no cover - zarr without a codec registry
        pass
