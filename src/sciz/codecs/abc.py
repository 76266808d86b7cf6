"""The codec contract: what a sciz codec implements (the driver in :mod:`sciz.codecs.driver` does the rest).

A codec is one row of the table in :mod:`sciz.codecs.registry` plus one class. The class says how
to code one chunk with its engine and which bound it promises; the shared driver handles argument
checks, byte order, chunking across threads, exact NaN/Inf and fill values, the bound guarantee
and the stream. Every stream codec takes ``fill_value=`` through this base class.
Its configuration (:meth:`Codec.get_config`) is JSON-safe and rebuilds an equal codec through
:func:`sciz.codecs.from_config`, as numcodecs codecs do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import CodecError
from .driver import check_array, check_fill_value, decode_stream, encode_array
from .registry import CODECS, CodecSpec

__all__ = ["Codec"]


class Codec(ABC):
    """An array codec with a self-describing, checked stream.

    Subclasses set ``name`` (their row in the codec table supplies ``spec``, ``error``, ``dtypes``
    and ``keeps_nonfinite``) and implement :meth:`params`, :meth:`encode_chunk` and
    :meth:`decode_chunk`; their constructor takes ``fill_value`` and passes it to this one.

    ``fill_value``: elements equal to it (say the 1e20 that marks land in a climate field) are
    kept exactly and never reach the engine or the bound, like NaN and +-Inf always are.
    """

    name: ClassVar[str]
    spec: ClassVar[CodecSpec]
    error: ClassVar[type[CodecError]]
    dtypes: ClassVar[tuple[str, ...]]
    keeps_nonfinite: ClassVar[bool]
    #: Chunk rows are a multiple of this where possible (zfp codes blocks of 4).
    align: ClassVar[int] = 1
    #: True for engines that predict along every axis (sz3, sperr): chunks for threads then cut the
    #: array's longest axis instead of the first, which keeps more of the ratio (see ``plan_chunks``).
    split_longest: ClassVar[bool] = False
    #: True when a forged payload that passes :meth:`check_payload` can still crash the engine
    #: (SZ3's decoder throws C++ exceptions that abort the process): the default decode then
    #: decodes streams holding such payloads in a child process.
    isolate: ClassVar[bool] = False
    #: How the driver fills NaN/Inf/fill values before the engine sees a chunk (see ``fill_invalid``).
    fill_method: ClassVar[str] = "linear"
    #: True when :meth:`encode_masked_chunk` gives the engine the mask and the engine never reads the
    #: masked elements: the driver then leaves them as they are instead of filling them.
    engine_skips_masked: ClassVar[bool] = False
    #: Elements equal to this are kept exactly and apart from the engine and the bound (None: none).
    fill_value: int | float | None = None
    #: Why :func:`sciz.codecs.choose` picked this codec (JSON-safe; None when nobody chose it).
    choice: dict[str, Any] | None = None
    #: The axis order the engine sees (a permutation of the array's axes, as for ``transpose``;
    #: None: the array's own). The stream records it and every decode puts the axes back, so only
    #: the ratio changes: measured on the ASD video (32x200x200, 1e-3 of the range), sperr gives 72
    #: in the frame-first order and 107 with time last. :func:`sciz.codecs.choose` sets it.
    order: tuple[int, ...] | None = None

    def __init__(self, *, fill_value: float | None = None) -> None:
        self.fill_value = check_fill_value(fill_value, self.error)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        row = CODECS.get(getattr(cls, "name", ""))
        if "spec" not in cls.__dict__ and row is not None:
            cls.spec = row
        if hasattr(cls, "spec"):
            cls.error, cls.dtypes, cls.keeps_nonfinite = cls.spec.error, cls.spec.dtypes, cls.spec.keeps_nonfinite

    # ----- what each codec supplies -------------------------------------------------------------
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The codec's parameters (JSON-safe), as given to the constructor."""

    @abstractmethod
    def encode_chunk(self, chunk: np.ndarray, low: float, high: float) -> tuple[int, bytes | bytearray, bool]:
        """Encode one finite chunk; return (method, payload, needs_verification).

        A bytearray payload (imagecodecs' ``out=bytearray``) becomes the stream's own buffer: return a
        new one the codec keeps no reference to.

        ``low``/``high`` are the chunk's finite minimum and maximum (0 where not computed). Return
        ``needs_verification=True`` when the engine cannot be trusted to keep :attr:`tolerance` for
        this chunk; the driver then checks every element and stores misses exactly.
        """

    def encode_masked_chunk(
        self, chunk: np.ndarray, valid: np.ndarray, low: float, high: float
    ) -> tuple[int, bytes | bytearray, bool]:
        """Encode a chunk only whose ``valid`` elements matter (the others were NaN, Inf or fill values,
        filled smoothly here; the driver restores them). Engines that take a validity mask override this."""
        return self.encode_chunk(chunk, low, high)

    @staticmethod
    @abstractmethod
    def decode_chunk(payload: memoryview, target: np.ndarray, params: dict[str, Any]) -> None:
        """Decode one payload written by :meth:`encode_chunk` into ``target`` (native order, C-contiguous).

        ``params`` are the stream's parameters. Raise any exception on bad input; the driver turns
        it into the codec's error.
        """

    @staticmethod
    def check_payload(payload: memoryview, shape: tuple[int, ...], dtype: np.dtype, params: dict[str, Any]) -> None:
        """Refuse a payload whose engine header disagrees with the sciz header, before the engine sees it.

        ``shape`` and ``dtype`` are those of the target :meth:`decode_chunk` will fill. Codecs parse
        their engine's own header (dimensions, sample type, declared sizes) and raise ``ValueError``
        naming the mismatch; the driver turns it into the codec's error. The default checks nothing.
        """
        return None

    @property
    def method(self) -> int:
        """The number marking this codec's streams and chunks."""
        if self.spec.method is None:
            raise self.error(f"{self.name} writes no sciz stream")
        return self.spec.method

    @property
    def tolerance(self) -> float | None:
        """The absolute error bound this codec guarantees, ``0.0`` if lossless, ``None`` if it promises none."""
        return None

    @property
    def lossless(self) -> bool:
        return self.tolerance == 0.0

    def settings(self) -> dict[str, Any]:
        """:meth:`params` plus the parameters every codec shares (``fill_value``, when set)."""
        settings = dict(self.params())
        if self.fill_value is not None:
            settings["fill_value"] = self.fill_value
        if self.order is not None:
            settings["order"] = list(self.order)
        return settings

    def stream_params(self) -> dict[str, Any]:
        """Parameters written into each stream (for ``sciz info`` and for decoding)."""
        return self.settings()

    def hdf5_filter(self, array: Any) -> dict[str, Any] | None:
        """h5py ``create_dataset`` keywords for this codec's registered HDF5 filter, or None if it has none."""
        return None

    # ----- the contract ---------------------------------------------------------------------------
    @property
    def codec_id(self) -> str:
        return f"sciz_{self.name}"

    def get_config(self) -> dict[str, Any]:
        config = {"id": self.name, **self.settings()}
        if self.choice is not None:
            config["choice"] = self.choice
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Codec:
        codec = cls(**{k: v for k, v in config.items() if k not in ("id", "choice", "order")})
        codec.choice = config.get("choice")
        codec.set_order(config.get("order"))
        return codec

    def set_order(self, order: Sequence[int] | None) -> None:
        """Set :attr:`order` (None: the array's own axis order)."""
        if order is not None and (
            isinstance(order, str | bytes)
            or not all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in order)
            or sorted(order) != list(range(len(order)))
        ):
            raise self.error(f"order: {order!r} is not a permutation of axes 0..n-1")
        self.order = None if order is None else tuple(int(i) for i in order)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.get_config().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"

    def check_array(self, data: Any) -> np.ndarray:
        """The input as an array of a supported dtype, or a clear error (codecs add their own checks)."""
        return check_array(data, self.name, self.dtypes, self.error)

    def encode(self, data: Any, *, out: Any = None, numthreads: int | None = None) -> bytearray | memoryview:
        """Encode ``data`` into a self-describing sciz stream, a bytearray (written into ``out`` if given)."""
        if self.order is not None:
            array = self.check_array(data)
            if array.ndim != len(self.order):
                raise self.error(f"order: {list(self.order)} is for {len(self.order)}-d arrays, data has {array.ndim}")
            data = np.ascontiguousarray(array.transpose(self.order))
        return encode_array(self, data, out=out, numthreads=numthreads)

    def decode(
        self,
        data: Any,
        *,
        out: Any = None,
        numthreads: int | None = None,
        shape: Sequence[int] | None = None,
        dtype: Any = None,
        isolated: bool | None = None,
        timeout: float = 600.0,
    ) -> np.ndarray:
        """Decode a sciz stream of this codec; shape and dtype come from the stream."""
        return decode_stream(
            data,
            self.name,
            self.error,
            out=out,
            numthreads=numthreads,
            shape=shape,
            dtype=dtype,
            isolated=isolated,
            timeout=timeout,
        )
