"""Registry formats for playNano-compatible AFM stack bundles (``.npz`` and ``.h5``).

They claim only files that carry the bundle's own keys (``data``, ``pixel_size_nm``, the JSON
blobs) and outrank the generic NPZ format for those when reading. They are not
:attr:`~sciz.formats.Format.generic`: ``sciz.save(ds, "x.npz")`` stays a plain NPZ, while
``format="afm-npz"`` (``sciz convert --to afm-npz``) writes a bundle, as ``.h5`` names do (no
generic format writes ``.h5``). :meth:`write` takes any Dataset :meth:`ImageStack.from_dataset`
accepts and :meth:`problems` lists what the bundle would not keep; AFM stacks are also written
with :meth:`write_stack` (``sciz.afm.export_bundles``).
The registry names these classes in ``BUILTIN_FORMATS``; the storage layer never imports
:mod:`sciz.afm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..formats._base import Format, zip_member_names
from ..model import Dataset
from ..stack import ImageStack
from .ometiff_format import stack_problems

__all__ = ["AfmH5Format", "AfmNpzFormat"]

_NPZ_KEYS = {"data.npy", "pixel_size_nm.npy", "channel.npy", "frame_metadata_json.npy", "provenance_json.npy"}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _reject_options(name: str, options: dict[str, Any]) -> None:
    if options:
        from ..errors import argument_error

        raise argument_error("options", sorted(options), f"the {name} reader takes no options")


class AfmNpzFormat(Format):
    """playNano/sciz AFM stack bundle in an ``.npz`` (read with pickle-free parsing)."""

    name = "afm-npz"
    description = "AFM video bundle (playNano-compatible .npz: stack, layers, masks, provenance)"
    extensions = (".npz",)
    magic = (b"PK\x03\x04",)
    priority = 10
    generic: ClassVar[bool] = False
    afm_stack: ClassVar[bool] = True
    stack_export: ClassVar[tuple[str, ...]] = ("npz",)
    stack_options: ClassVar[tuple[str, ...]] = ("compression_level",)

    def sniff(self, path: Path, head: bytes) -> bool:
        names = zip_member_names(path) if head.startswith(b"PK\x03\x04") else None
        return names is not None and names >= _NPZ_KEYS

    def read(self, path: Path, **options: Any) -> Dataset:
        from ..formats._zip import ZipReader
        from ..model import StoredArray
        from .bundles_npz import load_npz_bundle

        _reject_options(self.name, options)
        dataset = load_npz_bundle(path).to_dataset()
        with ZipReader(path) as archive:  # the directory only: what each array takes in the file
            for name, member in archive.members.items():
                key = _array_key(name.removesuffix(".npy"), "__")
                if key in dataset.arrays():
                    codec = "none" if member.stored else "deflate"
                    dataset.storage[key] = StoredArray(codec=codec, stored_bytes=int(member.compressed_size))
        return dataset

    def read_stack(self, path: Path, channel: str | None = None, pixel_size_nm: float | None = None) -> ImageStack:
        from .bundles_npz import load_npz_bundle

        return _override_pixel(load_npz_bundle(path, channel=channel or "height_trace"), pixel_size_nm)

    def problems(self, dataset: Dataset) -> list[str]:
        return stack_problems(dataset, "an AFM .npz bundle", keeps_layers=True)

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        """Options: ``raw`` and ``compression_level`` as :func:`~sciz.afm.save_npz_bundle`."""
        raw = bool(options.pop("raw", False))
        return self.write_stack(ImageStack.from_dataset(dataset), path, raw, **options)

    def write_stack(self, stack: ImageStack, path: Path, raw: bool = False, **options: Any) -> Path:
        from .bundles_npz import save_npz_bundle

        return save_npz_bundle(path, stack, raw, **options)


class AfmH5Format(Format):
    """playNano/sciz AFM stack bundle in HDF5 (``/data`` plus ``pixel_size_nm`` and JSON metadata)."""

    name = "afm-h5"
    description = "AFM video bundle (playNano-compatible .h5: stack, layers, masks, provenance)"
    extensions = (".h5", ".hdf5")
    magic = (_HDF5_MAGIC,)
    priority = 10
    generic: ClassVar[bool] = False
    afm_stack: ClassVar[bool] = True
    stack_export: ClassVar[tuple[str, ...]] = ("h5", "hdf5")
    stack_options: ClassVar[tuple[str, ...]] = ("codec", "tolerance", "compression_level")

    def sniff(self, path: Path, head: bytes) -> bool:
        if not head.startswith(_HDF5_MAGIC):
            return False
        try:
            import h5py
        except ImportError:
            return False
        try:
            with h5py.File(path, "r") as f:
                # Links only, never followed: a hostile link is reported by the reader, not opened here.
                return (
                    f.get("data", getlink=True) is not None
                    and "pixel_size_nm" in f.attrs
                    and f.get("frame_metadata_json", getlink=True) is not None
                )
        except (OSError, ValueError, KeyError, RuntimeError):
            return False

    def read(self, path: Path, **options: Any) -> Dataset:
        from ..formats import _hdf5
        from .bundles_h5 import load_h5_bundle

        _reject_options(self.name, options)
        dataset = load_h5_bundle(path).to_dataset()
        with _hdf5.open_file(path) as handle:  # what each array takes in the file, and its codec
            wanted = [("data", "data")]
            for group in ("processed", "masks"):
                node = _hdf5.get(handle, group, str(path))
                if node is not None and hasattr(node, "keys"):
                    wanted += [
                        (f"{group}/{name}", _array_key(f"{group}/{name}", "/"))
                        for name, _ in _hdf5.items(node, str(path))
                    ]
            for inside, key in wanted:
                node = _hdf5.get(handle, inside, str(path))
                if key in dataset.arrays() and node is not None and hasattr(node, "shape"):
                    dataset.storage[key] = _hdf5.dataset_storage(node)
        return dataset

    def read_stack(self, path: Path, channel: str | None = None, pixel_size_nm: float | None = None) -> ImageStack:
        from .bundles_h5 import load_h5_bundle

        return _override_pixel(load_h5_bundle(path, channel=channel or "height_trace"), pixel_size_nm)

    def problems(self, dataset: Dataset) -> list[str]:
        return stack_problems(dataset, "an AFM .h5 bundle", keeps_layers=True)

    def write(self, dataset: Dataset, path: Path, **options: Any) -> Path:
        """Options: ``raw``, ``codec``, ``tolerance``, ``compression_level`` as :func:`~sciz.afm.save_h5_bundle`."""
        raw = bool(options.pop("raw", False))
        return self.write_stack(ImageStack.from_dataset(dataset), path, raw, **options)

    def write_stack(self, stack: ImageStack, path: Path, raw: bool = False, **options: Any) -> Path:
        """Options ``codec``, ``tolerance``, ``compression_level`` as :func:`~sciz.afm.save_h5_bundle`."""
        from .bundles_h5 import save_h5_bundle

        return save_h5_bundle(path, stack, raw, **options)


def _array_key(name: str, separator: str) -> str:
    """The Dataset key (``layers/<k>``, ``masks/<k>``, ``data``) of a bundle member ``processed<sep><k>``."""
    kind, found, key = name.partition(separator)
    if not found:
        return name
    return {"processed": f"layers/{key}", "masks": f"masks/{key}"}.get(kind, name)


def _override_pixel(stack: ImageStack, pixel_size_nm: float | None) -> ImageStack:
    if pixel_size_nm is not None:
        stack.pixel_size_nm = pixel_size_nm
    return stack
