"""Compare fit settings on held-out TRAINING sections: how the section-effect defaults were chosen.

    .venv/bin/python benchmarks/tune_section_effects.py                       # the table of docs/model.md
    .venv/bin/python benchmarks/tune_section_effects.py --datasets drosophila \\
        --variants '{"off": {"network": {"section_effects": false}}, "on": {"network": {"section_effects": true}}}'

    .venv/bin/python benchmarks/tune_section_effects.py --neighbours --datasets starmap_organoid \\
        --fractions 0.5 --variants '{"0.25": {}, "0.5": {"selection": {"blend_without_race": 0.5}}}'

    # data no default was chosen on: HER2ST patients B-D (full data), every section a training section
    .venv/bin/python benchmarks/tune_section_effects.py --datasets breast_her2st_B,breast_her2st_C \\
        --fractions 1 --variants '{"default": {}}'

For each dataset and kept fraction, the benchmark's training split (``pp.split_sections(keep_fraction=f)``)
is split again: every third interior training section (``tl._resolution.heldout_sections``) is held
out and each variant (``NTFConfig`` keyword dicts) is fitted on the rest with ``tl.fit``'s defaults
otherwise. The benchmark's evaluation sections are never used. Printed per variant: the median
per-gene Pearson per held-out section (the benchmark's metric), the pooled median per-gene Pearson over
all held-out cells (which also scores each section's level), the RMSE, the seconds and which
selection candidate won. With ``--neighbours`` every interior training section is held out in turn and
predicted from its two neighbours alone (the two-section fits where no race runs), and the scores are
averaged over the held-out sections. With ``--thirds`` three training sections are fitted (the two
ends and the middle one) and every other training section is held out: a sparse stack like the
benchmark's 10% splits, whose own race holds out its middle section and fits the ends. ``--gp`` adds a
row for the benchmark's PCA + GP baseline on the same splits, ``--fourier-sigma S`` one for its
Fourier-feature MLP at bandwidth ``S`` (learning rate 3e-3, the benchmark's architecture and steps).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ntf_utils as ntf  # noqa: E402
from benchmarks import inr_baselines as ib  # noqa: E402
from benchmarks import run as bench  # noqa: E402
from benchmarks._variants import parse_variant_arguments  # noqa: E402
from ntf_utils import metrics  # noqa: E402
from ntf_utils._anndata import sections_in_order  # noqa: E402
from ntf_utils.tl._resolution import heldout_sections  # noqa: E402

DEFAULT_VARIANTS = {
    "old default": {"network": {"section_effects": False}, "selection": {"candidates": [[1, 0.5], [4, 0]]}},
    "effects in every candidate": {"network": {"section_effects": True, "section_trend_degree": 0}},
    "default": {},
}


def training_sections(adata, fraction: float):
    """The benchmark's training split at ``fraction`` kept; ``fraction`` 1: every section (for data
    outside the benchmark's tables, such as ``breast_her2st_B``: on the benchmark's own datasets that
    would hold out its evaluation sections, so ``main`` refuses it there)."""
    return adata if fraction >= 1 else ntf.pp.split_sections(adata, keep_fraction=fraction)[0]


def inner_split(adata, fraction: float):
    """(fit on, held out) within the benchmark's training sections; None when nothing can be held out."""
    train = training_sections(adata, fraction)
    held = train.obs["section"].astype(str).isin(heldout_sections(train, "spatial_3d")).to_numpy()
    return (train[~held].copy(), train[held].copy()) if held.any() else None


def _sections_along_z(train) -> tuple[np.ndarray, list[str]]:
    """Each cell's section label and the section names ordered along z."""
    sections = train.obs["section"].astype(str).to_numpy()
    return sections, list(sections_in_order(sections, train.obsm["spatial_3d"][:, 2])["section"])


def neighbour_splits(adata, fraction: float):
    """(fit on, held out) pairs within the benchmark's training sections: every interior training section
    held out in turn and predicted from its two neighbours alone, the two-section fits of the benchmark's
    sparsest splits (no race can run on them)."""
    train = training_sections(adata, fraction)
    sections, order = _sections_along_z(train)
    for below, held, above in zip(order, order[1:], order[2:]):
        yield train[np.isin(sections, [below, above])].copy(), train[sections == held].copy()


def thirds_split(adata, fraction: float):
    """(fit on, held out) within the benchmark's training sections: the two end sections and the middle
    one fitted, every other held out (a three-section stack with wide gaps, as at 10% kept); None with
    fewer than four training sections."""
    train = training_sections(adata, fraction)
    sections, order = _sections_along_z(train)
    if len(order) < 4:
        return None
    kept = np.isin(sections, [order[0], order[(len(order) - 1) // 2], order[-1]])
    return train[kept].copy(), train[~kept].copy()


def score(field, held, truth_layer: str) -> tuple[float, float, float]:
    """(per-section Pearson, pooled Pearson, RMSE) of ``field`` on the held-out cells."""
    truth = held.layers[truth_layer]
    truth = np.asarray(truth.todense() if hasattr(truth, "todense") else truth)
    pred = field.predict(held.obsm["spatial_3d"], genes=list(held.var_names))
    pooled = float(np.nanmedian(metrics.pearson_per_gene(pred, truth)))
    return ib.heldout_pearson(field, held, layer=truth_layer), pooled, float(np.sqrt(((pred - truth) ** 2).mean()))


def main(argv=None) -> None:
    args, variants = parse_variant_arguments(__doc__, argv, fractions="0.5,0.25", default_variants=DEFAULT_VARIANTS,
                                             flags={"--neighbours": "hold out every interior training section in "
                                                    "turn and fit on its two neighbours alone (two-section fits)",
                                                    "--thirds": "fit on the two end training sections and the middle "
                                                    "one, hold out the rest (three-section fits, as at 10%% kept)",
                                                    "--gp": "also score the benchmark's PCA + GP baseline"},
                                             numbers={"--fourier-sigma": "also score the benchmark's Fourier MLP at "
                                                      "this bandwidth (lr 3e-3)"})
    cfg = bench.settings(False)
    baselines = {"PCA + GP": lambda fit_on: ib.gp_baseline(fit_on, layer="lognorm", max_cells=cfg["gp_max_cells"],
                                                           seed=args.seed)} if args.gp else {}
    if args.fourier_sigma is not None:
        baselines[f"Fourier MLP (sigma {args.fourier_sigma:g})"] = lambda fit_on: ib.fit_inr(
            fit_on, "fourier", layer="lognorm", steps=cfg["inr"]["steps"], batch_size=cfg["inr"]["batch_size"],
            seed=args.seed, sigma=args.fourier_sigma, lr=3e-3, **bench.inr_architecture(cfg))
    print("dataset\tkept\tvariant\tper_section\tpooled\trmse\tseconds\tchosen")
    for name in args.datasets:
        adata, truth_layer = bench.load_dataset(name, cfg)
        for fraction in args.fractions:
            if fraction >= 1 and name not in bench.UNTUNED_HER2ST:
                print(f"{name}\t{fraction}\t(refused: all of a benchmark dataset includes its evaluation sections)")
                continue
            if args.neighbours:
                splits = list(neighbour_splits(adata, fraction))
            elif args.thirds:
                splits = [split] if (split := thirds_split(adata, fraction)) is not None else []
            else:
                splits = [split] if (split := inner_split(adata, fraction)) is not None else []
            if not splits:
                print(f"{name}\t{fraction}\t(no interior training section to hold out)")
                continue
            for label, overrides in {**variants, **baselines}.items():
                started = time.perf_counter()
                scores, chosen = [], None
                for fit_on, held in splits:
                    if callable(overrides):  # a baseline
                        field = overrides(fit_on)
                    else:
                        field = ntf.tl.fit(fit_on, layer="lognorm", config=ntf.NTFConfig(**overrides),
                                           seed=args.seed, progress=False)
                    scores.append(score(field, held, truth_layer))
                    table = getattr(field, "info", {}).get("resolution_selection") or []
                    chosen = next((k + 1 for k, row in enumerate(table) if row["chosen"]), None)
                    if hasattr(field, "config"):  # and the blend weights the fit kept
                        net = field.config.network
                        chosen = f"{chosen} (beta {net.smooth_blend:g}, gamma {net.kernel_blend:g})"
                per_section, pooled, rmse = np.mean(scores, axis=0)  # over the held-out sections
                print(f"{name}\t{fraction}\t{label}\t{per_section:.4f}\t{pooled:.4f}\t{rmse:.4f}\t"
                      f"{time.perf_counter() - started:.1f}\t{chosen}", flush=True)


if __name__ == "__main__":
    main()
