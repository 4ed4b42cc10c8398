"""Benchmarks (benchmarks/): the earlier-method re-implementations learn, and the quick benchmark's
stable accuracy orderings hold. Accuracy only: nothing here measures or asserts time."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _threads import one_torch_thread

from ntf_utils import metrics, pp, tl
from ntf_utils.datasets import synthetic_embryo
from ntf_utils.model import TrainingConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import inr_baselines as ib  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small networks train fastest on one thread when the 2 cores are shared (no time is asserted)."""
    from threadpoolctl import threadpool_limits

    with one_torch_thread(), threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def split():
    adata = synthetic_embryo(n_sections=12, cells_per_section=200, n_genes=12, seed=2)
    pp.log_normalize(adata)
    names = list(adata.obs["section"].cat.categories)
    return pp.split_sections(adata, holdout=names[1::3])


def _rmse_vs_truth(pred, test):
    return float(metrics.rmse(pred, np.asarray(test.layers["truth"])))


@pytest.mark.parametrize(
    "make",
    [
        lambda tr: ib.fit_inr(tr, "fourier", layer="lognorm", steps=250, batch_size=512, sigma=0.5,
                              hidden_width=64, hidden_layers=2),
        lambda tr: ib.fit_inr(tr, "siren", layer="lognorm", steps=250, batch_size=512, w0=10.0, lr=5e-4,
                              hidden_width=64, hidden_layers=2),
        lambda tr: ib.gp_baseline(tr, layer="lognorm", max_cells=300, n_components=8),
    ],
    ids=["fourier", "siren", "gp"],
)
def test_baseline_beats_the_per_gene_mean(split, make):
    train, test = split
    model = make(train)
    coords = test.obsm["spatial_3d"]
    pred = model.predict(coords)
    assert pred.shape == (test.n_obs, train.n_vars) and pred.dtype == np.float32
    mean = np.tile(np.asarray(train.layers["lognorm"]).mean(0), (test.n_obs, 1))
    assert _rmse_vs_truth(pred, test) < 0.8 * _rmse_vs_truth(mean, test)
    assert ib.heldout_pearson(model, test, layer="truth") > 0.6
    genes = [train.var_names[3], train.var_names[0]]
    np.testing.assert_allclose(model.predict(coords[:20], genes=genes), pred[:20][:, [3, 0]], rtol=1e-5, atol=1e-5)


def test_inr_records_time_to_accuracy_history(split):
    train, test = split
    seen = []

    def callback(model, step, seconds):
        seen.append((step, seconds))
        return ib.heldout_pearson(model, test, layer="truth")

    model = ib.fit_inr(train, "fourier", layer="lognorm", steps=60, batch_size=256, sigma=0.5,
                       hidden_width=32, hidden_layers=1, eval_callback=callback, eval_every=20)
    assert [s for s, _ in seen] == [20, 40, 60]
    assert list(model.history.dropna(subset=["score"])["step"]) == [20, 40, 60]
    secs = [t for _, t in seen]
    assert all(b >= a for a, b in zip(secs, secs[1:]))
    assert model.info["steps_run"] == 60


def test_inr_baselines_stop_early_as_the_field_does(split):
    """The protocol of benchmarks/README.md: the Fourier MLP and SIREN stop early as ``tl.fit`` does by
    default. On values with nothing spatial to learn (shuffled between cells) the held-out loss is lowest
    at an early check, and the fit stops ``TrainingConfig.patience`` checks after it."""
    train, _ = split
    noise = train.copy()
    values = np.asarray(noise.layers["lognorm"])
    noise.layers["lognorm"] = values[np.random.default_rng(0).permutation(noise.n_obs)]
    model = ib.fit_inr(noise, "fourier", layer="lognorm", steps=600, batch_size=256, sigma=4.0, lr=3e-3,
                       hidden_width=64, hidden_layers=2, val_every=20)
    checks = model.history.dropna(subset=["val_loss"]).set_index("step")["val_loss"]
    assert model.info["steps_run"] == checks.idxmin() + TrainingConfig.patience * 20 < 600, checks.to_dict()


def test_validation_split_uses_training_sections_only(split):
    train, _ = split
    fit_part, val_part = ib.validation_split(train)
    assert set(val_part.obs["section"]).isdisjoint(set(fit_part.obs["section"]))
    assert set(val_part.obs["section"]) | set(fit_part.obs["section"]) == set(train.obs["section"])
    names = list(train.obs["section"].cat.categories)
    two = train[train.obs["section"].isin([names[0], names[-1]])].copy()
    assert ib.validation_split(two) is None
    best, table = ib.tune_inr(two, "fourier", layer="lognorm")
    assert best["sigma"] == min(ib.default_grid("fourier")["sigma"]) and "untuned" in table["note"].iloc[0]


def test_thirds_split_fits_the_ends_and_the_middle_and_holds_out_the_rest(split):
    """``tune_section_effects.py --thirds``: a three-section stack cut from the training sections alone."""
    from benchmarks.tune_section_effects import thirds_split

    train, test = split
    fit_on, held = thirds_split(train, 1.0)
    z = train.obsm["spatial_3d"][:, 2]
    by_z = pd.Series(z).groupby(train.obs["section"].astype(str).to_numpy()).median().sort_values()
    order = list(by_z.index)
    assert set(fit_on.obs["section"].astype(str)) == {order[0], order[(len(order) - 1) // 2], order[-1]}
    assert set(held.obs["section"].astype(str)) == set(order) - set(fit_on.obs["section"].astype(str))
    assert fit_on.n_obs + held.n_obs == train.n_obs
    assert set(held.obs["section"].astype(str)).isdisjoint(set(test.obs["section"].astype(str)))
    names = list(train.obs["section"].cat.categories)
    assert thirds_split(train[train.obs["section"].isin(names[:3])].copy(), 1.0) is None  # three: nothing left


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``benchmarks/run.py --quick`` (accuracy part only), called in-process.

    The memory part (a fresh process per method) is left to
    :func:`test_peak_memory_child_reports_its_fit`, which runs one such child.
    """
    from benchmarks import run

    out = tmp_path_factory.mktemp("bench")
    results = run.main(["--quick", "--out", str(out), "--threads", "1", "--skip", "throughput", "peers", "memory"])
    return out, results


def test_quick_benchmark_writes_the_tables(quick_run):
    out, _ = quick_run
    superres = pd.read_csv(out / "superres.csv")
    assert list(superres.columns[:8]) == ["dataset", "kept_fraction", "method", "pearson", "spearman", "rmse", "ssim",
                                         "fit_seconds"]
    assert set(superres["method"]) == {"ntf", "nearest", "linear", "knn", "gp", "fourier_mlp", "siren"}
    tta = pd.read_csv(out / "time_to_accuracy.csv")
    assert list(tta.columns[:5]) == ["dataset", "method", "target_pearson", "seconds_to_target", "speedup_vs_ntf"]
    assert set(tta["method"]) == set(superres["method"])
    for name in ("accuracy_vs_fraction.png", "pearson_distribution.png", "time_to_accuracy.png", "headline.txt",
                 "denoise.csv", "machine.json"):
        assert (out / name).stat().st_size > 0


def test_quick_benchmark_accuracy_orderings(quick_run):
    """Stable orderings only (1/3 of the synthetic embryo's sections held out); never times."""
    out, _ = quick_run
    from benchmarks import run

    superres = pd.read_csv(out / "superres.csv")
    third = superres[np.isclose(superres["kept_fraction"], 2 / 3)].set_index("method")
    assert third.loc["ntf", "pearson"] > third.loc["nearest", "pearson"]
    assert third.loc["linear", "pearson"] > third.loc["nearest", "pearson"]

    # the per-gene mean of the training cells, scored the same way as the table's rows
    adata, truth_layer = run.load_dataset("synthetic_embryo", run.settings(quick=True))
    train, test = pp.split_sections(adata, keep_fraction=2 / 3)
    mean = np.tile(np.asarray(train.layers["lognorm"]).mean(0), (test.n_obs, 1))
    df = tl.evaluate_sections({"mean": mean}, test, layer="lognorm", truth_layer=truth_layer, ssim=False)
    mean_rmse = tl.summarize_evaluation(df).set_index("method").loc["mean", "rmse_mean"]
    assert third.loc["ntf", "rmse"] < 0.8 * mean_rmse


def test_peak_memory_child_reports_its_fit():
    """One child of ``run.peak_memory`` (the field, quick settings): its report parses and its fit
    raised the process's high-water mark."""
    import json
    import subprocess

    if not Path("/proc/self/status").exists():
        pytest.skip("VmHWM needs Linux /proc")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--child-memory", "ntf", "--threads", "1", "--quick"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["method"] == "ntf"
    assert report["peak_rss_mb"] > report["rss_before_mb"] > 50


def test_peak_memory_of_a_child_process_excludes_its_parent():
    """Benchmark children measure their own peak: a child started while this process holds 600 MB
    must not report those 600 MB (``ru_maxrss`` survives ``execve`` and would)."""
    import subprocess

    if not Path("/proc/self/status").exists():
        pytest.skip("VmHWM needs Linux /proc")
    ballast = np.ones(600 * 2**20 // 8)  # 600 MB, touched
    code = "import sys; sys.path.insert(0, '.'); from benchmarks._memory import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    child_mb = float(out.stdout.strip())
    assert 1 < child_mb < 300, child_mb
    assert ballast.sum() > 0


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                                          if not p.name.startswith("_") and p.name != "inr_baselines.py"))
def test_every_benchmark_script_prints_its_usage(script, capsys, monkeypatch):
    """``python benchmarks/X.py --help`` prints the usage and exits 0 without running anything (a ``%`` in
    an argparse help text once made it crash)."""
    import runpy

    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "benchmarks" / script), run_name="__main__")
    assert stop.value.code in (0, None)
    assert "usage" in capsys.readouterr().out.lower()
