"""PCODEC: lossless compression of numerical columns (integers and floats of 1-8 bytes).

Engine: imagecodecs' pcodec 1.0.1, whose stream carries the dtype but not the shape; it also serves
as sciz's lossless fallback for chunks a lossy engine cannot keep within bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import PcodecError, argument_error
from .abc import Codec
from .driver import engine

__all__ = ["PcodecCodec", "encode_pcodec_chunk"]


def encode_pcodec_chunk(chunk: np.ndarray, level: int) -> bytearray:
    imagecodecs = engine()

    return imagecodecs.pcodec_encode(chunk.reshape(-1), level, out=bytearray)


def _decode_pcodec(payload: memoryview, target: np.ndarray, params: dict[str, Any]) -> None:
    imagecodecs = engine()

    flat = target.reshape(-1)
    imagecodecs.pcodec_decode(payload, shape=flat.shape, dtype=flat.dtype, out=flat)


class PcodecCodec(Codec):
    """Lossless PCODEC with compression ``level`` 0-12 (default 8); ``fill_value`` marks missing data
    (kept exactly and apart from the engine, like NaN)."""

    name = "pcodec"
    decode_chunk = staticmethod(_decode_pcodec)

    def __init__(self, *, level: int | None = None, fill_value: float | None = None):
        super().__init__(fill_value=fill_value)
        if level is None:
            level = 8
        if isinstance(level, bool) or not isinstance(level, int | np.integer) or not 0 <= level <= 12:
            raise argument_error("level", level, "must be an int from 0 to 12", cls=PcodecError)
        self.level = int(level)

    def params(self) -> dict[str, Any]:
        return {"level": self.level}

    @property
    def tolerance(self) -> float:
        return 0.0

    def encode_chunk(self, chunk: np.ndarray, low: float, high: float) -> tuple[int, bytes | bytearray, bool]:
        return self.method, encode_pcodec_chunk(chunk, self.level), False
