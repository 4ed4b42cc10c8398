"""Make the README's pictures (docs/images/*.png) with the same package calls as the notebooks.

    .venv/bin/python docs/make_figures.py            # full settings, as notebooks/04_super_resolution.ipynb
    .venv/bin/python docs/make_figures.py --quick    # the notebooks' quick mode (NTF_QUICK=1), for a check

Writes
  docs/images/super_resolution.png        held-out accuracy vs fraction of sections kept, field vs baselines
  docs/images/super_resolution_table.png  the same numbers as a table
  docs/images/super_resolution.csv        the numbers themselves (ntf.tl.summarize_evaluation per fraction)
  docs/images/embryo_3d.png               a 3D view: isosurfaces of a striped (pair-rule-like) gene rendered from the field

The experiment is section 1 of notebooks/04_super_resolution.ipynb: the synthetic embryo (41 sections,
500 counts per cell), trained on 10%, 25% and 50% of the sections, scored on the held-out sections
against the noise-free truth. PNG export needs kaleido and Chrome/Chromium (see ntf_utils.pl.save_png).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import torch

import ntf_utils as ntf

IMAGES = Path(__file__).resolve().parent / "images"
FRACTIONS = [0.1, 0.25, 0.5]
METHOD_NAMES = {
    "field": "neural field (ntf_utils)",
    "linear": "linear interpolation",
    "knn": "3D kNN",
    "nearest": "nearest section",
}


def super_resolution(quick: bool, seed: int = 0):
    """Fit a field and the baselines per kept fraction; return the summary table and the fields."""
    n_sections, cells_per_section = (41, 100) if quick else (41, 600)
    steps = 150 if quick else None
    embryo = ntf.datasets.synthetic_embryo(
        n_sections=n_sections, cells_per_section=cells_per_section, library_size=500, seed=seed
    )
    ntf.pp.log_normalize(embryo)
    summaries, fields = [], {}
    for fraction in FRACTIONS:
        train, test = ntf.pp.split_sections(embryo, keep_fraction=fraction)
        field = ntf.tl.fit(train, layer="lognorm", steps=steps, seed=seed, progress=False)
        predictions = {"field": field}
        for method in ("nearest", "linear", "knn"):
            predictions[method] = ntf.tl.baseline_predict(train, test, method, layer="lognorm")
        table = ntf.tl.evaluate_sections(predictions, test, layer="lognorm", truth_layer="truth", ssim=not quick)
        summary = ntf.tl.summarize_evaluation(table)
        summary.insert(0, "kept fraction", fraction)
        summary["training sections"] = train.obs["section"].nunique()
        summary["field steps"] = field.info["steps_run"]
        summaries.append(summary)
        fields[fraction] = field
        print(f"kept {fraction:.0%}: field fitted in {field.info['fit_seconds']:.0f} s", flush=True)
    return pd.concat(summaries, ignore_index=True), fields, embryo


def accuracy_plot(summary: pd.DataFrame, subtitle: str):
    data = summary.assign(method=summary["method"].map(METHOD_NAMES))
    fig = px.line(
        data, x="kept fraction", y="pearson_median", color="method", markers=True,
        category_orders={"method": list(METHOD_NAMES.values())},
        labels={"pearson_median": "held-out median per-gene Pearson", "kept fraction": "sections used for training",
                "method": ""},
        title=f"Super-resolution on the synthetic embryo<br><sup>{subtitle}</sup>",
        template="plotly_white",
    )
    fig.update_xaxes(tickvals=FRACTIONS, tickformat=".0%")
    fig.update_traces(line={"width": 3}, marker={"size": 9})
    return fig


def accuracy_table(summary: pd.DataFrame, subtitle: str):
    rows = summary.assign(method=summary["method"].map(METHOD_NAMES))
    columns = {
        "kept fraction": lambda v: f"{v:.0%}",
        "method": str,
        "pearson_median": lambda v: f"{v:.3f}",
        "spearman_median": lambda v: f"{v:.3f}",
        "rmse_mean": lambda v: f"{v:.3f}",
        "ssim_mean": lambda v: "n/a" if np.isnan(v) else f"{v:.3f}",
        "cosine_mean": lambda v: f"{v:.3f}",
    }
    header = ["sections kept", "method", "Pearson (median)", "Spearman (median)", "RMSE", "SSIM", "cosine"]
    best = rows.groupby("kept fraction")["pearson_median"].transform("max") == rows["pearson_median"]
    fill = [["#eef3fb" if b else "white" for b in best]] * len(columns)
    fig = go.Figure(go.Table(
        header={"values": [f"<b>{h}</b>" for h in header], "fill_color": "#dde6f3", "align": "left"},
        cells={"values": [[fmt(v) for v in rows[c]] for c, fmt in columns.items()], "fill_color": fill,
               "align": "left", "height": 26},
    ))
    fig.update_layout(title=f"Held-out sections vs the noise-free truth (best Pearson shaded)<br><sup>{subtitle}</sup>",
                      margin={"l": 20, "r": 20, "t": 80, "b": 10})
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data and few steps (the notebooks' NTF_QUICK=1)")
    parser.add_argument("--out", type=Path, default=IMAGES, help="output folder (default docs/images)")
    args = parser.parse_args()
    torch.manual_seed(0)
    started = time.perf_counter()

    summary, fields, embryo = super_resolution(args.quick)
    steps = sorted(summary["field steps"].unique())
    subtitle = (f"41 sections, {embryo.n_obs} cells, 40 genes, 500 counts/cell; field steps {'/'.join(map(str, steps))}"
                f"{' (quick mode)' if args.quick else ''}; ntf_utils {ntf.__version__}")
    args.out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(args.out / "super_resolution.csv", index=False, float_format="%.4f")
    ntf.pl.save_png(accuracy_plot(summary, subtitle), args.out / "super_resolution.png", width=900, height=520, scale=2)
    ntf.pl.save_png(accuracy_table(summary, subtitle), args.out / "super_resolution_table.png", width=900,
                    height=170 + 36 * len(summary), scale=2)

    field = fields[0.25]
    gene = embryo.var_names[embryo.var["feature"] == "ap_wave"][0]  # periodic stripes along the body axis
    volume = field.render(48 if args.quick else 96, genes=[gene])
    view = ntf.pl.volume_3d(volume, gene, surface_count=2,
                            title=f"{gene}: the field trained on 25% of the sections, rendered in 3D")
    ntf.pl.save_png(view, args.out / "embryo_3d.png", width=900, height=650, scale=2)

    print(summary[["kept fraction", "method", "pearson_median", "rmse_mean"]].to_string(index=False))
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
