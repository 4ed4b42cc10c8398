"""What the hash grid's C loops save a default ``tl.fit``, side by side in one run.

    .venv/bin/python benchmarks/bench_native_fit.py                   # the benchmark's 50% splits
    .venv/bin/python benchmarks/bench_native_fit.py --datasets drosophila --fractions 0.5,0.25

Every split of ``benchmarks/run.py`` named is fitted twice with the package defaults (resolution race,
blend, refit): once with the C loops of ``ntf_utils/model/_native.py`` and once with the PyTorch
expressions they replace (what a machine without a C compiler runs), in alternating order. The two
fits must be the same computation: the script prints the largest difference between their held-out
predictions (0 when the encoding is bitwise the same) next to the wall seconds and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ntf_utils as ntf  # noqa: E402
from benchmarks import run as bench  # noqa: E402
from ntf_utils.model import _native  # noqa: E402


def timed_fit(train, test, native: bool) -> tuple[float, np.ndarray]:
    """Wall seconds of a default fit and its prediction at the held-out cells."""
    with contextlib.nullcontext() if native else _native.disabled():
        start = time.perf_counter()
        field = ntf.tl.fit(train, layer="lognorm", progress=False, seed=0)
        seconds = time.perf_counter() - start
        prediction = field.predict(np.asarray(test.obsm["spatial_3d"]))
    return seconds, np.asarray(prediction)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synthetic_embryo,drosophila,breast_her2st_A,starmap_organoid")
    parser.add_argument("--fractions", default="0.5")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not _native.usable():
        raise SystemExit(f"the C loops are not in use here: {_native.native_status()}")
    cfg = bench.settings(False)
    rows = []
    print(f"{'dataset':<18} {'kept':>5} {'C loops (s)':>12} {'PyTorch (s)':>12} {'ratio':>6} {'max |diff|':>11}")
    for k, name in enumerate(args.datasets.split(",")):
        adata, _ = bench.load_dataset(name, cfg)
        for fraction in (float(f) for f in args.fractions.split(",")):
            train, test = ntf.pp.split_sections(adata, keep_fraction=fraction)
            order = [True, False] if k % 2 == 0 else [False, True]  # alternate which goes first
            runs = {native: timed_fit(train, test, native) for native in order}
            (on, predicted_on), (off, predicted_off) = runs[True], runs[False]
            diff = float(np.abs(predicted_on - predicted_off).max())
            rows.append({"dataset": name, "kept_fraction": fraction, "native_seconds": on, "torch_seconds": off,
                         "ratio": off / on, "max_abs_diff": diff})
            print(f"{name:<18} {fraction:>5.2f} {on:>12.1f} {off:>12.1f} {off / on:>5.2f}x {diff:>11.2e}", flush=True)
    return rows


if __name__ == "__main__":
    main()
