"""Known section effects on the synthetic embryo: are they recovered, and is the field still the tissue?

    .venv/bin/python benchmarks/section_effects_recovery.py                 # ambient RNA on (0.5)
    .venv/bin/python benchmarks/section_effects_recovery.py --ambient 0     # capture efficiency only

A synthetic embryo (``--sections`` sections of 600 cells, 40 genes) gets a known capture efficiency per
section and gene group (0.5-2x, four groups) and, with ``--ambient``, ambient RNA
(``ntf.datasets.inject_section_effects``, Poisson counts drawn again). Every third interior section is
held out. Each variant (``NTFConfig`` keyword dicts; ``"loss": "poisson"`` fits the counts) is fitted
to the training sections, and the clean embryo (no effects) is fitted with the defaults as the
reference. Printed per fit: the held-out median per-gene Pearson against the noise-free truth (issue
#13 asks for within 0.01 of the clean fit) and the correlation of the learned offsets with the
injected log efficiencies (>= 0.9 asked), both as they are and with the injected ones detrended like the
learned ones (``section_trend_degree``), after removing each section's mean over genes (which
library-size normalisation removes) and each gene's mean over sections.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ntf_utils as ntf  # noqa: E402
from benchmarks._variants import parse_variants, variant_parser  # noqa: E402
from ntf_utils import metrics  # noqa: E402

DEFAULT_VARIANTS = {
    "default": {},
    "effects": {"network": {"section_effects": True}},
    "effects + sparsity prior": {"network": {"section_effects": True}, "training": {"section_sparsity": 0.03}},
    "effects, poisson": {"loss": "poisson", "network": {"section_effects": True}},
}


def effect_correlations(field, injected: np.ndarray, sections: list[str], genes: list[str]) -> tuple[float, float]:
    """(raw, detrended) correlation of the field's learned offsets with the injected log efficiencies."""
    table = field.section_effects().pivot(index="section", columns="gene", values="offset")[genes]
    scale = field.gene_std[None, :] if field.config.training.loss == "mse" else 1.0  # to log-expression units
    learned = table.to_numpy() * scale
    learned = learned - learned.mean(1, keepdims=True)
    truth = injected[[sections.index(name) for name in table.index]]
    truth = truth - truth.mean(0)
    truth = truth - truth.mean(1, keepdims=True)
    trend = field.network.section_effects.trend.cpu().numpy().astype(np.float64)
    trend = trend[[list(field.sections).index(name) for name in table.index]]
    detrended = truth - trend @ (trend.T @ truth)
    return (float(np.corrcoef(truth.ravel(), learned.ravel())[0, 1]),
            float(np.corrcoef(detrended.ravel(), learned.ravel())[0, 1]))


def trend_ceiling(train, test, injected: np.ndarray, sections: list[str], degree: int) -> float:
    """Held-out Pearson against the truth of the truth plus the injected effects' trend along z.

    A field that leaves the polynomial trend of the section effects (degree ``degree``, fitted over
    the training sections) to the tissue, as ``section_trend_degree`` does, predicts at best that
    much: independent per-section effects still have such a component, and nothing tells it from
    tissue that changes with depth.
    """
    labels, z = train.obs["section"].astype(str), train.obsm["spatial_3d"][:, 2]
    names = sorted(set(labels))
    train_z = np.array([np.median(z[(labels == name).to_numpy()]) for name in names])
    effects = injected[[sections.index(name) for name in names]]
    effects = effects - effects.mean(0)
    centre, span = train_z.mean(), np.ptp(train_z)
    coefficients = np.linalg.lstsq(np.vander((train_z - centre) / span, degree + 1, increasing=True), effects,
                                   rcond=None)[0]
    held_z = test.obsm["spatial_3d"][:, 2]
    trend = np.vander((held_z - centre) / span, degree + 1, increasing=True) @ coefficients
    truth = np.asarray(test.layers["truth"])
    return float(np.nanmedian(metrics.pearson_per_gene(truth + trend, truth)))


def main(argv=None) -> None:
    parser = variant_parser(__doc__)
    parser.add_argument("--sections", type=int, default=12)
    parser.add_argument("--ambient", type=float, default=0.5)
    args, variants = parse_variants(parser, argv, DEFAULT_VARIANTS)
    clean = ntf.datasets.synthetic_embryo(n_sections=args.sections, cells_per_section=600, n_genes=40, seed=args.seed)
    dirty = ntf.datasets.inject_section_effects(clean, ambient=args.ambient, resample=True, seed=args.seed)
    for adata in (clean, dirty):
        ntf.pp.log_normalize(adata)
    names = list(clean.obs["section"].cat.categories)
    held_out = names[1:-1][::3]
    injected = np.asarray(dirty.uns["ntf"]["section_effects"]["log_efficiency"])
    sections = list(dirty.uns["ntf"]["section_effects"]["sections"])
    genes = list(dirty.var_names)
    clean_split, dirty_split = (ntf.pp.split_sections(data, holdout=held_out) for data in (clean, dirty))
    degree = ntf.NTFConfig().network.section_trend_degree
    print(f"ceiling of a field that keeps the effects' degree-{degree} trend along z as tissue: held-out Pearson "
          f"{trend_ceiling(*dirty_split, injected, sections, degree):.4f} (degree 1: "
          f"{trend_ceiling(*dirty_split, injected, sections, 1):.4f})")
    print("data\tvariant\theldout_pearson_vs_truth\toffset_corr\toffset_corr_detrended\tseconds")
    for data_name, (train, test), runs in [("clean", clean_split, {"default": {}}),
                                           ("effects injected", dirty_split, variants)]:
        truth = np.asarray(test.layers["truth"])
        for label, overrides in runs.items():
            overrides = dict(overrides)
            loss = overrides.pop("loss", "mse")
            data_args = {"layer": "lognorm"} if loss == "mse" else {"loss": loss}
            started = time.perf_counter()
            field = ntf.tl.fit(train, config=ntf.NTFConfig(**overrides), seed=args.seed, progress=False, **data_args)
            pred = field.predict(test.obsm["spatial_3d"])
            if loss != "mse":  # expected counts: compare on the truth's log scale
                pred = np.log1p(pred)
            pearson = float(np.nanmedian(metrics.pearson_per_gene(pred, truth)))
            raw, detrended = effect_correlations(field, injected, sections, genes) if field.sections else (np.nan,) * 2
            print(f"{data_name}\t{label}\t{pearson:.4f}\t{raw:.3f}\t{detrended:.3f}\t{time.perf_counter() - started:.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
