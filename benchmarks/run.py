"""Benchmarks: held-out-section accuracy and time-to-accuracy of the field against baselines and
earlier methods, throughput against dataset size, and PASTE alignment, side by side.

    .venv/bin/python benchmarks/run.py            # full run, writes benchmarks/results/
    .venv/bin/python benchmarks/run.py --quick    # small sizes (CI smoke run), writes results_quick/

Methods (``method`` column): ``ntf`` (``ntf_utils.tl.fit`` with its default, data-driven
configuration), ``nearest``, ``linear``, ``knn`` (``ntf_utils.tl`` baselines), ``gp`` (PCA + GP
regression), ``fourier_mlp`` and ``siren`` (``benchmarks/inr_baselines.py``; bandwidth tuned per
split, learning rate tuned per dataset, both on a validation split of the TRAINING sections only).

Data: the synthetic embryo (scored against its noise-free truth), the BDTNP Drosophila atlas cut
into slabs (scored against the held-out slabs' measured values), the HER2ST patient-A and the Stahl
breast cancer sections (aligned with ``pp.align_sections``, log-normalised, scored against the
held-out sections' log-normalised counts) and the STARmap cardiac organoid cut into 8 slabs along z
(log-normalised cell counts); ``pp.split_sections(keep_fraction=f)`` for f in 0.1, 0.25, 0.5 (a
fraction that gives the same split as another one reuses its rows).

Outputs (``--out``): ``superres.csv``, ``superres_per_gene.csv``, ``denoise.csv``,
``time_to_accuracy.csv``, ``time_curves.csv``, ``throughput.csv``, ``tuning.csv``,
``peak_memory.csv``, ``alignment.csv``, ``peers.csv``, ``machine.json`` (one record per invocation),
``tables.md``, ``headline.txt`` and the PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ntf_utils as ntf  # noqa: E402
from benchmarks import inr_baselines as ib  # noqa: E402
from ntf_utils import metrics  # noqa: E402

METHODS = ["ntf", "nearest", "linear", "knn", "gp", "fourier_mlp", "siren"]
FRACTIONS = (0.1, 0.25, 0.5)
TTA_FRACTION = 0.5  # time-to-accuracy runs use this kept fraction
PEERS_PYTHON = os.environ.get("NTF_PEERS_PYTHON", "/tmp/ntf-peers-venv/bin/python")


# ------------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------------
def settings(quick: bool) -> dict:
    """Every size and budget of a run, in one place (written to machine.json)."""
    if quick:
        return {
            "quick": True,
            "synthetic": {"n_sections": 12, "cells_per_section": 150, "n_genes": 12},
            "datasets": ["synthetic_embryo"],
            "fractions": (0.5, 2 / 3),  # 2/3 kept = 1/3 of the sections held out (the CI orderings)
            # small networks so that the smoke run takes seconds; the full run uses the papers' sizes
            "inr": {"steps": 200, "batch_size": 512, "hidden_width": 64, "hidden_layers": 2},
            "tune": {"steps": 100, "batch_size": 512, "lr_grid": False},
            "ntf_steps": 200,
            "gp_max_cells": 300,
            "eval_every": 25,
            "ntf_sweep": (25, 50, 100, 200),
            "throughput_sizes": (10_000, 100_000),
            "throughput_steps": 5,
            "peers": False,
        }
    return {
        "quick": False,
        "synthetic": {"n_sections": 30, "cells_per_section": 400, "n_genes": 40},
        "datasets": ["synthetic_embryo", "drosophila", "breast_her2st_A", "breast_stahl", "starmap_organoid"],
        "fractions": FRACTIONS,
        "inr": {"steps": 1000, "batch_size": 2048},  # papers' sizes: Fourier 4 x 256, SIREN 3 x 256
        "tune": {"steps": 200, "batch_size": 1024, "lr_grid": True},
        "ntf_steps": None,  # the package default (data-driven, early stopping)
        "gp_max_cells": 2000,
        "eval_every": 50,
        "ntf_sweep": (25, 50, 100, 200, 400, 800, 1600),
        "throughput_sizes": (10_000, 100_000, 1_000_000, 10_000_000),
        "throughput_steps": 20,
        "peers": True,
    }


# ------------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------------
class PeakRSS:
    """Peak resident memory above the starting level while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        self._proc = psutil.Process()
        self.start = self._proc.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mb(self) -> float:
        return (self.peak - self.start) / 2**20


class Timer:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def inr_architecture(cfg: dict) -> dict:
    """The neural baselines' layer sizes in ``cfg`` (``hidden_width``, ``hidden_layers``), as ``fit_inr`` keywords."""
    return {k: v for k, v in cfg["inr"].items() if k in ("hidden_width", "hidden_layers")}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def stacked_spots(sections):
    """Spot sections stacked at their z, empty spots dropped (a handful have no counts in the
    shipped genes), log-normalised into layer "lognorm"."""
    adata = ntf.pp.stack_sections(sections, z_key="z")
    totals = np.asarray(adata.X.sum(1)).ravel()
    adata = adata[totals > 0].copy()
    ntf.pp.log_normalize(adata)
    return adata


def top_variable_genes(sections, n: int = 300) -> list:
    """The ``n`` most variable genes shared by ``sections`` (variance of log1p counts per 10,000 over
    all their spots), sorted: the rule of the shipped subsets (``data/make_shipped.py``)."""
    shared = sorted(set.intersection(*(set(map(str, a.var_names)) for a in sections)))
    logs = []
    for a in sections:
        counts = a[:, shared].X
        counts = np.asarray(counts.todense() if hasattr(counts, "todense") else counts, dtype=np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        logs.append(np.log1p(counts / np.where(totals == 0, 1.0, totals) * 1e4))
    variance = np.concatenate(logs).var(axis=0)
    order = sorted(range(len(shared)), key=lambda i: (-variance[i], shared[i]))
    return sorted(shared[i] for i in order[:n])


def _her2st_patient(patient: str) -> list:
    """HER2ST patient ``patient``'s sections from the full data, restricted as the shipped patient A is."""
    sections = ntf.datasets.her2st(patient, source="full")
    genes = top_variable_genes(sections)
    return [a[:, genes].copy() for a in sections]


def _aligned_stack(load_sections):
    """:func:`stacked_spots` of the sections aligned with ``pp.align_sections``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return stacked_spots(ntf.pp.align_sections(load_sections(), copy=True))


UNTUNED_HER2ST = ("breast_her2st_B", "breast_her2st_C", "breast_her2st_D")


def load_dataset(name: str, cfg: dict, n_slabs: int | None = None):
    """``(stacked AnnData with layer "lognorm", truth layer name)`` for a benchmark dataset.

    ``n_slabs`` cuts the cell-resolution sets (``drosophila``, ``starmap_organoid``) into that many slabs
    instead of the benchmark's 30 and 8 (``benchmarks/slab_holdout.py``).
    """
    if name == "synthetic_embryo":
        adata = ntf.datasets.synthetic_embryo(seed=0, **cfg["synthetic"])
        ntf.pp.log_normalize(adata)
        return adata, "truth"
    if name == "drosophila":
        # in situ intensities (not counts) on the blastoderm shell; 30 slabs of ~13 um along AP
        adata = ntf.datasets.slab_sections(ntf.datasets.drosophila_bdtnp(source="shipped"), axis=0,
                                           n_slabs=n_slabs or 30)
        adata.layers["lognorm"] = np.asarray(adata.X, dtype=np.float32)
        return adata, "lognorm"
    if name == "breast_her2st_A":
        return _aligned_stack(lambda: ntf.datasets.her2st("A", source="shipped")), "lognorm"
    if name in UNTUNED_HER2ST:
        # patients B-D (6 sections each), never in the benchmark's tables: for checking defaults on data
        # that chose none of them (benchmarks/tune_section_effects.py); the full data, not shipped
        return _aligned_stack(lambda: _her2st_patient(name[-1])), "lognorm"
    if name == "breast_stahl":
        # Stahl et al. 2016: 4 consecutive, unregistered ST layers (251-264 spots, 300 shipped genes).
        # With 4 sections every kept fraction keeps the two end layers and holds out layers 2 and 3,
        # so 0.25 and 0.1 reuse the 0.5 split.
        return _aligned_stack(lambda: ntf.datasets.breast_cancer_stahl(source="shipped")), "lognorm"
    if name == "starmap_organoid":
        # STARmap cardiac organoid: 1,125 cells (molecules grouped by ClusterMap cell id, cell position
        # = mean molecule position) x 8 genes in a 1024 x 1024 x 97 voxel stack; cut into 8 slabs of
        # ~10 voxels along z. Cells thin out towards the top and bottom of the organoid: 8 slabs keep
        # >= 25 cells in the emptiest (end) slab (9 slabs: 20, 10 slabs: 16), 25-269 cells per slab.
        adata = ntf.datasets.slab_sections(ntf.datasets.starmap_cardiac_organoid(source="shipped"), axis=2,
                                           n_slabs=n_slabs or 8)
        ntf.pp.log_normalize(adata)
        return adata, "lognorm"
    raise ValueError(f"unknown dataset {name!r}")


def test_sections(test) -> tuple:
    return tuple(sorted(map(str, test.obs["section"].unique())))


# ------------------------------------------------------------------------------------------------
# fitting every method on one split
# ------------------------------------------------------------------------------------------------
def _score(model, test, truth_layer) -> float:
    return ib.heldout_pearson(model, test, layer=truth_layer)


def fit_ntf(train, cfg, seed=0, steps=None):
    return ntf.tl.fit(train, layer="lognorm", steps=steps if steps is not None else cfg["ntf_steps"], seed=seed,
                      progress=False)


def run_split(dataset, fraction, train, test, truth_layer, cfg, hyper_cache, tta: bool, seed: int = 0):
    """Fit all methods on one split; returns (rows, per-gene frame, predictions, curves, tuning rows)."""
    preds, rows, curves, tuning = {}, [], [], []
    genes = list(map(str, test.var_names))
    coords = test.obsm["spatial_3d"]
    fitted = {}

    def record(method, fit_fn, extra=None):
        gc_collect()
        with Timer() as t:
            model = fit_fn()
        with Timer() as tp:
            pred = model.predict(coords, genes=genes)
        preds[method] = pred
        fitted[method] = model
        fit_seconds, fit_cpu = t.wall, t.cpu
        if method in ("fourier_mlp", "siren"):  # training time only: the held-out evaluations are not counted
            fit_seconds, fit_cpu = model.info["fit_seconds"], model.info["fit_cpu_seconds"]
        rows.append({"dataset": dataset, "kept_fraction": fraction, "method": method, "fit_seconds": fit_seconds,
                     "fit_cpu_seconds": fit_cpu, "predict_seconds": tp.wall,
                     **(extra or {})})
        log(f"  {dataset} f={fraction:.3g} {method:<12} fit {t.wall:7.1f} s  held-out r={_score(model, test, truth_layer):.3f}")
        return model

    record("nearest", lambda: ntf.tl.NearestSectionBaseline().fit(train, layer="lognorm"))
    record("linear", lambda: ntf.tl.LinearInterpolationBaseline().fit(train, layer="lognorm"))
    record("knn", lambda: ntf.tl.KNNBaseline().fit(train, layer="lognorm"))
    record("gp", lambda: ib.gp_baseline(train, layer="lognorm", max_cells=cfg["gp_max_cells"], seed=seed))
    record("ntf", lambda: fit_ntf(train, cfg, seed))

    for kind, method in (("fourier", "fourier_mlp"), ("siren", "siren")):
        arch = inr_architecture(cfg)
        band = "sigma" if kind == "fourier" else "w0"
        grid = ib.default_grid(kind)
        lr_key = (dataset, kind)
        if lr_key in hyper_cache:
            grid = {band: grid[band]}
            fixed = {**arch, "lr": hyper_cache[lr_key]}
        else:
            grid = grid if cfg["tune"]["lr_grid"] else {band: grid[band]}
            fixed = dict(arch)
        with Timer() as tt:
            best, table = ib.tune_inr(train, kind, layer="lognorm", grid=grid, steps=cfg["tune"]["steps"],
                                      batch_size=cfg["tune"]["batch_size"], seed=seed, **fixed)
        hyper_cache.setdefault(lr_key, best.get("lr", ib.DEFAULTS[kind]["lr"]))
        tuning.append(table.assign(dataset=dataset, kept_fraction=fraction, chosen=str(best)))
        def callback(model, step, seconds):
            return _score(model, test, truth_layer)

        model = record(method, lambda kind=kind, best=best: ib.fit_inr(
            train, kind, layer="lognorm", steps=cfg["inr"]["steps"], batch_size=cfg["inr"]["batch_size"], seed=seed,
            eval_callback=callback if tta else None, eval_every=cfg["eval_every"], **best),
            extra={"tune_seconds": tt.wall, "hyper": json.dumps({k: float(v) for k, v in best.items()})})
        if tta:
            h = model.history.dropna(subset=["score"])
            for _, c in h.iterrows():
                curves.append({"dataset": dataset, "kept_fraction": fraction, "method": method, "step": int(c["step"]),
                               "seconds": c["seconds"], "cpu_seconds": c["cpu_seconds"], "pearson": c["score"]})

    ntf_hyper = fitted["ntf"].config.encoding
    rows[[r["method"] for r in rows].index("ntf")]["hyper"] = json.dumps(
        {"n_levels": ntf_hyper.n_levels, "finest_resolution": round(ntf_hyper.finest_resolution, 2),
         "steps_run": fitted["ntf"].info.get("steps_run"), "best_step": fitted["ntf"].info.get("best_step"),
         "smooth_blend": fitted["ntf"].config.network.smooth_blend,
         "kernel_blend": fitted["ntf"].config.network.kernel_blend})
    df = ntf.tl.evaluate_sections(preds, test, layer="lognorm", truth_layer=truth_layer)
    summary = ntf.tl.summarize_evaluation(df).set_index("method")
    for r in rows:
        s = summary.loc[r["method"]]
        r.update(pearson=s["pearson_median"], spearman=s["spearman_median"], rmse=s["rmse_mean"], ssim=s["ssim_mean"],
                 cosine=s["cosine_mean"], n_train_sections=train.obs["section"].nunique(),
                 n_test_sections=test.obs["section"].nunique(), n_train_cells=train.n_obs, n_genes=train.n_vars)
    per_gene = (df.groupby(["method", "gene"], observed=True)[["pearson", "spearman", "rmse", "ssim"]].median()
                .reset_index().assign(dataset=dataset, kept_fraction=fraction))
    return rows, per_gene, fitted, curves, tuning


def gc_collect():
    import gc

    gc.collect()


def denoise_rows(dataset, fraction, train, fitted) -> list[dict]:
    """Error against the noise-free truth AT THE TRAINING CELLS (synthetic data only)."""
    truth = np.asarray(train.layers["truth"], dtype=np.float32)
    observed = np.asarray(train.layers["lognorm"], dtype=np.float32)
    genes = list(map(str, train.var_names))
    out = [{"dataset": dataset, "kept_fraction": fraction, "method": "observed (no model)",
            "rmse_vs_truth": float(metrics.rmse(observed, truth)),
            "pearson_vs_truth": float(np.nanmedian(metrics.pearson_per_gene(observed, truth)))}]
    for method, model in fitted.items():
        pred = model.predict(train.obsm["spatial_3d"], genes=genes)
        out.append({"dataset": dataset, "kept_fraction": fraction, "method": method,
                    "rmse_vs_truth": float(metrics.rmse(pred, truth)),
                    "pearson_vs_truth": float(np.nanmedian(metrics.pearson_per_gene(pred, truth)))})
    return out


# ------------------------------------------------------------------------------------------------
# time to accuracy
# ------------------------------------------------------------------------------------------------
def ntf_sweep(dataset, train, test, truth_layer, cfg, default_steps: int, seed=0, stop_at=None,
              default_point: dict | None = None) -> list[dict]:
    """Complete NTF fits with growing step budgets: (wall seconds of tl.fit, held-out Pearson).

    Each point is a full ``tl.fit`` call (setup, its own learning-rate schedule and early stopping
    included), so its time is what a user waits for that accuracy; evaluation is not timed.
    """
    out = []
    budgets = [s for s in cfg["ntf_sweep"] if s < default_steps]
    if default_point is None:
        budgets.append(default_steps)
    for steps in budgets:
        with Timer() as t:
            field = fit_ntf(train, cfg, seed, steps=steps)
        r = _score(field, test, truth_layer)
        out.append({"dataset": dataset, "kept_fraction": TTA_FRACTION, "method": "ntf", "step": steps,
                    "seconds": t.wall, "cpu_seconds": t.cpu, "pearson": r})
        log(f"  ntf sweep {dataset}: {steps:5d} steps {t.wall:6.1f} s r={r:.3f}")
        if stop_at is not None and r >= stop_at:
            return out
    if default_point is not None:  # the default fit of the accuracy table: same call, same result
        out.append({"dataset": dataset, "kept_fraction": TTA_FRACTION, "method": "ntf", "step": default_steps,
                    **default_point})
    return out


TOLERANCE = 0.005  # a target counts as reached within this much Pearson (curves are noisy at the top)


def seconds_to(curve: pd.DataFrame, target: float, col: str = "seconds") -> float:
    hit = curve[curve["pearson"] >= target - TOLERANCE]
    return float(hit[col].min()) if len(hit) else float("nan")


def time_to_accuracy(dataset, curves: pd.DataFrame, superres: pd.DataFrame) -> list[dict]:
    """Seconds for each method to first reach (within TOLERANCE) three targets: the Fourier MLP's
    best held-out Pearson, NTF's best, and the best classical baseline's (nearest/linear/knn/gp)."""
    ff = curves[curves.method == "fourier_mlp"]
    nt = curves[curves.method == "ntf"]
    classical = superres[superres.method.isin(["nearest", "linear", "knn", "gp"])]
    targets = {"fourier_mlp_best": float(ff["pearson"].max()), "ntf_best": float(nt["pearson"].max()),
               "best_baseline": float(classical["pearson"].max())}
    rows = []
    for kind, target in targets.items():
        per = {}
        for method in METHODS:
            cur = curves[curves.method == method]
            if len(cur):
                sec, cpu = seconds_to(cur, target), seconds_to(cur, target, "cpu_seconds")
                best = float(cur["pearson"].max())
            else:  # one-shot methods: their fit time when their accuracy reaches the target
                s = superres[(superres.method == method)].iloc[0]
                ok = s["pearson"] >= target - TOLERANCE
                sec = float(s["fit_seconds"] + s["predict_seconds"]) if ok else float("nan")
                cpu = float(s["fit_cpu_seconds"]) if ok else float("nan")
                best = float(s["pearson"])
            per[method] = (sec, cpu, best)
        for method, (sec, cpu, best) in per.items():
            rows.append({"dataset": dataset, "method": method, "target_pearson": target, "seconds_to_target": sec,
                         "speedup_vs_ntf": sec / per["ntf"][0] if per["ntf"][0] > 0 else float("nan"),
                         "target_kind": kind, "kept_fraction": TTA_FRACTION, "cpu_seconds_to_target": cpu,
                         "cpu_speedup_vs_ntf": cpu / per["ntf"][1] if per["ntf"][1] > 0 else float("nan"),
                         "best_pearson": best, "reached": bool(np.isfinite(sec))})
    return rows


# ------------------------------------------------------------------------------------------------
# throughput against dataset size
# ------------------------------------------------------------------------------------------------
def large_synthetic(n_cells: int, n_genes: int = 40, n_sections: int = 100, seed: int = 0):
    """A cheap smooth synthetic stack of any size: sections of an ellipsoid, smooth gene fields + noise."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    per = np.full(n_sections, n_cells // n_sections)
    per[: n_cells - per.sum()] += 1
    z = np.repeat(np.arange(n_sections) * 10.0, per)
    r = np.sqrt(rng.random(n_cells))
    a = rng.random(n_cells) * 2 * np.pi
    xyz = np.column_stack([250 * r * np.cos(a), 150 * r * np.sin(a), z])
    freq = rng.normal(size=(3, n_genes)) / np.array([[200.0], [120.0], [300.0]])
    phase = rng.random(n_genes) * 2 * np.pi
    values = np.empty((n_cells, n_genes), dtype=np.float32)
    for s in range(0, n_cells, 1_000_000):
        block = xyz[s : s + 1_000_000]
        values[s : s + len(block)] = 1.0 + np.sin(block @ freq + phase) + 0.3 * rng.standard_normal((len(block), n_genes))
    names = [f"s{k:03d}" for k in range(n_sections)]
    obs = pd.DataFrame({"section": pd.Categorical(np.repeat(names, per), categories=names, ordered=True), "z": z})
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(X=values, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    adata.obsm["spatial_3d"] = xyz
    adata.uns["ntf"] = {"sections": {"names": names, "z": [float(k * 10.0) for k in range(n_sections)]}}
    return adata


def throughput(cfg) -> pd.DataFrame:
    rows = []
    steps = cfg["throughput_steps"]
    for n in cfg["throughput_sizes"]:
        need_gb = n * 40 * 4 * 6 / 2**30 + 1  # values + ~5 working copies in tl.fit
        avail_gb = psutil.virtual_memory().available / 2**30
        if need_gb > avail_gb * 0.7:
            rows.append({"method": "ntf", "n_cells": n, "skipped": f"needs ~{need_gb:.0f} GB, {avail_gb:.0f} GB available"})
            log(f"  throughput n={n:,}: skipped ({rows[-1]['skipped']})")
            continue
        with Timer() as tg:
            adata = large_synthetic(n)
        with PeakRSS() as mem, Timer() as t:
            field = ntf.tl.fit(adata, steps=steps, validation=False, progress=False)
        # the training loop's own seconds: the selection race, the smoothers' solves and the planning are set-up
        train_s = field.info["train_seconds"]
        bs = field.config.training.batch_size
        rows.append({"method": "ntf", "n_cells": n, "total_seconds": t.wall, "setup_seconds": t.wall - train_s,
                     "steps_per_s": steps / train_s, "cells_per_s": steps * bs / train_s,
                     "epoch_seconds": n / (steps * bs / train_s), "peak_mem_mb": mem.mb, "batch_size": bs,
                     "generate_seconds": tg.wall})
        log(f"  throughput n={n:,} ntf: setup {t.wall - train_s:.1f} s, {steps * bs / train_s:,.0f} cells/s, peak +{mem.mb:.0f} MB")
        del field
        ff_steps = max(3, steps // 2)
        with PeakRSS() as mem, Timer() as t:
            model = ib.fit_inr(adata, "fourier", steps=ff_steps, batch_size=bs, sigma=1.0, validation_fraction=0.0,
                               **inr_architecture(cfg))
        train_s = model.info["fit_seconds"]
        rows.append({"method": "fourier_mlp", "n_cells": n, "total_seconds": t.wall, "setup_seconds": t.wall - train_s,
                     "steps_per_s": ff_steps / train_s, "cells_per_s": ff_steps * bs / train_s,
                     "epoch_seconds": n / (ff_steps * bs / train_s), "peak_mem_mb": mem.mb, "batch_size": bs})
        log(f"  throughput n={n:,} fourier_mlp: {ff_steps * bs / train_s:,.0f} cells/s")
        del model
        if n <= 1_000_000:
            query = adata.obsm["spatial_3d"][:: max(1, n // 10_000)] + np.array([0.0, 0.0, 5.0])
            for method in ("knn", "linear"):
                with PeakRSS() as mem, Timer() as t:
                    ntf.tl.baseline_predict(adata, query, method=method)
                rows.append({"method": method, "n_cells": n, "total_seconds": t.wall, "peak_mem_mb": mem.mb,
                             "n_query": len(query)})
                log(f"  throughput n={n:,} {method}: fit + predict {len(query):,} points {t.wall:.1f} s")
        del adata
        gc_collect()
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# peak memory, one fresh process per method
# ------------------------------------------------------------------------------------------------
def _child_memory(method: str, quick: bool, threads: int) -> None:
    """In a fresh process: load the synthetic embryo, split at TTA_FRACTION, fit ``method``; print
    the peak resident set size before and after the fit (the process's high-water mark)."""
    from benchmarks._memory import peak_rss_mb

    torch.set_num_threads(threads)
    cfg = settings(quick)
    adata, _ = load_dataset("synthetic_embryo", cfg)
    train, test = ntf.pp.split_sections(adata, keep_fraction=TTA_FRACTION)
    del adata
    gc_collect()
    before = peak_rss_mb()
    steps = 200  # memory does not grow with the number of steps
    arch = inr_architecture(cfg)
    fit = {
        "ntf": lambda: fit_ntf(train, cfg, steps=steps),
        "nearest": lambda: ntf.tl.NearestSectionBaseline().fit(train, layer="lognorm"),
        "linear": lambda: ntf.tl.LinearInterpolationBaseline().fit(train, layer="lognorm"),
        "knn": lambda: ntf.tl.KNNBaseline().fit(train, layer="lognorm"),
        "gp": lambda: ib.gp_baseline(train, layer="lognorm", max_cells=cfg["gp_max_cells"]),
        "fourier_mlp": lambda: ib.fit_inr(train, "fourier", layer="lognorm", steps=steps,
                                          batch_size=cfg["inr"]["batch_size"], sigma=1.0, **arch),
        "siren": lambda: ib.fit_inr(train, "siren", layer="lognorm", steps=steps,
                                    batch_size=cfg["inr"]["batch_size"], w0=10.0, **arch),
    }[method]
    model = fit()
    model.predict(test.obsm["spatial_3d"], genes=list(map(str, test.var_names)))
    after = peak_rss_mb()
    print(json.dumps({"method": method, "rss_before_mb": before, "peak_rss_mb": after}))


def peak_memory(cfg, threads: int) -> pd.DataFrame:
    """Peak memory of fitting + predicting each method, each in its own process (synthetic embryo, kept 0.5)."""
    rows = []
    for method in METHODS:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-memory", method, "--threads", str(threads)]
        if cfg["quick"]:
            cmd.append("--quick")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        try:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            rows.append({"method": method, "note": f"failed: {proc.stderr.strip().splitlines()[-1:]}"})
            continue
        r["fit_peak_mb"] = r["peak_rss_mb"] - r["rss_before_mb"]
        rows.append(r)
        log(f"  peak memory {method:<12} +{r['fit_peak_mb']:7.1f} MB over {r['rss_before_mb']:.0f} MB (data loaded)")
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# peers: PASTE alignment
# ------------------------------------------------------------------------------------------------
PEER_STATUS = [
    {"tool": "paste-bio (PASTE)", "on_pypi": True, "job": "pairwise section alignment (fused Gromov-Wasserstein OT)",
     "status": "run (throwaway venv, benchmarks/peers/setup_peers.sh)"},
    {"tool": "GPSA", "on_pypi": True, "job": "alignment into a common coordinate system (deep GP, variational)",
     "status": "not run: installs (pure torch, no declared dependencies) but is a non-rigid 2D alignment "
               "model trained for thousands of variational iterations; no CPU time left in the budget, and "
               "PASTE covers the alignment comparison"},
    {"tool": "STitch3D", "on_pypi": True, "job": "3D cell-type deconvolution of aligned ST slices against an scRNA reference",
     "status": "not run: pins torch<=1.13.1, scanpy==1.7.2, anndata==0.7.6, pandas==1.1.5 (no wheels for "
               "Python 3.11, the only Python here), and needs a single-cell reference; it estimates "
               "cell-type proportions, not a gene-expression field"},
    {"tool": "SPACEL", "on_pypi": True, "job": "deconvolution (Spoint), spatial domains (Splane), 3D alignment (Scube)",
     "status": "not run: pins torch<=1.13 (no Python 3.11 wheels), scvi-tools<=0.20.3, squidpy<1.3; its "
               "Scube alignment step overlaps PASTE's job"},
]


def _rigid_fit(src: np.ndarray, dst: np.ndarray):
    """Least-squares rotation (no reflection) + translation mapping src onto dst."""
    ms, md = src.mean(0), dst.mean(0)
    u, _, vt = np.linalg.svd((src - ms).T @ (dst - md))
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, d]) @ vt
    return rot, md - ms @ rot


def _perturbed_pair(section, seed: int):
    """A section and a resampled, rigidly moved copy of it: the true correspondence is known."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    counts = section.X.toarray() if sp.issparse(section.X) else np.asarray(section.X)
    keep = np.sort(rng.choice(section.n_obs, int(0.85 * section.n_obs), replace=False))
    thinned = rng.binomial(counts[keep].astype(np.int64), 0.8).astype(np.float32)
    theta = rng.uniform(-np.pi, np.pi)
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    xy = np.asarray(section.obsm["spatial"], dtype=np.float64)
    moved = (xy[keep] - xy.mean(0)) @ rot + xy.mean(0) + rng.uniform(-10, 10, size=2)
    return counts, xy, thinned, moved, keep, np.degrees(theta)


def _run_paste(sections_xy, sections_counts):
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        arrays = {"n": len(sections_xy)}
        for i, (xy, c) in enumerate(zip(sections_xy, sections_counts)):
            arrays[f"coords_{i}"], arrays[f"counts_{i}"] = xy, c
        np.savez(inp, **arrays)
        proc = subprocess.run([PEERS_PYTHON, str(ROOT / "benchmarks" / "peers" / "paste_align.py"), str(inp), str(out)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "PASTE failed")
        res = np.load(out)
        return [res[f"aligned_{i}"] for i in range(len(sections_xy))], float(res["seconds"])


def alignment_benchmark(cfg) -> pd.DataFrame:
    """PASTE vs pp.align_sections on the Stahl breast-cancer layers (PASTE's own example data).

    1. Recovery of a known motion: each layer against a copy of itself (15 % of spots dropped,
       counts binomially thinned to 80 %, rotated by a random angle in [-180, 180] degrees and
       shifted); error = rotation error and mean spot displacement (in spot pitches) after aligning.
    2. Downstream: the four real layers aligned by each method (or not aligned), then held-out
       layer 2 and 3 (each in turn) predicted from the other three by linear interpolation and kNN.
    """
    import scipy.sparse as sp

    if not Path(PEERS_PYTHON).exists():
        return pd.DataFrame([{"experiment": "all", "method": "paste", "note":
                              f"{PEERS_PYTHON} missing: run bash benchmarks/peers/setup_peers.sh"}])
    sections = ntf.datasets.breast_cancer_stahl(source="shipped")
    rows = []
    for i, sec in enumerate(sections):
        counts, xy, thinned, moved, keep, angle = _perturbed_pair(sec, seed=100 + i)
        a = sec.copy()
        b = sec[keep].copy()
        b.X = sp.csr_matrix(thinned)
        b.obsm["spatial"] = moved
        b.obs["section"] = "moved"
        b.obs["z"] = 2.0
        results = {}
        with Timer() as t:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = ntf.pp.align_sections([a, b], reference=0, copy=True)
        results["ntf.pp.align_sections"] = (np.asarray(out[0].obsm["spatial"]), np.asarray(out[1].obsm["spatial"]), t.wall)
        try:
            (pa, pb), secs = _run_paste([xy, moved], [counts, thinned])
            results["paste"] = (pa, pb, secs)
        except Exception as exc:  # report, do not stop the benchmark
            rows.append({"experiment": "known_motion", "section": sec.obs["section"].iloc[0], "method": "paste",
                         "note": f"failed: {exc}"})
        for method, (pa, pb, secs) in results.items():
            # both outputs are in one frame; compare b's aligned spots with the same spots of a
            target = pa[keep]
            rot, _ = _rigid_fit(pb, target)
            rot_err = abs(np.degrees(np.arctan2(rot[0, 1], rot[0, 0])))
            disp = float(np.linalg.norm(pb - target, axis=1).mean())
            rows.append({"experiment": "known_motion", "section": sec.obs["section"].iloc[0], "method": method,
                         "true_rotation_deg": angle, "rotation_error_deg": rot_err,
                         "mean_displacement_spots": disp, "seconds": secs})
            log(f"  align {method:<22} layer {i + 1}: rotation error {rot_err:6.2f} deg, displacement {disp:6.2f} spots, {secs:.1f} s")

    # downstream: align the real layers, predict held-out layers
    variants = {}
    with Timer() as t, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        variants["ntf.pp.align_sections"] = ([np.asarray(s.obsm["spatial"]) for s in ntf.pp.align_sections(sections, copy=True)], t)
    t_ntf = t.wall
    xy_raw = [np.asarray(s.obsm["spatial"], dtype=np.float64) for s in sections]
    counts = [s.X.toarray() for s in sections]
    try:
        paste_xy, paste_s = _run_paste(xy_raw, counts)
        variants["paste"] = (paste_xy, None)
    except Exception as exc:
        rows.append({"experiment": "downstream", "method": "paste", "note": f"failed: {exc}"})
        paste_s = float("nan")
    variants["unaligned"] = (xy_raw, None)
    for name, (xys, _) in variants.items():
        secs = [s.copy() for s in sections]
        for s, xy in zip(secs, xys):
            s.obsm["spatial"] = np.asarray(xy, dtype=np.float64)
        adata = ntf.pp.stack_sections(secs, z_key="z")
        ntf.pp.log_normalize(adata)
        for held in ("layer2", "layer3"):
            train, test = ntf.pp.split_sections(adata, holdout=[held])
            models = {"linear": ntf.tl.LinearInterpolationBaseline().fit(train, layer="lognorm"),
                      "knn": ntf.tl.KNNBaseline().fit(train, layer="lognorm")}
            for m, model in models.items():
                r = ib.heldout_pearson(model, test, layer="lognorm")
                rows.append({"experiment": "downstream", "section": held, "method": name, "predictor": m,
                             "heldout_pearson": r,
                             "seconds": {"ntf.pp.align_sections": t_ntf, "paste": paste_s}.get(name, 0.0)})
                log(f"  downstream {name:<22} held-out {held} {m:<7} r={r:.3f}")
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------
COLORS = {"ntf": "#d62728", "nearest": "#7f7f7f", "linear": "#1f77b4", "knn": "#17becf", "gp": "#9467bd",
          "fourier_mlp": "#ff7f0e", "siren": "#2ca02c"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panel_row(n: int):
    """A figure with one 4.2 x 3.6 inch panel per dataset, side by side: ``(fig, axes)``."""
    return _plt().subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)


def plot_accuracy(out: Path, superres: pd.DataFrame, per_gene: pd.DataFrame) -> None:
    datasets = list(dict.fromkeys(superres["dataset"]))
    fig, axes = _panel_row(len(datasets))
    for ax, ds in zip(axes[0], datasets):
        d = superres[superres.dataset == ds]
        for m in METHODS:
            dm = d[d.method == m].sort_values("kept_fraction")
            if len(dm):
                ax.plot(dm["kept_fraction"], dm["pearson"], "o-", color=COLORS[m], label=m, lw=2.2 if m == "ntf" else 1.2)
        ax.set_title(ds)
        ax.set_xlabel("kept fraction of sections")
        ax.set_xticks(sorted(d["kept_fraction"].unique()))
    axes[0][0].set_ylabel("held-out median per-gene Pearson")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    _save(fig, out / "accuracy_vs_fraction.png")

    fr = 0.25 if (per_gene["kept_fraction"] == 0.25).any() else per_gene["kept_fraction"].min()
    fig, axes = _panel_row(len(datasets))
    for ax, ds in zip(axes[0], datasets):
        d = per_gene[(per_gene.dataset == ds) & (per_gene.kept_fraction == fr)]
        if not len(d):  # this fraction was a copy of another split
            d = per_gene[per_gene.dataset == ds]
            d = d[d.kept_fraction == d.kept_fraction.min()]
        data = [d[d.method == m]["pearson"].dropna().to_numpy() for m in METHODS]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(METHODS) + 1), METHODS, rotation=45, fontsize=7)
        ax.set_title(f"{ds}, kept {d.kept_fraction.iloc[0]:g}" if len(d) else ds)
    axes[0][0].set_ylabel("per-gene held-out Pearson")
    _save(fig, out / "pearson_distribution.png")


def plot_time_to_accuracy(out: Path, curves: pd.DataFrame, tta: pd.DataFrame) -> None:
    dss = list(dict.fromkeys(curves["dataset"]))
    fig, axes = _panel_row(len(dss))
    for ax, ds in zip(axes[0], dss):
        c = curves[curves.dataset == ds]
        for m in ("ntf", "fourier_mlp", "siren"):
            cm = c[c.method == m].sort_values("seconds")
            ax.plot(cm["seconds"], cm["pearson"], "o-" if m == "ntf" else "-", color=COLORS[m], label=m, ms=3)
        target = tta[(tta.dataset == ds) & (tta.target_kind == "fourier_mlp_best")]["target_pearson"]
        if len(target):
            ax.axhline(float(target.iloc[0]), ls="--", color="k", lw=0.8, label="Fourier-MLP best")
        ax.set_xscale("log")
        ax.set_xlabel("training wall seconds")
        ax.set_title(f"{ds}, kept {TTA_FRACTION:g}")
        ax.set_ylim(max(float(np.nanpercentile(c["pearson"], 10)) - 0.05, -0.1), None)
    axes[0][0].set_ylabel("held-out median per-gene Pearson")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    _save(fig, out / "time_to_accuracy.png")


def plot_throughput(out: Path, tput: pd.DataFrame) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for m in ("ntf", "fourier_mlp"):
        t = tput[(tput.method == m) & tput["cells_per_s"].notna()]
        axes[0].plot(t["n_cells"], t["cells_per_s"], "o-", color=COLORS[m], label=m)
        axes[1].plot(t["n_cells"], t["epoch_seconds"], "o-", color=COLORS[m], label=f"{m}: one epoch")
        if m == "ntf":
            axes[1].plot(t["n_cells"], t["setup_seconds"], "s--", color=COLORS[m], label="ntf: setup")
    for m in ("knn", "linear"):
        t = tput[(tput.method == m) & tput["total_seconds"].notna()]
        if len(t):
            axes[1].plot(t["n_cells"], t["total_seconds"], "^:", color=COLORS[m], label=f"{m}: fit + predict 1e4")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cells in the dataset")
    axes[0].set_ylabel("training throughput (cells/s)")
    axes[1].set_ylabel("seconds")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    _save(fig, out / "throughput.png")


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------
def machine_info(threads: int) -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    commit = os.environ.get("NTF_BENCH_COMMIT") or (git.stdout.strip() if git.returncode == 0 else "unknown")
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "ntf_utils"], cwd=ROOT, capture_output=True, text=True)
    if git.returncode == 0 and dirty.stdout.strip():
        commit += " + uncommitted changes in ntf_utils/"
    return {"cpu": model, "logical_cores": os.cpu_count(), "torch_threads": threads,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "gpu": torch.cuda.is_available(),
            "python": platform.python_version(), "torch": torch.__version__, "ntf_utils": ntf.__version__,
            "git_commit": commit, "ntf_utils_path": str(Path(ntf.__file__).parent), "load_average_start": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


TABLES = ("superres", "superres_per_gene", "denoise", "time_curves", "tuning", "time_to_accuracy")


def _save_tables(out: Path, tables: dict) -> dict:
    """Write the accuracy-side tables (after every split, so an interrupted run keeps its results)."""
    frames = {}
    for name in TABLES:
        parts = [p for p in tables[name] if len(p)]
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if name == "superres" and len(df):
            cols = ["dataset", "kept_fraction", "method", "pearson", "spearman", "rmse", "ssim", "fit_seconds"]
            df = df[cols + [c for c in df.columns if c not in cols]]
        if name == "time_to_accuracy" and len(df):
            cols = ["dataset", "method", "target_pearson", "seconds_to_target", "speedup_vs_ntf"]
            df = df[cols + [c for c in df.columns if c not in cols]]
        df.to_csv(out / f"{name}.csv", index=False, float_format="%.4g" if name == "superres_per_gene" else "%.5g")
        frames[name] = df
    return frames


def _load_tables(out: Path) -> dict:
    tables = {name: [] for name in TABLES}
    for name in TABLES:
        path = out / f"{name}.csv"
        if path.exists() and path.stat().st_size > 1:
            tables[name].append(pd.read_csv(path))
    return tables


def run_superres(cfg, datasets, fractions, out: Path, resume: bool = False) -> dict:
    """Accuracy table for every dataset and kept fraction, plus time-to-accuracy at TTA_FRACTION.

    With ``resume``, (dataset, kept fraction) pairs already in ``out/superres.csv`` are kept and
    skipped (the learning rates tuned at TTA_FRACTION are read back from ``out/tuning.csv``).
    """
    import ast

    tables = _load_tables(out) if resume else {name: [] for name in TABLES}
    have = set()
    if tables["superres"]:
        prev = pd.concat(tables["superres"])
        have = {(d, round(float(f), 4)) for d, f in zip(prev["dataset"], prev["kept_fraction"])}
    for ds in datasets:
        todo = [f for f in fractions if (ds, round(f, 4)) not in have]
        if not todo:
            log(f"dataset {ds}: all fractions already in {out} (resume)")
            continue
        log(f"dataset {ds}")
        adata, truth_layer = load_dataset(ds, cfg)
        hyper_cache, done = {}, {}
        if tables["tuning"]:
            tun = pd.concat(tables["tuning"])
            for kind in ("fourier", "siren"):
                t = tun[(tun.dataset == ds) & (tun.kind == kind) & np.isclose(tun.kept_fraction, TTA_FRACTION)]
                if len(t) and "lr" in ast.literal_eval(t["chosen"].iloc[0]):
                    hyper_cache[(ds, kind)] = ast.literal_eval(t["chosen"].iloc[0])["lr"]
        for fraction in fractions:
            _, test = ntf.pp.split_sections(adata, keep_fraction=fraction)
            if (ds, round(fraction, 4)) in have:
                done.setdefault(test_sections(test), fraction)
        # the TTA fraction first: it tunes the learning rates that the other fractions reuse
        for fraction in sorted(todo, key=lambda f: (f != TTA_FRACTION, -f)):
            train, test = ntf.pp.split_sections(adata, keep_fraction=fraction)
            key = test_sections(test)
            if key in done:  # too few sections: this fraction gives the same split as another one
                prev = pd.concat(tables["superres"])
                same = prev[(prev.dataset == ds) & np.isclose(prev.kept_fraction, done[key])]
                tables["superres"].append(same.assign(kept_fraction=fraction, note=f"same split as kept_fraction={done[key]:.3g}"))
                log(f"  {ds} f={fraction:.3g}: same split as f={done[key]:.3g}, rows copied")
                _save_tables(out, tables)
                continue
            done[key] = fraction
            tta_here = fraction == TTA_FRACTION
            rows, per_gene, fitted, c, tun = run_split(ds, fraction, train, test, truth_layer, cfg, hyper_cache, tta_here)
            tables["superres"].append(pd.DataFrame(rows))
            tables["superres_per_gene"].append(per_gene)
            tables["tuning"] += tun
            if truth_layer == "truth":
                tables["denoise"].append(pd.DataFrame(denoise_rows(ds, fraction, train, fitted)))
            if tta_here:
                target = max(x["pearson"] for x in c if x["method"] == "fourier_mlp")
                default_steps = int(fitted["ntf"].config.training.steps)
                r_ntf = next(r for r in rows if r["method"] == "ntf")
                point = {"seconds": r_ntf["fit_seconds"], "cpu_seconds": r_ntf["fit_cpu_seconds"],
                         "pearson": _score(fitted["ntf"], test, truth_layer)}
                sweep = ntf_sweep(ds, train, test, truth_layer, cfg, default_steps, default_point=point)
                tables["time_curves"].append(pd.DataFrame(c + sweep))
                tables["time_to_accuracy"].append(pd.DataFrame(time_to_accuracy(ds, pd.DataFrame(c + sweep), pd.DataFrame(rows))))
                log(f"  {ds}: Fourier-MLP best held-out r={target:.3f}")
            _save_tables(out, tables)
    return _save_tables(out, tables)


def headline(superres, tta, machine) -> list[str]:
    lines = [f"machine: {machine['cpu']}, {machine['logical_cores']} cores, {machine['torch_threads']} torch threads, "
             f"no GPU, load average {machine['load_average_start']:.1f} at start"]
    for ds, d in tta[tta.target_kind == "fourier_mlp_best"].groupby("dataset", sort=False):
        ff = d[d.method == "fourier_mlp"].iloc[0]
        nt = d[d.method == "ntf"].iloc[0]
        if np.isfinite(nt["seconds_to_target"]):
            ratio = ff["seconds_to_target"] / nt["seconds_to_target"]
            cpu_ratio = ff["cpu_seconds_to_target"] / nt["cpu_seconds_to_target"]
            lines.append(f"{ds}: NTF reaches the Fourier-MLP's best held-out Pearson ({ff['target_pearson']:.3f}) "
                         + (f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x SLOWER")
                         + f" ({nt['seconds_to_target']:.1f} s vs {ff['seconds_to_target']:.1f} s wall; "
                         f"CPU-seconds ratio {cpu_ratio:.2f})")
        else:
            d2 = tta[(tta.dataset == ds) & (tta.target_kind == "ntf_best")]
            ff2 = d2[d2.method == "fourier_mlp"].iloc[0]
            nt2 = d2[d2.method == "ntf"].iloc[0]
            ratio = ff2["seconds_to_target"] / nt2["seconds_to_target"]
            extra = (f"; NTF reaches its own best ({nt2['target_pearson']:.3f}) in {nt2['seconds_to_target']:.1f} s, "
                     f"the Fourier MLP reaches that level in {ff2['seconds_to_target']:.1f} s (NTF "
                     + (f"{ratio:.1f}x faster)" if ratio >= 1 else f"{1 / ratio:.1f}x slower)"))
            lines.append(f"{ds}: NTF does NOT reach the Fourier-MLP's best held-out Pearson ({ff['target_pearson']:.3f}; "
                         f"NTF's best {nt['best_pearson']:.3f}){extra}")
    for ds, d in tta[tta.target_kind == "best_baseline"].groupby("dataset", sort=False):
        per = d.set_index("method")
        lines.append(f"{ds}: time to the best classical baseline's held-out Pearson ({per['target_pearson'].iloc[0]:.3f}): "
                     + ", ".join(f"{m} {per.loc[m, 'seconds_to_target']:.1f} s" for m in ("ntf", "fourier_mlp", "siren")
                                 if m in per.index))
    for (ds, fr), d in superres.groupby(["dataset", "kept_fraction"], sort=False):
        n = d[d.method == "ntf"].iloc[0]
        base = d[d.method.isin(["nearest", "linear", "knn", "gp"])].sort_values("pearson", ascending=False).iloc[0]
        other = d[d.method != "ntf"].sort_values("pearson", ascending=False).iloc[0]
        lines.append(f"{ds} kept {fr:.3g}: NTF held-out Pearson {n['pearson']:.3f} "
                     f"{'>=' if n['pearson'] >= base['pearson'] else '<'} best baseline {base['method']} {base['pearson']:.3f}; "
                     f"best of all others {other['method']} {other['pearson']:.3f}")
    return lines


def _md(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    def cell(v):
        if isinstance(v, float):
            return "–" if not np.isfinite(v) else floatfmt.format(v)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def markdown_tables(out: Path) -> str:
    """Markdown versions of the result tables (written to tables.md, copied into the README)."""
    parts = []
    sr = pd.read_csv(out / "superres.csv") if (out / "superres.csv").exists() else pd.DataFrame()
    if len(sr):
        sr["kept"] = sr["kept_fraction"].map(lambda f: f"{f:.3g}")
        for metric in ("pearson", "spearman", "rmse", "ssim", "fit_seconds"):
            piv = sr.pivot_table(index=["dataset", "kept"], columns="method", values=metric, sort=False)
            piv = piv[[m for m in METHODS if m in piv.columns]].reset_index()
            fmt = "{:.1f}" if metric == "fit_seconds" else "{:.3f}"
            parts.append(f"#### {metric}\n\n" + _md(piv, fmt))
    dn = out / "denoise.csv"
    if dn.exists() and dn.stat().st_size > 1:
        d = pd.read_csv(dn)
        d["kept"] = d["kept_fraction"].map(lambda f: f"{f:.3g}")
        piv = d.pivot_table(index="method", columns="kept", values="rmse_vs_truth", sort=False).reset_index()
        parts.append("#### denoising: RMSE against the noise-free truth at the training cells (synthetic embryo)\n\n"
                     + _md(piv))
    tta = out / "time_to_accuracy.csv"
    if tta.exists() and tta.stat().st_size > 1:
        t = pd.read_csv(tta)
        t = t[["dataset", "target_kind", "method", "target_pearson", "best_pearson", "seconds_to_target",
               "speedup_vs_ntf", "cpu_seconds_to_target", "cpu_speedup_vs_ntf"]]
        parts.append("#### time to accuracy (kept fraction 0.5)\n\n" + _md(t, "{:.3g}"))
    tp = out / "throughput.csv"
    if tp.exists() and tp.stat().st_size > 1:
        t = pd.read_csv(tp)
        keep = [c for c in ("method", "n_cells", "cells_per_s", "setup_seconds", "epoch_seconds", "total_seconds",
                            "peak_mem_mb", "skipped") if c in t.columns]
        parts.append("#### throughput against dataset size\n\n" + _md(t[keep], "{:.3g}"))
    pm = out / "peak_memory.csv"
    if pm.exists() and pm.stat().st_size > 1:
        parts.append("#### peak memory of fit + predict (fresh process per method; synthetic embryo, kept 0.5)\n\n"
                     + _md(pd.read_csv(pm), "{:.0f}"))
    al = out / "alignment.csv"
    if al.exists() and al.stat().st_size > 1:
        a = pd.read_csv(al)
        km = a[a.experiment == "known_motion"]
        if len(km) and "rotation_error_deg" in km:
            parts.append("#### alignment: recovering a known rigid motion (Stahl layers)\n\n" + _md(
                km[["section", "method", "true_rotation_deg", "rotation_error_deg", "mean_displacement_spots",
                    "seconds"]], "{:.2f}"))
        ds = a[a.experiment == "downstream"]
        if len(ds) and "heldout_pearson" in ds:
            piv = ds.pivot_table(index=["section", "predictor"], columns="method", values="heldout_pearson").reset_index()
            parts.append("#### alignment downstream: held-out layer Pearson after each alignment (Stahl)\n\n" + _md(piv))
    pe = out / "peers.csv"
    if pe.exists():
        parts.append("#### peer tools\n\n" + _md(pd.read_csv(pe)))
    text = "\n\n".join(parts) + "\n"
    (out / "tables.md").write_text(text)
    return text


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, synthetic data only (CI smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results[_quick])")
    parser.add_argument("--threads", type=int, default=2, help="torch and BLAS threads (default 2)")
    parser.add_argument("--datasets", nargs="*", default=None, help="subset of the datasets")
    parser.add_argument("--skip", nargs="*", default=[], choices=["superres", "throughput", "memory", "peers"])
    parser.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true",
                        help="keep the (dataset, fraction) results already in --out and run only the missing ones")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    if args.child_memory:
        with threadpool_limits(args.threads):
            _child_memory(args.child_memory, args.quick, args.threads)
        return {}

    cfg = settings(args.quick)
    out = args.out or ROOT / "benchmarks" / ("results_quick" if args.quick else "results")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    limits = threadpool_limits(args.threads)
    machine = machine_info(args.threads)
    log(f"machine: {machine['cpu']}, {machine['logical_cores']} cores, load {machine['load_average_start']:.1f}")
    results = {}
    tic = time.perf_counter()
    if "superres" not in args.skip:
        frames = run_superres(cfg, args.datasets or cfg["datasets"], cfg["fractions"], out, resume=args.resume)
        results.update(superres=frames["superres"], per_gene=frames["superres_per_gene"], denoise=frames["denoise"],
                       curves=frames["time_curves"], tta=frames["time_to_accuracy"], tuning=frames["tuning"])
    tput = pd.DataFrame()
    if "throughput" not in args.skip:
        log("throughput against dataset size")
        tput = throughput(cfg)
        tput.to_csv(out / "throughput.csv", index=False, float_format="%.5g")
        results["throughput"] = tput
    if "memory" not in args.skip:
        log("peak memory per method (fresh process each)")
        mem = peak_memory(cfg, args.threads)
        mem.to_csv(out / "peak_memory.csv", index=False, float_format="%.5g")
        results["memory"] = mem
    pd.DataFrame(PEER_STATUS).to_csv(out / "peers.csv", index=False)
    if cfg["peers"] and "peers" not in args.skip:
        log("peers: PASTE alignment vs pp.align_sections")
        align = alignment_benchmark(cfg)
        align.to_csv(out / "alignment.csv", index=False, float_format="%.5g")
        results["alignment"] = align
    machine["load_average_end"] = os.getloadavg()[0]
    machine["total_minutes"] = round((time.perf_counter() - tic) / 60, 1)
    machine["settings"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    machine["parts"] = [p for p in ("superres", "throughput", "memory", "peers") if p not in args.skip]
    previous = []
    if args.resume or set(args.skip):  # a partial run adds to the record of the earlier ones
        try:
            previous = json.loads((out / "machine.json").read_text()).get("runs", [])
        except (OSError, ValueError):
            previous = []
    (out / "machine.json").write_text(json.dumps({"runs": previous + [machine]}, indent=2, default=str))
    if len(tput) and "cells_per_s" in tput:
        plot_throughput(out, tput)
    if "superres" in results:
        plot_accuracy(out, results["superres"], results["per_gene"])
        plot_time_to_accuracy(out, results["curves"], results["tta"])
        lines = headline(results["superres"], results["tta"], machine)
        (out / "headline.txt").write_text("\n".join(lines) + "\n")
        print("\n" + "\n".join(lines))
    markdown_tables(out)
    log(f"done in {machine['total_minutes']} min; results in {out}")
    limits.restore_original_limits()
    results["machine"] = machine
    return results


if __name__ == "__main__":
    main()
