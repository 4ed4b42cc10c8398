"""Coverage of calibrated intervals on held-out whole sections never used for calibration.

    .venv/bin/python benchmarks/coverage.py            # full run, writes benchmarks/results/coverage*.csv
    .venv/bin/python benchmarks/coverage.py --quick    # small synthetic embryo, writes benchmarks/results_quick/

For every dataset and kept fraction of ``benchmarks/run.py`` (same data, same ``pp.split_sections``
splits), the field is fitted on the training sections with ``tl.fit`` defaults and
``tl.prediction_intervals`` calibrates its intervals on the TRAINING sections only; the held-out
sections score them (``conformal``: the intervals for a new measurement against the observed values, the
intervals for the noise-free level, ``target="expression"``, against the synthetic embryo's truth;
``conformal_observed``: the measurement intervals against the truth, for comparison). Beside it: the deep ensemble of ``tl.uncertainty`` (5 members, the resolution the
field chose) as mean +- 2 sd (its current reading) and as mean +- z sd at each level (a Gaussian
reading), and two oracles that know the held-out errors (the smallest constant half-width per gene,
and per gene and distance tertile, reaching each level).

Outputs: ``coverage.csv`` (``dataset, kept_fraction, method, level, distance_tertile`` ("all" for the
overall row), ``coverage, mean_width``, then ``target`` ("observed"; "truth" = the synthetic embryo's
noise-free values), ``n``, ``fraction_infinite``, distance range in section spacings, ``note``),
``coverage_extrapolation.csv`` (the last quarter of the training sections removed; coverage per
section spacing beyond the new end), ``coverage_cost.csv`` (seconds of each step) and ``coverage.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ntf_utils as ntf  # noqa: E402
from benchmarks.run import load_dataset, log, settings, test_sections  # noqa: E402

LEVELS = (0.8, 0.9, 0.95)
TWO_SD_LEVEL = float(norm.cdf(2) - norm.cdf(-2))  # 0.9545: the nominal level of mean +- 2 sd if Gaussian
N_MODELS = 5
INTERVALS_FOR = {"observed": "observed", "truth": "expression"}  # the target each interval kind is for


def _tertiles(distance: np.ndarray) -> np.ndarray:
    """Tertile (1, 2, 3) of each point's distance to the nearest training section (ties by position)."""
    ranks = pd.Series(distance).rank(method="first").to_numpy()
    return np.minimum(3, 1 + ((ranks - 1) * 3 // len(ranks)).astype(int))


def _rows(base: dict, covered: np.ndarray, width: np.ndarray, tertile: np.ndarray, distance: np.ndarray) -> list:
    """Overall and per-tertile coverage and mean (finite) width of one interval."""
    out = []
    for label in ("all", 1, 2, 3):
        rows = np.ones(len(covered), bool) if label == "all" else tertile == label
        if not rows.any():
            continue
        w = width[rows]
        finite = np.isfinite(w)
        out.append({**base, "distance_tertile": str(label), "coverage": float(covered[rows].mean()),
                    "mean_width": float(w[finite].mean()) if finite.any() else float("inf"),
                    "n": int(rows.sum()) * covered.shape[1], "fraction_infinite": float(1 - finite.mean()),
                    "distance_min": float(distance[rows].min()), "distance_max": float(distance[rows].max())})
    return out


def _oracle(err: np.ndarray, level: float, groups: np.ndarray) -> np.ndarray:
    """Per-point half-width: the ``level`` quantile of |error| per gene within each group (knows the errors)."""
    half = np.empty_like(err)
    for g in np.unique(groups):
        rows = groups == g
        half[rows] = np.quantile(err[rows], level, axis=0, method="higher")[None, :]
    return half


def score_split(dataset, fraction, res, ens, targets) -> list[dict]:
    """Coverage rows of every method, level and target on the held-out points."""
    tertile = _tertiles(res.distance)
    rows = []
    for target, values in targets.items():
        base = {"dataset": dataset, "kept_fraction": fraction, "target": target}
        for level in LEVELS:
            # the truth is scored by the intervals for the noise-free level, and by the observed ones beside
            kinds = {"conformal": INTERVALS_FOR[target]}
            if target == "truth":
                kinds["conformal_observed"] = "observed"
            for method, kind in kinds.items():
                lower, upper = res.interval(1 - level, kind)
                rows += _rows({**base, "method": method, "level": level},
                              (values >= lower) & (values <= upper), upper - lower, tertile, res.distance)
            z = norm.ppf(0.5 + level / 2)
            rows += _rows({**base, "method": "ensemble_normal", "level": level},
                          np.abs(values - ens.mean) <= z * ens.std, 2 * z * ens.std, tertile, res.distance)
            err = np.abs(values - res.prediction)
            for name, groups in (("oracle_gene", np.zeros(len(err), int)), ("oracle_gene_tertile", tertile)):
                half = _oracle(err, level, groups)
                rows += _rows({**base, "method": name, "level": level}, err <= half, 2 * half, tertile, res.distance)
        rows += _rows({**base, "method": "ensemble_2sd", "level": round(TWO_SD_LEVEL, 4)},
                      np.abs(values - ens.mean) <= 2 * ens.std, 4 * ens.std, tertile, res.distance)
    return rows


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix, dtype=np.float32)


def _targets(test, truth_layer: str) -> dict:
    out = {"observed": _dense(test.layers["lognorm"])}
    if truth_layer != "lognorm":
        out["truth"] = _dense(test.layers[truth_layer])
    return out


def fit_and_calibrate(train, query, n_models: int, cfg: dict, seed: int = 0):
    """(field, intervals, ensemble, seconds): the default fit, its calibration and the ensemble."""
    steps = cfg["ntf_steps"]
    t0 = time.perf_counter()
    field = ntf.tl.fit(train, layer="lognorm", steps=steps, seed=seed, progress=False)
    t1 = time.perf_counter()
    res = ntf.tl.prediction_intervals(train, query, field=field, layer="lognorm", seed=seed, steps=steps)
    t2 = time.perf_counter()
    fixed = field.config.replace(selection={"enabled": False})  # the members use the resolution the field chose
    ens = ntf.tl.uncertainty(train, query, n_models=n_models, layer="lognorm", config=fixed, seed=seed, steps=steps)
    t3 = time.perf_counter()
    return field, res, ens, {"fit_seconds": t1 - t0, "calibration_seconds": t2 - t1, "ensemble_seconds": t3 - t2,
                             "calibration_fits": len(res.calibration)}


def extrapolation(dataset, fraction, train, test, truth_layer, n_models, cfg) -> list[dict]:
    """Remove the last quarter (>= 1) of the training sections; score every held-out cell beyond the new
    end per section spacing of distance (bins (0, 1], (1, 2], ...)."""
    z = pd.Series(train.obsm["spatial_3d"][:, 2]).groupby(train.obs["section"].astype(str).to_numpy()).median()
    z = z.sort_values()
    m = max(1, len(z) // 4)
    if len(z) - m < 2:
        return []
    cut = float(z.iloc[-m - 1])
    kept = train[train.obs["section"].astype(str).isin(list(z.index[:-m]))].copy()
    beyond_cells = [a[a.obsm["spatial_3d"][:, 2] > cut] for a in (train, test)]
    import anndata as ad

    query = ad.concat(beyond_cells, join="inner")
    _, res, ens, _ = fit_and_calibrate(kept, query, n_models, cfg)
    spacings = np.ceil(res.beyond - 1e-9).astype(int)
    rows = []
    for target, values in _targets(query, truth_layer).items():
        for level in LEVELS:
            lower, upper = res.interval(1 - level, INTERVALS_FOR[target])
            z_ = norm.ppf(0.5 + level / 2)
            for method, covered, width in (
                ("conformal", (values >= lower) & (values <= upper), upper - lower),
                ("ensemble_normal", np.abs(values - ens.mean) <= z_ * ens.std, 2 * z_ * ens.std),
            ):
                for k in np.unique(spacings):
                    rows_k = spacings == k
                    w = width[rows_k]
                    finite = np.isfinite(w)
                    cov_finite = covered[rows_k][finite]
                    rows.append({"dataset": dataset, "kept_fraction": fraction, "method": method, "level": level,
                                 "target": target, "spacings_beyond": int(k), "n": int(rows_k.sum()),
                                 "coverage": float(covered[rows_k].mean()),
                                 "coverage_where_finite": float(cov_finite.mean()) if cov_finite.size else float("nan"),
                                 "fraction_infinite": float(1 - finite.mean()),
                                 "mean_width": float(w[finite].mean()) if finite.any() else float("inf"),
                                 "n_sections_removed": m})
    return rows


def plot(out: Path, df: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = df[(df.distance_tertile == "all") & df.method.isin(["conformal", "ensemble_normal"])]
    panels = list(dict.fromkeys(zip(sel.dataset, sel.target)))  # the truth: a panel of its own
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), squeeze=False)
    for ax, (ds, target) in zip(axes[0], panels):
        d = sel[(sel.dataset == ds) & (sel.target == target)]
        for (method, frac), g in d.groupby(["method", "kept_fraction"]):
            ax.plot(g["level"], g["coverage"], "o-" if method == "conformal" else "x--", label=f"{method} {frac:g}")
        ax.plot([0.78, 0.97], [0.78, 0.97], "k:", lw=0.8)
        ax.fill_between([0.78, 0.97], [0.75, 0.94], [0.81, 1.0], color="0.9")
        ax.set_title(ds if target == "observed" else f"{ds}: noise-free truth\n(target='expression')", fontsize=9)
        ax.set_xlabel("nominal level")
    axes[0][0].set_ylabel("coverage on held-out sections")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=120)
    plt.close(fig)


def _previous(out: Path, datasets) -> tuple[list, list, list]:
    """Rows of every dataset already finished in ``out`` (``--resume``): those with an extrapolation row."""
    tables = []
    for name in ("coverage", "coverage_extrapolation", "coverage_cost"):
        path = out / f"{name}.csv"
        tables.append(pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.exists() and path.stat().st_size > 1
                      else pd.DataFrame({"dataset": []}))
    finished = set(tables[1]["dataset"])
    return [t[t["dataset"].isin(finished)].to_dict("records") for t in tables]


def run(cfg: dict, datasets, out: Path, n_models: int, resume: bool = False) -> pd.DataFrame:
    rows, extra, cost = _previous(out, datasets) if resume else ([], [], [])
    finished = {r["dataset"] for r in extra}
    for dataset in datasets:
        if dataset in finished:
            log(f"{dataset}: already in {out} (resume)")
            continue
        adata, truth_layer = load_dataset(dataset, cfg)
        done = {}
        for fraction in sorted(cfg["fractions"], reverse=True):
            train, test = ntf.pp.split_sections(adata, keep_fraction=fraction)
            key = test_sections(test)
            if key in done:  # the same split as another fraction: its rows again
                same = [dict(r, kept_fraction=fraction, note=f"same split as kept_fraction={done[key]:g}")
                        for r in rows if r["dataset"] == dataset and r["kept_fraction"] == done[key]]
                rows += same
                continue
            done[key] = fraction
            field, res, ens, seconds = fit_and_calibrate(train, test, n_models, cfg)
            cost.append({"dataset": dataset, "kept_fraction": fraction, "n_train_sections": train.obs["section"].nunique(),
                         **seconds, "calibration_vs_fit": seconds["calibration_seconds"] / seconds["fit_seconds"],
                         "ensemble_vs_fit": seconds["ensemble_seconds"] / seconds["fit_seconds"]})
            rows += score_split(dataset, fraction, res, ens, _targets(test, truth_layer))
            overall = [r for r in rows if r["distance_tertile"] == "all" and r["method"] == "conformal"
                       and r["dataset"] == dataset and r["kept_fraction"] == fraction
                       and r["target"] == "observed"]
            log(f"{dataset} f={fraction:g}: " + ", ".join(f"{r['level']:g}->{r['coverage']:.3f}" for r in overall)
                + f" (fit {seconds['fit_seconds']:.0f} s, calibration {seconds['calibration_seconds']:.0f} s)")
            _write(out, rows, extra, cost)
        if not cfg["quick"] or dataset == "synthetic_embryo":
            fraction = max(cfg["fractions"])
            train, test = ntf.pp.split_sections(adata, keep_fraction=fraction)
            extra += extrapolation(dataset, fraction, train, test, truth_layer, n_models, cfg)
            log(f"{dataset}: extrapolation done")
            _write(out, rows, extra, cost)
    df = _write(out, rows, extra, cost)
    plot(out, df)
    return df


def _write(out: Path, rows, extra, cost) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if "note" not in df:
        df["note"] = ""
    df["note"] = df["note"].fillna("")
    first = ["dataset", "kept_fraction", "method", "level", "distance_tertile", "coverage", "mean_width", "target"]
    df = df[[c for c in first if c in df] + [c for c in df if c not in first]]
    df.to_csv(out / "coverage.csv", index=False, float_format="%.4g")
    pd.DataFrame(extra).to_csv(out / "coverage_extrapolation.csv", index=False, float_format="%.4g")
    pd.DataFrame(cost).to_csv(out / "coverage_cost.csv", index=False, float_format="%.4g")
    return df


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small synthetic embryo only (seconds)")
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="keep the datasets already finished in --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = settings(args.quick)
    if args.quick:
        cfg = {**cfg, "fractions": (0.5,), "ntf_steps": 150}
    datasets = args.datasets or [d for d in cfg["datasets"] if d != "breast_stahl"]
    out = Path(args.out) if args.out else ROOT / "benchmarks" / ("results_quick" if args.quick else "results")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    df = run(cfg, datasets, out, n_models=3 if args.quick else N_MODELS, resume=args.resume)
    log(f"coverage benchmark done in {time.perf_counter() - start:.0f} s -> {out}")
    return df


if __name__ == "__main__":
    main()
