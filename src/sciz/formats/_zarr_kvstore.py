"""sciz's key-value stores (:mod:`._zarr_stores`) as a zarr-python 3 ``Store``.

zarr-python then creates groups and arrays and reads what sciz's own engine does not decode, while
every key still goes through the sciz store: a :class:`~._zarr_stores.DirectoryKV` keeps reads
confined to its root (no symlinks, devices, FIFOs or ``..``), where ``zarr.storage.LocalStore``
follows them. Imported only where zarr-python is used (it imports zarr).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from zarr.abc.buffer import Buffer, BufferPrototype
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.buffer import default_buffer_prototype

from ..errors import FormatError
from ._zarr_stores import KVStore

__all__ = ["KVZarrStore"]


class KVZarrStore(Store):
    """A zarr-python ``Store`` over a sciz :class:`~._zarr_stores.KVStore` (every access confined by it)."""

    supports_writes = True
    supports_deletes = True
    supports_listing = True
    supports_partial_writes = False

    def __init__(self, kv: KVStore, *, read_only: bool = False) -> None:
        super().__init__(read_only=read_only)
        self.kv = kv

    def __getstate__(self) -> dict[str, Any]:
        return {"kv": self.kv, "read_only": self.read_only}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["kv"], read_only=state["read_only"])  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KVZarrStore) and other.kv is self.kv and other.read_only == self.read_only

    def __hash__(self) -> int:
        return hash((id(self.kv), self.read_only))

    def __repr__(self) -> str:
        return f"KVZarrStore({self.kv.describe()!r})"

    def with_read_only(self, read_only: bool = False) -> KVZarrStore:
        return KVZarrStore(self.kv, read_only=read_only)

    async def get(
        self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        value = self.kv.get(key)
        if value is None:
            return None
        if byte_range is not None:
            value = _slice(value, byte_range, key)
        return (prototype or default_buffer_prototype()).buffer.from_bytes(value)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        return self.kv.get(key) is not None

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()
        self.kv.set(key, value.to_bytes())

    async def delete(self, key: str) -> None:
        self._check_writable()
        self.kv.delete(key)

    async def list(self) -> AsyncIterator[str]:
        for key in self.kv.keys_under(""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        folder = prefix.rstrip("/")
        for key in self.kv.keys_under(folder):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        for name in self.kv.list_dir(prefix.rstrip("/")):
            yield name


def _slice(value: bytes, byte_range: ByteRequest, key: str) -> bytes:
    if isinstance(byte_range, RangeByteRequest):
        return value[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return value[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return value[len(value) - byte_range.suffix :] if byte_range.suffix else b""
    raise FormatError(f"entry {key!r}: byte range {byte_range!r} is not one zarr defines")
