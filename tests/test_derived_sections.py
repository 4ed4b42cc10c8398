"""tl.fit on stacks without obs["section"]: sections derived from z (distinct values, or slabs)."""

import warnings

import numpy as np
import pytest

from ntf_utils import NTFConfig, pp, tl
from ntf_utils.datasets import synthetic_embryo
from ntf_utils.tl._sections import slabs

CONFIG = NTFConfig(training={"steps": 60, "batch_size": 512, "eval_every": 20})


@pytest.fixture(scope="module")
def stack():
    adata = synthetic_embryo(n_sections=8, cells_per_section=250, n_genes=12, seed=3)
    pp.log_normalize(adata)
    return adata


def test_an_unlabelled_stack_is_fitted_as_the_labelled_one(stack):
    """Each distinct z is a section: the race runs and the field is the labelled fit's to the bit; the
    caller's AnnData is not given the labels."""
    labelled = tl.fit(stack, layer="lognorm", config=CONFIG, progress=False)
    bare = stack.copy()
    del bare.obs["section"]
    with pytest.warns(UserWarning, match=r"8 distinct z values are taken as 8 sections .*obs\['section'\]"):
        derived = tl.fit(bare, layer="lognorm", config=CONFIG, progress=False)
    assert "section" not in bare.obs
    assert derived.info["derived_sections"] == {"from": "z values", "n_sections": 8}
    assert "derived_sections" not in labelled.info
    assert derived.info["resolution_selection"] == labelled.info["resolution_selection"]
    coords = stack.obsm["spatial_3d"][::7]
    np.testing.assert_array_equal(derived.predict(coords), labelled.predict(coords))
    np.testing.assert_array_equal(derived.denoise(bare, copy=True).layers["ntf"],
                                  labelled.denoise(stack, copy=True).layers["ntf"])


def test_a_continuous_cloud_races_on_slabs_without_section_effects(stack):
    """Cells spread through z (no two share it): slabs of equal cell count stand in for sections, so
    the resolution race runs, and they get no section effects (they are not measured apart)."""
    cloud = stack.copy()
    del cloud.obs["section"]
    rng = np.random.default_rng(0)
    gap = float(np.diff(np.unique(stack.obsm["spatial_3d"][:, 2])).min())
    cloud.obsm["spatial_3d"] = cloud.obsm["spatial_3d"].copy()
    cloud.obsm["spatial_3d"][:, 2] += rng.uniform(-0.45, 0.45, cloud.n_obs) * gap
    with pytest.warns(UserWarning, match="z is continuous: .* on 16 slabs along z"):
        field = tl.fit(cloud, layer="lognorm", config=CONFIG, progress=False)
    assert field.info["derived_sections"] == {"from": "slabs", "n_sections": 16}
    assert len(field.info["resolution_selection"]) >= 2
    assert field.config.network.section_effects is False
    assert field.network.section_effects.n_sections == 0
    assert np.isfinite(field.predict(cloud.obsm["spatial_3d"][:50])).all()
    # asked for section effects, the caller gets them on the slabs
    with pytest.warns(UserWarning, match="slabs"):
        on = tl.fit(cloud, layer="lognorm", config=CONFIG.replace(network={"section_effects": True},
                                                                  selection={"enabled": False}), progress=False)
    assert on.network.section_effects.n_sections == 16


def test_labelled_stacks_and_tiny_clouds_are_left_alone(stack):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning about sections for a labelled stack
        field = tl.fit(stack, layer="lognorm", config=CONFIG.replace(selection={"enabled": False}), progress=False)
    assert "derived_sections" not in field.info
    tiny = stack[:50].copy()
    del tiny.obs["section"]
    tiny.obsm["spatial_3d"] = tiny.obsm["spatial_3d"] + np.linspace(0, 1e-3, 50)[:, None]  # 50 distinct z
    field = tl.fit(tiny, layer="lognorm", config=CONFIG, progress=False)  # two slabs of 20 cells at most: none
    assert "derived_sections" not in field.info


def test_slabs_end_where_the_data_have_gaps():
    """A cloud with a gap in z (slabs of tissue left out): slabs end at the gap, each part gets slabs in
    proportion to its cells, and a stray cell far away is not a slab of its own."""
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.uniform(0, 10, 300), rng.uniform(20, 30, 300), [100.0]])
    labels, n = slabs(z, 6)
    assert n == 6
    assert set(labels[:300]) == {0, 1, 2} and set(labels[300:600]) == {3, 4, 5} and labels[-1] == 5
    assert np.bincount(labels).min() >= 99
    order = np.argsort(z)
    assert (np.diff(labels[order]) >= 0).all()  # numbered by z
    labels, n = slabs(rng.uniform(0, 1, 1000), 16)  # no gap: equal counts
    assert n == 16 and set(np.bincount(labels)) <= {62, 63}
