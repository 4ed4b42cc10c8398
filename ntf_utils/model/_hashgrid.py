"""Multi-resolution hash-grid encoding with tiny-cuda-nn's definition, behind one class.

Two backends share one parameter layout (tcnn's flat vector: level-major, then table row, then
feature), so a field trained with one evaluates identically with the other:

* ``"torch"``: PyTorch, CPU and CUDA, the default and the tested reference path; on the CPU its
  per-corner work runs as C loops compiled on first use (:mod:`._native`), bitwise the same numbers;
* ``"tcnn"``: ``tinycudann.Encoding`` when it imports and the parameters live on a CUDA device.

See :mod:`ntf_utils.model._reference` for the definition written out point by point.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from . import _native
from ._reference import PRIMES, level_resolution, level_scale, level_table_size

__all__ = ["tcnn_available", "HashGridEncoding"]

_UINT32 = 0xFFFFFFFF


def tcnn_available() -> bool:
    """True when ``tinycudann`` imports and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or a CUDA/ABI mismatch raised at import
        return False
    return True


class HashGridEncoding(nn.Module):
    """instant-ngp / tiny-cuda-nn multi-resolution hash-grid encoding.

    Parameters
    ----------
    n_input_dims
        Spatial dimensions of the input (3 for x, y, z; 4 with time). Inputs must lie in ``[0, 1]``.
    n_levels
        Number of resolution levels ``L``.
    n_features_per_level
        Features ``F`` stored per table entry.
    log2_hashmap_size
        ``T``: each level's table holds at most ``2**T`` entries; levels whose dense grid fits are
        stored densely (no hashing), finer ones are hashed with tcnn's spatial-hash primes.
    base_resolution
        Resolution of the coarsest level.
    per_level_scale
        Growth factor of the resolution between consecutive levels.
    implementation
        ``"torch"``, ``"tcnn"`` or ``"auto"`` (tcnn when :func:`tcnn_available`, else torch).

    Notes
    -----
    The output has ``L * F`` columns, level-major. Parameters are initialised uniformly in
    ``[-1e-4, 1e-4]`` as in tcnn.
    """

    def __init__(
        self,
        n_input_dims: int = 3,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: float = 16.0,
        per_level_scale: float = 1.5,
        implementation: str = "auto",
    ) -> None:
        super().__init__()
        if implementation not in ("auto", "torch", "tcnn"):
            raise ValueError(f"implementation must be 'auto', 'torch' or 'tcnn', not {implementation!r}")
        if not 1 <= n_input_dims <= len(PRIMES):
            raise ValueError(f"n_input_dims must be between 1 and {len(PRIMES)}, not {n_input_dims}")
        self.n_input_dims = n_input_dims
        self.n_levels = n_levels
        self.n_features_per_level = n_features_per_level
        self.log2_hashmap_size = log2_hashmap_size
        self.base_resolution = float(base_resolution)
        self.per_level_scale = float(per_level_scale)

        scales = [level_scale(lvl, base_resolution, per_level_scale) for lvl in range(n_levels)]
        resolutions = [level_resolution(s) for s in scales]
        sizes = [level_table_size(r, n_input_dims, log2_hashmap_size) for r in resolutions]
        self.resolutions = resolutions
        self.table_sizes = sizes
        self.register_buffer("_scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self.register_buffer("_sizes", torch.tensor(sizes, dtype=torch.int32), persistent=False)
        self.register_buffer("_offsets", torch.tensor(np.cumsum([0] + sizes[:-1]), dtype=torch.int32),
                             persistent=False)
        # A level is dense when its whole grid fits its table: then index = row-major position.
        dense = [r**n_input_dims <= s for r, s in zip(resolutions, sizes)]
        self._n_dense = int(sum(dense))
        if dense != [True] * self._n_dense + [False] * (n_levels - self._n_dense):
            raise AssertionError("dense levels must be the coarse prefix")  # resolutions never shrink
        strides = [[min(r**d, 2**30) for d in range(n_input_dims)] for r in resolutions]  # hashed levels ignore it
        self.register_buffer("_strides", torch.tensor(strides, dtype=torch.int32), persistent=False)
        primes = [p - 2**32 if p >= 2**31 else p for p in PRIMES[:n_input_dims]]  # same bits as uint32
        self.register_buffer("_primes", torch.tensor(primes, dtype=torch.int32), persistent=False)

        self.n_params = sum(sizes) * n_features_per_level
        self.params = nn.Parameter(torch.empty(self.n_params).uniform_(-1e-4, 1e-4))
        self.implementation = implementation
        self._tcnn = None
        self._grad_buffer = _TableGradBuffer()

    # -- public helpers ---------------------------------------------------------------------
    @property
    def n_output_dims(self) -> int:
        """Width of the encoding: ``n_levels * n_features_per_level``."""
        return self.n_levels * self.n_features_per_level

    def tcnn_config(self) -> dict:
        """The equivalent tiny-cuda-nn encoding config dict."""
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
            "interpolation": "Linear",
        }

    def backend(self, device: torch.device | None = None) -> str:
        """The backend a forward pass on ``device`` uses."""
        device = device or self.params.device
        if self.implementation == "torch":
            return "torch"
        usable = device.type == "cuda" and tcnn_available()
        if self.implementation == "tcnn" and not usable:
            raise RuntimeError(
                "implementation='tcnn' needs tinycudann and a CUDA device; install tiny-cuda-nn's torch "
                "bindings or use implementation='torch'"
            )
        return "tcnn" if usable else "torch"

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode points.

        Parameters
        ----------
        x
            ``(n, n_input_dims)`` float tensor in ``[0, 1]``.

        Returns
        -------
        ``(n, n_levels * n_features_per_level)`` float32 tensor.
        """
        if self.backend(x.device) == "tcnn":
            return self._forward_tcnn(x)
        return self._forward_torch(x)

    def corner_rows_and_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Table rows and (bi/tri)linear weights of every corner at every level.

        Corner ``c`` has bit ``d`` set when it is the upper neighbour along axis ``d``.

        Returns
        -------
        rows
            ``(n, L, 2**D)`` int32 rows into the flat ``(sum(table_sizes), F)`` table.
        weights
            ``(n, L, 2**D)`` float32 interpolation weights (they sum to 1 over corners).
        """
        x = x.to(torch.float32)
        if _native.usable(floats=(x,)) and not x.requires_grad and fwAD.unpack_dual(x).tangent is None:
            # the same numbers from one C loop; the expressions below where the weights need gradients
            return _native.corners(x, self._scales, self._sizes, self._offsets, self._strides, self._primes,
                                   self._n_dense)
        pos = x[:, None, :] * self._scales[None, :, None] + 0.5  # (n, L, D), tcnn's half-cell offset
        cell = torch.floor(pos)
        frac = pos - cell
        # int32 arithmetic is exact here: the hash wraps modulo 2**32 like tcnn's uint32, hashed
        # tables have power-of-two sizes (so the sign bit does not change the remainder), and
        # dense indices are far below 2**31.
        cell = cell.to(torch.int32)
        # Separable per axis: each corner combines the lower/upper value of every axis, so the
        # per-axis work is done on (n, L, D, 2) and only the combination is (n, L, 2**D).
        lower_upper = torch.stack([cell, cell + 1], dim=-1)  # (n, L, D, 2)
        weights = _combine_corners(torch.stack([1.0 - frac, frac], dim=-1), torch.mul)
        # Dense levels are the coarse prefix (resolution only grows): row-major position, wrapped by
        # the table size like tcnn; hashed levels: xor of coordinate * prime, modulo a power of two.
        k = self._n_dense
        parts = []
        if k > 0:
            dense = _combine_corners(lower_upper[:, :k] * self._strides[None, :k, :, None], torch.add)
            parts.append(dense % self._sizes[None, :k, None])
        if k < self.n_levels:
            hashed = _combine_corners(lower_upper[:, k:] * self._primes[None, None, :, None], torch.bitwise_xor)
            parts.append(hashed & (self._sizes[None, k:, None] - 1))
        index = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return index + self._offsets[None, :, None], weights

    def _forward_torch(self, x: torch.Tensor) -> torch.Tensor:
        rows, weights = self.corner_rows_and_weights(x)
        table = self.params.view(-1, self.n_features_per_level)
        out = _InterpolateTable.apply(table, rows, weights, self._grad_buffer)  # (n, L, F)
        return out.reshape(x.shape[0], self.n_output_dims)

    def _forward_tcnn(self, x: torch.Tensor) -> torch.Tensor:
        import tinycudann as tcnn

        if self._tcnn is None:
            self._tcnn = tcnn.Encoding(self.n_input_dims, self.tcnn_config(), dtype=torch.float32)
            self._tcnn.to(x.device)
        # Share one parameter tensor: the layouts are identical, so no copy is needed.
        self._tcnn.params = self.params
        return self._tcnn(x.contiguous()).to(torch.float32)


def _combine_corners(per_axis: torch.Tensor, op) -> torch.Tensor:
    """``(n, L, 2**D)`` from ``(n, L, D, 2)`` lower/upper values: corner ``c`` takes the upper value
    of axis ``d`` when bit ``d`` of ``c`` is set, and the axes are combined with ``op``."""
    n, levels, dims, _ = per_axis.shape
    out = per_axis[:, :, 0]
    for d in range(1, dims):
        # the new axis goes in front so that bit d of the flat corner index selects it
        out = op(per_axis[:, :, d, :, None], out[:, :, None, :]).reshape(n, levels, -1)
    return out


def _gather(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``table[rows]`` as ``(*rows.shape, F)``, via ``index_select`` (faster than advanced indexing on CPU)."""
    if _pairs_as_complex(table):
        # two float32 features move as one 8-byte complex element: half the indexed elements
        pairs = torch.view_as_complex(table).index_select(0, rows.reshape(-1))
        return torch.view_as_real(pairs).view(*rows.shape, 2)
    return table.index_select(0, rows.reshape(-1)).view(*rows.shape, table.shape[1])


def _scatter_add(target: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, grad_out: torch.Tensor) -> None:
    """``target[rows[..., c]] += weights[..., c] * grad_out`` in place (the table gradient)."""
    if target.is_contiguous() and _native.usable(floats=(target, weights, grad_out), ints=(rows,)):
        _native.scatter_add(target, rows.contiguous(), weights.contiguous(), grad_out)
        return
    index = rows.reshape(-1).long()  # index_add_ has a fast path for int64 indices only
    if _pairs_as_complex(target) and grad_out.dtype == torch.float32:
        contrib = weights.to(torch.complex64) * torch.view_as_complex(grad_out.contiguous())[:, :, None]
        torch.view_as_complex(target).index_add_(0, index, contrib.reshape(-1))
        return
    contrib = weights.to(grad_out.dtype)[..., None] * grad_out[:, :, None, :]  # (n, L, C, F)
    target.index_add_(0, index, contrib.reshape(-1, target.shape[1]))


def _pairs_as_complex(table: torch.Tensor) -> bool:
    """Whether to index ``table`` as complex pairs: a contiguous float32 ``(rows, 2)`` table (tcnn's
    default F = 2) on the CPU, outside ``torch.compile`` (inductor does not generate complex code)."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)()
    return (table.dim() == 2 and table.shape[1] == 2 and table.dtype == torch.float32
            and table.is_contiguous() and table.device.type == "cpu" and not compiling)


class _TableGradBuffer:
    """One table-sized gradient tensor reused by every backward pass.

    A fresh table-sized ``zeros`` per step is the single largest cost of a CPU training step with a
    big table: allocations above glibc's mmap threshold (32 MB) are page-faulted in on every step
    (38 ms of a 61 ms step for a 2^19 x 16-level table). The backward returns a *view* of this
    buffer; autograd adopts a gradient whose tensor nobody else holds without copying it, so
    ``params.grad`` ends up sharing the buffer's storage and nothing table-sized is allocated.

    The buffer is reused only when no tensor other than the buffer itself refers to its storage:
    after ``zero_grad(set_to_none=True)`` with nothing kept. When ``.grad`` is still alive (gradients
    accumulated over several backward calls, ``zero_grad(set_to_none=False)``) or the caller kept a
    reference to an earlier gradient, a new buffer is started, so every gradient is exactly the
    plain scatter-add and no kept tensor is ever overwritten.
    """

    def __init__(self) -> None:
        self._data: torch.Tensor | None = None
        self._alone = -1  # storage use count when only the buffer refers to it

    def zeroed(self, like: torch.Tensor) -> torch.Tensor:
        """Zeros shaped like ``like`` (the table view), reusing the buffer when nothing else holds it."""
        data = self._data
        reusable = (
            data is not None and data.shape == like.shape and data.dtype == like.dtype
            and data.device == like.device and self._alone > 0 and _storage_users(data) == self._alone
        )
        if reusable:
            return data.zero_()
        data = self._data = torch.zeros_like(like)
        self._alone = _storage_users(data)
        return data


def _storage_users(tensor: torch.Tensor) -> int:
    """Number of references to ``tensor``'s storage (-1 when torch cannot tell: then never reuse)."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    return -1 if count is None else int(count(tensor.untyped_storage()._cdata))


class _InterpolateTable(torch.autograd.Function):
    """``sum_c weights[..., c] * table[rows[..., c]]`` with a scatter-add backward.

    PyTorch's generic embedding backward is several times slower on CPU than one ``index_add_``;
    the weight gradient (needed for spatial gradients of the field) is computed only when asked.
    Forward mode (:meth:`jvp`) carries a tangent of the weights (a direction in space) through the
    interpolation, so one forward pass gives the directional derivative of every output at once.
    """

    @staticmethod
    def forward(ctx, table, rows, weights, grad_buffer=None):
        ctx.save_for_backward(table, rows, weights)
        ctx.save_for_forward(table, rows, weights)
        ctx.grad_buffer = grad_buffer
        if table.is_contiguous() and _native.usable(floats=(table, weights), ints=(rows,)):
            return _native.interpolate(table, rows.contiguous(), weights.contiguous())
        corner_feats = _gather(table, rows)  # (n, L, C, F)
        return torch.einsum("nlc,nlcf->nlf", weights.to(table.dtype), corner_feats)

    @staticmethod
    def jvp(ctx, table_tangent, rows_tangent, weights_tangent, grad_buffer_tangent):
        table, rows, weights = ctx.saved_tensors
        out = None
        if weights_tangent is not None:
            out = torch.einsum("nlc,nlcf->nlf", weights_tangent.to(table.dtype), _gather(table, rows))
        if table_tangent is not None:
            moved = torch.einsum("nlc,nlcf->nlf", weights.to(table.dtype), _gather(table_tangent, rows))
            out = moved if out is None else out + moved
        return out

    @staticmethod
    def backward(ctx, grad_out):
        table, rows, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            buffer = ctx.grad_buffer
            zeros = torch.zeros_like(table) if buffer is None else buffer.zeroed(table)
            _scatter_add(zeros, rows, weights, grad_out)
            # a new view of the buffer: autograd adopts it as .grad instead of copying it
            grad_table = zeros.view(zeros.shape)
        if ctx.needs_input_grad[2]:
            grad_weights = torch.einsum("nlcf,nlf->nlc", _gather(table, rows), grad_out).to(weights.dtype)
        return grad_table, None, grad_weights, None
