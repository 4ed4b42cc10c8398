"""The PyTorch hash grid against an independent NumPy reference of tiny-cuda-nn's definition."""

import contextlib

import numpy as np
import pytest
import torch

from ntf_utils.model import _native
from ntf_utils.model._hashgrid import HashGridEncoding
from ntf_utils.model._reference import corner_index, encode_reference, level_resolution, level_scale

CONFIGS = [
    # dense coarse levels and hashed fine levels in one grid
    dict(n_input_dims=3, n_levels=5, n_features_per_level=2, log2_hashmap_size=10, base_resolution=3, per_level_scale=2.2),
    # 4D input (x, y, z, time), 3 features, non-integer base
    dict(n_input_dims=4, n_levels=3, n_features_per_level=3, log2_hashmap_size=9, base_resolution=2.5, per_level_scale=2.7),
    # 2D, one feature, everything dense
    dict(n_input_dims=2, n_levels=4, n_features_per_level=1, log2_hashmap_size=14, base_resolution=4, per_level_scale=1.5),
    # instant-ngp NeRF-like defaults (16 levels from 16, 2^19 table)
    dict(n_input_dims=3, n_levels=16, n_features_per_level=2, log2_hashmap_size=19, base_resolution=16, per_level_scale=1.447),
]


def _grid(cfg, seed=0):
    torch.manual_seed(seed)
    enc = HashGridEncoding(**cfg, implementation="torch")
    with torch.no_grad():
        enc.params.uniform_(-1, 1)  # large values so mistakes in any term show
    return enc


@pytest.mark.parametrize("native", [True, False], ids=["C-loops", "torch-expressions"])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_torch_backend_matches_numpy_reference(cfg, native):
    if native and not _native.usable():
        pytest.skip(f"the C loops are not in use here: {_native.native_status()}")
    enc = _grid(cfg)
    rng = np.random.default_rng(1)
    x = rng.random((40, cfg["n_input_dims"])).astype(np.float32)
    x[0] = 0.0  # cube corners and faces
    x[1] = 1.0
    ref_kwargs = {k: v for k, v in cfg.items() if k != "n_input_dims"}
    ref = encode_reference(x, enc.params.detach().numpy().astype(np.float64), **ref_kwargs)
    with contextlib.nullcontext() if native else _native.disabled():
        out = enc(torch.from_numpy(x)).detach().numpy()
    assert out.shape == (40, cfg["n_levels"] * cfg["n_features_per_level"])
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=1e-5)


def test_level_layout_follows_tcnn():
    enc = _grid(CONFIGS[0])
    # tcnn: scale = 2^(l log2 b) * N0 - 1, resolution = ceil(scale) + 1, table = min(ceil8(res^3), 2^T)
    assert enc.resolutions == [level_resolution(level_scale(level, 3, 2.2)) for level in range(5)]
    assert enc.resolutions[0] == 3
    assert enc.table_sizes[0] == 32  # 3^3 = 27 rounded up to a multiple of 8
    assert enc.table_sizes[-1] == 2**10  # hashed level capped at 2^T
    assert enc.n_params == sum(enc.table_sizes) * 2


def test_hash_uses_tcnn_primes_and_uint32_wraparound():
    # corner (7, 11, 13) on a level too fine to be dense: xor of coordinate * prime, in uint32
    expected = (7 * 1) ^ ((11 * 2654435761) & 0xFFFFFFFF) ^ ((13 * 805459861) & 0xFFFFFFFF)
    assert corner_index((7, 11, 13), resolution=200, table_size=2**19) == expected % 2**19
    # a dense level uses the row-major position
    assert corner_index((1, 2, 3), resolution=5, table_size=128) == 1 + 2 * 5 + 3 * 25


def test_interpolation_is_continuous_and_exact_at_vertices():
    enc = _grid(CONFIGS[2])
    # moving a tiny step changes the encoding a tiny amount (trilinear, no jumps between cells)
    x = torch.rand(200, 2)
    step = enc(x + 1e-4) - enc(x)
    assert step.abs().max() < 1e-2
    # weights of the corners sum to one
    _, weights = enc.corner_rows_and_weights(x)
    torch.testing.assert_close(weights.sum(-1), torch.ones(200, 4))


def test_gradients_reach_table_and_inputs():
    enc = _grid(CONFIGS[0])
    x = torch.rand(64, 3, requires_grad=True)
    enc(x).pow(2).sum().backward()
    assert enc.params.grad is not None and enc.params.grad.abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # the analytic input gradient of our custom backward matches finite differences
    x0 = torch.rand(8, 3, dtype=torch.float32)
    xr = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(enc(xr)[:, 3].sum(), xr)
    eps = 1e-3
    fd = torch.stack([(enc(x0 + eps * e)[:, 3] - enc(x0 - eps * e)[:, 3]) / (2 * eps) for e in torch.eye(3)], 1)
    torch.testing.assert_close(g, fd, atol=5e-2, rtol=5e-2)


def _plain_table_gradient(enc, x, upstream):
    rows, weights = enc.corner_rows_and_weights(x)
    params = enc.params.detach().clone().requires_grad_(True)
    out = (weights[..., None] * params.view(-1, enc.n_features_per_level)[rows.long()]).sum(2)
    (out.reshape(len(x), -1) * upstream).sum().backward()
    return params.grad


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[1]], ids=["F2-complex-pairs", "F3-4d"])
def test_table_gradient_matches_autograd_of_plain_gather(config):
    enc = _grid(config)
    x = torch.rand(128, config["n_input_dims"])
    upstream = torch.randn(128, enc.n_output_dims)
    enc.params.grad = None
    (enc(x) * upstream).sum().backward()
    # the same function written with advanced indexing and PyTorch's own backward
    torch.testing.assert_close(enc.params.grad, _plain_table_gradient(enc, x, upstream))


def test_reused_gradient_buffer_never_changes_a_gradient():
    """The backward reuses one table-sized buffer; kept, accumulated and fresh gradients stay exact."""
    enc = _grid(CONFIGS[0])
    xs = [torch.rand(64, 3) for _ in range(3)]
    ups = [torch.randn(64, enc.n_output_dims) for _ in range(3)]
    expected = [_plain_table_gradient(enc, x, u) for x, u in zip(xs, ups)]
    # the training loop: set_to_none between steps, so the buffer is reused; the gradient stays
    # exact on every step (a stale buffer would add the previous step's rows)
    for x, u, want in zip(xs, ups, expected):
        enc.params.grad = None
        (enc(x) * u).sum().backward()
        torch.testing.assert_close(enc.params.grad, want)
    # gradient accumulation over two backward calls: the live .grad must not be zeroed under it
    enc.params.grad = None
    (enc(xs[0]) * ups[0]).sum().backward()
    kept = enc.params.grad
    (enc(xs[1]) * ups[1]).sum().backward()
    torch.testing.assert_close(enc.params.grad, expected[0] + expected[1])
    assert kept is enc.params.grad or torch.equal(kept, enc.params.grad)
    # a gradient the caller kept after set_to_none is never overwritten by the next backward
    enc.params.grad = None
    (enc(xs[2]) * ups[2]).sum().backward()
    kept = enc.params.grad
    enc.params.grad = None
    (enc(xs[0]) * ups[0]).sum().backward()
    torch.testing.assert_close(kept, expected[2])
    torch.testing.assert_close(enc.params.grad, expected[0])


def test_gradient_buffer_is_reused_in_a_training_loop():
    """What the buffer is for: with set_to_none and nothing kept, no new table-sized tensor per step."""
    enc = _grid(CONFIGS[0])
    storages = set()
    for _ in range(3):
        enc.params.grad = None
        enc(torch.rand(32, 3)).sum().backward()
        storages.add(enc.params.grad.untyped_storage().data_ptr())
    assert len(storages) == 1


def test_weights_move_between_instances_unchanged():
    a, b = _grid(CONFIGS[3], seed=0), _grid(CONFIGS[3], seed=1)
    x = torch.rand(100, 3)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)


def test_tcnn_backend_requires_cuda():
    enc = HashGridEncoding(n_levels=2, log2_hashmap_size=8, base_resolution=2, implementation="tcnn")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; this checks the CPU refusal")
    with pytest.raises(RuntimeError, match="tinycudann"):
        enc(torch.rand(4, 3))
    assert HashGridEncoding(n_levels=2, log2_hashmap_size=8, implementation="auto").backend() == "torch"
    assert enc.tcnn_config()["otype"] == "HashGrid"


def test_gradient_buffer_is_never_reused_when_torch_cannot_count_references(monkeypatch):
    """Without torch's storage use count (a private API) every backward gets a fresh buffer."""
    monkeypatch.delattr(torch._C, "_storage_Use_Count", raising=False)
    enc = _grid(CONFIGS[0])
    storages = []
    for _ in range(2):
        enc.params.grad = None
        enc(torch.rand(32, 3)).sum().backward()
        storages.append(enc.params.grad.untyped_storage().data_ptr())  # no reference kept
    assert storages[0] != storages[1]


def _encode_and_backpropagate(enc, x, upstream):
    """Rows, weights, encoding and table gradient of one forward and backward pass."""
    rows, weights = enc.corner_rows_and_weights(x)
    enc.params.grad = None
    out = enc(x)
    (out * upstream).sum().backward()
    return rows, weights, out.detach(), enc.params.grad.clone()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["mixed", "4d-F3", "2d-F1", "ngp"])
def test_c_loops_give_the_torch_expressions_bit_for_bit(cfg, threads, monkeypatch):
    """The C loops are a faster way to the same numbers: rows, weights, encoding and table gradient are
    bitwise those of the PyTorch expressions, also at the cube's faces and outside it (a pose can move
    a point out), for a batch where many points share table rows, and with the work split between
    threads (points for the corners and the interpolation, levels for the scatter-add)."""
    if not _native.usable():
        pytest.skip(f"the C loops are not in use here: {_native.native_status()}")
    monkeypatch.setattr(_native, "PARALLEL_MINIMUM", 500)  # this batch is split between the threads
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _compare_c_loops_with_torch_expressions(cfg)
    finally:
        torch.set_num_threads(before)


def _compare_c_loops_with_torch_expressions(cfg):
    enc = _grid(cfg)
    torch.manual_seed(3)
    dims = cfg["n_input_dims"]
    x = torch.cat([torch.rand(3000, dims), torch.zeros(1, dims), torch.ones(1, dims),
                   torch.rand(50, dims) * 1.4 - 0.2, torch.rand(1, dims).repeat(40, 1)])
    upstream = torch.randn(len(x), enc.n_output_dims)
    with _native.disabled():
        expected = _encode_and_backpropagate(enc, x, upstream)
    got = _encode_and_backpropagate(enc, x, upstream)
    for name, a, b in zip(["rows", "weights", "encoding", "table gradient"], got, expected):
        assert torch.equal(a, b), f"{name} differ between the C loops and the PyTorch expressions"


def test_without_a_compiler_the_grid_falls_back_to_the_torch_expressions(monkeypatch, tmp_path):
    """No C compiler: the build fails, the status says why, and the encoding is the same function."""
    enc = _grid(CONFIGS[0])
    x = torch.rand(100, 3)
    with _native.disabled():
        expected = enc(x)
    monkeypatch.setattr(_native, "_library", None)
    monkeypatch.setattr(_native, "_status", "not built yet")
    monkeypatch.setenv("NTF_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert "not built" in _native.native_status() and "no-such-compiler" in _native.native_status()
    assert not _native.usable(floats=(x,))
    assert not list(tmp_path.glob("*.so"))
    torch.testing.assert_close(enc(x), expected, rtol=0, atol=0)


def test_the_c_loops_are_built_once_into_the_cache(monkeypatch, tmp_path):
    """A fresh cache gets one library named by the source's hash; a second load reuses it."""
    if not _native.usable():
        pytest.skip(f"the C loops are not in use here: {_native.native_status()}")
    monkeypatch.setenv("NTF_NATIVE_CACHE", str(tmp_path))
    first = _native._build()
    assert first.parent == tmp_path and first.name.startswith("ntf_hashgrid_")
    stamp = first.stat().st_mtime_ns
    assert _native._build() == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no partial file left behind


def _encode_in_child(queue, cfg, x):
    torch.set_num_threads(2)  # the C loops split the batch between threads
    queue.put(_grid(cfg)(x).detach().numpy())  # numpy: a tensor would go through torch's shared memory


def test_a_forked_child_encodes_with_its_own_threads():
    """The C loops' thread pool does not survive a fork (the child has the object, not the threads):
    a child forked after the parent used it must still encode, and get the parent's numbers."""
    import multiprocessing

    if not _native.usable() or "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the C loops and the fork start method")
    x = torch.rand(20_000, 3)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = _grid(CONFIGS[0])(x).detach()  # the parent's pool now exists
    finally:
        torch.set_num_threads(before)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_encode_in_child, args=(queue, CONFIGS[0], x))
    child.start()
    try:
        got = queue.get(timeout=60)  # a child stuck on the parent's dead pool would time out here
        child.join(timeout=60)
    finally:
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert np.array_equal(got, expected.numpy())
