"""Averaging default fits of several seeds, on held-out TRAINING sections: what an ensemble would gain.

    .venv/bin/python benchmarks/seed_ensembles.py --datasets synthetic_embryo,drosophila --seeds 0,1,2
    .venv/bin/python benchmarks/seed_ensembles.py --datasets starmap_organoid --fractions 0.5 --seeds 0,1,2,3

For each dataset and kept fraction, the split of ``benchmarks/tune_section_effects.py`` (every third
interior training section held out; the benchmark's evaluation sections are never used) is fitted by a
default ``tl.fit`` once per seed. Printed: each fit's median per-gene Pearson per held-out section and
seconds, then the mean over the single fits, over every pair of fits averaged (their predictions, in
the values' units) and the average of all of them.

``--config JSON`` fits every seed with those ``NTFConfig`` keywords (e.g. a narrower MLP, to ask whether two
cheaper fits averaged beat one default fit). ``--evaluation`` fits the benchmark's own training split and
scores its evaluation sections instead: how much the benchmark's single-seed figures move with the seed
(reported, never used to choose).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ntf_utils as ntf  # noqa: E402
from benchmarks import inr_baselines as ib  # noqa: E402
from benchmarks import run as bench  # noqa: E402
from benchmarks._variants import ALL_DATASETS  # noqa: E402
from benchmarks.tune_section_effects import inner_split  # noqa: E402


class MeanOfFields:
    """Predicts the mean of several fields' predictions (what ``ib.heldout_pearson`` scores)."""

    def __init__(self, fields) -> None:
        self.fields = list(fields)

    def predict(self, coords, genes=None) -> np.ndarray:
        return np.mean([field.predict(coords, genes=genes) for field in self.fields], axis=0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=ALL_DATASETS)
    parser.add_argument("--fractions", default="0.5,0.25")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config", default=None, help="JSON NTFConfig keywords of every fit (default: the defaults)")
    parser.add_argument("--evaluation", action="store_true",
                        help="the benchmark's training split and evaluation sections (to report the seed spread)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    config = ntf.NTFConfig(**json.loads(args.config)) if args.config else None
    for name in args.datasets.split(","):
        adata, truth = bench.load_dataset(name, bench.settings(False))
        for fraction in [float(f) for f in args.fractions.split(",")]:
            split = ntf.pp.split_sections(adata, keep_fraction=fraction) if args.evaluation \
                else inner_split(adata, fraction)
            if split is None:
                print(f"{name}\t{fraction}\t(no interior training section to hold out)")
                continue
            fit_on, held = split
            fields, singles = [], []
            for seed in seeds:
                started = time.perf_counter()
                fields.append(ntf.tl.fit(fit_on, layer="lognorm", seed=seed, progress=False, config=config))
                singles.append(ib.heldout_pearson(fields[-1], held, layer=truth))
                print(f"{name}\t{fraction}\tseed {seed}\t{singles[-1]:.4f}\t{time.perf_counter() - started:.1f} s",
                      flush=True)
            pairs = [ib.heldout_pearson(MeanOfFields(pair), held, layer=truth)
                     for pair in itertools.combinations(fields, 2)]
            every = ib.heldout_pearson(MeanOfFields(fields), held, layer=truth)
            print(f"{name}\t{fraction}\tsingle fits {np.mean(singles):.4f} (sd {np.std(singles, ddof=1):.4f})"
                  f"\tpairs averaged {np.mean(pairs):.4f}\t"
                  f"all {len(fields)} averaged {every:.4f}", flush=True)


if __name__ == "__main__":
    main()
