"""tl.prediction_intervals: section-calibrated conformal intervals cover held-out sections, widen with
distance, refuse (infinite width) beyond what the calibration measured; pl views of them."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from ntf_utils import NTFConfig, datasets, pl, pp, tl
from ntf_utils.tl._conformal import (
    ANCHOR_ENDS,
    ANCHOR_SECTIONS,
    GROWTH,
    GROWTH_RULES,
    _distances,
    _folds,
    _smooth_share,
)

# no blend with the closed-form smoother: these tests measure the calibration, and the numbers in their
# docstrings were measured without it (with the blend this split chooses, 0.5, the intervals cover more:
# 0.861 / 0.940 / 0.974 at 80 / 90 / 95%; docs/model.md, "Calibrated intervals")
CONFIG = NTFConfig(training={"steps": 150, "batch_size": 1024}, selection={"blends": []})


@pytest.fixture(scope="module")
def split():
    adata = datasets.synthetic_embryo(n_sections=16, cells_per_section=200, n_genes=10, seed=0)
    pp.log_normalize(adata)
    return pp.split_sections(adata, keep_fraction=0.5)  # 8 training sections, 8 held out in between


@pytest.fixture(scope="module")
def result(split):
    train, test = split
    before = train.copy()
    res = tl.prediction_intervals(train, test, alpha=0.1, layer="lognorm", config=CONFIG)
    assert train.n_obs == before.n_obs and set(train.layers) == set(before.layers)  # input untouched
    assert set(train.obs.columns) == set(before.obs.columns) and set(train.uns) == set(before.uns)
    np.testing.assert_array_equal(train.layers["lognorm"], before.layers["lognorm"])
    return res


def test_covers_heldout_sections_near_nominal(result, split):
    """Empirical coverage against the observed values of 8 held-out sections (never calibrated on).

    Measured (this data and CONFIG): 0.828 / 0.925 / 0.963 at 80 / 90 / 95% (data seed 1: 0.812 / 0.914 /
    0.966).
    """
    _, test = split
    observed = test.layers["lognorm"]
    for level in (0.8, 0.9, 0.95):
        cov = result.coverage(observed, 1 - level)
        assert level - 0.05 <= cov <= level + 0.06, (level, cov)
    assert result.coverage(observed) == result.coverage(observed, 0.1)
    assert not result.flagged.mean() > 0.01


def test_expression_intervals_cover_the_noise_free_truth(result, split):
    """``target="expression"``: intervals for the noise-free level, scored against the simulation's truth.

    Measured (this data and CONFIG): 0.842 / 0.922 / 0.957 at 80 / 90 / 95% (data seed 1: 0.836 / 0.917 /
    0.962). Without the field's own error at measured cells (``smooth_share`` 0) they cover 0.676 / 0.782
    / 0.851: this short fit's error is mostly a smooth under-fit that every fold shares.
    """
    _, test = split
    truth = test.layers["truth"]
    for level in (0.8, 0.9, 0.95):
        cov = result.coverage(truth, 1 - level, target="expression")
        assert level - 0.05 <= cov <= level + 0.06, (level, cov)
    assert 0.2 < result.smooth_share.mean() < 0.9  # the fit's error shares the residual with the noise
    without_own_error = dataclasses.replace(result, smooth_share=np.zeros_like(result.smooth_share))
    assert without_own_error.coverage(truth, 0.2, target="expression") < 0.75
    other = result.at(test.obsm["spatial_3d"], target="expression")
    np.testing.assert_allclose(other.upper - other.lower, 2 * result.half_width(0.1, "expression"), rtol=1e-6)
    with pytest.raises(ValueError, match="target must be one of"):
        result.interval(0.1, target="truth")


def test_smooth_share_separates_noise_from_a_smooth_error():
    """Independent noise is not shared by neighbours; a smooth error is: the share is its variance share."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(4000, 2))
    labels = np.repeat(["a", "b"], 2000)
    smooth = np.column_stack([np.sin(xy[:, 0] / 15), np.zeros(len(xy))])  # gene 0: a smooth error, gene 1 none
    noise = rng.normal(0, 0.5, size=(len(xy), 2))
    share = _smooth_share(smooth + noise, np.zeros_like(noise), labels, xy)
    expected = np.mean(smooth[:, 0] ** 2) / (np.mean(smooth[:, 0] ** 2) + 0.25)
    assert abs(share[0] - expected) < 0.05 and share[1] < 0.05, (share, expected)


def test_width_rules_rescored_without_refitting(result, split, tmp_path):
    """benchmarks/tune_intervals.py: a saved case is re-scored under every width rule; under the default
    rule it reproduces the coverage the intervals themselves give, for both targets."""
    from benchmarks.tune_intervals import evaluate, save_case

    _, test = split
    observed, truth = np.asarray(test.layers["lognorm"]), np.asarray(test.layers["truth"])
    save_case(tmp_path / "case.npz", result, observed, truth, n_sections=8)
    table = evaluate(tmp_path)
    assert set(table["rule"]) == set(GROWTH_RULES)
    default = table[(table["rule"] == GROWTH) & (table["level"] == 0.9)].set_index("target")["all"]
    assert abs(default["observed"] - result.coverage(observed, 0.1)) < 1e-3
    assert abs(default["truth"] - result.coverage(truth, 0.1, target="expression")) < 1e-3
    widths = table[(table["target"] == "observed") & (table["level"] == 0.9)].set_index("rule")["width"]
    assert widths["distance1"] > widths["distance2"] > widths["distance4"]  # slower growth: wider mid-gap


def test_fields_shapes_and_levels(result, split):
    _, test = split
    n, g = test.n_obs, test.n_vars
    assert result.prediction.shape == result.lower.shape == result.upper.shape == (n, g)
    assert np.all(result.lower <= result.prediction) and np.all(result.prediction <= result.upper)
    np.testing.assert_allclose(result.distance, 0.5, atol=0.05)  # every other section held out
    assert np.all(result.beyond == 0)
    widths = [np.median(2 * result.half_width(a)) for a in (0.3, 0.1, 0.05)]
    assert widths[0] < widths[1] < widths[2]
    # every fold held out whole sections; interior folds keep both neighbours of a held-out section
    table = result.calibration
    assert set(table["anchor"]) == {ANCHOR_SECTIONS, ANCHOR_ENDS} and len(table) == 4
    assert np.allclose(table.loc[table.anchor == ANCHOR_SECTIONS, "distance_median"], 1.0)
    ad = result.to_anndata()
    assert ad.shape == (n, g) and {"lower", "upper", "width"} <= set(ad.layers)
    assert ad.uns["ntf"]["intervals"]["alpha"] == 0.1 and ad.uns["ntf"]["intervals"]["target"] == "observed"
    assert {"distance_to_sections", "spacings_beyond", "flagged", "inside"} <= set(ad.obs)


def test_width_grows_with_distance_and_is_infinite_past_the_reach(result, split):
    train, _ = split
    z = np.sort(train.obs["z"].unique())
    spacing = result.spacing
    xy = train.obsm["spatial_3d"][train.obs["z"].to_numpy() == z[3], :2][:50]
    zs = [z[3], z[3] + 0.25 * spacing, z[3] + 0.5 * spacing, z[-1] + 0.5 * spacing, z[-1] + 3 * spacing]
    query = np.vstack([np.column_stack([xy, np.full(len(xy), v)]) for v in zs])
    res = result.at(query)  # same field and calibration, new points
    half = res.half_width(0.1).reshape(len(zs), len(xy), -1)
    mean = [float(np.mean(h[np.isfinite(h)])) if np.isfinite(h).any() else np.inf for h in half]
    assert mean[0] < mean[1] < mean[2], mean
    assert np.isfinite(half[:3]).mean() > 0.95
    far = res.flagged.reshape(len(zs), len(xy))[4]
    assert far.all() and np.isinf(half[4]).all()  # 3 spacings beyond the last section: no interval
    table = res.trust_table()
    assert set(table["region"]) == {"between sections", "beyond the range"}
    assert table.loc[table.region == "beyond the range", "fraction_flagged"].max() == 1.0


def test_fold_plan():
    table = pd.DataFrame({"section": [f"s{i}" for i in range(8)], "z": np.arange(8.0), "stage": 0.0})
    folds = _folds(table, 3)
    interior = [held for anchor, held in folds if anchor == ANCHOR_SECTIONS]
    assert sorted(sum(interior, [])) == [f"s{i}" for i in range(1, 7)]
    for held in interior:  # no two held-out sections are neighbours
        idx = sorted(int(s[1:]) for s in held)
        assert np.all(np.diff(idx) > 1)
    assert [held for anchor, held in folds if anchor == ANCHOR_ENDS] == [["s0", "s7"]]
    two = _folds(table.iloc[:2], 3)
    assert two == [(ANCHOR_ENDS, ["s0"]), (ANCHOR_ENDS, ["s1"])]
    # a time axis: sections are compared within the nearest stage
    staged = pd.DataFrame({"section": list("abcd"), "z": [0.0, 10.0, 0.0, 20.0], "stage": [0.0, 0.0, 1.0, 1.0]})
    dist, beyond, hardness = _distances(np.array([5.0, 15.0, 15.0]), np.array([0.0, 0.1, 0.9]), staged, 10.0)
    np.testing.assert_allclose(dist, [0.5, 0.5, 0.5])
    np.testing.assert_allclose(beyond, [0.0, 0.5, 0.0])
    np.testing.assert_allclose(hardness, [0.25, 0.25, 0.75])  # d * (G - d) in a gap; beyond**2 outside


def test_bad_arguments(split):
    train, test = split
    for alpha in (0, 1, 1.5, -0.1, True, "0.1", None):
        with pytest.raises(ValueError, match="alpha must be a number in"):
            tl.prediction_intervals(train, test, alpha=alpha)
    with pytest.raises(ValueError, match="target must be one of"):
        tl.prediction_intervals(train, test, target="mean")
    with pytest.raises(ValueError, match="n_folds"):
        tl.prediction_intervals(train, test, n_folds=0)
    with pytest.raises(ValueError, match="cell_fraction"):
        tl.prediction_intervals(train, test, cell_fraction=0.9)
    one = train[train.obs["section"] == train.obs["section"].iloc[0]].copy()
    with pytest.raises(ValueError, match="at least 2 sections"):
        tl.prediction_intervals(one, test)


def test_an_unlabelled_stack_is_calibrated_on_its_z_values(split):
    """Without obs["section"] the folds hold out the sections tl.fit derives (each distinct z): the
    intervals are those of the labelled stack, and the caller's AnnData gets no labels."""
    train, test = split
    quick = CONFIG.replace(training={"steps": 20})
    labelled = tl.prediction_intervals(train, test, layer="lognorm", config=quick)
    bare = train.copy()
    del bare.obs["section"]
    with pytest.warns(UserWarning, match="8 distinct z values are taken as 8 sections"):
        unlabelled = tl.prediction_intervals(bare, test, layer="lognorm", config=quick)
    assert "section" not in bare.obs
    np.testing.assert_array_equal(unlabelled.lower, labelled.lower)
    np.testing.assert_array_equal(unlabelled.upper, labelled.upper)


def test_plots(result, split):
    _, test = split
    fig = pl.interval_width(result, gene=result.genes[0])
    assert len(fig.data) >= 2 and fig.data[1].name == "width"
    fig = pl.trust_map(result, test.layers["lognorm"])
    assert any(t.name.startswith("coverage") for t in fig.data)
    with pytest.raises(KeyError, match="not among"):
        pl.interval_width(result, gene="nope")


def test_time_axis():
    """Two stages: sections are calibrated and compared within their own stage; queries carry a time."""
    adata = datasets.synthetic_timeseries(n_times=2, n_sections=8, cells_per_section=50, n_genes=4, seed=0)
    pp.log_normalize(adata)
    held = [n for n in adata.obs["section"].unique() if n.endswith(("s02", "s05"))]
    train, test = pp.split_sections(adata, holdout=held)
    res = tl.prediction_intervals(train, test, layer="lognorm", time_key="time", steps=30)
    assert res.coords.shape == (test.n_obs, 4)
    for held_out in res.calibration["sections"]:  # every fold holds out the same sections of both stages
        assert sorted(s[3:] for s in held_out if s.startswith("t0")) == sorted(s[3:] for s in held_out if s.startswith("t1"))
    np.testing.assert_allclose(res.distance, 1.0)  # s02 and s05 lie one spacing (20) from s01/s03, s04/s06
    assert not res.flagged.any() and 0.8 <= res.coverage(test.layers["lognorm"]) <= 1.0
    expression = res.half_width(0.1, "expression")  # the noise-free level, with time: finite and narrower
    assert np.isfinite(expression).all() and np.median(expression) < np.median(res.half_width(0.1))
