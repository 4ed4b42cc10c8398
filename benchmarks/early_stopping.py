"""Where early stopping would end each default fit, for several patiences, from the fits' own losses.

    .venv/bin/python benchmarks/early_stopping.py --splits benchmark --seed 0 --threads 2
    .venv/bin/python benchmarks/early_stopping.py --splits inner --seed 1 --threads 1 \\
        --datasets synthetic_embryo,drosophila --fractions 0.5,0.25
    .venv/bin/python benchmarks/early_stopping.py --splits inner --datasets breast_her2st_B --fractions 1

A stop only ends a run: the steps before it are the same whatever the patience, so a shorter patience
changes the field only where a later validation check would have improved on the best one after that
many worse ones. Each default ``tl.fit`` is run once with the largest patience replayed (8, so that the
losses after a shorter patience's stop are seen too) and its validation losses (``field.history``) are
replayed with ``model._train``'s rule (:func:`~ntf_utils.model._train.improves`) for a patience of 3, 4
and 8: printed are the held-out Pearson of the fit, its best check and steps run, and for each patience
the best check and the step it would stop at. ``--splits benchmark`` fits the benchmark's training
splits (``pp.split_sections(keep_fraction=f)``, scored on its evaluation sections); ``--splits inner``
the held-out *training* sections of ``benchmarks/tune_section_effects.py``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ntf_utils as ntf  # noqa: E402
from benchmarks import inr_baselines as ib  # noqa: E402
from benchmarks import run as bench  # noqa: E402
from benchmarks._variants import ALL_DATASETS  # noqa: E402
from benchmarks.tune_section_effects import inner_split  # noqa: E402
from ntf_utils.model._train import improves  # noqa: E402


def replay(losses: list[float], steps: list[int], patience: int) -> tuple[int, int]:
    """``(best check, step of the stop)`` of ``model._train``'s early stopping on these check losses."""
    best, best_step, bad = math.inf, steps[0], 0
    for step, loss in zip(steps, losses):
        if improves(loss, best):
            best, best_step, bad = loss, step, 0
            continue
        bad += 1
        if bad >= patience:
            return best_step, step
    return best_step, steps[-1]


def split(adata, fraction: float, kind: str):
    """``(fit on, scored on)`` of a loaded dataset at one kept fraction, or None."""
    if kind == "benchmark":
        return ntf.pp.split_sections(adata, keep_fraction=fraction)
    return inner_split(adata, fraction)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of every fit")
    parser.add_argument("--splits", choices=["benchmark", "inner"], default="benchmark")
    parser.add_argument("--datasets", default=ALL_DATASETS)
    parser.add_argument("--fractions", default="0.5,0.25,0.1")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    patiences = [3, 4, 8]
    fit_patience = max(patiences)
    print("dataset\tkept\tpearson\tseconds\tbest\tsteps_run\t" + "\t".join(f"patience {p}" for p in patiences))
    for name in args.datasets.split(","):
        adata, truth = bench.load_dataset(name, bench.settings(False))
        for fraction in [float(f) for f in args.fractions.split(",")]:
            parts = split(adata, fraction, args.splits)
            if parts is None:
                print(f"{name}\t{fraction}\t(no interior training section to hold out)")
                continue
            fit_on, held = parts
            config = ntf.NTFConfig(training={"patience": fit_patience})
            started = time.perf_counter()
            field = ntf.tl.fit(fit_on, layer="lognorm", config=config, seed=args.seed, progress=False)
            seconds = time.perf_counter() - started
            checks = field.history.dropna(subset=["val_loss"]) if "val_loss" in field.history else None
            if checks is None or checks.empty:
                print(f"{name}\t{fraction}\t(no validation checks)")
                continue
            losses, steps = checks["val_loss"].tolist(), checks["step"].astype(int).tolist()
            stops = [replay(losses, steps, p) for p in patiences]
            print(f"{name}\t{fraction}\t{ib.heldout_pearson(field, held, layer=truth):.4f}\t{seconds:.1f}\t"
                  f"{field.info['best_step']}\t{field.info['steps_run']}\t"
                  + "\t".join(f"{best} / {stop}" for best, stop in stops), flush=True)


if __name__ == "__main__":
    main()
