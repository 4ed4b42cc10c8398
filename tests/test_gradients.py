"""tl.gradients: exact autograd derivatives, recovery of known gradients on synthetic data."""

import numpy as np
import pytest

from ntf_utils import NTFConfig, datasets, tl

CONFIG = NTFConfig(training={"steps": 200, "batch_size": 1024})  # as the shared embryo fit of tests/conftest.py


@pytest.fixture(scope="module")
def tumour():
    return datasets.synthetic_tumour_proteomics(n_sections=8, cells_per_section=1500, seed=0)


@pytest.fixture(scope="module")
def tumour_field(tumour):
    return tl.fit(tumour, config=CONFIG, progress=False)


def _cosine(a, b):
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, 1e-12)


def test_matches_central_differences(embryo_field, embryo, rng):
    genes = ["g00_ap_ant", "g08_radial"]
    pts = embryo.obsm["spatial_3d"][rng.choice(embryo.n_obs, 300, replace=False)] + rng.normal(0, 3, (300, 3))
    grad = tl.gradients(embryo_field, pts, genes)
    assert grad.shape == (300, 2, 3) and grad.dtype == np.float32
    grad = grad.astype(np.float64)
    eps = 0.01  # original units; the finest grid cell is about 10-14 units here
    fd = np.stack(
        [(embryo_field.predict(pts + e, genes).astype(np.float64) - embryo_field.predict(pts - e, genes)) / (2 * eps) for e in np.eye(3) * eps],
        axis=-1,
    )
    rel = np.linalg.norm(fd - grad, axis=2) / np.maximum(np.linalg.norm(grad, axis=2), 1e-6)
    # the field is piecewise smooth (trilinear grid, ReLU MLP): a few points straddle a kink
    assert np.median(rel) < 0.01
    assert np.mean(rel < 0.05) > 0.9


def test_every_gene_at_once_gives_the_per_gene_derivatives(embryo_field, embryo, rng):
    """Many genes take forward mode (a pass per axis), a few take reverse mode (a pass per gene): same numbers."""
    from ntf_utils.model._field import FORWARD_MODE_GENES_PER_AXIS

    assert embryo_field.n_genes > FORWARD_MODE_GENES_PER_AXIS * 3  # so that the call below takes forward mode
    pts = embryo.obsm["spatial_3d"][rng.choice(embryo.n_obs, 200, replace=False)]
    every = tl.gradients(embryo_field, pts, list(embryo_field.genes))
    for gene in ["g00_ap_ant", "g08_radial", embryo_field.genes[-1]]:
        one = tl.gradients(embryo_field, pts, gene)
        j = list(embryo_field.genes).index(gene)
        np.testing.assert_allclose(every[:, j], one[:, 0], rtol=1e-4, atol=1e-5 * np.abs(one).max())


def test_recovers_true_gradient_direction(embryo_field, embryo):
    """Radial and left-right (z) gradient genes: mean cosine to the truth where the truth is strong.

    Measured (this data and CONFIG): cosine 0.88 (g08_radial), 0.85 (g06_lr), 0.85 (g16_lr) over the
    cells with the stronger half of the true gradient; over all cells 0.84, 0.78, 0.81.
    """
    coords = embryo.obsm["spatial_3d"]
    genes = ["g08_radial", "g06_lr", "g16_lr"]
    truth = datasets.synthetic_model(embryo).truth_gradient(coords)[:, [embryo.var_names.get_loc(g) for g in genes]]
    grad = tl.gradients(embryo_field, coords, genes)
    for j, gene in enumerate(genes):
        strength = np.linalg.norm(truth[:, j], axis=1)
        strong = strength >= np.median(strength)
        cos = _cosine(grad[strong, j], truth[strong, j]).mean()
        assert cos > 0.7, f"{gene}: mean cosine {cos:.3f}"


def test_anndata_output_copy_and_normalize(embryo_field, embryo):
    adata = embryo[:200].copy()
    out = tl.gradients(embryo_field, adata, ["g08_radial", "g00_ap_ant"], copy=True)
    assert "ntf_gradient_g08_radial" not in adata.obsm  # copy leaves the input alone
    vec = out.obsm["ntf_gradient_g08_radial"]
    assert vec.shape == (200, 3)
    np.testing.assert_allclose(out.obs["ntf_gradient_g08_radial_magnitude"], np.linalg.norm(vec, axis=1), rtol=1e-5)
    arr = tl.gradients(embryo_field, adata.obsm["spatial_3d"], "g08_radial")
    np.testing.assert_allclose(vec, arr[:, 0], rtol=1e-6)

    assert tl.gradients(embryo_field, adata, "g08_radial", normalize=True, key_added="g") is None
    unit = adata.obsm["g_g08_radial"]
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(unit, vec / np.linalg.norm(vec, axis=1, keepdims=True), rtol=1e-4, atol=1e-6)
    # magnitudes stay the raw norms
    np.testing.assert_allclose(adata.obs["g_g08_radial_magnitude"], np.linalg.norm(vec, axis=1), rtol=1e-5)
    tl.gradients(embryo_field, adata, "g00_ap_ant", key_added="g")
    assert adata.uns["ntf"]["g"]["genes"] == ["g08_radial", "g00_ap_ant"]
    assert adata.uns["ntf"]["g"]["normalized"] == {"g08_radial": True, "g00_ap_ant": False}


def test_bad_arguments(embryo_field, embryo):
    with pytest.raises(KeyError, match="not in this field"):
        tl.gradients(embryo_field, embryo.obsm["spatial_3d"][:5], ["nope"])
    with pytest.raises(ValueError, match="pass genes"):
        tl.gradients(embryo_field, embryo.obsm["spatial_3d"][:5], None)
    with pytest.raises(ValueError, match="shape"):
        tl.gradients(embryo_field, embryo.obsm["spatial_3d"][:5, :2], "g08_radial")
    with pytest.raises(ValueError, match="copy=True only applies"):
        tl.gradients(embryo_field, embryo.obsm["spatial_3d"][:5], "g08_radial", copy=True)


def test_tumour_markers_point_the_documented_way(tumour, tumour_field):
    """uns['ntf']['synthetic']['expected']: Ki-67 increases outward from the hypoxic core towards the front;
    E-cadherin decreases towards the invasive front and towards the hypoxic core.

    The truth says where each statement holds (checked below first). Measured with this data and
    CONFIG: Ki-67 gradient . outward > 0 at 99% (rho 0.3-0.5) / 93% (0.5-0.7) of cells; E-cadherin
    gradient . outward < 0 at 99% of cells with rho 0.7-0.95 and > 0 at 97% with rho 0.3-0.5.
    """
    expected = tumour.uns["ntf"]["synthetic"]["expected"]
    assert "increases outward" in expected["Ki-67"]
    assert "decreases towards the invasive front" in expected["E-cadherin"]
    model = datasets.synthetic_model(tumour)
    coords = tumour.obsm["spatial_3d"]
    rho, outward = model.rho(coords), model.outward(coords)
    markers = ["Ki-67", "E-cadherin"]
    truth = datasets.synthetic_tumour_truth_gradient(coords, tumour)[:, [tumour.var_names.get_loc(m) for m in markers]]
    grad = tl.gradients(tumour_field, coords, markers)
    along_truth = (truth * outward[:, None, :]).sum(-1)
    along = (grad * outward[:, None, :]).sum(-1)

    core_to_tumour = (rho > 0.3) & (rho < 0.65)
    towards_front = (rho > 0.7) & (rho < 0.95)
    near_core = (rho > 0.3) & (rho < 0.5)
    # where the documented statements hold in the truth
    assert (along_truth[core_to_tumour, 0] > 0).mean() > 0.95
    assert (along_truth[towards_front, 1] < 0).mean() > 0.95
    assert (along_truth[near_core, 1] > 0).mean() > 0.95
    # ... the fitted field agrees
    assert along[core_to_tumour, 0].mean() > 0 and (along[core_to_tumour, 0] > 0).mean() > 0.8
    assert along[towards_front, 1].mean() < 0 and (along[towards_front, 1] < 0).mean() > 0.85
    assert along[near_core, 1].mean() > 0 and (along[near_core, 1] > 0).mean() > 0.8
