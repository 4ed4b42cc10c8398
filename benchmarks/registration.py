"""Registration inside the fit (``register_sections``) against aligning first: writes
``benchmarks/results/registration.csv``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/registration.py [--quick] [--skip-paste] [--registration-prior W]

Two experiments (issue #17):

``synthetic``
    Ten interior sections of the 24-section synthetic embryo (800 cells each), every section but
    the middle one moved by a random rigid motion (1-10 degrees about its centroid, a 0.5-3 cell
    spacing shift), three motion seeds. Methods: ``none`` (the field fitted to the moved stack),
    ``align_sections`` (``ntf.pp.align_sections`` then a plain fit), ``paste`` (PASTE's pairwise
    alignment, then a plain fit), ``joint`` (``align_sections`` then a fit with
    ``register_sections=True``), and ``aligned`` (the unmoved stack: the bar). Errors are against the
    true alignment, per moved section (mean and max): the rotation left, the translation left (the
    offset of the section's centroid) and the mean displacement of its cells, in cell spacings. ``heldout_pearson``: mean per-gene Pearson with the noise-free truth
    half-way between the sections, where no cell was measured.
``real``
    The unaligned HER2ST patient A sections and the four Stahl breast-cancer layers: each interior
    section held out in turn and predicted by a field fitted to the others, after aligning all
    sections with each method (``none``: as imaged). ``heldout_pearson``: the median per-gene Pearson
    on the held-out section. ``neighbour_agreement`` rows: every second section predicted from its
    neighbours by linear interpolation (the check of notebook 01), on the stack as each method leaves
    it (``joint``: moved by the poses of a field fitted to every section).

``seconds`` is the wall time of the alignment plus the fit, ``fit_seconds`` that of the fit alone
(``joint`` against ``align_sections``: the cost of registering inside the fit). PASTE runs in the throwaway environment of
``benchmarks/peers/setup_peers.sh``; without it its rows say so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ntf_utils as ntf  # noqa: E402
from benchmarks import inr_baselines as ib  # noqa: E402
from benchmarks.run import PEERS_PYTHON, _rigid_fit, _run_paste, log, stacked_spots  # noqa: E402
from ntf_utils.datasets import synthetic_embryo_truth  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "registration.csv"
PLAIN = {"selection": {"enabled": False}, "training": {"batch_size": 1024, "steps": 500}}


# -- synthetic: known motion ------------------------------------------------------------------------


def synthetic_stack(n_kept: int = 10, cells: int = 800):
    """``n_kept`` interior sections of the 24-section synthetic embryo, log-normalised, and the
    reference (the middle one)."""
    full = ntf.datasets.synthetic_embryo(n_sections=24, cells_per_section=cells, n_genes=12, seed=1)
    names = [f"s{i:02d}" for i in range((24 - n_kept) // 2, (24 - n_kept) // 2 + n_kept)]
    adata = full[full.obs["section"].isin(names)].copy()
    adata.obs["section"] = adata.obs["section"].astype(str).astype("category")
    ntf.pp.log_normalize(adata)
    return adata, names[(n_kept - 1) // 2]


def pose_errors(xy: np.ndarray, truth: np.ndarray, labels: np.ndarray, reference: str, spacing: float):
    """Per moved section, against the truth: the rotation left (degrees), the translation left (the
    centroid's offset) and the mean displacement of its cells (both in spacings), after bringing the
    reference onto its true place (PASTE returns its own frame)."""
    ref = labels == reference
    rotation, shift = _rigid_fit(xy[ref], truth[ref])
    xy = xy @ rotation + shift
    degrees, translation, displacement = [], [], []
    for name in np.unique(labels):
        if name == reference:
            continue
        rows = labels == name
        rot, _ = _rigid_fit(xy[rows], truth[rows])
        degrees.append(abs(np.degrees(np.arctan2(rot[0, 1], rot[0, 0]))))
        translation.append(float(np.linalg.norm(xy[rows].mean(0) - truth[rows].mean(0))) / spacing)
        displacement.append(float(np.linalg.norm(xy[rows] - truth[rows], axis=1).mean()) / spacing)
    return np.array(degrees), np.array(translation), np.array(displacement)


def pearson_between_sections(field, aligned) -> float:
    """Mean per-gene Pearson with the noise-free truth half-way to the next section."""
    labels = aligned.obs["section"].astype(str).to_numpy()
    last = aligned.obs["section"].cat.categories[-1]
    points = aligned.obsm["spatial_3d"][labels != last].copy()
    points[:, 2] += 0.5 * np.diff(np.unique(aligned.obsm["spatial_3d"][:, 2])).min()
    truth = synthetic_embryo_truth(points, aligned)
    predicted = field.predict(points)
    return float(np.mean([np.corrcoef(predicted[:, g], truth[:, g])[0, 1] for g in range(truth.shape[1])]))


def with_xy(adata, xy: np.ndarray):
    """A copy of ``adata`` with new in-plane coordinates (z kept)."""
    out = adata.copy()
    out.obsm["spatial_3d"] = np.column_stack([xy, adata.obsm["spatial_3d"][:, 2:]])
    return out


def paste_xy(adata) -> tuple[np.ndarray, float]:
    """PASTE's pairwise alignment of the sections of a stack, in their category order."""
    names = list(adata.obs["section"].cat.categories)
    labels = adata.obs["section"].astype(str).to_numpy()
    matrix = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    xy = [adata.obsm["spatial_3d"][labels == n, :2] for n in names]
    counts = [matrix[labels == n] for n in names]
    aligned, seconds = _run_paste(xy, counts)
    out = np.zeros((adata.n_obs, 2))
    for name, values in zip(names, aligned):
        out[labels == name] = values
    return out, seconds


def align_xy(adata, reference: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ntf.pp.align_sections(adata, spatial_key="spatial_3d", key_added="spatial_3d", reference=reference,
                                    layer="lognorm", copy=True)
    return out.obsm["spatial_3d"][:, :2]


def fit(adata, register: bool, config: dict):
    """``tl.fit``; ``config["joint"]`` (training settings) applies to the registering fits only."""
    config = dict(config)
    joint = config.pop("joint", {})
    cfg = ntf.NTFConfig(**config).replace(network={"register_sections": register})
    if register and joint:
        cfg = cfg.replace(training=joint)
    return ntf.tl.fit(adata, layer="lognorm", seed=0, progress=False, device="cpu", config=cfg)


def synthetic_experiment(seeds, use_paste: bool, config: dict = PLAIN) -> list[dict]:
    aligned, reference = synthetic_stack()
    labels = aligned.obs["section"].astype(str).to_numpy()
    truth = aligned.obsm["spatial_3d"][:, :2]
    rows = []
    for seed in seeds:
        moved = ntf.datasets.misalign_sections(aligned, reference=reference, seed=seed)
        spacing = moved.uns["ntf"]["misalignment"]["spacing"][0]
        methods = ["aligned", "none", "align_sections", "joint"] + (["paste"] if use_paste else [])
        for method in methods:
            started = time.perf_counter()
            data = aligned if method == "aligned" else moved
            if method in ("align_sections", "joint"):
                data = with_xy(moved, align_xy(moved, reference))
            elif method == "paste":
                data = with_xy(moved, paste_xy(moved)[0])
            fit_started = time.perf_counter()
            field = fit(data, method == "joint", config)
            seconds, fit_seconds = time.perf_counter() - started, time.perf_counter() - fit_started
            xy = field.register(data).obsm["spatial_3d"][:, :2] if method == "joint" else data.obsm["spatial_3d"][:, :2]
            degrees, translation, displacement = pose_errors(xy, truth, labels, reference, spacing)
            row = {"experiment": "synthetic", "dataset": "synthetic_embryo", "method": method, "seed": seed,
                   "rotation_error_deg": degrees.mean(), "max_rotation_error_deg": degrees.max(),
                   "shift_error_spacings": translation.mean(), "max_shift_error_spacings": translation.max(),
                   "displacement_spacings": displacement.mean(), "max_displacement_spacings": displacement.max(),
                   "heldout_pearson": pearson_between_sections(field, aligned), "seconds": seconds,
                   "fit_seconds": fit_seconds}
            rows.append(row)
            log(f"synthetic seed {seed} {method:<15} rotation {row['rotation_error_deg']:.2f} deg (max "
                f"{row['max_rotation_error_deg']:.2f}), shift {row['shift_error_spacings']:.2f} spacings (max "
                f"{row['max_shift_error_spacings']:.2f}), displacement {row['displacement_spacings']:.2f}, "
                f"Pearson {row['heldout_pearson']:.3f}, {seconds:.0f} s")
    return rows


# -- real: unaligned sections -----------------------------------------------------------------------


def real_stack(name: str):
    """The unaligned sections of a real set, stacked one spot pitch apart, empty spots dropped."""
    sections = (ntf.datasets.her2st("A", source="shipped") if name == "breast_her2st_A"
                else ntf.datasets.breast_cancer_stahl(source="shipped"))
    return stacked_spots(sections)


def neighbour_agreement(stack) -> float:
    """Every second section predicted from its neighbours by linear interpolation (notebook 01)."""
    names = stack.obs["section"].cat.categories
    train, test = ntf.pp.split_sections(stack, holdout=list(names[1::2]))
    pred = ntf.tl.baseline_predict(train, test, "linear", layer="lognorm")
    table = ntf.tl.evaluate_sections(pred, test, layer="lognorm", ssim=False, method="linear")
    return float(table["pearson"].median())


def real_experiment(datasets, use_paste: bool, config: dict) -> list[dict]:
    rows = []
    for dataset in datasets:
        raw = real_stack(dataset)
        names = list(raw.obs["section"].cat.categories)
        reference = names[(len(names) - 1) // 2]
        stacks, align_seconds = {"none": raw}, {"none": 0.0}
        started = time.perf_counter()
        stacks["align_sections"] = with_xy(raw, align_xy(raw, reference))
        align_seconds["align_sections"] = align_seconds["joint"] = time.perf_counter() - started
        stacks["joint"] = stacks["align_sections"]
        if use_paste:
            xy, align_seconds["paste"] = paste_xy(raw)
            stacks["paste"] = with_xy(raw, xy)
        for method, stack in stacks.items():
            for held in names[1:-1]:
                train, test = ntf.pp.split_sections(stack, holdout=[held])
                started = time.perf_counter()
                field = fit(train, method == "joint", config)
                fit_seconds = time.perf_counter() - started
                score = ib.heldout_pearson(field, test, layer="lognorm")
                rows.append({"experiment": "real", "dataset": dataset, "method": method, "section": held,
                             "heldout_pearson": score, "seconds": fit_seconds + align_seconds[method],
                             "fit_seconds": fit_seconds})
                log(f"{dataset} {method:<15} held out {held}: Pearson {score:.4f}, fit {fit_seconds:.0f} s")
            registered = stack
            if method == "joint":
                registered = fit(stack, True, config).register(stack)
            agreement = neighbour_agreement(registered)
            rows.append({"experiment": "real", "dataset": dataset, "method": method, "section": "all",
                         "neighbour_agreement": agreement})
            log(f"{dataset} {method:<15} neighbour agreement {agreement:.4f}")
    return rows


def _merged(base: dict, extra: dict) -> dict:
    """``base`` with the parts of ``extra`` (NTFConfig keyword dicts) merged in, part by part."""
    return {part: {**base.get(part, {}), **extra.get(part, {})} for part in {*base, *extra}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one motion seed, HER2ST only")
    parser.add_argument("--skip-paste", action="store_true", help="no PASTE rows")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--registration-prior", type=float, default=None,
                        help="TrainingConfig.registration_prior of the joint fits (docs/model.md, 'A prior on the poses')")
    parser.add_argument("--section-sparsity", type=float, default=None,
                        help="TrainingConfig.section_sparsity of the joint fits only (with section effects; docs/model.md)")
    parser.add_argument("--field-config", type=json.loads, default={},
                        help="NTFConfig keyword dict (JSON) for the fits of EVERY method, so that the alignments "
                             "are compared with one field, e.g. '{\"training\": {\"section_sparsity\": 0.03}}'")
    args = parser.parse_args()
    torch.set_num_threads(1)
    use_paste = not args.skip_paste and Path(PEERS_PYTHON).exists()
    if not args.skip_paste and not use_paste:
        log(f"PASTE skipped: {PEERS_PYTHON} missing (bash benchmarks/peers/setup_peers.sh)")
    seeds = [0] if args.quick else [0, 1, 2]
    datasets = ["breast_her2st_A"] if args.quick else ["breast_her2st_A", "breast_stahl"]
    # what is given for the joint fits goes on top of --field-config (which every method's fit reads)
    joint = {"registration_prior": args.registration_prior, "section_sparsity": args.section_sparsity}
    prior = {"joint": {name: value for name, value in joint.items() if value is not None}}
    synthetic = {**_merged(PLAIN, args.field_config), **prior}
    real = {**args.field_config, **prior}
    rows = synthetic_experiment(seeds, use_paste, synthetic) + real_experiment(datasets, use_paste, real)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.5g")
    log(f"wrote {args.out}")
    summary = table.groupby(["experiment", "dataset", "method"], sort=False).mean(numeric_only=True)
    print(summary.drop(columns=["seed"], errors="ignore").round(4).to_string())


if __name__ == "__main__":
    main()
