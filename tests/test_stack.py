"""pp.stack_sections and pp.split_sections: shapes, gene alignment, and bad input."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from ntf_utils import pp


def _section(n=20, genes=("a", "b", "c"), seed=0, z=None):
    rng = np.random.default_rng(seed)
    a = ad.AnnData(X=rng.poisson(3, (n, len(genes))).astype(np.float32), var=pd.DataFrame(index=list(genes)))
    a.obs_names = [f"cell{i}" for i in range(n)]
    a.obsm["spatial"] = rng.random((n, 2)) * 100
    if z is not None:
        a.obs["depth"] = z
    return a


def test_stack_list_with_z_orders_sections_and_keeps_inputs():
    secs = [_section(seed=i) for i in range(3)]
    before = [s.copy() for s in secs]
    out = pp.stack_sections(secs, z=[20.0, 0.0, 10.0])
    assert out.obsm["spatial_3d"].shape == (60, 3)
    assert list(out.obs["section"].cat.categories) == ["s1", "s2", "s0"]  # ordered by z
    assert out.uns["ntf"]["sections"]["z"] == [0.0, 10.0, 20.0]
    np.testing.assert_array_equal(out.obsm["spatial_3d"][:20, 2], 20.0)
    assert out.obs_names.is_unique  # same cell names in every section are made unique
    for s, b in zip(secs, before):  # inputs untouched
        assert list(s.obs.columns) == list(b.obs.columns) and set(s.obsm.keys()) == set(b.obsm.keys())


def test_stack_intersects_genes_by_default_and_masks_outer_join():
    s1, s2 = _section(genes=("a", "b", "c")), _section(genes=("b", "c", "d"), seed=1)
    inner = pp.stack_sections([s1, s2], z=[0, 1])
    assert list(inner.var_names) == ["b", "c"]
    np.testing.assert_array_equal(inner.X[:20], s1[:, ["b", "c"]].X)
    outer = pp.stack_sections([s1, s2], z=[0, 1], join="outer")
    assert list(outer.var_names) == ["a", "b", "c", "d"]
    mask = outer.layers["ntf_mask"]
    assert mask[:20, 3].sum() == 0 and mask[20:, 0].sum() == 0 and mask[:20, :3].all()


def test_stack_single_anndata_with_z_column():
    a = _section(n=30)
    a.obs["zz"] = np.repeat([0.0, 5.0, 10.0], 10)
    out = pp.stack_sections(a, z_key="zz")
    assert out.obs["section"].nunique() == 3
    np.testing.assert_array_equal(out.obsm["spatial_3d"][:, 2], a.obs["zz"].to_numpy())
    assert "section" not in a.obs  # not mutated


def test_stack_z_from_obs_key_and_time():
    secs = [_section(seed=i, z=float(i)) for i in range(2)]
    secs += [_section(seed=5 + i, z=float(i)) for i in range(2)]
    for i, s in enumerate(secs):
        s.obs["stage"] = 1.0 if i < 2 else 2.0
    out = pp.stack_sections(secs, z_key="depth", time_key="stage")
    assert set(out.obs["time"]) == {1.0, 2.0}


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ([_section(), _section(seed=1)], None), "missing z"),
        (lambda: ([_section(), _section(seed=1)], [0, 0]), "same z"),
        (lambda: ([_section(), _section(genes=("x", "y"))], [0, 1]), "share no gene"),
        (lambda: ([_section(), _section(n=0)], [0, 1]), "empty"),
        (lambda: ([_section(), _section()], [0, np.nan]), "finite"),
        (lambda: ([_section(), _section()], [0, 1, 2]), "one value per section"),
        (lambda: ([_section(), _section()], ["a", "b"]), "must be numbers"),
    ],
)
def test_stack_bad_input_is_explained(make, match):
    sections, z = make()
    with pytest.raises(ValueError, match=match):
        pp.stack_sections(sections, z=z)


def test_stack_nan_coordinates_and_missing_key():
    s = _section()
    s.obsm["spatial"][3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        pp.stack_sections([s, _section()], z=[0, 1])
    with pytest.raises(KeyError, match="obsm\\['xy'\\] not found"):
        pp.stack_sections([_section(), _section()], z=[0, 1], spatial_key="xy")


def test_split_keep_fraction_keeps_ends_and_spacing():
    secs = [_section(n=5, seed=i) for i in range(20)]
    adata = pp.stack_sections(secs, z=np.arange(20) * 10.0)
    train, test = pp.split_sections(adata, keep_fraction=0.1)
    kept = sorted(set(train.obs["z"]))
    assert kept == [0.0, 190.0]  # 10% of 20 = 2 sections, the two ends
    train, test = pp.split_sections(adata, keep_fraction=0.25)
    assert len(set(train.obs["z"])) == 5 and test.n_obs + train.n_obs == adata.n_obs
    assert set(train.obs["section"]).isdisjoint(set(test.obs["section"]))


def test_split_holdout_by_name_z_and_count():
    adata = pp.stack_sections([_section(n=5, seed=i) for i in range(6)], z=np.arange(6.0))
    _, test = pp.split_sections(adata, holdout=["s2"])
    assert set(test.obs["section"]) == {"s2"}
    _, test = pp.split_sections(adata, holdout=[3.0])
    assert set(test.obs["section"]) == {"s3"}
    _, test = pp.split_sections(adata, holdout=2, seed=1)
    assert test.obs["section"].nunique() == 2 and not {"s0", "s5"} & set(test.obs["section"])
    with pytest.raises(KeyError, match="neither a section name nor a z"):
        pp.split_sections(adata, holdout=["nope"])


def test_obs_columns_of_some_sections_are_kept():
    a, b = _section(seed=0), _section(seed=1)
    a.obs["cell_type"] = "neuron"
    b.obs["score"] = 2.5
    out = pp.stack_sections([a, b], z=[0.0, 1.0])
    assert list(out.obs["cell_type"].iloc[: a.n_obs]) == ["neuron"] * a.n_obs
    assert out.obs["cell_type"].iloc[a.n_obs :].isna().all()
    assert (out.obs["score"].iloc[a.n_obs :] == 2.5).all() and out.obs["score"].iloc[: a.n_obs].isna().all()
    assert "score" not in a.obs and "cell_type" not in b.obs  # inputs untouched
