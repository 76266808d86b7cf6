"""Write the committed golden streams that are missing (existing ones are never rewritten).

python tests/codec_tests/make_golden.py

``CASES`` were written by stream format 1 and are frozen: this sciz writes format 2, so they can
no longer be regenerated, and they prove that old streams keep decoding. ``CASES_V2`` are format 2
streams with masked NaN/Inf/fill values. ``CASES_V3`` are format 3 streams, whose chunks cut a later
axis than the first (two threads on sz3/sperr; written here with the smallest chunk size lowered,
so that a small array splits). Add a case (with a new name) when the format changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from sciz import codecs
from sciz.codecs import _stream

GOLDEN = Path(__file__).parent / "golden"

CASES = {
    "zfp_tolerance": ("zfp", {"tolerance": 1e-3}, "f4"),
    "zfp_lossless": ("zfp", {"tolerance": 0}, "f8"),
    "zfp_rate": ("zfp", {"rate": 12}, "f4"),
    "sperr_pwe": ("sperr", {"tolerance": 1e-3}, "f4"),
    "sperr_psnr": ("sperr", {"mode": "psnr", "quality": 70}, "f8"),
    "sz3_tolerance": ("sz3", {"tolerance": 1e-3}, "f4"),
    "lerc_tolerance": ("lerc", {"tolerance": 1e-3}, "f4"),
    "lerc_int16": ("lerc", {"tolerance": 0.0}, "i2"),
    "pcodec_f4": ("pcodec", {}, "f4"),
    "szip_u2": ("szip", {"coding": "ec", "pixels_per_block": 16}, "u2"),
}
CASES_V2 = {
    "v2_zfp_fill": ("zfp", {"tolerance": 1e-3, "fill_value": 1e20}, "f4"),
    "v2_sperr_fill": ("sperr", {"tolerance": 1e-3, "fill_value": 1e20}, "f8"),
    "v2_sz3_fill": ("sz3", {"tolerance": 1e-3, "fill_value": 1e20}, "f4"),
    "v2_lerc_fill": ("lerc", {"tolerance": 1e-3, "fill_value": 1e20}, "f4"),
    "v2_lerc_int16_fill": ("lerc", {"tolerance": 2.0, "fill_value": -999}, "i2"),
    "v2_pcodec_nan": ("pcodec", {}, "f8"),
    "v2_szip_nan": ("szip", {}, "f4"),
}
CASES_V3 = {
    "v3_sz3_split": ("sz3", {"tolerance": 1e-3, "fill_value": 1e20}, "f4"),
    "v3_sperr_split": ("sperr", {"tolerance": 1e-4}, "f8"),
}
#: The cases this sciz still writes (checked byte for byte against the committed streams).
ALL_WRITTEN = {**CASES_V2, **CASES_V3}
#: A NaN with a payload: golden streams must keep its bits.
PAYLOAD_NAN = {"f4": np.uint32(0x7FC0BEEF), "f8": np.uint64(0x7FF800000000BEEF)}


def golden_input(dtype: str, fill_value: float | None = None, shape: tuple[int, int, int] = (12, 24, 20)) -> np.ndarray:
    grid = np.meshgrid(*(np.linspace(0, 3, n) for n in shape), indexing="ij")
    smooth = np.sin(grid[0]) * np.cos(grid[1]) + 0.3 * grid[2]
    if dtype[0] in "iu":
        data = (smooth * 1000 + 2000).astype(dtype)
    else:
        data = smooth.astype(dtype)
        data[1, 2, 3] = np.nan
        data[4, 5, 6] = np.inf
    if fill_value is not None:  # a 'continent' of fill values, and a NaN with a payload
        data[:, 8:16, 4:12] = fill_value
        if dtype in PAYLOAD_NAN:
            data.reshape(-1).view(PAYLOAD_NAN[dtype].dtype)[7] = PAYLOAD_NAN[dtype]
    return data


@contextmanager
def small_chunks() -> Iterator[None]:
    """Let two threads split the small golden arrays (chunks of at least 8 MiB otherwise)."""
    saved = _stream.MIN_CHUNK_BYTES
    _stream.MIN_CHUNK_BYTES = 256
    try:
        yield
    finally:
        _stream.MIN_CHUNK_BYTES = saved


def encode_case(case: str) -> bytes:
    name, params, _dtype = ALL_WRITTEN[case]
    if case in CASES_V3:
        with small_chunks():
            return bytes(codecs.get(name, **params).encode(case_input(case), numthreads=2))
    return bytes(codecs.get(name, **params).encode(case_input(case)))


def case_input(case: str) -> np.ndarray:
    _name, params, dtype = {**CASES, **ALL_WRITTEN}[case]
    if case in CASES:
        return golden_input(dtype)
    return golden_input(dtype, params.get("fill_value"), shape=(6, 16, 12))  # small: the fixtures stay small


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for case, (name, params, _dtype) in {**CASES, **ALL_WRITTEN}.items():
        target = GOLDEN / f"{case}.scz"
        if target.exists():
            continue
        if case in CASES:
            raise SystemExit(f"{target} is a frozen format-1 stream and is missing: restore it from git")
        stream = encode_case(case)
        target.write_bytes(stream)
        np.save(GOLDEN / f"{case}.expected.npy", codecs.get(name, **params).decode(stream), allow_pickle=False)
        print(f"wrote {target.name} ({len(stream)} bytes)")


if __name__ == "__main__":
    main()
