"""The main demo: fit fields on a synthetic embryo and a real atlas, benchmark them, write 3D views.

Run it as::

    python -m ntf_utils.demo --out ntf_demo            # full mode: a few minutes on 2 CPU cores
    python -m ntf_utils.demo --out ntf_demo --quick    # or NTF_QUICK=1: smaller data, fewer steps

For each dataset it keeps every other section for training, holds out the rest, fits a field with
the default settings, predicts the held-out sections with the field and with the three baselines
(nearest section, linear interpolation between sections, 3D kNN), scores them with
:func:`ntf_utils.tl.evaluate_sections`, prints a results table and writes into ``--out``:

- ``summary.csv`` (one row per dataset and method) and ``evaluation.csv`` (per section and gene);
- interactive HTML views (``pl.cells_3d``, ``pl.volume_3d``, ``pl.slice_plane``, ``pl.domains_3d``,
  ``pl.gradient_arrows``, ``pl.virtual_vs_real``) sharing one ``plotly.min.js``;
- ``index.html`` linking them, with the results table.

Datasets (shipped with the repository, nothing is downloaded):

- ``embryo``: :func:`ntf_utils.datasets.synthetic_embryo` (Poisson counts with a known noise-free
  truth; held-out sections are scored against the truth);
- ``bdtnp``: the BDTNP Drosophila atlas (:func:`ntf_utils.datasets.drosophila_bdtnp`, shipped copy),
  cut into slabs along the anterior-posterior axis with :func:`ntf_utils.datasets.slab_sections`
  (held-out slabs are scored against the measured intensities).
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._constants import Key

__all__ = ["run", "main", "quick_mode"]

DATASETS = ("embryo", "bdtnp")
METHODS = ("ntf", "nearest", "linear", "knn")


def quick_mode(quick: bool | None = None) -> bool:
    """``quick`` if given, else whether the environment sets ``NTF_QUICK`` (to anything but 0/false/no)."""
    if quick is not None:
        return bool(quick)
    return os.environ.get("NTF_QUICK", "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class Settings:
    """Sizes that differ between full and quick mode (the code path is the same)."""

    embryo_sections: int
    embryo_cells: int
    embryo_genes: int
    bdtnp_slabs: int
    steps: int | None  # None: the data-driven default of tl.fit (with early stopping)
    render_shape: int
    domain_shape: int
    max_arrows: int

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if quick:
            return cls(embryo_sections=10, embryo_cells=250, embryo_genes=20, bdtnp_slabs=10, steps=120,
                       render_shape=28, domain_shape=24, max_arrows=400)
        return cls(embryo_sections=24, embryo_cells=700, embryo_genes=40, bdtnp_slabs=20, steps=None,
                   render_shape=56, domain_shape=44, max_arrows=400)


def _log(msg: str) -> None:
    print(f"[ntf demo] {msg}", flush=True)


def _prepare_embryo(settings: Settings, seed: int):
    from . import datasets, pp

    adata = datasets.synthetic_embryo(
        n_sections=settings.embryo_sections, cells_per_section=settings.embryo_cells,
        n_genes=settings.embryo_genes, seed=seed,
    )
    pp.log_normalize(adata)  # layers["lognorm"], same scale as layers["truth"]
    kinds = adata.var["kind"].astype(str)
    info = {
        "title": "Synthetic embryo (Poisson counts, known truth)",
        "layer": Key.layers.lognorm,
        "truth_layer": Key.layers.truth,
        "n_domains": len(adata.uns[Key.uns.ntf][Key.uns.synthetic]["domains"]),
        "gene": str(kinds.index[kinds == "ap_gradient"][0]),
        "gradient_gene": str(kinds.index[kinds == "radial_gradient"][0]),
        "units": None,
    }
    return adata, info


def _prepare_bdtnp(settings: Settings, seed: int):
    from . import datasets

    atlas = datasets.drosophila_bdtnp(source="shipped")
    adata = datasets.slab_sections(atlas, axis=0, n_slabs=settings.bdtnp_slabs)
    # views: the gene varying most within the slabs (an in-plane pattern a held-out slab can show) and,
    # for the gradient arrows, the one varying most between slabs (along anterior-posterior)
    values = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float64)
    slab = adata.obs[Key.obs.section].astype(str).to_numpy()
    within = np.mean([values[slab == k].var(axis=0) for k in np.unique(slab)], axis=0)
    between = values.var(axis=0) - within
    info = {
        "title": "BDTNP Drosophila atlas cut into slabs along anterior-posterior (real in situ data)",
        "layer": None,
        "truth_layer": None,
        "n_domains": None,
        "gene": str(adata.var_names[int(np.argmax(within))]),
        "gradient_gene": str(adata.var_names[int(np.argmax(between))]),
        "units": None,
    }
    return adata, info


PREPARE = {"embryo": _prepare_embryo, "bdtnp": _prepare_bdtnp}


def _evaluate(name, field, train, test, info) -> pd.DataFrame:
    from . import tl

    layer = info["layer"]
    predictions = {"ntf": field}
    for method in ("nearest", "linear", "knn"):
        predictions[method] = tl.baseline_predict(train, test, method=method, layer=layer)
    table = tl.evaluate_sections(predictions, test, layer=layer, truth_layer=info["truth_layer"])
    table.insert(0, "dataset", name)
    return table


def _views(name, field, train, test, info, settings: Settings, out: Path, seed: int) -> list[tuple[str, str]]:
    """Write the HTML views of one dataset; returns (file name, description) pairs."""
    from . import pl, tl

    gene, ggene, layer, units = info["gene"], info["gradient_gene"], info["layer"], info["units"]
    written = []

    def save(fig, stem, what):
        path = out / f"{name}_{stem}.html"
        pl.save_html(fig, path, include_plotlyjs="directory")
        written.append((path.name, what))

    save(pl.cells_3d(train, gene, layer=layer, units=units, title=f"{name}: measured training cells, {gene}"),
         "cells_3d", f"training cells coloured by {gene}")
    volume = field.render(settings.render_shape, genes=[gene, ggene])
    save(pl.volume_3d(volume, gene, units=units, title=f"{name}: field volume, {gene}"),
         "volume_3d", f"isosurfaces of the rendered field, {gene}")
    save(pl.slice_plane(volume, gene, axis="z", units=units, title=f"{name}: slicing plane through the field, {gene}"),
         "slice_plane", f"a plane moving along z through the rendered field, {gene}")

    n_domains = info["n_domains"]
    voxels = tl.domains(field, shape=settings.domain_shape, n_domains=n_domains, seed=seed)
    method = "k-means" if n_domains else "Leiden"
    save(pl.domains_3d(voxels, Key.obs.domain, units=units, title=f"{name}: 3D domains ({method} on the field latent)"),
         "domains_3d", f"3D domains from the field's latent ({method}, {voxels.obs[Key.obs.domain].nunique()} domains)")

    rng = np.random.default_rng(seed)
    # at every cell of the tissue (the held-out sections' too: the field is continuous), so the arrows
    # cover the whole body; gradient_arrows thins them to a regular lattice of max_arrows, which spaces
    # the cones evenly (training sections alone are thin rings on BDTNP, where cones must shrink to fit)
    cells = np.concatenate([train.obsm[Key.obsm.spatial_3d], test.obsm[Key.obsm.spatial_3d]])
    pick = rng.choice(len(cells), size=min(4 * settings.max_arrows, len(cells)), replace=False)
    grad = tl.gradients(field, cells[pick], ggene)[:, 0, :]
    save(pl.gradient_arrows(cells[pick], grad, context=train, gene=ggene, units=units, max_arrows=settings.max_arrows,
                            title=f"{name}: expression gradient of {ggene}"),
         "gradient_arrows", f"autograd gradient of {ggene} over the tissue's cells")

    sections = test.obs[Key.obs.section].astype(str)
    middle = sections.unique()[len(sections.unique()) // 2]
    real = test[(sections == middle).to_numpy()].copy()
    virtual = field.denoise(real, key_added=Key.layers.denoised, copy=True)
    save(pl.virtual_vs_real(virtual, real, gene, pred_layer=Key.layers.denoised, layer=layer, units=units,
                            title=f"{name}: held-out section {middle}, field vs measured ({gene})"),
         "virtual_vs_real", f"held-out section {middle}: field prediction next to the measurement, {gene}")
    return written


def _index_html(out: Path, summary: pd.DataFrame, views: dict, settings_note: str) -> Path:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>ntf_utils demo</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse}"
        "td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}</style></head><body>",
        "<h1>ntf_utils demo</h1>",
        f"<p>{html.escape(settings_note)}</p>",
        "<h2>Held-out sections: field vs baselines</h2>",
        "<p>Median Pearson / Spearman over (section, gene), mean RMSE, SSIM and per-cell cosine "
        "(<code>tl.evaluate_sections</code> + <code>tl.summarize_evaluation</code>). The synthetic embryo "
        "is scored against its noise-free truth, BDTNP against the measured held-out slabs.</p>",
        summary.to_html(index=False, float_format=lambda v: f"{v:.3f}"),
        "<p><a href='summary.csv'>summary.csv</a> · <a href='evaluation.csv'>evaluation.csv</a></p>",
    ]
    for title, files in views.values():
        parts.append(f"<h2>{html.escape(title)}</h2><ul>")
        parts += [f"<li><a href='{html.escape(f)}'>{html.escape(f)}</a>: {html.escape(what)}</li>" for f, what in files]
        parts.append("</ul>")
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def run(out="ntf_demo", *, quick: bool | None = None, datasets=DATASETS, seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Run the demo and write its outputs into ``out``.

    Parameters
    ----------
    out
        Output folder (created; existing files of the same names are overwritten).
    quick
        Quick mode (smaller data, fewer training steps, same code path); default from ``NTF_QUICK``.
    datasets
        Which of ``"embryo"`` and ``"bdtnp"`` to run.
    seed
        Seeds data generation, fits, baselines' subsamples and domains.
    progress
        Show training progress bars.

    Returns
    -------
    pandas.DataFrame
        The summary table (also written to ``out/summary.csv``): one row per dataset and method with
        ``n_sections``, ``n_genes``, ``pearson_median``, ``spearman_median``, ``rmse_mean``,
        ``ssim_mean``, ``cosine_mean``, and the field's ``fit_steps``.
    """
    from . import NTFConfig, pp, tl

    quick = quick_mode(quick)
    unknown = [d for d in datasets if d not in PREPARE]
    if unknown or not datasets:
        raise ValueError(f"datasets must be a non-empty subset of {DATASETS}, got {list(datasets)}")
    settings = Settings.for_mode(quick)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if quick else "full"
    _log(f"{mode} mode, writing into {out.resolve()}")

    tables, summaries, views = [], [], {}
    for name in datasets:
        started = time.perf_counter()
        adata, info = PREPARE[name](settings, seed)
        train, test = pp.split_sections(adata, keep_fraction=0.5)
        _log(f"{name}: {adata.n_obs} cells x {adata.n_vars} genes in {adata.obs[Key.obs.section].nunique()} sections; "
             f"training on {train.obs[Key.obs.section].nunique()}, holding out {test.obs[Key.obs.section].nunique()}")
        config = NTFConfig() if settings.steps is None else NTFConfig(training={"steps": settings.steps})
        field = tl.fit(train, layer=info["layer"], config=config, seed=seed, progress=progress)
        _log(f"{name}: fitted {field!r} in {field.info['steps_run']} steps")
        table = _evaluate(name, field, train, test, info)
        tables.append(table)
        summary = tl.summarize_evaluation(table.drop(columns="dataset"))
        summary.insert(0, "dataset", name)
        summary["fit_steps"] = np.where(summary["method"] == "ntf", field.info["steps_run"], 0)
        summaries.append(summary)
        views[name] = (info["title"], _views(name, field, train, test, info, settings, out, seed))
        _log(f"{name}: done in {time.perf_counter() - started:.0f} s")

    evaluation = pd.concat(tables, ignore_index=True)
    summary = pd.concat(summaries, ignore_index=True)
    evaluation.to_csv(out / "evaluation.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    note = (f"{mode} mode; every other section kept for training, the others held out; fields fitted with "
            f"{'the default settings' if settings.steps is None else f'{settings.steps} steps'}.")
    _index_html(out, summary, views, note)
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 3):
        print(summary.to_string(index=False))
    _log(f"open {out / 'index.html'}")
    return summary


def main(argv=None) -> int:
    """Command-line entry point: ``python -m ntf_utils.demo --out ntf_demo [--quick]``."""
    parser = argparse.ArgumentParser(prog="python -m ntf_utils.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="ntf_demo", help="output folder (default: ntf_demo)")
    parser.add_argument("--quick", action="store_true", default=None,
                        help="quick mode: smaller data and fewer steps (also NTF_QUICK=1)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
                        help="datasets to run (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    args = parser.parse_args(argv)
    run(args.out, quick=args.quick, datasets=args.datasets, seed=args.seed, progress=args.progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
