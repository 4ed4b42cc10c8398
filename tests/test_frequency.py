"""The smooth frequency encoding next to the hash grid (tiny-cuda-nn's "Frequency" in a "Composite")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ntf_utils as ntf
from ntf_utils.model._config import NTFConfig, resolve_config
from ntf_utils.model._coords import Sampling
from ntf_utils.model._frequency import FrequencyEncoding
from ntf_utils.model._network import FieldNetwork


def _reference(u: np.ndarray, n_frequencies: int) -> np.ndarray:
    """tcnn's Frequency encoding written out: per axis, per octave, (sin, cos) of 2^k pi u."""
    cols = []
    for d in range(u.shape[1]):
        for k in range(n_frequencies):
            cols += [np.sin(2.0**k * np.pi * u[:, d]), np.cos(2.0**k * np.pi * u[:, d])]
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("dims,octaves", [(3, 1), (3, 2), (4, 3)])
def test_frequency_encoding_matches_the_written_out_formula(dims, octaves):
    u = np.random.default_rng(0).random((50, dims))
    enc = FrequencyEncoding(dims, octaves)
    out = enc(torch.tensor(u, dtype=torch.float64)).numpy()
    assert out.shape == (50, enc.n_output_dims) == (50, 2 * octaves * dims)
    np.testing.assert_allclose(out, _reference(u, octaves), atol=1e-12)


def _network(n_frequencies: int) -> FieldNetwork:
    sampling = Sampling(lo=np.zeros(3), hi=np.array([10.0, 10.0, 5.0]), spacing=np.array([1.0, 1.0, 1.0]))
    config, _ = resolve_config(NTFConfig(encoding={"n_frequencies": n_frequencies}), sampling, True, 4, 100)
    return FieldNetwork(config, 3, 4)


def test_network_feeds_grid_and_frequencies_to_the_mlp():
    plain, smooth = _network(0), _network(2)
    assert plain.frequencies is None
    first = smooth.trunk[0]
    assert first.in_features == smooth.encoding.n_output_dims + 2 * 2 * 3
    # the frequency columns reach the output: zeroing their weights changes the prediction
    u = torch.rand(8, 3)
    before = smooth(u).detach().clone()
    with torch.no_grad():
        first.weight[:, smooth.encoding.n_output_dims:] = 0
    assert not torch.allclose(before, smooth(u))


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_n_frequencies_must_be_a_nonnegative_integer(bad):
    with pytest.raises(ValueError, match="n_frequencies"):
        NTFConfig(encoding={"n_frequencies": bad})


def test_saved_field_keeps_its_frequency_encoding(tmp_path):
    adata = ntf.datasets.synthetic_embryo(n_sections=4, cells_per_section=80, n_genes=5, seed=1)
    ntf.pp.log_normalize(adata)
    field = ntf.tl.fit(adata, layer="lognorm", steps=30, progress=False,
                       config=NTFConfig(encoding={"n_frequencies": 2}, selection={"enabled": False}))
    path = tmp_path / "f.safetensors"
    field.save(path)
    loaded = ntf.NTFField.load(path)
    assert loaded.config.encoding.n_frequencies == 2
    coords = adata.obsm["spatial_3d"][:20]
    np.testing.assert_array_equal(field.predict(coords), loaded.predict(coords))
