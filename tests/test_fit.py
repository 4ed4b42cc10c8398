"""tl.fit and NTFField: training, queries, persistence, resume, determinism and bad input."""

import json

import numpy as np
import pytest
import torch

from ntf_utils import NTFConfig, NTFField, pp, tl
from ntf_utils.datasets import synthetic_embryo

QUICK = NTFConfig(training={"steps": 150, "batch_size": 1024, "eval_every": 50, "checkpoint_every": 50})


@pytest.fixture(scope="module")
def small():
    adata = synthetic_embryo(n_sections=8, cells_per_section=250, n_genes=12, seed=3)
    pp.log_normalize(adata)
    return adata


@pytest.fixture(scope="module")
def field(small):
    return tl.fit(small, layer="lognorm", config=QUICK, progress=False)


def test_fit_learns_and_does_not_touch_input(small):
    before = small.copy()
    f = tl.fit(small, layer="lognorm", config=QUICK, progress=False, validation=False)
    assert f.history["loss"].iloc[-10:].mean() < 0.6 * f.history["loss"].iloc[:10].mean()
    assert set(small.layers.keys()) == set(before.layers.keys())
    np.testing.assert_array_equal(small.obsm["spatial_3d"], before.obsm["spatial_3d"])
    assert f.config.encoding.finest_resolution is not None and f.config.training.steps == 150


def test_predict_shapes_gene_subsets_and_units(field, small):
    coords = small.obsm["spatial_3d"][:50]
    full = field.predict(coords)
    assert full.shape == (50, small.n_vars) and full.dtype == np.float32
    genes = [small.var_names[3], small.var_names[0]]
    np.testing.assert_allclose(field.predict(coords, genes=genes), full[:, [3, 0]], rtol=1e-5, atol=1e-5)
    # chunking does not change the result
    np.testing.assert_allclose(field.predict(coords, batch_size=7), full, rtol=1e-5, atol=1e-6)
    # predictions live on the scale of the training values (log-normalised), not standardised units
    assert abs(full.mean() - small.layers["lognorm"].mean()) < 0.5
    with pytest.raises(KeyError, match="not in this field"):
        field.predict(coords, genes=["no_such_gene"])
    with pytest.raises(ValueError, match="2 columns"):
        field.predict(coords[:, :2])
    with pytest.raises(ValueError, match="NaN/inf"):
        field.predict(np.array([[0.0, np.nan, 1.0]]))


def test_denoise_slice_render(field, small):
    assert field.denoise(small, copy=True).layers["ntf"].shape == small.shape
    assert "ntf" not in small.layers
    z_mid = (small.obs["z"].min() + small.obs["z"].max()) / 2
    virtual = field.slice(z_mid, genes=list(small.var_names[:3]))
    assert virtual.n_obs > 50 and virtual.n_vars == 3
    np.testing.assert_allclose(virtual.obsm["spatial_3d"][:, 2], z_mid)
    # virtual spots stay inside the tissue's footprint
    lo, hi = small.obsm["spatial"].min(0), small.obsm["spatial"].max(0)
    assert (virtual.obsm["spatial"] >= lo - 1e-6).all() and (virtual.obsm["spatial"] <= hi + 1e-6).all()
    vol = field.render(16, genes=list(small.var_names[:2]))
    assert vol.values.shape[:3] == vol.mask.shape and vol.values.shape[3] == 2
    assert 0.05 < vol.mask.mean() < 0.95  # an ellipsoid fills part of its bounding box
    np.testing.assert_allclose(vol.values.reshape(-1, 2), field.predict(vol.coords(), list(small.var_names[:2])), atol=1e-5)
    with pytest.raises(MemoryError, match="GB"):
        field.render(4000, max_bytes=1e8)


def test_gradient_matches_finite_differences(field, small):
    coords = small.obsm["spatial_3d"][:20]
    gene = small.var_names[1]
    grad = field.gradient(coords, [gene])[:, 0, :]
    eps = np.array([1.0, 1.0, 1.0]) * 1e-2 * field.info["spacing"][0]
    fd = np.stack([(field.predict(coords + e, [gene]) - field.predict(coords - e, [gene]))[:, 0] / (2 * e.max())
                   for e in np.diag(eps)], 1)
    np.testing.assert_allclose(grad, fd, rtol=0.1, atol=1e-3 * np.abs(fd).max())


def test_save_load_roundtrip_is_exact(field, small, tmp_path):
    path = field.save(tmp_path / "field.ntf")
    loaded = NTFField.load(path)
    coords = small.obsm["spatial_3d"]
    np.testing.assert_array_equal(loaded.predict(coords), field.predict(coords))
    assert loaded.config == field.config and loaded.genes == field.genes
    assert len(loaded.history) == len(field.history)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_load_rejects_damaged_files(field, tmp_path):
    path = field.save(tmp_path / "f.ntf")
    data = path.read_bytes()
    (tmp_path / "trunc.ntf").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable"):
        NTFField.load(tmp_path / "trunc.ntf")
    (tmp_path / "junk.ntf").write_bytes(b"\x80\x04K\x01." * 10)  # a pickle, never unpickled
    with pytest.raises(ValueError):
        NTFField.load(tmp_path / "junk.ntf")
    with pytest.raises(FileNotFoundError):
        NTFField.load(tmp_path / "missing.ntf")


def test_same_seed_same_model_bitwise(small):
    a = tl.fit(small, layer="lognorm", config=QUICK, seed=5, progress=False)
    b = tl.fit(small, layer="lognorm", config=QUICK, seed=5, progress=False)
    c = tl.fit(small, layer="lognorm", config=QUICK, seed=6, progress=False)
    coords = small.obsm["spatial_3d"][:200]
    np.testing.assert_array_equal(a.predict(coords), b.predict(coords))
    assert not np.array_equal(a.predict(coords), c.predict(coords))


def test_resume_from_checkpoint_continues_the_same_run(small, tmp_path, monkeypatch):
    # with weight averaging on (from step 45), so that the running average is checkpointed and resumed too
    config = QUICK.replace(training={"average_from": 0.3})
    full = tl.fit(small, layer="lognorm", config=config, seed=1, progress=False)
    import ntf_utils.model._train as train_module

    real_lr_at = train_module.lr_at

    def crash_at_120(step, config):
        # in the final fit: the candidate fits of the resolution selection run first and checkpoint nothing
        if step == 120 and (ck / "resolution_selection.json").exists():
            raise KeyboardInterrupt("simulated interruption")
        return real_lr_at(step, config)

    ck = tmp_path / "run"
    monkeypatch.setattr(train_module, "lr_at", crash_at_120)
    with pytest.raises(KeyboardInterrupt):
        tl.fit(small, layer="lognorm", config=config, seed=1, progress=False, checkpoint_dir=ck)
    monkeypatch.setattr(train_module, "lr_at", real_lr_at)
    assert torch.load(ck / "training_checkpoint.pt", weights_only=True)["state"]["step"] == 100
    resumed = tl.fit(small, layer="lognorm", config=config, seed=1, progress=False, checkpoint_dir=ck)
    assert resumed.info["steps_run"] == 150
    assert resumed.info["resolution_selection"] == full.info["resolution_selection"]
    coords = small.obsm["spatial_3d"][:100]
    np.testing.assert_array_equal(resumed.predict(coords), full.predict(coords))
    # a different run in the same directory is an error, not a silent mix
    with pytest.raises(ValueError, match="different run"):
        tl.fit(small, layer="lognorm", config=config, seed=2, progress=False, checkpoint_dir=ck)


def test_a_fit_of_structureless_values_stops_patience_checks_after_its_best(small):
    """Values shuffled between cells (nothing spatial to learn): the held-out loss is lowest at an early
    check and rises as the grid memorises the training cells; the fit stops ``patience`` checks (the
    default, 4) after that check instead of training every step, and keeps the best check's weights."""
    noise = small.copy()
    values = np.asarray(noise.layers["lognorm"])
    noise.layers["lognorm"] = values[np.random.default_rng(0).permutation(noise.n_obs)]
    config = NTFConfig(selection={"enabled": False}, training={"steps": 400, "batch_size": 512, "eval_every": 25})
    field = tl.fit(noise, layer="lognorm", config=config, progress=False)
    info, training = field.info, field.config.training
    assert training.patience == 4
    assert info["stopped_early"], field.history.dropna(subset=["val_loss"])
    assert info["steps_run"] == info["best_step"] + training.patience * training.eval_every < training.steps
    checks = field.history.dropna(subset=["val_loss"]).set_index("step")["val_loss"]
    assert checks.idxmin() == info["best_step"] and info["best_validation_loss"] == pytest.approx(checks.min())


def test_kept_weights_average_the_checks_up_to_the_best_one(small):
    """``average_from``: the field keeps the mean of the weights at the validation checks from that
    fraction of the steps up to the best check (Polyak averaging inside the early-stopping window);
    ``None`` keeps the best check's weights alone."""
    from ntf_utils.model._pipeline import FitRun
    from ntf_utils.model._sources import AnnDataSource

    def checks(average_from):
        config = QUICK.replace(training={"steps": 200, "average_from": average_from, "patience": 100},
                               selection={"enabled": False})
        source = AnnDataSource(small, layer="lognorm", spatial_key="spatial_3d", time_key=None, loss="mse")
        run = FitRun(source, config, seed=0, progress=False)
        seen = {}
        for step in range(50, 201, 50):
            run.advance(step)
            seen[step] = {k: v.detach().clone() for k, v in run.network.state_dict().items()}
        field = run.finish()
        return seen, field.network.state_dict(), run.state

    seen, kept, state = checks(0.3)  # checks at 100, 150, 200 are averaged (60 steps = 0.3 of 200)
    window = [step for step in seen if 60 <= step <= state.best_step]
    assert len(window) >= 2, state.history  # measured: best check at step 200, window 100-200
    name = "decoder.weight"
    expected = torch.stack([seen[step][name] for step in window]).mean(0)
    torch.testing.assert_close(kept[name], expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(kept[name], seen[state.best_step][name])  # an average, not one of the checks
    seen, kept, state = checks(None)
    torch.testing.assert_close(kept[name], seen[state.best_step][name], rtol=0, atol=0)
    with pytest.raises(ValueError, match="average_from"):
        NTFConfig(training={"average_from": 1.5})


def test_count_losses_fit_counts(small):
    for loss in ("poisson", "nb"):
        f = tl.fit(small, layer="counts", loss=loss, config=QUICK, progress=False)
        pred = f.predict(small.obsm["spatial_3d"][:100])
        assert (pred >= 0).all() and np.isfinite(pred).all()
        # expected counts at the median library size: on the scale of the data's mean counts
        assert 0.3 < pred.mean() / small.layers["counts"].mean() < 3


@pytest.mark.parametrize(
    "mutate, kwargs, err, match",
    [
        (lambda a: a.obsm.__setitem__("spatial_3d", a.obsm["spatial_3d"][:, :2]), {}, ValueError, "2 columns"),
        (lambda a: a.obsm["spatial_3d"].__setitem__((0, 0), np.inf), {}, ValueError, "NaN/inf"),
        (lambda a: a.layers["lognorm"].__setitem__((0, 0), np.nan), {"layer": "lognorm"}, ValueError, "NaN/inf"),
        (lambda a: None, {"layer": "nope"}, KeyError, "layer 'nope' not found"),
        (lambda a: None, {"spatial_key": "xyz"}, KeyError, "obsm\\['xyz'\\] not found"),
        (lambda a: a.layers["lognorm"].__setitem__((0, 0), -1.0), {"layer": "lognorm", "loss": "poisson"}, ValueError,
         "negative"),
        (lambda a: None, {"loss": "gaussian"}, ValueError, "loss must be one of"),
    ],
)
def test_fit_bad_input_is_explained(small, mutate, kwargs, err, match):
    adata = small.copy()
    adata.obsm["spatial_3d"] = adata.obsm["spatial_3d"].copy()
    mutate(adata)
    kwargs = {"layer": "lognorm", **kwargs}
    with pytest.raises(err, match=match):
        tl.fit(adata, config=QUICK.replace(training={"steps": 2}), progress=False, **kwargs)


@pytest.mark.parametrize("cells_per_section", [500, 20_000])
def test_in_plane_spacing_is_measured_at_the_full_density(cells_per_section):
    """Dense sections get the spacing of all their cells, and a subsample (the atlas path) is scaled back.

    Uniform random cells on a 1000 x 1000 square: the median nearest-neighbour distance of a Poisson
    pattern is ``sqrt(ln 2 / pi) / sqrt(density)``.
    """
    from ntf_utils.model._coords import measure_sampling

    rng = np.random.default_rng(0)
    n = cells_per_section
    coords = np.c_[rng.random((3 * n, 2)) * 1000, np.repeat([0.0, 10.0, 20.0], n)]
    section = np.repeat(np.array(["a", "b", "c"]), n)
    theory = np.sqrt(np.log(2) / np.pi) * 1000 / np.sqrt(n)
    full = measure_sampling(coords, section).spacing
    assert full[0] == pytest.approx(theory, rel=0.05)
    assert full[2] == 10.0
    take = rng.random(3 * n) < min(1.0, 1500 / n)
    sub = measure_sampling(coords[take], section[take], full_counts={"a": n, "b": n, "c": n}).spacing
    assert sub[0] == pytest.approx(theory, rel=0.05)


def test_tissue_support_follows_time(tmp_path):
    """A growing body: at the first stage the tip of the last stage is outside the tissue; without a
    time the support is all stages together; the support (with its time column) survives save/load."""
    from ntf_utils.datasets import synthetic_timeseries

    adata = synthetic_timeseries(n_times=2, n_sections=4, cells_per_section=300, n_genes=6, seed=0)
    pp.log_normalize(adata)
    field = tl.fit(adata, layer="lognorm", time_key="time", steps=30, progress=False)
    coords = adata.obsm["spatial_3d"]
    time = adata.obs["time"].to_numpy()
    first, last = time.min(), time.max()
    # the cell of the last stage farthest along x, and one near the middle of the first stage
    tip = coords[time == last][np.argmax(coords[time == last][:, 0])]
    middle = coords[time == first][np.argmin(np.abs(coords[time == first][:, 0] - coords[time == first][:, 0].mean()))]
    points = np.vstack([tip, middle])
    assert field.inside(points, time=last).tolist() == [True, True]
    assert field.inside(points, time=first).tolist() == [False, True]
    assert field.inside(points).tolist() == [True, True]  # no time: any stage
    four = np.column_stack([points, [first, last]])
    assert field.inside(four).tolist() == [False, True]
    field.save(tmp_path / "f")
    loaded = NTFField.load(tmp_path / "f")
    assert loaded.inside(points, time=first).tolist() == [False, True]
    # a rendered volume at the first stage masks the tip region
    early = field.render(16, genes=[adata.var_names[0]], time=first).mask.sum()
    late = field.render(16, genes=[adata.var_names[0]], time=last).mask.sum()
    assert early < late


def test_a_field_saved_with_the_flat_config_of_version_0_1_still_loads(field, small, tmp_path):
    """Files written before the config was split into parts (format 1: one flat dict) load unchanged."""
    from ntf_utils.model import _checkpoint as ckpt

    parts = field.config.to_dict()
    flat = {**parts["encoding"], **parts["network"], **parts["training"], "extra": {},
            "select_resolution": True, "resolution_candidates": parts["selection"]["candidates"]}
    tensors = {f"network.{k}": v for k, v in field.network.state_dict().items()}
    tensors.update(gene_mean=torch.from_numpy(field.gene_mean), gene_std=torch.from_numpy(field.gene_std),
                   support=torch.from_numpy(field.support))
    metadata = {"config": flat, "transform": field.transform.to_dict(), "genes": field.genes,
                "n_input_dims": field.n_input_dims, "history": field.history.to_dict(orient="list"),
                "info": field.info}
    ckpt.save_field_file(tmp_path / "old.ntf", tensors, metadata)
    loaded = NTFField.load(tmp_path / "old.ntf")
    assert loaded.config.encoding == field.config.encoding and loaded.config.training == field.config.training
    assert loaded.config.selection.enabled is True
    coords = small.obsm["spatial_3d"]
    np.testing.assert_array_equal(loaded.predict(coords), field.predict(coords))
    with pytest.raises(ValueError, match="unknown NTFConfig field 'bogus'"):
        NTFConfig.from_dict({**flat, "bogus": 1})


def test_config_parts_round_trip_and_explain_bad_values():
    config = NTFConfig(encoding={"n_levels": 12}, training={"steps": 300, "loss": "nb"})
    assert config.encoding.n_levels == 12 and config.encoding.n_features_per_level == 2
    assert NTFConfig.from_dict(json.loads(config.to_json())) == config
    changed = config.replace(training={"lr": 3e-3})
    assert changed.training.lr == 3e-3 and changed.training.steps == 300 and config.training.lr == 1e-2
    for bad in ({"training": {"steps": 2.5}}, {"training": {"steps": "300"}}, {"training": {"steps": True}},
                {"network": {"latent_dim": 0}}, {"training": {"loss": "l1"}}):
        with pytest.raises(ValueError):
            NTFConfig(**bad)
    with pytest.raises(TypeError, match="parts"):
        config.replace(steps=3)
    with pytest.raises(ValueError, match="newer"):
        NTFConfig.from_dict({"format": 99})


def test_the_held_out_loss_reads_at_most_a_capped_number_of_cells(small, monkeypatch):
    """Large held-out sets are subsampled (seeded, in their order) for the held-out loss, and at most
    that many random cells are held out; small ones are used whole, as before."""
    from ntf_utils.model import _sources
    from ntf_utils.model._config import NTFConfig as Config

    monkeypatch.setattr(_sources, "MAX_VALIDATION_CELLS", 50)
    train, test = pp.split_sections(small, keep_fraction=0.5)
    capped = _sources.capped_validation(test)
    assert capped.n_obs == 50 and list(capped.obs_names) == [n for n in test.obs_names if n in set(capped.obs_names)]
    assert _sources.capped_validation(test).obs_names.equals(capped.obs_names)  # the same cells every time
    assert _sources.capped_validation(test[:50]).n_obs == 50 and _sources.capped_validation(False) is False
    source = _sources.AnnDataSource(train, layer="lognorm", spatial_key="spatial_3d", time_key=None, loss="mse")
    held = source.hold_out(Config(training={"validation_fraction": 0.5}), seed=0, validation=None)
    assert len(held) == 50 and len(source._train_rows) == train.n_obs - 50
    field = tl.fit(train, layer="lognorm", steps=30, validation=test, progress=False,
                   config=Config(selection={"enabled": False}))
    assert np.isfinite(field.info["best_validation_loss"])
