"""Stacks without ``obs["section"]``: the default fit with the labels, without them (sections derived
from z by ``tl.fit``), and with nothing derived (the behaviour before), next to a distance-weighted 3D kNN.

    .venv/bin/python benchmarks/unlabelled_stacks.py                  # every case (about 10 minutes)
    .venv/bin/python benchmarks/unlabelled_stacks.py --cases intermixed --seeds 0,1

Cases (held-out sections never seen by the fit; median per-gene Pearson per held-out section against
the measured values, ``inr_baselines.heldout_pearson``):

* ``bdtnp_split``: the benchmark's BDTNP training split at 50% kept (``benchmarks/run.py``'s slabs,
  one z per slab): without labels each distinct z is a section;
* ``bdtnp_cloud``, ``starmap_cloud``: the real cells with their own continuous z (BDTNP atlas,
  STARmap organoid), cut into 18 slabs of equal thickness along z, every third held out (the fit is
  given the labels, or only the coordinates: then ``tl.fit`` races on slabs it derives from z);
* ``intermixed``: a synthetic cell-resolution cloud (30,000 cells in an ellipsoid, 8 cell types whose
  proportions change smoothly in space, 100 genes, Poisson counts), 18 slabs, every third held out.
  Expression changes from cell to cell (the type), so a held-out cell is predicted no better than
  by the local mix of types: the case where a 3D kNN is hard to beat.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ntf_utils as ntf  # noqa: E402
from benchmarks import inr_baselines as ib  # noqa: E402
from benchmarks import run as bench  # noqa: E402

CASES = ("bdtnp_split", "bdtnp_cloud", "starmap_cloud", "intermixed")
N_SLABS = 18


def intermixed_cloud(seed: int, n_cells: int = 30_000, n_genes: int = 100, n_types: int = 8):
    """Log-normalised AnnData of cells of intermixed types in an ellipsoid (x, y, z in µm, continuous z)."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, (3 * n_cells, 3))
    points = points[(points**2).sum(1) < 1][:n_cells]
    xyz = points * np.array([500.0, 400.0, 90.0]) + np.array([500.0, 400.0, 90.0])
    # type proportions: a softmax of smooth random fields (low-frequency cosines)
    frequencies = rng.normal(0, 1 / 250.0, (3, 6)) * np.array([1.0, 1.0, 3.0])[:, None]
    smooth = np.cos(xyz @ frequencies + rng.uniform(0, 2 * np.pi, 6))
    logits = smooth @ rng.normal(0, 2.0, (6, n_types))
    share = np.exp(logits - logits.max(1, keepdims=True))
    share /= share.sum(1, keepdims=True)
    types = (share.cumsum(1) > rng.uniform(size=(len(xyz), 1))).argmax(1)
    profiles = rng.lognormal(0, 1.5, (n_types, n_genes)) * (rng.uniform(size=(n_types, n_genes)) < 0.4) + 0.05
    size = rng.lognormal(np.log(200), 0.4, len(xyz))
    rate = profiles[types] / profiles[types].sum(1, keepdims=True) * size[:, None]
    adata = ad.AnnData(rng.poisson(rate).astype(np.float32))
    adata.obs_names = [f"cell{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"gene{j}" for j in range(n_genes)]
    adata.obsm["spatial_3d"] = xyz
    ntf.pp.log_normalize(adata)
    return adata


def slab_split(adata, n_slabs: int = N_SLABS):
    """(train, test): ``n_slabs`` slabs of equal thickness along z as ``obs["section"]``, every third
    (from the second) held out."""
    z = np.asarray(adata.obsm["spatial_3d"])[:, 2]
    edges = np.linspace(z.min(), z.max(), n_slabs + 1)
    slab = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, n_slabs - 1)
    adata = adata.copy()
    adata.obs["section"] = pd.Categorical([f"slab{k:02d}" for k in slab])
    names = sorted(adata.obs["section"].unique())
    return ntf.pp.split_sections(adata, holdout=names[1::3])


def case_data(name: str, seed: int):
    """(train, test, layer scored) of a case."""
    if name == "bdtnp_split":
        adata, truth = bench.load_dataset("drosophila", bench.settings(False))
        train, test = ntf.pp.split_sections(adata, keep_fraction=0.5)
        return train, test, truth
    if name == "intermixed":
        return (*slab_split(intermixed_cloud(seed)), "lognorm")
    raw = (ntf.datasets.drosophila_bdtnp(source="shipped") if name == "bdtnp_cloud"
           else ntf.datasets.starmap_cardiac_organoid(source="shipped"))
    if name == "starmap_cloud":  # counts: log-normalise (the BDTNP atlas comes normalised)
        ntf.pp.log_normalize(raw)
    layer = "lognorm" if "lognorm" in raw.layers else None
    return (*slab_split(raw), layer)


def fit_without_derived_sections(adata, layer, seed):
    """``tl.fit`` as before sections were derived: the unlabelled stack fitted as it is."""
    import ntf_utils.tl._fit as fit_module

    derive = fit_module.derive_sections
    fit_module.derive_sections = lambda adata, config, **kwargs: (adata, config, None)
    try:
        return ntf.tl.fit(adata, layer=layer, seed=seed, progress=False)
    finally:
        fit_module.derive_sections = derive


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--seeds", default="0", help="seeds of the fits (and of the intermixed cloud)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print("case\tseed\tknn_distance\tlabelled\tunlabelled (derived)\tunlabelled (nothing derived)\tderived")
    for name in args.cases.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            train, test, layer = case_data(name, seed)
            fit_layer = "lognorm" if "lognorm" in train.layers else None
            bare = train.copy()
            del bare.obs["section"]
            started = time.perf_counter()
            knn = ntf.tl.KNNBaseline(weights="distance").fit(train, layer=fit_layer)
            labelled = ntf.tl.fit(train, layer=fit_layer, seed=seed, progress=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the warning that says what was derived
                derived = ntf.tl.fit(bare, layer=fit_layer, seed=seed, progress=False)
            plain = fit_without_derived_sections(bare, fit_layer, seed)
            scores = [ib.heldout_pearson(m, test, layer=layer) for m in (knn, labelled, derived, plain)]
            print(f"{name}\t{seed}\t" + "\t".join(f"{s:.4f}" for s in scores)
                  + f"\t{derived.info.get('derived_sections')}\t({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
