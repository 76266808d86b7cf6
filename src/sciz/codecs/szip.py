"""SZIP: NASA's lossless adaptive entropy coder (CCSDS 121.0, via libaec) for integer data.

Engine: imagecodecs' szip (libaec 1.1.6). Its stream records none of the four parameters needed to
decode it; the sciz stream does. Floats and signed integers are coded through their unsigned bit
patterns, 64-bit samples as pairs of 32-bit words (libaec's limit), so every value returns exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SzipError, argument_error
from .abc import Codec
from .driver import engine

__all__ = ["SzipCodec"]

_CODING = {"ec": 4, "nn": 32}  # libaec option bits: entropy coding, nearest-neighbour preprocessing
_LSB, _MSB = 8, 16


def _words(dtype: np.dtype) -> np.dtype:
    """The unsigned sample type the engine codes ``dtype`` as."""
    return np.dtype(f"u{min(dtype.itemsize, 4)}")


def _options(params: dict[str, Any], dtype: np.dtype) -> tuple[int, int, int, int]:
    words = _words(dtype)
    mask = _CODING[params["coding"]] | _LSB
    bits = int(params.get("bits_per_pixel") or words.itemsize * 8)
    block = int(params["pixels_per_block"])
    return mask, block, bits, block * 128


def _decode_szip(payload: memoryview, target: np.ndarray, params: dict[str, Any]) -> None:
    imagecodecs = engine()

    mask, block, bits, scanline = _options(params, target.dtype)
    samples = target.reshape(-1).view(_words(target.dtype))
    out = samples.view(np.uint8)
    result = imagecodecs.szip_decode(payload, mask, block, bits, scanline, out=out)
    if len(result) != out.nbytes:
        raise ValueError(f"szip payload decoded to {len(result)} bytes, expected {out.nbytes}")


def _check_szip(payload: memoryview, shape: tuple[int, ...], dtype: np.dtype, params: dict[str, Any]) -> None:
    """libaec's stream has no header: check the stream's parameters the decoder will trust instead."""
    try:
        SzipCodec(**{key: params.get(key) for key in ("coding", "pixels_per_block", "bits_per_pixel")})
    except SzipError as exc:
        raise ValueError(f"the stream's szip parameters are not valid: {exc}") from None
    bits = params.get("bits_per_pixel")
    width = _words(dtype).itemsize
    # libaec reads 1-byte samples for 1-8 bits, 2 bytes for 9-16 and 4 bytes for 17-32.
    if bits is not None and (1 if bits <= 8 else 2 if bits <= 16 else 4) != width:
        raise ValueError(f"the stream's bits_per_pixel={bits} does not fit its {width}-byte samples of {dtype}")


class SzipCodec(Codec):
    """SZIP with ``coding`` ('nn' nearest-neighbour preprocessing, default, or 'ec' entropy coding only),
    ``pixels_per_block`` (even, 2-32; default 32) and ``bits_per_pixel`` (default: the sample size);
    ``fill_value`` marks missing data (kept exactly and apart from the engine, like NaN)."""

    name = "szip"
    decode_chunk = staticmethod(_decode_szip)
    check_payload = staticmethod(_check_szip)

    def __init__(
        self,
        *,
        coding: str | None = None,
        pixels_per_block: int | None = None,
        bits_per_pixel: int | None = None,
        fill_value: float | None = None,
    ):
        super().__init__(fill_value=fill_value)
        coding = "nn" if coding is None else coding
        if coding not in _CODING:
            raise argument_error(
                "coding", coding, "must be 'ec' (entropy coding) or 'nn' (nearest neighbour)", cls=SzipError
            )
        block = 32 if pixels_per_block is None else pixels_per_block
        if isinstance(block, bool) or not isinstance(block, int | np.integer) or block % 2 or not 2 <= block <= 32:
            raise argument_error(
                "pixels_per_block", pixels_per_block, "must be an even int from 2 to 32", cls=SzipError
            )
        if bits_per_pixel is not None and (
            isinstance(bits_per_pixel, bool)
            or not isinstance(bits_per_pixel, int | np.integer)
            or not 1 <= bits_per_pixel <= 32
        ):
            raise argument_error("bits_per_pixel", bits_per_pixel, "must be an int from 1 to 32", cls=SzipError)
        self.coding = coding
        self.pixels_per_block = int(block)
        self.bits_per_pixel = None if bits_per_pixel is None else int(bits_per_pixel)

    def params(self) -> dict[str, Any]:
        return {
            "coding": self.coding,
            "pixels_per_block": self.pixels_per_block,
            "bits_per_pixel": self.bits_per_pixel,
        }

    @property
    def tolerance(self) -> float:
        return 0.0

    def check_array(self, data: Any) -> np.ndarray:
        array = super().check_array(data)
        bits = self.bits_per_pixel
        if bits is not None:
            # libaec reads 1-byte samples for 1-8 bits, 2 bytes for 9-16 and 4 bytes for 17-32.
            width = 1 if bits <= 8 else 2 if bits <= 16 else 4
            if array.dtype.itemsize != width:
                raise SzipError(
                    f"bits_per_pixel={bits} means {width}-byte samples, but the data are {array.dtype} "
                    f"({array.dtype.itemsize}-byte samples); leave bits_per_pixel unset or match the sample size"
                )
            if bits < width * 8:
                if array.dtype.kind != "u":
                    raise SzipError(
                        f"bits_per_pixel={bits} below the sample size needs unsigned data, got {array.dtype}"
                    )
                if array.size and int(array.max()) >> bits:
                    raise SzipError(f"data: values up to {int(array.max())} do not fit bits_per_pixel={bits}")
        return array

    def encode_chunk(self, chunk: np.ndarray, low: float, high: float) -> tuple[int, bytes | bytearray, bool]:
        imagecodecs = engine()

        mask, block, bits, scanline = _options(self.params(), chunk.dtype)
        samples = chunk.reshape(-1).view(_words(chunk.dtype))
        return self.method, imagecodecs.szip_encode(samples, mask, block, bits, scanline, out=bytearray), False

    def hdf5_filter(self, array: Any) -> dict[str, Any] | None:
        # HDF5's built-in szip filter (id 4); h5py spells it compression="szip".
        coding = "nn" if self.coding == "nn" else "ec"
        return {"compression": "szip", "compression_opts": (coding, self.pixels_per_block)}
