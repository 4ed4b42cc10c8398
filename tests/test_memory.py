"""Memory safety: queries of any size run in bounded chunks; requests that cannot fit say what they need.

Peak memory is measured with ``tracemalloc``, which sees NumPy's allocations (the per-point
arrays: coordinates, unit-cube copies, outputs). Torch's per-chunk tensors are bounded by
``batch_size`` by construction.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from _threads import one_torch_thread

from ntf_utils import NTFConfig, tl
from ntf_utils.datasets import synthetic_embryo

CHUNK_SLACK = 4e6  # bytes allowed beyond the output for one chunk's temporaries (batch_size 4096)


@pytest.fixture(scope="module")
def field():
    with one_torch_thread():
        adata = synthetic_embryo(n_sections=3, cells_per_section=40, n_genes=3, seed=0)
        yield tl.fit(adata, config=NTFConfig(training={"steps": 3, "batch_size": 64}), progress=False, device="cpu")


def _peak_extra(call):
    """(result, peak bytes allocated during ``call`` beyond what was allocated before it)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak - before


def test_predict_a_million_points_in_bounded_memory(field):
    coords = np.random.default_rng(0).uniform(field.bounds[:, 0], field.bounds[:, 1], (10**6, 3))
    gene = [field.genes[0]]
    out, extra = _peak_extra(lambda: field.predict(coords, gene, batch_size=4096))
    assert out.shape == (10**6, 1) and np.isfinite(out).all()
    # the output itself (4 MB) plus one chunk: no full-size copy of the 24 MB coordinates
    assert extra < out.nbytes + CHUNK_SLACK, f"predict used {extra / 1e6:.1f} MB beyond its inputs"


def test_render_in_bounded_memory(field):
    volume, extra = _peak_extra(lambda: field.render((50, 50, 50), [field.genes[0]], batch_size=4096))
    assert np.isfinite(volume.values).all()
    # values (0.5 MB) + mask (0.125 MB) + one chunk; an unchunked render would also hold all
    # voxel coordinates (3 MB) and their unit-cube copies
    assert extra < volume.values.nbytes + volume.mask.nbytes + CHUNK_SLACK / 4


def test_too_large_requests_say_how_much_memory_they_need(field):
    with pytest.raises(MemoryError, match=r"needs 5000\.0 GB"):
        field.render((10**4, 10**4, 10**4), [field.genes[0]], max_bytes=4e9)
    with pytest.raises(MemoryError, match=r"GB"):
        field.render(64, max_bytes=1e4)
    with pytest.raises(MemoryError, match=r"slice .* needs [0-9.]+ GB"):
        field.slice(0.0, resolution=field.info["xy_spacing"] * 1e-5)
