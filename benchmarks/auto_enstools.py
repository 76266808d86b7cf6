"""enstools-compression's automatic mode on the shared fields and the ASD video, for benchmarks/auto.py.

enstools-compression (2023.11.1) does not share sciz's environment: run this in a scratch venv
(``python -m venv /tmp/ens && /tmp/ens/bin/pip install enstools-compression six``) with the arrays as
.npy files (the ASD video: ``np.save`` of AFMReader's TP channel), then pass its JSON to
``benchmarks/auto.py --enstools``. Its ``analyze_dataset`` with the default constraints
(correlation_I:5, ssim_I:2) searches every compressor and mode by bisection on one ~100 KB slice,
and falls back to lossless when the data hold a NaN; the full array is then coded with the chosen
specification to get its real ratio and maximum absolute error.

Run: ``/tmp/ens/bin/python benchmarks/auto_enstools.py OUT.json A.npy [B.npy ...]``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings

import numpy as np


def main() -> None:
    import xarray as xr
    from enstools.compression.api import analyze_dataset, emulate_compression_on_numpy_array
    from enstools.encoding.api import VariableEncoding

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    out = {}
    for name in sys.argv[2:]:
        array = np.load(name)
        array = array.reshape([n for n in array.shape if n > 1])
        array = np.where(array == 1e20, np.nan, array).astype(array.dtype)  # netCDF fill as NaN
        row: dict = {}
        start = time.perf_counter()
        encodings, metrics = analyze_dataset(xr.Dataset({"v": ([f"d{i}" for i in range(array.ndim)], array)}))
        row["seconds"] = time.perf_counter() - start
        row["spec"] = str(encodings["v"])
        row["metrics"] = {k: float(v) for k, v in metrics["v"].items()}
        if row["spec"].startswith("lossy"):
            decoded, full = emulate_compression_on_numpy_array(
                array, compression_specification=VariableEncoding(row["spec"])
            )
            valid = np.isfinite(array)
            row["max_abs_error"] = float(np.max(np.abs(decoded[valid].astype(float) - array[valid])))
            row["ratio"] = float(full["compression_ratio"])
        else:
            row["ratio"] = row["metrics"]["compression_ratio"]
        out[name] = row
        print(name, row, flush=True)
    with open(sys.argv[1], "w") as handle:
        json.dump(out, handle, indent=1)


if __name__ == "__main__":
    main()
