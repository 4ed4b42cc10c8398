"""Atlas scale: synthetic atlas writer, store reader, streaming fit, bounded memory, OME-Zarr render, compile."""

from __future__ import annotations

import copy
import json
import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import zarr
from _threads import one_torch_thread
from scipy.spatial import cKDTree

from ntf_utils import NTFConfig, NTFField, datasets, pp, tl
from ntf_utils.atlas import (
    AtlasStore,
    FastForward,
    StreamingCells,
    _store_source,
    atlas_model,
    compile_available,
    fit_atlas,
    memory_bound,
    open_atlas,
    render_to_zarr,
    write_synthetic_atlas,
)
from ntf_utils.atlas._render_zarr import ngff_space_unit
from ntf_utils.atlas._store_source import StoreSource, StreamingOptions
from ntf_utils.model._network import FieldNetwork
from ntf_utils.model._pipeline import plan_fit
from ntf_utils.model._sources import AnnDataSource

QUICK = NTFConfig(training={"steps": 300, "batch_size": 512, "eval_every": 50})
TINY = QUICK.replace(training={"steps": 10})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the streaming reader is a second thread, and CI has 2 shared cores. Module-scoped
    and autouse, so it is in place before the module's fitted fixtures too."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("atlas") / "small.zarr"
    return write_synthetic_atlas(path, 4000, 24, n_sections=10, chunk_cells=500, n_organs=4, seed=2)


@pytest.fixture(scope="module")
def adata(store):
    a = ad.read_zarr(store)
    pp.log_normalize(a)
    return a


@pytest.fixture(scope="module")
def streamed(store):
    return fit_atlas(store, normalize="log1p", config=QUICK, device="cpu", progress=False)


def _truth_score(field, store, n=2000, seed=5):
    """Mean per-gene Pearson of the field against the noise-free truth at random points in the body."""
    model = atlas_model(store)
    rng = np.random.default_rng(seed)
    lo, hi = field.bounds[:, 0], field.bounds[:, 1]
    pts = rng.uniform(lo, hi, (6 * n, 3))
    pts = pts[model.inside(pts)][:n]
    truth = np.log1p(model.proportions(pts) * field.info.get("target_sum", model.target_sum))
    pred = field.predict(pts)
    return float(np.mean([np.corrcoef(pred[:, j], truth[:, j])[0, 1] for j in range(truth.shape[1])]))


# -- the writer ---------------------------------------------------------------------------------
def test_synthetic_atlas_is_an_anndata_store(store, adata):
    assert adata.shape == (4000, 24)
    assert adata.obsm["spatial_3d"].shape == (4000, 3)
    assert list(adata.obs["section"].cat.categories) == [f"s{k:02d}" for k in range(10)]
    # stored section by section, z constant within a section and increasing
    z = adata.obs["z"].to_numpy()
    assert (np.diff(z) >= 0).all()
    np.testing.assert_array_equal(adata.obsm["spatial_3d"][:, 2], z)
    counts = np.asarray(adata.X)
    assert counts.dtype == np.uint16 and counts.sum(1).min() > 0
    model = atlas_model(store)
    assert model.inside(adata.obsm["spatial_3d"]).all()
    assert len(model.gene_names) == 24 and list(adata.var_names) == model.gene_names
    root = zarr.open_group(str(store), mode="r")
    assert root["X"].chunks == (500, 24)


def test_writer_is_deterministic_across_workers(tmp_path, store):
    other = write_synthetic_atlas(tmp_path / "again.zarr", 4000, 24, n_sections=10, chunk_cells=500, n_organs=4,
                                  seed=2, n_workers=2)
    a, b = zarr.open_group(str(store), mode="r"), zarr.open_group(str(other), mode="r")
    np.testing.assert_array_equal(a["X"][:], b["X"][:])
    np.testing.assert_array_equal(a["obsm"]["spatial_3d"][:], b["obsm"]["spatial_3d"][:])
    with pytest.raises(FileExistsError, match="overwrite"):
        write_synthetic_atlas(other, 10, 2)


# -- the reader ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["zarr_csr", "h5ad_dense", "h5ad_csr"])
def test_store_reads_rows_like_anndata(adata, tmp_path, fmt):
    a = adata[:1200].copy()
    a.X = sp.csr_matrix(a.layers["lognorm"]) if fmt.endswith("csr") else np.asarray(a.layers["lognorm"])
    del a.layers["lognorm"]
    path = tmp_path / ("a.zarr" if fmt.startswith("zarr") else "a.h5ad")
    a.write_zarr(path) if fmt.startswith("zarr") else a.write_h5ad(path)
    dense = a.X.toarray() if sp.issparse(a.X) else a.X
    with AtlasStore(path) as s:
        assert (s.n_obs, s.n_vars, s.x_kind) == (1200, 24, "csr" if fmt.endswith("csr") else "dense")
        np.testing.assert_allclose(s.read_values(130, 517), dense[130:517])
        np.testing.assert_allclose(s.read_coords(0, 1200), a.obsm["spatial_3d"])
        assert s.section_names == list(a.obs["section"].cat.categories)
        np.testing.assert_array_equal(s.read_sections(0, 1200), a.obs["section"].cat.codes)
        rows = np.array([1199, 3, 640, 17])
        np.testing.assert_allclose(s.read_rows(rows), dense[rows])
    backed = ad.read_h5ad(path, backed="r") if fmt.startswith("h5ad") else None
    if backed is not None:
        assert open_atlas(backed).n_obs == 1200
        backed.file.close()


def test_store_errors_are_helpful(adata, tmp_path):
    with pytest.raises(FileNotFoundError, match="write_synthetic_atlas"):
        AtlasStore(tmp_path / "missing.zarr")
    a = adata[:100].copy()
    a.X = sp.csc_matrix(np.asarray(a.X, dtype=np.float32))
    a.write_zarr(tmp_path / "csc.zarr")
    with pytest.raises(ValueError, match="tocsr"):
        AtlasStore(tmp_path / "csc.zarr")
    with pytest.raises(KeyError, match="obsm/nope"):
        AtlasStore(tmp_path / "csc.zarr", spatial_key="nope", layer=None) if False else AtlasStore(
            tmp_path / "csc.zarr", spatial_key="nope", layer="lognorm")
    with pytest.raises(TypeError, match="in-memory AnnData"):
        open_atlas(adata)


# -- streaming ----------------------------------------------------------------------------------
def test_streaming_cells_shuffle_blocks_and_never_serve_excluded_rows(tmp_path):
    n = 3000
    a = ad.AnnData(X=np.column_stack([np.arange(n), np.zeros(n)]).astype(np.float32))
    a.obsm["spatial_3d"] = np.random.default_rng(0).random((n, 3))
    a.write_zarr(tmp_path / "rows.zarr", chunks=(250, 2))
    store = AtlasStore(tmp_path / "rows.zarr")
    assert store.block_rows == 250
    exclude = np.sort(np.random.default_rng(1).choice(n, 300, replace=False))

    def prepare(coords, values, mask):
        return coords.astype(np.float32), values, None, mask

    def stream(readers):
        with StreamingCells(store, prepare, blocks=store.blocks(), cache_blocks=3, batch_size=100,
                            exclude=exclude, seed=3, readers=readers) as cells:
            assert len(cells) == n - 300 and cells.refresh_every == 3
            gen = torch.Generator().manual_seed(0)
            seen = []
            for _ in range(400):
                _, target, *_ = cells.batch(cells.sample_index(gen, 100), torch.device("cpu"))
                seen.append(target[:, 0].numpy().astype(np.int64))
            assert cells.blocks_loaded > 12  # every block came through the 3-block buffer
        assert cells._u is None  # closed: buffer freed, readers joined
        return np.concatenate(seen)

    seen = stream(readers=1)
    assert not np.isin(seen, exclude).any()
    assert len(np.unique(seen // 250)) == 12
    # several reader threads hand blocks over in the same order: the same batches
    np.testing.assert_array_equal(stream(readers=3), seen)


def test_streaming_fit_matches_in_memory_fit(streamed, adata, store):
    stats_target = float(np.median(np.asarray(adata.X).sum(1)))
    assert streamed.info["target_sum"] == pytest.approx(stats_target)
    # fit_atlas applies the sampling rule as it is (no resolution selection): compare like with like
    in_memory = tl.fit(adata, layer="lognorm", config=QUICK.replace(selection={"enabled": False}), device="cpu",
                       progress=False)
    # the same data-driven resolution and transform
    assert streamed.config.encoding.finest_resolution == pytest.approx(in_memory.config.encoding.finest_resolution, rel=0.1)
    np.testing.assert_allclose(streamed.bounds, in_memory.bounds)
    np.testing.assert_allclose(streamed.gene_mean, in_memory.gene_mean, atol=0.02)
    stream_score, memory_score = _truth_score(streamed, store), _truth_score(in_memory, store)
    assert memory_score > 0.6
    # within seed-to-seed noise (about +-0.02 over seeds 0-3 for both fits)
    assert stream_score > memory_score - 0.05, (stream_score, memory_score)
    assert streamed.info["streaming"]["stats_cells"] == 4000


def test_streaming_fit_is_deterministic_and_saves(store, tmp_path):
    cfg = QUICK.replace(training={"steps": 20, "eval_every": 10})
    kw = dict(normalize="log1p", config=cfg, device="cpu", progress=False, cache_bytes=1e5)
    a, b = fit_atlas(store, **kw), fit_atlas(store, **kw)
    for (name, p), q in zip(a.network.state_dict().items(), b.network.state_dict().values()):
        assert torch.equal(p, q), name
    assert a.info["streaming"]["blocks_loaded"] > a.info["streaming"]["cache_blocks"]
    path = a.save(tmp_path / "f.safetensors")
    from ntf_utils import NTFField

    c = NTFField.load(path)
    np.testing.assert_array_equal(c.predict(np.zeros((2, 3))), a.predict(np.zeros((2, 3))))
    assert c.info["streaming"]["block_rows"] == 500


def test_fit_atlas_bad_input(store):
    with pytest.raises(ValueError, match="normalize"):
        fit_atlas(store, normalize="log2", config=QUICK, progress=False)
    with pytest.raises(ValueError, match="raw counts"):
        fit_atlas(store, normalize="log1p", loss="poisson", config=QUICK, progress=False)
    with pytest.raises(ValueError, match="does not select the grid resolution"):
        fit_atlas(store, normalize="log1p", config=QUICK.replace(selection={"enabled": True}), progress=False)
    with pytest.raises(TypeError, match="streaming options"):
        fit_atlas(store, normalize="log1p", config=QUICK, progress=False, cache_megabytes=8)


def test_cells_without_a_section_are_kept(adata, tmp_path):
    a = adata[:1500].copy()
    a.X = np.asarray(a.layers.pop("lognorm"))
    a.obs["section"] = a.obs["section"].astype(object)
    a.obs.loc[a.obs_names[:40], "section"] = np.nan
    a.obs["section"] = a.obs["section"].astype("category")
    a.write_zarr(tmp_path / "nan.zarr", chunks=(300, 24))
    f = fit_atlas(tmp_path / "nan.zarr", config=QUICK.replace(training={"steps": 10}), device="cpu", progress=False,
                  validation=False)
    assert f.info["n_cells"] == 1500 and np.isfinite(f.predict(a.obsm["spatial_3d"][:5])).all()


def _units_store(adata, path, units):
    """A 1,500-cell store (zarr or h5ad by ``path``'s suffix) with ``uns["ntf"]["units"] = units`` (None: none)."""
    a = adata[:1500].copy()
    a.X = np.asarray(a.layers.pop("lognorm"))
    ntf = {k: v for k, v in a.uns.get("ntf", {}).items() if k != "units"}
    a.uns["ntf"] = ntf if units is None else {**ntf, "units": units}
    a.write_zarr(path, chunks=(300, 24)) if path.suffix == ".zarr" else a.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def um_field(adata, tmp_path_factory):
    path = _units_store(adata, tmp_path_factory.mktemp("units") / "um.zarr", "um")
    return fit_atlas(path, config=TINY, device="cpu", progress=False, validation=False)


@pytest.mark.parametrize("fmt", ["zarr", "h5ad"])
def test_store_reads_units_from_uns(adata, tmp_path, fmt):
    with AtlasStore(_units_store(adata, tmp_path / f"um.{fmt}", "µm")) as s:
        assert s.units == "µm"
    with AtlasStore(_units_store(adata, tmp_path / f"none.{fmt}", None)) as s:
        assert s.units is None


def test_streamed_fit_records_units(um_field, adata, tmp_path):
    """As tl.fit: the store's uns["ntf"]["units"] goes to info["units"] and on to rendered volumes."""
    assert um_field.info["units"] == "um"
    assert um_field.render(shape=4, genes=um_field.genes[:1]).units == "um"
    plain = fit_atlas(_units_store(adata, tmp_path / "none.h5ad", None), config=TINY, device="cpu", progress=False,
                      validation=False)
    assert "units" not in plain.info
    assert plain.render(shape=4, genes=plain.genes[:1]).units is None


def test_count_loss_streams(store):
    f = fit_atlas(store, loss="poisson", config=QUICK.replace(training={"steps": 30}), device="cpu", progress=False,
                  validation=False)
    assert f.config.training.loss == "poisson" and f.history["loss"].iloc[-5:].mean() < f.history["loss"].iloc[:5].mean()
    assert (f.predict(np.zeros((3, 3))) > 0).all()


def test_peak_memory_is_bounded_by_the_cache_not_the_store(tmp_path):
    """A store 10x larger than the training cache: numpy allocations stay far below the data size."""
    path = write_synthetic_atlas(tmp_path / "big.zarr", 60_000, 100, n_sections=12, chunk_cells=1000, n_organs=2)
    data_bytes = 60_000 * 100 * 4  # X as float32: 24 MB
    cache = 2e6
    cfg = NTFConfig(training={"steps": 40, "batch_size": 256, "eval_every": 20})
    tracemalloc.start()
    try:
        f = fit_atlas(path, normalize="log1p", config=cfg, device="cpu", progress=False, cache_bytes=cache,
                      max_validation_cells=2000, stats_cells=5000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    s = f.info["streaming"]
    assert s["blocks_loaded"] > s["cache_blocks"]  # it streamed
    assert s["buffer_bytes"] <= max(cache, 2 * 1000 * 104 * 4)
    assert s["buffer_bytes"] <= s["memory_bound_bytes"]
    assert s["memory_bound_bytes"] == memory_bound(1000, 100, 3, s["cache_blocks"], 2, 4)
    assert peak < data_bytes / 2, f"numpy peak {peak / 1e6:.1f} MB for a {data_bytes / 1e6:.0f} MB store"


# -- rendering ----------------------------------------------------------------------------------
def test_render_to_zarr_equals_predict_and_opens(streamed, tmp_path):
    genes = streamed.genes[:3]
    path = render_to_zarr(streamed, tmp_path / "vol.zarr", shape=(21, 13, 9), genes=genes, chunks=(8, 8, 4))
    root = zarr.open_group(str(path), mode="r")
    level0 = root["0"]
    assert level0.shape == (3, 9, 13, 21) and level0.chunks == (1, 4, 8, 8)
    meta = dict(root.attrs)
    ms = meta["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"] and ms["version"] == "0.4"
    assert [c["label"] for c in meta["omero"]["channels"]] == genes
    box = streamed.bounds[:3]
    axes = [np.linspace(lo, hi, n) for (lo, hi), n in zip(box, (21, 13, 9))]
    grid = np.meshgrid(*axes, indexing="ij")
    coords = np.stack([g.ravel() for g in grid], 1)
    expected = streamed.predict(coords, genes).reshape(21, 13, 9, 3)
    np.testing.assert_allclose(level0[:].transpose(3, 2, 1, 0), expected, atol=1e-5)
    np.testing.assert_array_equal(root["labels/tissue/0"][:].T.astype(bool),
                                  streamed.inside(coords).reshape(21, 13, 9))
    scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    np.testing.assert_allclose(scale[1:], [axes[2][1] - axes[2][0], axes[1][1] - axes[1][0], axes[0][1] - axes[0][0]])
    # explicit pyramid: level 1 is the 2x mean of level 0
    path2 = render_to_zarr(streamed, tmp_path / "vol2.zarr", shape=(16, 12, 8), genes=genes[:1], chunks=(8, 8, 4),
                           n_levels=2)
    r2 = zarr.open_group(str(path2), mode="r")
    v0, v1 = r2["0"][0], r2["1"][0]
    assert v1.shape == (4, 6, 8)
    np.testing.assert_allclose(v1, v0.reshape(4, 2, 6, 2, 8, 2).mean((1, 3, 5)), rtol=1e-5, atol=1e-6)
    with pytest.raises(FileExistsError):
        render_to_zarr(streamed, path, shape=4)


def test_render_to_zarr_reads_with_ome_zarr(streamed, tmp_path):
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    path = render_to_zarr(streamed, tmp_path / "ome.zarr", shape=(8, 6, 4), genes=streamed.genes[:2])
    nodes = list(Reader(parse_url(str(path)))())
    assert nodes and nodes[0].data[0].shape == (2, 4, 6, 8)


@pytest.mark.parametrize(("units", "unit"), [("um", "micrometer"), ("furlongs", None), (None, None)])
def test_render_to_zarr_puts_ngff_units_on_space_axes(um_field, tmp_path, units, unit):
    field = copy.copy(um_field)
    field.info = {**um_field.info, "units": units}
    path = render_to_zarr(field, tmp_path / "u.zarr", shape=(4, 3, 2), genes=field.genes[:1])
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["ntf"]["units"] == units  # the recorded string, also when it has no NGFF name
    for attrs in (root.attrs, root["labels/tissue"].attrs):
        axes = attrs["multiscales"][0]["axes"]
        space = [a for a in axes if a["type"] == "space"]
        assert len(space) == 3
        if unit is None:  # unknown or not a UDUNITS-2 name: no unit rather than a guessed one
            assert all("unit" not in a for a in axes)
        else:
            assert [a["unit"] for a in space] == [unit] * 3
            assert all("unit" not in a for a in axes if a["type"] == "channel")


@pytest.mark.parametrize(("units", "name"), [
    ("um", "micrometer"), ("µm", "micrometer"), ("μm", "micrometer"), ("micron", "micrometer"),
    ("Microns", "micrometer"), ("micrometres", "micrometer"), ("nm", "nanometer"), ("mm", "millimeter"),
    ("millimeter", "millimeter"), ("pixel", None), ("px", None), ("furlongs", None), ("ms", None), (None, None),
])
def test_ngff_space_unit_maps_spellings_never_guesses(units, name):
    assert ngff_space_unit(units) == name


# -- compiled / mixed-precision forward ----------------------------------------------------------
def _tiny_network():
    cfg = NTFConfig(encoding={"base_resolution": 2.0, "finest_resolution": 24.0, "log2_hashmap_size": 12, "n_levels": 4}, network={"hidden_width": 16, "latent_dim": 8})
    torch.manual_seed(0)
    return FieldNetwork(cfg, 3, 10)


def test_fast_forward_without_flags_is_the_network():
    net = _tiny_network()
    u = torch.rand(64, 3)
    fast = FastForward(net, amp="bf16")  # autocast is CUDA-only: a no-op on CPU
    out, latent = fast(u, return_latent=True)
    assert torch.equal(out, net(u)) and torch.equal(latent, net.latent(u))
    with pytest.raises(ValueError, match="amp"):
        FastForward(net, amp="int8")


def test_compiled_forward_and_backward_match_eager():
    ok, why = compile_available()
    if not ok:
        pytest.skip(f"torch.compile unusable here: {why}")
    net = _tiny_network()
    u = torch.rand(256, 3)
    fast = FastForward(net, compile=True)
    out = fast(u)
    out.square().mean().backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    net.zero_grad()
    ref = net(u)
    ref.square().mean().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for g, p in zip(grads, [p for p in net.parameters() if p.grad is not None]):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: GPU encoding checks need one")
def test_cuda_fast_paths_match_cpu():  # pragma: no cover - runs only on a CUDA machine
    net = _tiny_network()
    u = torch.rand(4096, 3)
    ref = net(u)
    gpu = net.to("cuda")
    torch.testing.assert_close(FastForward(gpu)(u.cuda()).cpu(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(FastForward(gpu, compile=True)(u.cuda()).cpu(), ref, rtol=1e-4, atol=1e-5)
    half = FastForward(gpu, amp="bf16")(u.cuda()).cpu()
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ref, rtol=0.05, atol=0.05 * ref.abs().max().item())


def test_info_is_json(streamed):
    json.dumps(streamed.info)


def test_string_names_are_read_from_anndata_nullable_string_groups(tmp_path):
    """pandas >= 3 makes anndata store string indices as a group of ``values`` and ``mask``."""
    import zarr

    from ntf_utils.atlas._store import _strings

    root = zarr.open_group(str(tmp_path / "names.zarr"), mode="w")
    group = root.create_group("_index")
    group.create_array("values", data=np.array(["g0", "g1", "g2"]))
    group.create_array("mask", data=np.zeros(3, dtype=bool))
    plain = root.create_array("plain", data=np.array(["a", "b"]))
    assert _strings(root["_index"]) == ["g0", "g1", "g2"]
    assert _strings(plain) == ["a", "b"]


# -- sections in a streamed fit: registration and section effects ------------------------------
SECTIONED = NTFConfig(network={"section_effects": False},
                      training={"steps": 40, "batch_size": 512, "eval_every": 20})


def _write_stack(path, adata, chunk=250):
    """``adata`` with its log-normalised values as dense ``X``, written as a zarr store."""
    a = adata.copy()
    a.X = np.asarray(a.layers["lognorm"], dtype=np.float32)
    for key in list(a.layers):
        del a.layers[key]
    a.write_zarr(path, chunks=(chunk, a.n_vars))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Five sections of a synthetic embryo, the section categories stored out of sorted order."""
    adata = datasets.synthetic_embryo(n_sections=5, cells_per_section=300, n_genes=8, seed=1)
    pp.log_normalize(adata)
    adata.obs["section"] = adata.obs["section"].cat.reorder_categories(["s03", "s00", "s04", "s02", "s01"])
    return adata, _write_stack(tmp_path_factory.mktemp("stack") / "stack.zarr", adata)


def _surveys(adata, path, time_key=None, seed=0):
    memory = AnnDataSource(adata, layer="lognorm", spatial_key="spatial_3d", time_key=time_key, loss="mse")
    streamed = StoreSource(AtlasStore(path, time_key=time_key), normalize=None, target_sum=None,
                           options=StreamingOptions(), loss="mse")
    return memory.survey(seed), streamed.survey(seed)


@pytest.mark.parametrize("case", ["exact", "subsample_medians", "time_axis"])
def test_streamed_survey_has_the_in_memory_sections(stack, tmp_path, monkeypatch, case):
    adata, path = stack
    time_key = None
    if case == "subsample_medians":  # z varies too much to count: medians of the sampling subsample
        monkeypatch.setattr(_store_source, "MAX_TALLIED_VALUES", 0)
    if case == "time_axis":
        adata = datasets.synthetic_timeseries(n_times=2, n_sections=3, cells_per_section=60, n_genes=4, seed=0)
        pp.log_normalize(adata)
        path, time_key = _write_stack(tmp_path / "t.zarr", adata, chunk=50), "time"
    memory, streamed = _surveys(adata, path, time_key)
    assert streamed.sections == memory.sections and len(memory.sections) == (6 if time_key else 5)
    np.testing.assert_allclose(streamed.section_z, memory.section_z)
    np.testing.assert_allclose(streamed.section_xy, memory.section_xy)
    assert np.shape(streamed.section_xy) == (len(memory.sections), 4 if time_key else 3)


def test_streamed_cells_carry_the_in_memory_section_codes(stack, tmp_path):
    """Training and validation cells: each cell's code in the plan's sections, -1 without a section;
    an empty category is no section."""
    adata = stack[0].copy()
    adata.obs["section"] = adata.obs["section"].cat.add_categories(["s99"]).astype(object)
    adata.obs.loc[adata.obs_names[::50], "section"] = np.nan
    adata.obs["section"] = adata.obs["section"].astype("category")
    path = _write_stack(tmp_path / "codes.zarr", adata)
    config = SECTIONED.replace(network={"section_effects": True}, training={"validation_fraction": 0.1})
    source = StoreSource(AtlasStore(path), normalize=None, target_sum=None, options=StreamingOptions(), loss="mse")
    plan = plan_fit(source, config, seed=0, validation=None)
    assert plan.sections == ["s00", "s01", "s02", "s03", "s04"] and len(plan.held_out) == round(0.1 * adata.n_obs)
    memory = AnnDataSource(adata, layer="lognorm", spatial_key="spatial_3d", time_key=None, loss="mse")
    expected = memory.training_cells(plan, rank=0, world=1, device=torch.device("cpu"), seed=0).section.numpy()
    assert (expected == -1).sum() == len(adata.obs_names[::50]) and set(expected) == {-1, 0, 1, 2, 3, 4}
    rows = cKDTree(plan.transform.to_unit(adata.obsm["spatial_3d"]).astype(np.float32))
    with source.training_cells(plan, rank=0, world=1, device=torch.device("cpu"), seed=0) as cells:
        u, *_, section = cells.batch(cells.sample_index(torch.Generator().manual_seed(0), 800), torch.device("cpu"))
    assert section.dtype == torch.int64
    np.testing.assert_array_equal(section.numpy(), expected[rows.query(u.numpy())[1]])
    validation = source.validation_cells(plan, None)
    np.testing.assert_array_equal(validation.section.numpy(), expected[plan.held_out])


def test_streamed_fit_registers_sections(stack, tmp_path):
    adata, path = stack
    config = SECTIONED.replace(network={"register_sections": True})
    field = fit_atlas(path, config=config, device="cpu", progress=False)
    assert field.info["steps_run"] == 40 and field.info["sections"] == field.sections
    table = field.section_poses()
    z = adata.obs.groupby("section", observed=True)["z"].median()
    assert list(table["section"]) == field.sections == sorted(z.index)
    assert list(table.loc[table["reference"], "section"]) == [z.sort_values().index[2]]  # the middle one by z
    moving = table[~table["reference"]]
    assert (moving["rotation_deg"].abs() > 0).all() and (moving[["shift_x", "shift_y"]].abs().to_numpy() > 0).all()
    assert field.section_effects().empty
    loaded = NTFField.load(field.save(tmp_path / "f.ntf"))
    pd.testing.assert_frame_equal(loaded.section_poses(), table)
    coords = adata.obsm["spatial_3d"][:5]
    assert np.array_equal(loaded.predict(coords, section="s01"), field.predict(coords, section="s01"))


def test_streamed_fit_learns_section_effects(stack, tmp_path):
    path = stack[1]
    field = fit_atlas(path, config=SECTIONED.replace(network={"section_effects": True}), device="cpu",
                      progress=False)
    table = field.section_effects()
    assert len(table) == 5 * 8 and set(table["section"]) == set(field.sections) == {f"s0{k}" for k in range(5)}
    assert table["offset"].abs().max() > 0 and field.section_poses().empty
    loaded = NTFField.load(field.save(tmp_path / "f.ntf"))
    pd.testing.assert_frame_equal(loaded.section_effects(), table)


def test_streamed_fit_with_the_sparsity_prior_learns_section_effects(stack):
    """``section_sparsity`` (the L1 prior along z) turns effects on as ``section_psf`` does, streamed too."""
    config = SECTIONED.replace(network={"section_effects": None}, training={"section_sparsity": 0.03})
    field = fit_atlas(stack[1], config=config, device="cpu", progress=False)
    assert field.config.network.section_effects is True
    assert set(field.sections) == {f"s0{k}" for k in range(5)} and field.section_effects()["offset"].abs().max() > 0


@pytest.mark.parametrize("network", [{"register_sections": True}, {"section_effects": True}])
def test_streamed_sections_need_labelled_sections(stack, network):
    with pytest.raises(ValueError, match="at least two labelled sections"):
        fit_atlas(stack[1], section_key=None, config=SECTIONED.replace(network=network), device="cpu",
                  progress=False)
