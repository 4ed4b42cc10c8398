"""The smoothers and their blend into the field's prediction: the closed-form grids
(``model/_smooth_base.py``) and the Gaussian process beside them (``model/_kernel_smoother.py``)."""

import warnings

import numpy as np
import pytest
import torch

from ntf_utils import NTFConfig, NTFField, pp, tl
from ntf_utils.datasets import synthetic_embryo
from ntf_utils.model._kernel_smoother import (
    KernelSmoother,
    fit_hyperparameters,
    negative_log_marginal_likelihood,
    squared_differences,
)
from ntf_utils.model._smooth_base import SmoothBase, base_resolutions
from ntf_utils.tl._domains import latent_embedding
from ntf_utils.tl._resolution import blend_without_race

QUICK = {"training": {"steps": 120, "batch_size": 512, "eval_every": 40}}


@pytest.fixture(scope="module")
def small():
    adata = synthetic_embryo(n_sections=8, cells_per_section=200, n_genes=8, seed=4)
    pp.log_normalize(adata)
    return adata


def test_the_levels_halve_from_the_finest_resolution_to_one_cell():
    assert base_resolutions(10.0) == [10.0, 5.0, 2.5, 1.25]
    assert base_resolutions(1.5) == [1.5]


def test_the_smoother_reproduces_a_linear_field_between_the_cells_it_was_solved_on():
    # multilinear interpolation holds linear functions exactly, so a weak ridge must give them back
    rng = np.random.default_rng(0)
    coef = rng.normal(size=(3, 4))
    u = rng.uniform(0.1, 0.9, size=(4000, 3))
    base = SmoothBase(3, 4, 4, base_resolutions(8.0))
    info = base.solve(u, (u - 0.5) @ coef, penalty=1e-6, decay=0.0)
    assert info["cells"] == 4000 and info["levels"] == [8.0, 4.0, 2.0, 1.0]
    new = rng.uniform(0.15, 0.85, size=(500, 3))
    got = base(torch.from_numpy(new).float()).numpy()
    want = (new - 0.5) @ coef
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max()
    # the decoded genes are the principal scores times the axes, and a gene subset picks columns
    np.testing.assert_allclose(base(torch.from_numpy(new).float(), torch.tensor([2, 0])).numpy(), got[:, [2, 0]],
                               rtol=1e-5, atol=1e-6)


def test_a_stronger_ridge_shrinks_the_smoother_towards_zero():
    rng = np.random.default_rng(1)
    u = rng.uniform(size=(2000, 3))
    targets = rng.normal(size=(2000, 3))
    spread = []
    for penalty in (0.1, 100.0):
        base = SmoothBase(3, 3, 3, base_resolutions(6.0))
        base.solve(u, targets, penalty=penalty, decay=1.0)
        spread.append(float(base(torch.from_numpy(u).float()).std()))
    assert spread[1] < 0.5 * spread[0]


def test_the_blend_joins_the_prediction_in_eval_mode_only_and_survives_save_and_load(small, tmp_path):
    config = NTFConfig(network={"smooth_blend": 0.5}, selection={"enabled": False}, **QUICK)
    field = tl.fit(small, layer="lognorm", config=config, progress=False)
    network = field.network
    assert field.config.network.smooth_blend == 0.5 and field.info["smooth_base"]["blend"] == 0.5
    u = torch.rand(64, 3) * 0.6 + 0.2
    with torch.no_grad():
        blended = network(u)
        smooth = network.smooth_base(u)
        network.train()
        alone = network(u)  # training fits the network on its own
        network.eval()
    torch.testing.assert_close(blended, 0.5 * alone + 0.5 * smooth)
    assert (smooth - alone).abs().mean() > 1e-3
    # the latent carries the smoother too: decoding it is the prediction, and tl.domains' metric is exact
    assert field.latent(small.obsm["spatial_3d"][:5]).shape == (5, network.latent_width)
    assert network.latent_width == field.config.network.latent_dim + network.smooth_base.rank
    coords = small.obsm["spatial_3d"][:40]
    emb = latent_embedding(field, coords).astype(np.float64)
    pred = field.predict(coords).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(emb[:, None] - emb[None], axis=2),
                               np.linalg.norm(pred[:, None] - pred[None], axis=2), rtol=1e-3, atol=1e-3)
    field.save(tmp_path / "blended")
    loaded = NTFField.load(tmp_path / "blended")
    coords = small.obsm["spatial_3d"][:100]
    np.testing.assert_array_equal(loaded.predict(coords), field.predict(coords))


def test_selection_keeps_the_blend_with_the_lowest_heldout_loss(small):
    # the Gaussian process not raced (and, by default, not blended): the race chooses beta alone
    # (both: test_by_default_the_race_chooses_both_weights_by_heldout_loss below)
    config = NTFConfig(selection={"kernel_blends": []}, **QUICK)
    field = tl.fit(small, layer="lognorm", config=config, progress=False)
    chosen = next(row for row in field.info["resolution_selection"] if row["chosen"])
    losses = {float(w): v for w, v in chosen["blend_losses"].items()}
    assert sorted(losses) == [0.0, 0.25, 0.5, 0.75]
    assert chosen["smooth_blend"] == min(losses, key=losses.get)
    assert field.config.network.smooth_blend == chosen["smooth_blend"]
    assert ("smooth_base" in field.info) == (chosen["smooth_blend"] > 0)
    # no blends to try: the race's winner is refitted as before, without a smoother
    plain = tl.fit(small, layer="lognorm", config=NTFConfig(selection={"blends": []}, **QUICK), progress=False)
    assert plain.config.network.kernel_blend == 0.0
    assert plain.network.smooth_base is None and "smooth_blend" not in next(
        row for row in plain.info["resolution_selection"] if row["chosen"])


def test_a_blend_the_caller_sets_is_kept(small):
    config = NTFConfig(network={"smooth_blend": 0.25}, **QUICK)
    field = tl.fit(small, layer="lognorm", config=config, progress=False)
    assert "blend_losses" not in next(row for row in field.info["resolution_selection"] if row["chosen"])
    assert field.config.network.smooth_blend == 0.25 and field.network.smooth_base is not None


def test_count_losses_ignore_the_blend_with_a_warning_that_names_the_fix(small):
    counts = small.copy()
    counts.X = np.asarray(counts.layers["counts"] if "counts" in counts.layers else counts.X)
    config = NTFConfig(network={"smooth_blend": 0.5}, selection={"enabled": False}, **QUICK)
    with pytest.warns(UserWarning, match=r"smooth_blend and kernel_blend are ignored.*'poisson' loss.*loss='mse'"):
        field = tl.fit(counts, loss="poisson", config=config, progress=False)
    assert field.config.network.smooth_blend == 0.0 and field.network.smooth_base is None


def test_a_field_with_section_effects_is_blended_after_training(small):
    # the smoother is solved once the effects are learned, on the effect-free targets: no warning, and
    # training (with its early stopping) sees the network alone
    config = NTFConfig(network={"smooth_blend": 0.5, "section_effects": True}, selection={"enabled": False}, **QUICK)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        field = tl.fit(small, layer="lognorm", config=config, progress=False)
    assert field.config.network.smooth_blend == 0.5 and field.network.section_effects.n_sections > 0
    assert field.info["smooth_base"]["blend"] == 0.5
    assert any(getattr(field.network.smooth_base, f"values{k}").abs().sum() > 0
               for k in range(len(field.network.smooth_base.resolutions)))
    raced = tl.fit(small, layer="lognorm", config=NTFConfig(network={"section_effects": True}, **QUICK),
                   progress=False)
    assert "blend_losses" in next(row for row in raced.info["resolution_selection"] if row["chosen"])


@pytest.mark.parametrize("bad", [{"network": {"smooth_blend": 1.0}}, {"network": {"smooth_blend": -0.1}},
                                 {"network": {"smooth_base_penalty": 0.0}}, {"selection": {"blends": [0.5, 1.0]}}])
def test_out_of_range_blend_settings_are_refused(bad):
    with pytest.raises(ValueError, match="smooth_b|blends"):
        NTFConfig(**bad)


def test_two_sections_get_the_default_blend_where_the_smoother_applies(small):
    # two sections: nothing interior to hold out, so no race chooses the weight; the default one is used
    names = list(small.obs["section"].cat.categories)
    two = small[small.obs["section"].isin([names[2], names[5]])].copy()
    short = {"training": {"steps": 40, "batch_size": 256, "eval_every": 20}}
    field = tl.fit(two, layer="lognorm", config=NTFConfig(**short), progress=False)
    assert "resolution_selection" not in field.info
    assert field.config.network.smooth_blend == 0.25 and field.info["smooth_base"]["blend"] == 0.25
    # not where the caller fixed the settings, nor (quietly) where the smoother does not apply
    off = {"selection disabled": {"selection": {"enabled": False}}, "no blends": {"selection": {"blends": []}},
           "count loss": {"training": {"loss": "poisson"}}, "fixed grid": {"encoding": {"finest_resolution": 8.0}}}
    for name, settings in off.items():
        config = NTFConfig(**settings)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            assert blend_without_race(config, two, None) is config, name
    with_effects = blend_without_race(NTFConfig(network={"section_effects": True}), two, None)
    assert with_effects.network.smooth_blend == 0.25  # solved on the effect-free targets
    assert blend_without_race(NTFConfig(), two, "time") == NTFConfig()  # a time axis: stages do not interpolate
    assert blend_without_race(NTFConfig(), small, None) == NTFConfig()  # eight sections: the race chooses
    with pytest.raises(ValueError, match="blend_without_race"):
        NTFConfig(selection={"blend_without_race": 1.0})


# ---- the Gaussian-process partner ----------------------------------------------------------------
def _smooth_scores(u):
    return np.stack([np.sin(3 * u[:, 0]) + u[:, 2], np.cos(2 * u[:, 1]) * u[:, 2]], axis=1)


def test_the_posterior_mean_is_scikit_learns_with_the_fitted_kernel():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel
    from sklearn.gaussian_process.kernels import ConstantKernel as Constant

    rng = np.random.default_rng(0)
    u = rng.uniform(size=(250, 3))
    scores = _smooth_scores(u) + 0.1 * rng.normal(size=(250, 2))
    smoother = KernelSmoother(3, 2)
    info = smoother.solve(u, scores, max_cells=250, fit_cells=250)
    assert info["cells"] == info["fit_cells"] == 250 and len(info["length_scales"]) == 3
    kernel = (Constant(info["amplitude"], "fixed") * RBF(info["length_scales"], "fixed")
              + WhiteKernel(info["noise_level"], "fixed"))
    mean, std = scores.mean(0), scores.std(0)
    reference = GaussianProcessRegressor(kernel, optimizer=None).fit(u, (scores - mean) / std)
    new = rng.uniform(size=(100, 3))
    want = reference.predict(new) * std + mean
    got = smoother(torch.from_numpy(new).float()).numpy()
    np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max())


def _scikit_learn_gp(u, y, optimizer="fmin_l_bfgs_b"):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel
    from sklearn.gaussian_process.kernels import ConstantKernel as Constant

    kernel = Constant(1.0, (1e-3, 1e3)) * RBF(np.full(u.shape[1], 0.3), (1e-3, 1e2)) + WhiteKernel(0.1, (1e-5, 1e1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianProcessRegressor(kernel, optimizer=optimizer, random_state=0).fit(u, y)


def test_the_marginal_likelihood_and_its_gradient_are_scikit_learns():
    """The search's objective is scikit-learn's, computed with the columns summed first: the same
    value and gradient at the start, at the optimum and far from both, and the same optimum."""
    rng = np.random.default_rng(2)
    u = rng.uniform(size=(200, 3))
    y = np.column_stack([_smooth_scores(u), u[:, 0] * u[:, 1]]) + 0.2 * rng.normal(size=(200, 3))
    y = (y - y.mean(0)) / y.std(0)
    fitted = _scikit_learn_gp(u, y)
    unfitted = _scikit_learn_gp(u, y, optimizer=None)
    for theta in [unfitted.kernel_.theta, fitted.kernel_.theta, np.log([30.0, 0.01, 5.0, 0.2, 1e-4])]:
        want, want_gradient = unfitted.log_marginal_likelihood(theta, eval_gradient=True)
        got, gradient = negative_log_marginal_likelihood(theta, squared_differences(u), y)
        assert -got == pytest.approx(want, rel=1e-10)
        np.testing.assert_allclose(-gradient, want_gradient, rtol=1e-8, atol=1e-8 * np.abs(want_gradient).max())
    amplitude, lengths, noise = fit_hyperparameters(u, y)
    np.testing.assert_allclose(np.log([amplitude, *lengths, noise]), fitted.kernel_.theta, atol=1e-4)


def test_it_smooths_noise_away_and_fills_a_gap_between_sections():
    rng = np.random.default_rng(1)
    z = np.repeat([0.1, 0.3, 0.7, 0.9], 150)  # nothing measured between 0.3 and 0.7
    u = np.column_stack([rng.uniform(size=(600, 2)), z])
    smoother = KernelSmoother(3, 2)
    info = smoother.solve(u, _smooth_scores(u) + 0.3 * rng.normal(size=(600, 2)), fit_cells=300)
    assert info["fit_cells"] == 300 and info["cells"] == 600
    gap = np.column_stack([rng.uniform(0.1, 0.9, size=(300, 2)), np.full(300, 0.5)])
    error = smoother(torch.from_numpy(gap).float()).numpy() - _smooth_scores(gap)
    assert np.sqrt((error ** 2).mean()) < 0.5 * 0.3  # half the measurement noise, where nothing was measured


def test_forward_mode_derivatives_match_finite_differences():
    rng = np.random.default_rng(2)
    u = rng.uniform(size=(200, 3))
    smoother = KernelSmoother(3, 2)
    smoother.solve(u, _smooth_scores(u) + 0.1 * rng.normal(size=(200, 2)), fit_cells=200)
    smoother.double()
    at = torch.from_numpy(rng.uniform(0.2, 0.8, size=(20, 3)))
    step = torch.zeros_like(at)
    step[:, 1] = 1.0
    _, tangent = torch.func.jvp(smoother, (at,), (step,))
    numeric = (smoother(at + 1e-6 * step) - smoother(at - 1e-6 * step)) / 2e-6
    torch.testing.assert_close(tangent, numeric, rtol=1e-5, atol=1e-6)


def test_a_fit_blends_it_in_next_to_the_grid_smoother(small, tmp_path):
    # kernel_blends=[]: not raced, so the fixed kernel_blend joins even where the race chose beta = 0
    config = NTFConfig(selection={"kernel_blends": [], "kernel_blend": 0.25}, **QUICK)
    field = tl.fit(small, layer="lognorm", config=config, progress=False)
    beta, gamma = field.config.network.smooth_blend, field.config.network.kernel_blend
    assert gamma == 0.25 and field.info["smooth_base"]["kernel"]["cells"] == field.info["smooth_base"]["cells"]
    network = field.network
    base = network.smooth_base
    sections = base.section_lower.numpy()
    assert len(sections) == small.obs["section"].nunique() and base.reach_width > 0
    # points at the sections' z and points half-way between two of them
    u = torch.rand(64, 3) * 0.6 + 0.2
    u[:32, 2] = torch.from_numpy(sections[1:5]).repeat(8)
    u[32:, 2] = torch.from_numpy((sections[1:5] + sections[2:6]) / 2).repeat(8)
    reach = base.kernel_reach(u)
    assert torch.all(reach[:32] == 0) and torch.all(reach[32:] == 1)
    with torch.no_grad():
        blended = network(u)
        grids = base(u)
        kernel = base.kernel(u) @ base.axes.T
        network.train()
        alone = network(u)
        network.eval()
    plain = (1 - beta) * alone + beta * grids
    # at the measured sections the Gaussian process has no weight: the cells are not smoothed by it
    torch.testing.assert_close(blended[:32], plain[:32])
    torch.testing.assert_close(blended[32:], (1 - gamma) * plain[32:] + gamma * kernel[32:])
    # the latent decodes to the prediction, with the blend's varying share as one more column
    latent = network.latent(u)
    assert latent.shape[1] == network.latent_width == field.config.network.latent_dim + base.rank + 1
    torch.testing.assert_close(network.decode(latent), blended)
    field.save(tmp_path / "kernel")
    coords = small.obsm["spatial_3d"][:100]
    np.testing.assert_array_equal(NTFField.load(tmp_path / "kernel").predict(coords), field.predict(coords))


def test_the_race_scores_every_weight_pair_as_the_field_would_predict_with_it(small):
    # the race evaluates the network and the smoothers once and combines them per pair: the losses must be
    # those of the field's own forward pass with each pair set, section effects included
    from ntf_utils.model._train import InMemoryCells, evaluate_blend_losses, evaluate_loss

    config = NTFConfig(network={"smooth_blend": 0.5, "kernel_blend": 0.25, "section_effects": True},
                       selection={"enabled": False}, **QUICK)
    field = tl.fit(small, layer="lognorm", config=config, progress=False)
    network = field.network
    assert network.smooth_base.grids and network.smooth_base.kernel is not None
    generator = torch.Generator().manual_seed(0)
    n = 300
    cells = InMemoryCells(u=torch.rand(n, 3, generator=generator), target=torch.randn(n, small.n_vars, generator=generator),
                          section=torch.randint(-1, small.obs["section"].nunique(), (n,), generator=generator))
    assert network.section_effects.n_sections > 0 and (cells.section >= 0).any() and (cells.section < 0).any()
    pairs = [(beta, gamma) for beta in (0.0, 0.25, 0.75) for gamma in (0.0, 0.5)]
    fast = evaluate_blend_losses(network, field.config, cells, torch.device("cpu"), pairs, batch_size=128)
    for beta, gamma in pairs:
        network.smooth_blend, network.kernel_blend = beta, gamma
        one = evaluate_loss(network, field.config, cells, torch.device("cpu"), batch_size=128)
        assert fast[beta, gamma] == pytest.approx(one, rel=1e-5), (beta, gamma)
    assert len({round(v, 6) for v in fast.values()}) == len(pairs)  # the weights do change the loss


def test_by_default_the_race_chooses_both_weights_by_heldout_loss(small):
    field = tl.fit(small, layer="lognorm", config=NTFConfig(**QUICK), progress=False)
    chosen = next(row for row in field.info["resolution_selection"] if row["chosen"])
    losses = {tuple(map(float, pair.split(","))): v for pair, v in chosen["blend_losses"].items()}
    assert sorted(losses) == [(b, g) for b in (0.0, 0.25, 0.5, 0.75) for g in (0.0, 0.25, 0.5)]
    assert (chosen["smooth_blend"], chosen["kernel_blend"]) == min(losses, key=losses.get)
    assert field.config.network.kernel_blend == chosen["kernel_blend"]
    assert field.config.network.smooth_blend == chosen["smooth_blend"]


def test_it_is_off_where_the_caller_fixed_the_blend_or_turned_it_off(small):
    fixed = tl.fit(small, layer="lognorm", config=NTFConfig(network={"smooth_blend": 0.25}, **QUICK), progress=False)
    assert fixed.config.network.kernel_blend == 0.0 and fixed.network.smooth_base.kernel is None
    config = NTFConfig(selection={"kernel_blends": [], "kernel_blend": 0.0}, **QUICK)
    off = tl.fit(small, layer="lognorm", config=config, progress=False)
    assert off.config.network.kernel_blend == 0.0
    assert off.network.smooth_base is None or off.network.smooth_base.kernel is None
    with pytest.raises(ValueError, match="kernel_blend"):
        NTFConfig(selection={"kernel_blend": 1.0})
    with pytest.raises(ValueError, match="kernel_blend"):
        NTFConfig(network={"kernel_blend": -0.5})


def test_a_large_fit_solves_on_the_subsample_taken_before_copying(monkeypatch):
    """The pipeline takes the smoother's seeded subsample before it copies the targets (a 10^7-cell fit
    copied 3 GB for a solve that reads 50,000 cells): the same rows, so the same smoother, as a solve
    that subsamples by itself."""
    from ntf_utils.model import _smooth_base
    from ntf_utils.model._pipeline import solve_smooth_base
    from ntf_utils.model._train import InMemoryCells

    monkeypatch.setattr(_smooth_base, "MAX_SOLVE_CELLS", 300)
    rng = np.random.default_rng(4)
    u = rng.uniform(size=(900, 3))
    targets = np.column_stack([_smooth_scores(u), u[:, 1]]) + 0.1 * rng.normal(size=(900, 3))
    cells = InMemoryCells(torch.from_numpy(u).float(), torch.from_numpy(targets).float(), None, None, None)
    config = NTFConfig(network={"latent_dim": 2, "smooth_blend": 0.5})
    by_pipeline, by_itself = (SmoothBase(3, 3, 2, base_resolutions(8.0)) for _ in range(2))
    summary = solve_smooth_base(by_pipeline, cells, config, seed=7)
    by_itself.solve(cells.u.numpy(), cells.target.double().numpy(), penalty=1.0, decay=1.0, seed=7)
    assert summary["cells"] == 300
    for name, value in by_itself.state_dict().items():
        assert torch.equal(by_pipeline.state_dict()[name], value), name
