"""PCODEC: lossless compression of numerical columns (integers and floats of 1-8 bytes).

Engine: imagecodecs' pcodec 1.0.1 encodes; pco's own bindings (PyPI ``pcodec``, the ``engines``
extra) decode when installed, since they never decode more values than the target holds (without
them such streams decode in a child process). The pco header's type and count are checked against
the sciz header first. The stream carries the dtype but not the shape; pcodec also serves as sciz's
lossless fallback for chunks a lossy engine cannot keep within bound.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from typing import Any

import numpy as np

from ..errors import PcodecError, argument_error
from .abc import Codec
from .driver import engine

__all__ = ["PcodecCodec", "encode_pcodec_chunk"]


def encode_pcodec_chunk(chunk: np.ndarray, level: int) -> bytearray:
    imagecodecs = engine()

    return imagecodecs.pcodec_encode(chunk.reshape(-1), level, out=bytearray)


def _has_pco_bindings() -> bool:
    """Whether pco's own Python bindings (PyPI ``pcodec``) 1.x, which read pco 1.0 streams, are installed."""
    if importlib.util.find_spec("pcodec") is None:
        return False
    try:
        return int(importlib.metadata.version("pcodec").split(".")[0]) >= 1
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


def _pco_standalone() -> Any:
    """pco's own Python bindings' standalone module, or None when they are not installed."""
    if not _HAS_PCO_BINDINGS:
        return None
    from pcodec import standalone

    return standalone


def _decode_pcodec(payload: memoryview, target: np.ndarray, params: dict[str, Any]) -> None:
    flat = target.reshape(-1)
    standalone = _pco_standalone()
    if standalone is None:
        engine().pcodec_decode(payload, shape=flat.shape, dtype=flat.dtype, out=flat)
        return
    # pco's bindings decode straight into the target and stop when it is full; imagecodecs' decoder
    # first collects every value the payload holds, so a few forged bytes of constant chunks make it
    # allocate without bound (measured: 3.4 KB -> 420 MB). They are also about twice as fast.
    try:
        progress = standalone.simple_decompress_into(bytes(payload), flat)
    except BaseException as exc:  # a Rust panic arrives as pyo3's PanicException, a BaseException
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        raise ValueError(f"pco: {exc}") from None
    if progress.n_processed != flat.size or not progress.finished:
        more = "more" if not progress.finished else "fewer"
        raise ValueError(f"the pco payload holds {more} values than the {flat.size} of its chunk")


_HAS_PCO_BINDINGS = _has_pco_bindings()

#: pco's NumberType codes (its uniform-type byte) by numpy dtype string.
_PCO_TYPES = {"u4": 1, "u8": 2, "i4": 3, "i8": 4, "f4": 5, "f8": 6, "u2": 7, "i2": 8, "f2": 9, "u1": 10, "i1": 11}


def _check_pcodec(payload: memoryview, shape: tuple[int, ...], dtype: np.dtype, params: dict[str, Any]) -> None:
    """Compare pco's standalone header with the sciz chunk.

    Layout (pco standalone format 2-3): b"pco!", format version u8, from version 3 the number
    type u8, then the element count as a bit-packed varint (6 bits of width - 1, then the count).
    The engine reserves memory for that count before reading anything else (measured: a forged
    count aborts the process trying to allocate 3e17 bytes), so it must be the chunk's size.
    """
    raw = bytes(payload[:16])
    if len(raw) < 7 or raw[:4] != b"pco!" or raw[4] not in (2, 3):
        raise ValueError(f"the payload does not start with a pco standalone header ({raw[:5]!r})")
    position = 5
    if raw[4] >= 3:
        if raw[5] != _PCO_TYPES.get(dtype.str[1:]):
            names = {code: name for name, code in _PCO_TYPES.items()}
            raise ValueError(
                f"its pco header holds {names.get(raw[5], f'type {raw[5]}')} values, the sciz header {dtype}"
            )
        position = 6
    bits = int.from_bytes(raw[position:].ljust(10, b"\0"), "little")
    width = (bits & 0x3F) + 1
    count = (bits >> 6) & ((1 << width) - 1)
    if count != math.prod(shape):
        raise ValueError(f"its pco header declares {count} values, the sciz header a chunk of {math.prod(shape)}")


class PcodecCodec(Codec):
    """Lossless PCODEC with compression ``level`` 0-12 (default 8); ``fill_value`` marks missing data
    (kept exactly and apart from the engine, like NaN)."""

    name = "pcodec"
    decode_chunk = staticmethod(_decode_pcodec)
    check_payload = staticmethod(_check_pcodec)
    # Without pco's bindings the engine is imagecodecs', which a forged payload can drive to
    # allocate without bound: decode such streams in a child then.
    isolate = not _HAS_PCO_BINDINGS

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
