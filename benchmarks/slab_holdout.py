"""Cell-resolution 3D data cut into slabs, every third slab held out: the default field against 3D kNN.

    .venv/bin/python benchmarks/slab_holdout.py                    # BDTNP and the STARmap organoid, 18 slabs
    .venv/bin/python benchmarks/slab_holdout.py --n-slabs 12 --datasets drosophila

Issue #13 checks the defaults on a real cell-resolution dataset kept outside this repository (tens of
thousands of cells in 18 z-slabs, every third slab held out, scored against a distance-weighted 3D kNN).
This script asks the same question of the shipped cell-resolution sets: each is cut into ``--n-slabs``
slabs (``benchmarks/run.py``'s loading, ``datasets.slab_sections``), every third slab is held out (``pp.split_sections``), and a default
``tl.fit`` is scored beside ``tl.baseline_predict``'s 3D kNN and linear interpolation: median per-gene
Pearson against the observed held-out values. Nothing here chooses a default.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ntf_utils as ntf  # noqa: E402
from benchmarks import run as bench  # noqa: E402
from ntf_utils import metrics  # noqa: E402

DATASETS = "drosophila,starmap_organoid"  # the cell-resolution sets of benchmarks/run.py


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=DATASETS)
    parser.add_argument("--n-slabs", type=int, default=18)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    cfg = bench.settings(False)
    print("dataset\tslabs\ttrain_cells\ttest_cells\tntf\tknn\tlinear\tntf_seconds")
    for name in args.datasets.split(","):
        adata, truth_layer = bench.load_dataset(name, cfg, n_slabs=args.n_slabs)  # the observed values
        names = list(adata.obs["section"].cat.categories)
        train, test = ntf.pp.split_sections(adata, holdout=names[1::3])
        truth = np.asarray(test.layers[truth_layer])
        tic = time.perf_counter()
        field = ntf.tl.fit(train, layer="lognorm", progress=False)
        seconds = time.perf_counter() - tic
        predictions = [field.predict(test.obsm["spatial_3d"])]
        predictions += [ntf.tl.baseline_predict(train, test, m, layer="lognorm") for m in ("knn", "linear")]
        scores = [float(np.nanmedian(metrics.pearson_per_gene(p, truth))) for p in predictions]
        print(f"{name}\t{args.n_slabs}\t{train.n_obs}\t{test.n_obs}\t" + "\t".join(f"{s:.3f}" for s in scores)
              + f"\t{seconds:.1f}", flush=True)


if __name__ == "__main__":
    main()
