"""tl.fit's choice of grid resolution by held-out training sections (``tl/_resolution.py``)."""

import json

import numpy as np
import pytest

from ntf_utils import NTFConfig, NTFField, pp, tl
from ntf_utils.datasets import synthetic_embryo
from ntf_utils.model._config import resolve_config
from ntf_utils.model._coords import measure_sampling
from ntf_utils.tl._resolution import _settings, applies, heldout_sections

QUICK = NTFConfig(training={"steps": 120, "batch_size": 512, "eval_every": 40})
# 120 steps, validation every 20, rungs at a third and two thirds: cuts at steps 40 and 80 (2 and 4 checks)
HALVING = QUICK.replace(training={"eval_every": 20}, selection={"rungs": [1 / 3, 2 / 3]})


@pytest.fixture(scope="module")
def small():
    adata = synthetic_embryo(n_sections=8, cells_per_section=200, n_genes=8, seed=4)
    pp.log_normalize(adata)
    return adata


def _resolved(adata, config):
    sampling = measure_sampling(adata.obsm["spatial_3d"], adata.obs["section"].astype(str).to_numpy())
    return resolve_config(config, sampling, True, adata.n_vars, adata.n_obs)


def test_resolution_scale_coarsens_the_grid_but_not_the_transform(small):
    fine, fine_transform = _resolved(small, NTFConfig())
    coarse, coarse_transform = _resolved(small, NTFConfig(encoding={"resolution_scale": 4.0}))
    assert coarse.encoding.finest_resolution == pytest.approx(fine.encoding.finest_resolution / 4)
    # the tissue support is measured in cells of the sampling rule, whatever the grid
    assert coarse.encoding.support_resolution == pytest.approx(fine.encoding.support_resolution)
    np.testing.assert_allclose(coarse_transform.scale, fine_transform.scale)
    # with a fixed finest resolution the scale has nothing to act on
    fixed, _ = _resolved(small, NTFConfig(encoding={"finest_resolution": 20.0, "resolution_scale": 4.0}))
    assert fixed.encoding.finest_resolution == 20.0 and fixed.encoding.resolution_scale == 1.0


def test_heldout_sections_are_every_third_interior_section_by_z(small):
    names = heldout_sections(small, "spatial_3d")
    order = small.obs.groupby("section", observed=True)["z"].median().sort_values().index.astype(str)
    assert names == list(order[1:-1][::3])
    assert order[0] not in names and order[-1] not in names


def test_when_the_selection_applies(small):
    assert applies(NTFConfig(), small, None)
    assert not applies(NTFConfig(selection={"enabled": False}), small, None)
    assert not applies(NTFConfig(encoding={"finest_resolution": 30.0}), small, None)
    assert not applies(NTFConfig(selection={"candidates": [[2.0, 0.1]]}), small, None)
    assert not applies(NTFConfig(), small, "stage")
    two = small[small.obs["section"].isin(small.obs["section"].cat.categories[:2])]
    assert not applies(NTFConfig(), two, None)


def test_selection_keeps_the_lowest_heldout_loss_and_refits_on_all_cells(small):
    field = tl.fit(small, layer="lognorm", config=QUICK, progress=False)
    table = field.info["resolution_selection"]
    assert [row["resolution_scale"] for row in table] == [1.0, 4.0, 1.0, 1.0]
    assert [row["section_psf"] for row in table] == [0.0, 0.0, 1.0, 0.0]  # the third: the z prior with section effects
    assert [row["n_frequencies"] for row in table] == [0, 0, 0, 2]  # the fourth: a smooth component
    losses = [row["validation_loss"] for row in table]
    winner = table[int(np.argmin(losses))]
    assert [row["chosen"] for row in table].count(True) == 1 and winner["chosen"]
    assert field.config.encoding.resolution_scale == winner["resolution_scale"]
    assert field.config.training.psf_sigma == winner["psf_sigma"]
    assert field.config.training.section_psf == winner["section_psf"]
    assert bool(field.sections) == (winner["section_psf"] > 0)  # section effects come with the z prior
    # four candidates on the training sections minus the held-out ones, then the winner on all cells
    held = small.obs["section"].astype(str).isin(heldout_sections(small, "spatial_3d")).sum()
    phases = field.info["phases"]
    assert [p["phase"] for p in phases] == [f"candidate {k}/4" for k in (1, 2, 3, 4)] + ["final fit"]
    assert [p["n_cells"] for p in phases] == [small.n_obs - held] * 4 + [small.n_obs]
    assert all(p["steps_run"] > 0 and p["seconds"] > 0 for p in phases)
    assert field.info["total_seconds"] == pytest.approx(sum(p["seconds"] for p in phases), abs=1e-2)
    assert field.info["total_steps"] == sum(p["steps_run"] for p in phases) > field.info["steps_run"]
    assert field.info["n_cells"] == small.n_obs


def test_the_race_trains_on_smaller_batches_and_the_refit_on_the_fits_own(small):
    field = tl.fit(small, layer="lognorm", config=QUICK.replace(selection={"batch_size": 128}), progress=False)
    assert [p["batch_size"] for p in field.info["phases"]] == [128] * 4 + [512]
    assert field.config.training.batch_size == 512
    # never larger than the fit's own batch
    field = tl.fit(small, layer="lognorm", config=QUICK.replace(selection={"batch_size": 4096}), progress=False)
    assert [p["batch_size"] for p in field.info["phases"]] == [512] * 5


def test_given_validation_sections_are_used_and_the_winner_is_not_refitted(small):
    names = list(small.obs["section"].cat.categories)
    train, test = pp.split_sections(small, holdout=names[2::4])
    # the winner is the field here, so the race trains with the fit's own batch
    config = QUICK.replace(selection={"batch_size": 128})
    field = tl.fit(train, layer="lognorm", config=config, validation=test, progress=False)
    assert [p["n_cells"] for p in field.info["phases"]] == [train.n_obs] * 4
    assert [p["batch_size"] for p in field.info["phases"]] == [512] * 4
    chosen = next(row for row in field.info["resolution_selection"] if row["chosen"])
    assert field.info["best_validation_loss"] == pytest.approx(chosen["validation_loss"])


def test_coarse_grid_keeps_the_same_tissue_support(small):
    base = QUICK.replace(selection={"enabled": False})
    fine = tl.fit(small, layer="lognorm", config=base, progress=False)
    coarse = tl.fit(small, layer="lognorm", config=base.replace(encoding={"resolution_scale": 4.0}, training={"psf_sigma": 0.0}), progress=False)
    assert coarse.config.encoding.finest_resolution < fine.config.encoding.finest_resolution / 3
    rng = np.random.default_rng(0)
    lo, hi = small.obsm["spatial_3d"].min(0), small.obsm["spatial_3d"].max(0)
    query = rng.uniform(lo - 0.3 * (hi - lo), hi + 0.3 * (hi - lo), size=(3000, 3))
    np.testing.assert_array_equal(coarse.inside(query), fine.inside(query))
    assert 0.05 < fine.inside(query).mean() < 0.9


def test_selection_survives_save_and_load(small, tmp_path):
    field = tl.fit(small, layer="lognorm", config=QUICK, progress=False)
    field.save(tmp_path / "f.ntf")
    loaded = NTFField.load(tmp_path / "f.ntf")
    assert loaded.info["resolution_selection"] == field.info["resolution_selection"]
    assert loaded.config == field.config


@pytest.mark.parametrize("candidates", [[], [[0.0, 0.5]], [[1.0, -0.1]], [[1.0]], [[1.0, 0.5, 0.0, 2, 1.5]],
                                        [[1.0, 0.5, 0.0, 2, 2, -0.1]], [[1.0, 0.5, 0.0, 2, 2, 0.1, 1]]])
def test_bad_candidates_are_explained(candidates):
    with pytest.raises(ValueError, match="candidates"):
        NTFConfig(selection={"candidates": candidates})


def test_a_candidate_can_add_the_frequency_encoding(small):
    config = QUICK.replace(selection={"candidates": [[4.0, 0.0, 0.0, 2, 0], [4.0, 0.0, 0.0, 2, 3]]})
    field = tl.fit(small, layer="lognorm", config=config, progress=False)
    table = field.info["resolution_selection"]
    assert [row["n_frequencies"] for row in table] == [0, 3]
    winner = next(row for row in table if row["chosen"])
    assert field.config.encoding.n_frequencies == winner["n_frequencies"]
    assert (field.network.frequencies is None) == (winner["n_frequencies"] == 0)
    # rows without the fifth element keep the config's own number of octaves
    assert _settings(NTFConfig(encoding={"n_frequencies": 2}), [1.0, 0.5])["n_frequencies"] == 2


def test_a_candidate_can_carry_the_sparsity_prior_and_with_it_section_effects(small):
    config = QUICK.replace(selection={"candidates": [[4.0, 0.0, 0.0, 2, 0, 0.0], [4.0, 0.0, 0.0, 2, 0, 0.5]]})
    field = tl.fit(small, layer="lognorm", config=config, progress=False)
    table = field.info["resolution_selection"]
    assert [row["section_sparsity"] for row in table] == [0.0, 0.5]
    winner = next(row for row in table if row["chosen"])
    assert field.config.training.section_sparsity == winner["section_sparsity"]
    assert (len(field.sections) > 0) == (winner["section_sparsity"] > 0)
    # rows without the sixth element keep the config's own weight
    assert _settings(NTFConfig(training={"section_sparsity": 0.2}), [1.0, 0.5])["section_sparsity"] == 0.2


def test_candidates_round_trip_through_json():
    config = NTFConfig(selection={"candidates": [(1, 0.5), (2, 0.25), (4, 0)]})
    assert NTFConfig.from_dict(json.loads(config.to_json())) == config
    with pytest.raises(ValueError, match="resolution_scale"):
        NTFConfig(encoding={"resolution_scale": 0})


def test_successive_halving_drops_the_worse_half_at_each_rung(small):
    field = tl.fit(small, layer="lognorm", config=HALVING, progress=False)
    table = field.info["resolution_selection"]
    steps = [row["steps_run"] for row in table]
    assert sorted(steps) == [40, 40, 80, 80], steps
    dropped = [row["validation_loss"] for row in table if row["steps_run"] == 40]
    finalists = [row for row in table if row["steps_run"] == 80]
    # the dropped half was worse at the first rung, and a finalist's best loss can only fall after it
    assert min(dropped) >= max(row["validation_loss"] for row in finalists)
    assert next(row for row in table if row["chosen"]) in finalists
    assert [p["steps_run"] for p in field.info["phases"][:4]] == steps
    # without rungs every candidate trains to its end: about twice the selection steps
    full = tl.fit(small, layer="lognorm", config=HALVING.replace(selection={"rungs": []}), progress=False)
    full_steps = [row["steps_run"] for row in full.info["resolution_selection"]]
    assert all(s == 120 for s in full_steps), full_steps
    assert sum(full_steps) == 2 * sum(steps)


def test_a_run_trained_in_stages_equals_one_trained_at_once(small):
    from ntf_utils.model._pipeline import FitRun, fit_field
    from ntf_utils.model._sources import AnnDataSource

    config = QUICK.replace(selection={"enabled": False})
    held = small[small.obs["section"].isin(heldout_sections(small, "spatial_3d"))]

    def source():
        return AnnDataSource(small, layer="lognorm", spatial_key="spatial_3d", time_key=None, loss="mse")

    once = fit_field(source(), config, validation=held, progress=False)
    run = FitRun(source(), config, validation=held, progress=False)
    for until in (40, 41, 100):
        run.advance(until)
        assert run.state.step == until and not run.done
    run.advance()
    assert run.done
    staged = run.finish()
    assert staged.info["steps_run"] == once.info["steps_run"] == 120
    assert staged.history.equals(once.history)
    for name, value in once.network.state_dict().items():
        assert np.array_equal(value.numpy(), staged.network.state_dict()[name].numpy()), name


@pytest.mark.parametrize(("steps", "every", "rungs", "expected"), [
    (1000, 100, [0.125, 0.25], [200, 300]),  # the default: a fraction of the steps, rounded up to a check
    (2000, 100, [0.125, 0.25], [300, 500]),
    (800, 100, [0.125, 0.25], [200, 300]),  # not before 2 checks, and each rung one check later
    (120, 40, [0.125, 0.25], [80, 120]),
    (300, 100, [0.25, 0.5], [200, 300]),
])
def test_rungs_fall_on_validation_steps_after_enough_checks(steps, every, rungs, expected):
    from types import SimpleNamespace

    from ntf_utils.tl._resolution import _rung_step

    run = SimpleNamespace(plan=SimpleNamespace(config=NTFConfig(training={"steps": steps, "eval_every": every})))
    assert [_rung_step(run, fraction, rung) for rung, fraction in enumerate(rungs)] == expected


@pytest.mark.parametrize("rungs", [[0.0], [0.5, 0.25], [1.5], "0.5", [True]])
def test_bad_rungs_are_explained(rungs):
    with pytest.raises(ValueError, match="rungs"):
        NTFConfig(selection={"rungs": rungs})


def test_progress_bars_name_each_phase_and_what_became_of_it(small, capsys):
    field = tl.fit(small, layer="lognorm", config=HALVING, progress=True)
    err = capsys.readouterr().err
    last = {}  # each bar's last state as tqdm drew it
    for line in err.replace("\r", "\n").splitlines():
        if ":" in line:
            last[line.split(":")[0]] = line
    assert set(last) == {"candidate 1/4", "candidate 2/4", "candidate 3/4", "candidate 4/4", "final fit"}
    notes = sorted(line.split(", ")[-1] for name, line in last.items() if name != "final fit")
    # the worse half at the first rung (HALVING: step 40 of 120), one at the second, the winner
    assert [n.startswith("dropped at step 40") for n in notes].count(True) == 2, notes
    assert [n.startswith("dropped at step 80") for n in notes].count(True) == 1, notes
    assert any(n.startswith("chosen: refitted on every section next") for n in notes), notes
    assert "120/120" in last["final fit"]
    assert [p["phase"] for p in field.info["phases"]][-1] == "final fit"
