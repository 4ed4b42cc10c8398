"""Per-section technical effects: the module's algebra, the fit, the field's API and persistence."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ntf_utils as ntf
from ntf_utils.model import _checkpoint as ckpt
from ntf_utils.model._pipeline import effect_free_targets
from ntf_utils.model._section_effects import REFERENCE, SectionEffects, section_codes
from ntf_utils.model._train import section_gap

# section effects on, no resolution selection: the fit these tests check
EFFECTS = ntf.NTFConfig(network={"section_effects": True}, selection={"enabled": False})


def _random_effects(n_sections=5, n_genes=7, z=None, degree=0, seed=0):
    effects = SectionEffects(n_sections, n_genes, np.arange(n_sections) * 2.0 if z is None else z, degree)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        effects.offset.copy_(torch.randn(n_sections, n_genes, generator=gen))
        effects.log_scale.copy_(torch.randn(n_sections, n_genes, generator=gen))
    return effects


@pytest.mark.parametrize("degree", [0, 1, 2])
def test_effects_hold_no_trend_along_z(degree):
    """Centred effects are orthogonal to every polynomial in section z up to the degree."""
    z = np.array([0.0, 1.0, 2.5, 4.0, 7.0, 8.0])
    offset, log_scale = _random_effects(6, 5, z, degree).centred()
    t = torch.from_numpy((z - z.mean()) / np.ptp(z)).float()
    for power in range(degree + 1):
        for effect in (offset, log_scale):
            assert torch.allclose((t**power) @ effect, torch.zeros(5), atol=1e-5)
    if degree < 2:  # the next power is not removed: random effects keep a component along it
        assert (t ** (degree + 1) @ offset).abs().max() > 1e-3


def test_trend_degree_leaves_every_effect_a_degree_of_freedom():
    """Three sections and degree 2 would remove everything: the degree is capped at n_sections - 2."""
    offset, _ = _random_effects(3, 4, np.array([0.0, 1.0, 2.0]), degree=2).centred()
    assert offset.abs().max() > 1e-3
    assert torch.allclose(offset.sum(0), torch.zeros(4), atol=1e-5)


def test_reference_rows_are_unchanged_and_measured_rows_get_their_section():
    effects = _random_effects()
    out, level = torch.randn(4, 7), torch.randn(7)
    section = torch.tensor([REFERENCE, 0, 3, REFERENCE])
    y = effects.apply(out, level, section)
    assert torch.equal(y[[0, 3]], out[[0, 3]])
    offset, log_scale = effects.centred()
    expected = level + (out[2] - level) * torch.exp(log_scale[3]) + offset[3]
    assert torch.allclose(y[2], expected)
    # a gene subset decodes the same columns
    genes = torch.tensor([5, 1])
    assert torch.allclose(effects.apply(out[:, genes], level[genes], section, genes), y[:, genes])


def test_section_codes_map_unknown_sections_to_the_reference():
    codes = section_codes(np.array(["b", "a", "z", "b"]), ["a", "b"])
    assert codes.tolist() == [1, 0, REFERENCE, 1]
    assert section_codes(None, ["a"]) is None


@pytest.fixture(scope="module")
def stack():
    adata = ntf.datasets.synthetic_embryo(n_sections=6, cells_per_section=120, n_genes=8, seed=3)
    ntf.pp.log_normalize(adata)
    return adata


@pytest.fixture(scope="module")
def field(stack):
    return ntf.tl.fit(stack, layer="lognorm", steps=60, seed=0, progress=False, config=EFFECTS)


def test_without_a_z_prior_the_default_fit_has_no_section_effects(stack):
    """``section_effects=None`` turns them on only with the z prior (``section_psf``), as the selection decides."""
    plain = ntf.tl.fit(stack, layer="lognorm", steps=10, seed=0, progress=False,
                       config=ntf.NTFConfig(selection={"enabled": False}))
    assert plain.sections == [] and plain.config.network.section_effects is False
    prior = ntf.tl.fit(stack, layer="lognorm", steps=10, seed=0, progress=False,
                       config=ntf.NTFConfig(selection={"enabled": False}, training={"section_psf": 1.0}))
    assert len(prior.sections) == 6
    sparse = ntf.tl.fit(stack, layer="lognorm", steps=10, seed=0, progress=False,
                        config=ntf.NTFConfig(selection={"enabled": False}, training={"section_sparsity": 0.03}))
    assert len(sparse.sections) == 6


def test_the_sparsity_prior_without_section_effects_is_ignored_with_a_warning(stack):
    config = ntf.NTFConfig(selection={"enabled": False}, network={"section_effects": False},
                           training={"section_sparsity": 0.03})
    with pytest.warns(UserWarning, match="section_sparsity.*section_effects=False"):
        f = ntf.tl.fit(stack, layer="lognorm", steps=5, seed=0, progress=False, config=config)
    assert f.sections == []
    unlabelled = _one_unlabelled_plane(stack)
    with pytest.warns(UserWarning, match="section_sparsity.*0 labelled section"):
        ntf.tl.fit(unlabelled, layer="lognorm", steps=5, seed=0, progress=False,
                   config=config.replace(network={"section_effects": None}))


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_one_section_gap_in_the_unit_cube_is_the_distance_between_sections(stack, scale):
    """The sparsity prior moves cells by ``section_gap`` (and ``section_psf`` counts in it): one gap, at any grid."""
    f = ntf.tl.fit(stack, layer="lognorm", steps=2, seed=0, progress=False,
                   config=ntf.NTFConfig(selection={"enabled": False}, encoding={"resolution_scale": scale}))
    z = np.unique(stack.obsm["spatial_3d"][:, 2])
    unit = f.transform.to_unit(np.column_stack([np.zeros((len(z), 2)), z]))
    np.testing.assert_allclose(np.diff(unit[:, 2]), section_gap(f.config), rtol=1e-5)


def _change_between_sections(f, adata) -> float:
    """Mean absolute change of the effect-free field over one section gap along z, at the cells."""
    coords = adata.obsm["spatial_3d"]
    gap = np.median(np.diff(np.unique(coords[:, 2])))
    moved = coords.copy()
    moved[:, 2] += gap
    inside = moved[:, 2] <= coords[:, 2].max()
    return float(np.abs(f.predict(coords[inside]) - f.predict(moved[inside])).mean())


def test_the_sparsity_prior_moves_section_wide_shifts_from_the_field_into_the_effects(stack):
    """``section_sparsity``: an L1 price on the field's change between neighbouring sections.

    A shift of a whole section then costs less as the section's effect than as tissue: the field
    changes less from one section to the next and the effects are larger than without the prior.
    """
    config = EFFECTS.replace(network={"section_trend_degree": 0})
    free = ntf.tl.fit(stack, layer="lognorm", steps=150, seed=0, progress=False, config=config)
    sparse = ntf.tl.fit(stack, layer="lognorm", steps=150, seed=0, progress=False,
                        config=config.replace(training={"section_sparsity": 0.3}))
    assert _change_between_sections(sparse, stack) < 0.8 * _change_between_sections(free, stack)
    size = {name: float(np.abs(f.section_effects()["offset"]).mean()) for name, f in [("free", free), ("sparse", sparse)]}
    assert size["sparse"] > 1.1 * size["free"], size


def test_fit_learns_effects_per_section_and_predicts_effect_free_by_default(field, stack):
    assert field.config.network.section_effects is True
    assert field.sections == sorted(stack.obs["section"].astype(str).unique())
    table = field.section_effects()
    assert len(table) == len(field.sections) * field.n_genes
    assert np.abs(table["offset"]).max() > 0  # trained away from zero
    assert np.allclose(table.groupby("gene")["offset"].sum(), 0, atol=1e-4)  # centred over sections
    coords = stack.obsm["spatial_3d"][:20]
    free = field.predict(coords)
    with_effect = field.predict(coords, section=field.sections[1])
    assert not np.allclose(free, with_effect)
    assert np.array_equal(field.predict(coords, section=[field.sections[1]] * 20), with_effect)
    with pytest.raises(KeyError, match="no learned effect"):
        field.predict(coords, section="not a section")


def test_denoise_adds_each_cells_section_effect_only_when_asked(field, stack):
    plain = field.denoise(stack, copy=True)
    measured = field.denoise(stack, section_effects=True, copy=True)
    expected = field.predict(stack.obsm["spatial_3d"], section=stack.obs["section"].astype(str).to_numpy())
    assert np.array_equal(measured.layers["ntf"], expected)
    assert np.array_equal(plain.layers["ntf"], field.predict(stack.obsm["spatial_3d"]))
    no_sections = stack.copy()
    del no_sections.obs["section"]
    with pytest.raises(ValueError, match="obs\\['section'\\]"):
        field.denoise(no_sections, section_effects=True)


def test_effects_survive_save_and_load(field, stack, tmp_path):
    path = field.save(tmp_path / "f.ntf")
    loaded = ntf.NTFField.load(path)
    coords = stack.obsm["spatial_3d"][:30]
    section = field.sections[2]
    assert np.array_equal(loaded.predict(coords, section=section), field.predict(coords, section=section))
    assert loaded.section_effects().equals(field.section_effects())


def test_a_field_saved_before_section_effects_still_loads(field, stack, tmp_path):
    """Files of ntf_utils <= 0.2 hold no section-effect tensors and no section list."""
    path = field.save(tmp_path / "new.ntf")
    tensors, meta = ckpt.load_field_file(path)
    old_tensors = {k: v for k, v in tensors.items() if "section_effects" not in k}
    meta["info"] = {k: v for k, v in meta["info"].items() if k not in ("sections", "sections_z")}
    ckpt.save_field_file(tmp_path / "old.ntf", old_tensors, meta)
    loaded = ntf.NTFField.load(tmp_path / "old.ntf")
    assert loaded.sections == [] and loaded.section_effects().empty
    assert np.array_equal(loaded.predict(stack.obsm["spatial_3d"][:10]), field.predict(stack.obsm["spatial_3d"][:10]))


def test_held_out_sections_are_validated_at_the_reference_level(stack):
    train, test = ntf.pp.split_sections(stack, holdout=["s02"])
    f = ntf.tl.fit(train, layer="lognorm", steps=20, seed=0, progress=False, validation=test, config=EFFECTS)
    assert "s02" not in f.sections and len(f.sections) == 5


@pytest.mark.parametrize(("loss", "sparsity"), [("poisson", 0.0), ("nb", 0.03)])
def test_count_losses_learn_capture_efficiency_as_log_rate_offsets(stack, loss, sparsity):
    config = EFFECTS.replace(training={"section_sparsity": sparsity})
    f = ntf.tl.fit(stack, loss=loss, steps=30, seed=0, progress=False, config=config)
    assert len(f.sections) == 6 and f.section_effects()["offset"].abs().max() > 0
    counts = f.predict(stack.obsm["spatial_3d"][:5], section=f.sections[0])
    assert np.all(counts > 0)  # expected counts of that section


@pytest.mark.parametrize("sparsity", [0.0, 0.03])
def test_time_axis_with_section_effects(sparsity):
    series = ntf.datasets.synthetic_timeseries(n_times=2, n_sections=4, cells_per_section=80, n_genes=6, seed=0)
    ntf.pp.log_normalize(series)
    config = EFFECTS.replace(training={"section_sparsity": sparsity})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = ntf.tl.fit(series, layer="lognorm", time_key="time", steps=20, seed=0, progress=False, config=config)
    assert len(f.sections) == series.obs["section"].nunique() >= 2
    stage = float(series.obs["time"].iloc[0])
    assert f.predict(series.obsm["spatial_3d"][:4], time=stage, section=f.sections[0]).shape == (4, 6)


def test_effects_can_be_switched_off_and_need_sections_when_forced(stack):
    off = ntf.tl.fit(stack, layer="lognorm", steps=10, seed=0, progress=False,
                     config=ntf.NTFConfig(network={"section_effects": False}, selection={"enabled": False}))
    assert off.sections == [] and off.section_effects().empty
    unlabelled = _one_unlabelled_plane(stack)  # (an unlabelled stack of several z gets sections from its z)
    with pytest.raises(ValueError, match="at least two labelled sections"):
        ntf.tl.fit(unlabelled, layer="lognorm", steps=10, progress=False,
                   config=ntf.NTFConfig(network={"section_effects": True}))


def test_raw_counts_sent_to_mse_warn_with_the_fix(stack):
    with pytest.warns(UserWarning, match="raw counts.*log_normalize"):
        ntf.tl.fit(stack, steps=5, seed=0, progress=False, config=ntf.NTFConfig(selection={"enabled": False}))


def test_section_effect_heatmap(field):
    fig = ntf.pl.section_effects(field, n_genes=5)
    heat = fig.data[0]
    assert np.asarray(heat.z).shape == (len(field.sections), 5)
    assert list(heat.y) == field.sections  # synthetic sections are named in z order
    chosen = ntf.pl.section_effects(field, genes=[field.genes[0]], kind="scale")
    assert list(chosen.data[0].x) == [field.genes[0]]
    with pytest.raises(ValueError, match="kind"):
        ntf.pl.section_effects(field, kind="nope")


def _replicated_section_with_effects(n_copies=6, seed=1):
    """One section measured ``n_copies`` times at different z, each copy with its own known effects.

    Every copy holds the same tissue, so any difference between them is technical: the effects are
    identifiable, and a correct model must find them.
    """
    import anndata as ad

    base = ntf.datasets.synthetic_embryo(n_sections=3, cells_per_section=400, n_genes=12, seed=0)
    middle = base[base.obs["section"] == "s01"]
    copies = []
    for k in range(n_copies):
        part = middle.copy()
        part.obs["section"] = f"r{k}"
        part.obs_names = [f"{name}_{k}" for name in part.obs_names]
        part.obsm["spatial_3d"] = np.column_stack([part.obsm["spatial_3d"][:, :2], np.full(part.n_obs, 10.0 * k)])
        copies.append(part)
    stack = ad.concat(copies)
    stack.obs["section"] = stack.obs["section"].astype("category")
    dirty = ntf.datasets.inject_section_effects(stack, ambient=0.0, resample=True, seed=seed)
    ntf.pp.log_normalize(dirty)
    return dirty


@pytest.mark.parametrize("loss", ["mse", "poisson"])
def test_known_effects_are_recovered_when_the_sections_hold_the_same_tissue(loss):
    dirty = _replicated_section_with_effects()
    kwargs = {"layer": "lognorm"} if loss == "mse" else {"loss": loss}
    # degree 0: every part of the effects may be technical (the default 2 would leave their quadratic
    # trend along z to the field, where it is indistinguishable from tissue that changes with depth)
    config = EFFECTS.replace(network={"section_trend_degree": 0})
    f = ntf.tl.fit(dirty, steps=400, seed=0, progress=False, config=config, **kwargs)
    injected = np.asarray(dirty.uns["ntf"]["section_effects"]["log_efficiency"])
    table = f.section_effects().pivot(index="section", columns="gene", values="offset")[list(dirty.var_names)]
    learned = table.to_numpy() * (f.gene_std[None, :] if loss == "mse" else 1.0)  # in log-expression units
    # library-size normalisation removes each section's mean effect over genes: compare what is left
    injected = injected - injected.mean(0)
    injected -= injected.mean(1, keepdims=True)
    learned = learned - learned.mean(1, keepdims=True)
    assert np.corrcoef(injected.ravel(), learned.ravel())[0, 1] >= 0.9
    # and the effect-free field is the same tissue at every depth
    coords = dirty.obsm["spatial_3d"][dirty.obs["section"] == "r0"]
    shifted = coords.copy()
    shifted[:, 2] = 50.0
    near = np.corrcoef(f.predict(coords).ravel(), f.predict(shifted).ravel())[0, 1]
    assert near > 0.95


def test_effect_free_targets_invert_the_effects_of_each_cells_section():
    effects = _random_effects(n_sections=4, n_genes=5, degree=1, seed=3)
    network = SimpleNamespace(section_effects=effects, decoder=torch.nn.Linear(2, 5))
    free = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    section = torch.tensor([-1, 0, 1, 2, 3] * 6)
    with torch.no_grad():
        measured = effects.apply(free, network.decoder.bias, section)
    recovered = effect_free_targets(measured.numpy(), section, network)
    assert np.allclose(recovered, free.numpy(), atol=1e-5)
    assert np.array_equal(recovered[section == -1], measured.numpy()[section == -1])  # no section: as given
    as_given = measured.numpy()
    assert effect_free_targets(as_given, None, network) is as_given  # cells without section codes


def test_a_blended_field_keeps_the_section_effects_out_of_its_smoother():
    # the smoother is solved on the effect-free targets: the same tissue at every depth, as the network
    dirty = _replicated_section_with_effects()
    config = EFFECTS.replace(network={"section_trend_degree": 0, "smooth_blend": 0.5})
    f = ntf.tl.fit(dirty, layer="lognorm", steps=400, seed=0, progress=False, config=config)
    coords = dirty.obsm["spatial_3d"][dirty.obs["section"] == "r0"]
    shifted = coords.copy()
    shifted[:, 2] = 50.0
    base = f.network.smooth_base
    scores = [base(torch.as_tensor(f.transform.to_unit(c), dtype=torch.float32)).numpy() for c in (coords, shifted)]
    assert np.corrcoef(scores[0].ravel(), scores[1].ravel())[0, 1] > 0.95
    assert np.corrcoef(f.predict(coords).ravel(), f.predict(shifted).ravel())[0, 1] > 0.95


def test_her2st_domains_are_tissue_not_sections():
    """The tutorial's workflow on HER2ST patient A (shipped subset): domains span the sections.

    Without section effects the field's Leiden domains were the six sections (NMI with the section
    labels ~0.9). With notebook 06's fit (section effects and ``section_sparsity=0.03``) they must be
    nearly independent of them (NMI <= 0.10) and agree with the authors' expression clusters at least
    as well as plain scanpy PCA + Leiden on the same spots (ARI 0.044). Measured at ``steps=400``,
    training seeds 0-3: NMI 0.002 / 0.019 / 0.016 / 0.019, ARI 0.198 / 0.196 / 0.194 / 0.230. With
    effects alone (no sparsity) one seed in four misses: NMI 0.129 / 0.007 / 0.027 / 0.048.
    """
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sections = ntf.datasets.her2st("A", source="shipped")
        sections = [a[np.asarray(a.X.sum(axis=1)).ravel() >= 20].copy() for a in sections]
        tumour = ntf.pp.stack_sections(ntf.pp.align_sections(sections, random_state=0, copy=True),
                                       z=np.arange(len(sections)))
    ntf.pp.log_normalize(tumour)
    config = ntf.NTFConfig(network={"section_effects": True}, training={"section_sparsity": 0.03})  # notebook 06
    field = ntf.tl.fit(tumour, layer="lognorm", steps=400, seed=0, progress=False, config=config)
    ntf.tl.domains(field, tumour, method="leiden", resolution=0.2, seed=0)
    measured = sc.AnnData(tumour.layers["lognorm"].copy())
    sc.pp.pca(measured, n_comps=30, random_state=0)
    sc.pp.neighbors(measured, random_state=0)
    sc.tl.leiden(measured, resolution=0.2, random_state=0, flavor="igraph", n_iterations=2, directed=False)
    published = tumour.obs["cluster"].astype(str)
    nmi_sections = normalized_mutual_info_score(tumour.obs["section"], tumour.obs["ntf_domain"])
    assert nmi_sections <= 0.10, (nmi_sections, field.info["resolution_selection"])
    assert adjusted_rand_score(published, tumour.obs["ntf_domain"]) >= adjusted_rand_score(published, measured.obs["leiden"])


def test_inject_section_effects_records_the_truth_and_leaves_the_caller_alone(stack):
    raw = ntf.datasets.synthetic_embryo(n_sections=4, cells_per_section=50, n_genes=6, seed=2)
    before = raw.X.copy()
    dirty = ntf.datasets.inject_section_effects(raw, efficiency=(0.5, 2.0), n_groups=2, ambient=0.0, seed=3)
    assert np.array_equal(raw.X, before) and "section_effects" not in raw.uns["ntf"]  # copy=True by default
    truth = dirty.uns["ntf"]["section_effects"]
    log_eff = np.asarray(truth["log_efficiency"])
    assert log_eff.shape == (4, 6) and np.all(np.abs(log_eff) <= np.log(2.0) + 1e-12)
    assert np.allclose(log_eff[:, 0], log_eff[:, 2])  # genes 0 and 2 share a group
    code = raw.obs["section"].astype(str).map({s: i for i, s in enumerate(truth["sections"])}).to_numpy()
    assert np.allclose(dirty.X, before * np.exp(log_eff[code]), rtol=1e-5)  # no ambient, no resampling
    assert np.array_equal(dirty.layers["truth"], raw.layers["truth"])
    counts = ntf.datasets.inject_section_effects(raw, resample=True, seed=3).X
    assert np.array_equal(counts, np.round(counts))
    with pytest.raises(ValueError, match="efficiency"):
        ntf.datasets.inject_section_effects(raw, efficiency=(2.0, 0.5))
    no_sections = raw.copy()
    del no_sections.obs["section"]
    with pytest.raises(KeyError, match="stack_sections"):
        ntf.datasets.inject_section_effects(no_sections)


def test_one_section_label_per_point_must_match_the_points(field, stack):
    with pytest.raises(ValueError, match="one name or one per point"):
        field.predict(stack.obsm["spatial_3d"][:5], section=[field.sections[0]] * 3)


def _one_unlabelled_plane(stack):
    """``stack`` without ``obs["section"]`` and with every cell at one z: no sections can be derived."""
    plane = stack.copy()
    del plane.obs["section"]
    plane.obsm["spatial_3d"] = plane.obsm["spatial_3d"].copy()
    plane.obsm["spatial_3d"][:, 2] = 0.0
    return plane
