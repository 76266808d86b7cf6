"""Streams written by one process decode in a fresh one: the codec table imports decoders on demand.

Every stream codec of ``list_codecs()`` is encoded here and decoded in a new interpreter that has
imported nothing but the function it calls (the seed function, ``sciz.codecs.decode``, the
isolated decode, the numcodecs adapter), so no registration by import side effect can hide a bug.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import sciz
from sciz import codecs
from sciz.codecs.registry import spec

from ._cases import max_error

STREAM_CODECS = [name for name in codecs.list_codecs() if spec(name).method is not None]
#: The folder holding the sciz package under test (the child runs with -I, which ignores PYTHONPATH).
SOURCE = str(Path(sciz.__file__).parents[1])

#: A setting per codec that exercises its engine (lossy where it can be).
SETTINGS = {
    "zfp": {"tolerance": 1e-3},
    "sperr": {"tolerance": 1e-3},
    "sz3": {"tolerance": 1e-3},
    "lerc": {"tolerance": 1e-3},
    "pcodec": {},
    "szip": {},
}

DECODE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[5])  # -I ignores PYTHONPATH: decode with the sciz that encoded
    import numpy as np
    name, how, path, out = sys.argv[1:5]
    stream = open(path, "rb").read()
    if how == "seed":
        import sciz.codecs
        array = getattr(sciz.codecs, name + "_decode")(stream)
    elif how == "top":
        import sciz
        array = getattr(sciz, name + "_decode")(stream)
    elif how == "decode":
        from sciz.codecs import decode
        array = decode(stream)
    elif how == "isolated":
        from sciz.codecs import decode
        array = decode(stream, isolated=True)
    else:  # numcodecs: only the config is known, as in a zarr reader
        import numcodecs
        codec = numcodecs.get_codec({"id": "sciz", "codec": json.loads(how)})
        array = codec.decode(stream)
    np.save(out, array, allow_pickle=False)
    """
)


def field(dtype: str) -> np.ndarray:
    grid = np.meshgrid(np.linspace(0, 3, 12), np.linspace(0, 2, 40), np.linspace(0, 1, 33), indexing="ij")
    data = np.sin(grid[0] * 2) * np.cos(grid[1] * 3) * 50 + grid[2] * 7
    if np.dtype(dtype).kind == "f":
        data = data.astype(dtype)
        data[0, 0, :4] = [np.nan, np.inf, -np.inf, np.nan]
        return data
    return np.round(data).astype(dtype)


def decode_in_fresh_process(tmp_path: Path, name: str, how: str, stream: bytes) -> np.ndarray:
    path, out = tmp_path / f"{name}.scz", tmp_path / f"{name}-{len(how)}.npy"
    path.write_bytes(stream)
    result = subprocess.run(
        [sys.executable, "-I", "-c", DECODE_SCRIPT, name, how, str(path), str(out), SOURCE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return np.load(out, allow_pickle=False)


@pytest.mark.parametrize("name", STREAM_CODECS)
@pytest.mark.parametrize("how", ["seed", "top", "decode", "isolated", "numcodecs"])
def test_stream_decodes_in_a_fresh_process(tmp_path: Path, name: str, how: str) -> None:
    codec = codecs.get(name, **SETTINGS[name])
    dtype = "f4" if "f4" in codec.dtypes else codec.dtypes[0]
    data = field(dtype)
    stream = bytes(codec.encode(data))
    mode = json.dumps(codec.get_config()) if how == "numcodecs" else how
    restored = decode_in_fresh_process(tmp_path, name, mode, stream)
    assert restored.dtype == data.dtype and restored.shape == data.shape
    if data.dtype.kind == "f":
        assert np.array_equal(np.isnan(restored), np.isnan(data))
        assert np.array_equal(restored[np.isinf(data)], data[np.isinf(data)])
    assert max_error(data, restored) <= codec.tolerance


@pytest.mark.parametrize("name", STREAM_CODECS)
@pytest.mark.parametrize("how", ["decode", "numcodecs"])
def test_masked_stream_with_fill_value_decodes_in_a_fresh_process(tmp_path: Path, name: str, how: str) -> None:
    codec = codecs.get(name, **SETTINGS[name], fill_value=-9999.0)
    data = field("f4")
    data[2:5, 10:30, 5:20] = -9999.0
    data.reshape(-1).view(np.uint32)[7] = 0x7FC0BEEF  # a NaN with a payload
    invalid = ~np.isfinite(data) | (data == -9999.0)
    mode = json.dumps(codec.get_config()) if how == "numcodecs" else how
    restored = decode_in_fresh_process(tmp_path, name, mode, bytes(codec.encode(data)))
    assert np.array_equal(restored[invalid].view(np.uint32), data[invalid].view(np.uint32))
    assert max_error(data[~invalid], restored[~invalid]) <= codec.tolerance
