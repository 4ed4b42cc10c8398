"""Each silent surprise of issue #16 now warns or fails with a message that names the fix."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import ntf_utils as ntf

FAST = ntf.NTFConfig(training={"steps": 3, "batch_size": 64}, selection={"enabled": False})


def _section(genes, seed=0, n=40, var=None) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    a = ad.AnnData(rng.poisson(6, (n, len(genes))).astype(np.float32), var=pd.DataFrame(var, index=list(genes)))
    a.obsm["spatial"] = rng.uniform(0, 10, (n, 2))
    return a


@pytest.fixture(scope="module")
def counts():
    """Three sections of raw counts (values up to >= 10), stacked."""
    genes = [f"g{i}" for i in range(6)]
    return ntf.pp.stack_sections([_section(genes, seed=s) for s in range(3)], z=[0.0, 1.0, 2.0])


@pytest.fixture(scope="module")
def lognorm(counts):
    adata = counts.copy()
    ntf.pp.log_normalize(adata)
    return adata


@pytest.fixture(scope="module")
def field(lognorm):
    return ntf.tl.fit(lognorm, layer="lognorm", config=FAST, validation=False, progress=False)


def _fit(adata, **kwargs):
    return ntf.tl.fit(adata, config=FAST, validation=False, progress=False, **kwargs)


# ----------------------------------------------------------------------------- stacking
def test_inner_join_warns_with_counts_and_the_fix():
    genes = [f"g{i}" for i in range(60)]
    a, b = _section(genes), _section(genes[:39] + [f"h{i}" for i in range(5)], seed=1)
    with pytest.warns(UserWarning, match=r"share 39 of their 65 genes: the inner join drops 26 genes.*join='outer'"):
        stacked = ntf.pp.stack_sections([a, b], z=[0, 1])
    assert stacked.n_vars == 39


def test_gene_names_differing_only_in_case_are_named():
    genes = [f"Gene{i}" for i in range(14)]
    other = [g.upper() if i % 2 else g for i, g in enumerate(genes)]
    with pytest.warns(UserWarning, match=r"share 7 of their 21 genes.*7 of them differ only in upper/lower case"):
        ntf.pp.stack_sections([_section(genes), _section(other, seed=1)], z=[0, 1])


def test_outer_join_keeps_var_columns_and_warns_about_conflicting_ones():
    a = _section(["g0", "g1", "g2"], var={"chrom": ["1", "2", "3"], "length": [10, 20, 30], "qc": ["a", "a", "a"]})
    b = _section(["g1", "g2", "g3"], seed=1, var={"chrom": ["2", "3", "X"], "qc": ["b", "b", "b"]})
    with pytest.warns(UserWarning, match=r"var columns \['qc'\] differ between sections"):
        stacked = ntf.pp.stack_sections([a, b], z=[0, 1], join="outer")
    assert stacked.var["chrom"].tolist() == ["1", "2", "3", "X"]
    assert stacked.var["length"].iloc[:3].tolist() == [10, 20, 30] and np.isnan(stacked.var["length"].iloc[3])
    assert "qc" not in stacked.var


def test_gene_symbols_become_the_gene_names_and_units_are_recorded():
    a = _section(["ENSG1", "ENSG2", "ENSG3"], var={"gene_symbols": ["KRT19", "ERBB2", None]})
    b = _section(["ENSG1", "ENSG2", "ENSG3"], seed=1, var={"gene_symbols": ["KRT19", "ERBB2", None]})
    stacked = ntf.pp.stack_sections([a, b], z=[0, 10], gene_symbols="gene_symbols", units="um")
    assert list(stacked.var_names) == ["KRT19", "ERBB2", "ENSG3"]
    assert list(stacked.var["gene_ids"]) == ["ENSG1", "ENSG2", "ENSG3"]
    assert stacked.uns["ntf"]["units"] == "um"
    with pytest.raises(KeyError, match="gene_symbols='symbol' is not a var column"):
        ntf.pp.stack_sections([a, b], z=[0, 10], gene_symbols="symbol")


# ----------------------------------------------------------------------------- values and losses
def test_raw_counts_with_the_mse_loss_warn(counts):
    with pytest.warns(UserWarning, match=r"raw counts .* loss is 'mse'.*log_normalize"):
        _fit(counts)


def test_count_loss_on_normalised_values_warns(lognorm):
    with pytest.warns(UserWarning, match=r"count loss \(poisson/nb\) but \d+ of \d+ values are not whole numbers"):
        _fit(lognorm, layer="lognorm", loss="poisson")


def test_strings_in_x_are_an_error(counts):
    adata = counts.copy()
    adata.X = adata.X.astype(str).astype(object)
    with pytest.raises(TypeError, match=r"adata.X holds object values, not numbers.*metadata="):
        _fit(adata)


def test_backed_anndata_is_an_error(lognorm, tmp_path):
    lognorm.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    for call in (lambda: _fit(backed, layer="lognorm"), lambda: ntf.pp.stack_sections([backed], z=[0]),
                 lambda: ntf.pp.log_normalize(backed)):
        with pytest.raises(ValueError, match=r"backed mode.*to_memory\(\)"):
            call()
    backed.file.close()


# ----------------------------------------------------------------------------- argument types
@pytest.mark.parametrize("steps", [2.5, "300", True, 0])
def test_fit_steps_must_be_a_positive_integer(lognorm, steps):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        _fit(lognorm, layer="lognorm", steps=steps)


@pytest.mark.parametrize("shape", [2.5, "8", True, 0, (2.5, 3, 3), (4, 4)])
def test_render_shape_must_be_integers(field, shape):
    with pytest.raises(ValueError, match="shape"):
        field.render(shape)


def test_render_integer_shapes_still_work(field):
    assert field.render((2, 3, 4)).values.shape[:3] == (2, 3, 4)
    assert max(field.render(np.int64(5)).values.shape[:3]) == 5


def test_save_onto_a_directory_and_checkpoint_dir_onto_a_file(field, lognorm, tmp_path):
    with pytest.raises(IsADirectoryError, match=r"is a directory; pass a file path \(e.g. .*field.safetensors\)"):
        field.save(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="checkpoint_dir=.*afile.* is a file, not a folder"):
        _fit(lognorm, layer="lognorm", checkpoint_dir=tmp_path / "afile")
    with pytest.raises(NotADirectoryError, match="is a file"):
        _fit(lognorm, layer="lognorm", checkpoint_dir=tmp_path / "afile" / "run1")


# ----------------------------------------------------------------------------- alignment
def test_aligning_already_registered_sections_warns():
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(20.0), np.arange(20.0)), -1).reshape(-1, 2)
    loadings, sections = rng.uniform(0, 1, (3, 12)), []
    for _ in range(3):
        xy = grid + rng.uniform(0, 1, 2)
        profile = np.column_stack([np.exp(-((xy - c) ** 2).sum(1) / 30) for c in ([5, 5], [15, 5], [10, 15])])
        counts = rng.poisson(20 * profile @ loadings + 1).astype(np.float32)
        a = ad.AnnData(counts, var=pd.DataFrame(index=[f"g{j}" for j in range(12)]))
        a.obsm["spatial"] = xy
        sections.append(a)
    before = ntf.pp.alignment_score(sections)
    with pytest.warns(UserWarning, match=r"alignment_score .* before, .* after.*may already be registered"):
        aligned = ntf.pp.align_sections(sections, copy=True, n_rotations=4, max_iter=20)
    record = aligned[0].uns["ntf"]["alignment"]
    assert record["score_before"] == pytest.approx(before)
    turned = [a.copy() for a in sections]
    turned[1].obsm["spatial"] = turned[1].obsm["spatial"] @ np.array([[0.0, -1.0], [1.0, 0.0]])
    assert ntf.pp.alignment_score(turned) < before - 0.1
