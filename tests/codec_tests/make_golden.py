"""Regenerate the committed golden streams (run only when the stream format changes on purpose).

python tests/codec_tests/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sciz import codecs

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


def golden_input(dtype: str) -> np.ndarray:
    grid = np.meshgrid(np.linspace(0, 3, 12), np.linspace(0, 3, 24), np.linspace(0, 3, 20), indexing="ij")
    smooth = np.sin(grid[0]) * np.cos(grid[1]) + 0.3 * grid[2]
    if dtype[0] in "iu":
        return (smooth * 1000 + 2000).astype(dtype)
    data = smooth.astype(dtype)
    data[1, 2, 3] = np.nan
    data[4, 5, 6] = np.inf
    return data


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for case, (name, params, dtype) in CASES.items():
        data = golden_input(dtype)
        stream = bytes(codecs.get(name, **params).encode(data))
        (GOLDEN / f"{case}.scz").write_bytes(stream)
        np.save(GOLDEN / f"{case}.expected.npy", codecs.get(name, **params).decode(stream), allow_pickle=False)


if __name__ == "__main__":
    main()
