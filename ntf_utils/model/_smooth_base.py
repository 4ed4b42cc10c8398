"""A smoother solved in closed form, blended into the field's prediction.

Why: between sections the hash grid interpolates piecewise-linearly, and on sparse stacks of smooth
tissue (the Drosophila atlas's stripes and gradients) the network's held-out error is partly its own
variance. A grid followed by a linear read-out is linear in its parameters, so its node values can be
solved directly: multi-level grids whose values are the ridge solution for the training targets
are a multi-scale spline smoother, fitted in well under a second. It is a different kind of
estimate from the network's, and averaging two different estimates cancels part of their errors::

    prediction(u) = (1 - beta) * network(u) + beta * smoother(u)

The network is trained as without it (the smoother only joins the output in eval mode): fitted on top
of a fixed smoother instead, the network lost accuracy everywhere it was measured (``docs/model.md``,
"A field solved in closed form"). ``beta`` is chosen on held-out training sections, after the
resolution race (``SelectionConfig.blends``).

The smoother (:class:`SmoothBase`) works in the targets' top principal components: level ``k`` is a
dense grid of resolution ``R / 2**k`` over the unit cube (``R``: the sampling rule's finest
resolution, one cell per section gap along z), multilinearly interpolated; the node values minimise
the squared error plus a ridge penalty that halves ``decay`` times per coarser level, so coarse levels
carry the shape and fine ones only what the data insist on. Nodes that no training cell touches solve
to zero and are not stored: the smoother costs memory in proportion to the tissue, not to the grid.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from ._kernel_smoother import KernelSmoother

__all__ = ["SmoothBase", "base_resolutions", "solve_rows"]

MAX_NODES = 20_000  # past this many touched nodes the finest levels are dropped (memory, solve time)
MAX_SOLVE_CELLS = 50_000  # the solve uses a seeded subsample of larger data


def solve_rows(n_cells: int, seed: int) -> np.ndarray | None:
    """The rows :meth:`SmoothBase.solve` uses: a seeded, sorted subsample of :data:`MAX_SOLVE_CELLS` when
    there are more cells (None: all of them). The pipeline takes them before it converts the targets, so
    that a large fit does not copy every cell's targets for a solve that reads 50,000."""
    if n_cells <= MAX_SOLVE_CELLS:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_cells, MAX_SOLVE_CELLS, replace=False))


def base_resolutions(finest: float) -> list[float]:
    """Resolutions of the smoother's levels: ``finest`` halved until one cell spans the cube."""
    levels = [float(finest)]
    while levels[-1] / 2.0 >= 1.0:
        levels.append(levels[-1] / 2.0)
    return levels


class SmoothBase(nn.Module):
    """Multi-level dense grids of principal-component scores, interpolated, summed and decoded to genes.

    Parameters
    ----------
    n_input_dims
        3 for (x, y, z), 4 with time; points lie in the unit cube.
    n_genes
        Output genes.
    rank
        Principal components carried (at most ``n_genes``).
    resolutions
        Grid resolution of each level on the unit cube (:func:`base_resolutions`).
    grids
        Whether the grids are solved (``False``: the Gaussian process alone).
    kernel
        Whether a Gaussian process of the same scores (:class:`~._kernel_smoother.KernelSmoother`) is
        solved too, with how far each point lies from the nearest training section
        (:meth:`kernel_reach`): the network blends it in between sections, not at them.

    Notes
    -----
    Level ``k`` stores the ids of its touched nodes (sorted ``int64``, row-major over a grid of
    ``ceil(R) + 2`` nodes per axis) and their scores ``(m, rank)``; an untouched node reads as zero.
    ``axes`` ``(n_genes, rank)`` decodes scores to genes. All are buffers: saved with the weights,
    never trained.
    """

    def __init__(self, n_input_dims: int, n_genes: int, rank: int, resolutions: list[float],
                 grids: bool = True, kernel: bool = False) -> None:
        super().__init__()
        self.n_input_dims = int(n_input_dims)
        self.rank = int(min(rank, n_genes))
        self.resolutions = [float(r) for r in resolutions]
        self.grids = bool(grids)
        self.kernel = KernelSmoother(self.n_input_dims, self.rank) if kernel else None
        if self.kernel is not None:
            # z extent (unit cube) of each training section, and the distance over which the reach ramps
            self.register_buffer("section_lower", torch.zeros(0))
            self.register_buffer("section_upper", torch.zeros(0))
            self.register_buffer("reach_width", torch.zeros(()))
        self.register_buffer("axes", torch.zeros(n_genes, self.rank))
        for k in range(len(self.resolutions)):
            self.register_buffer(f"ids{k}", torch.zeros(0, dtype=torch.int64))
            self.register_buffer(f"values{k}", torch.zeros(0, self.rank))
        corners = np.array(list(itertools.product((0, 1), repeat=self.n_input_dims)), dtype=np.int64)
        self.register_buffer("_corners", torch.from_numpy(corners), persistent=False)

    @classmethod
    def for_field(cls, config, n_input_dims: int, n_genes: int) -> SmoothBase:
        """The smoother of a field with the resolved ``config``: the latent's rank, levels from the
        sampling rule's finest resolution (:func:`base_resolutions`); grids where ``smooth_blend`` asks
        for them, a Gaussian process where ``kernel_blend`` does."""
        net = config.network
        return cls(n_input_dims, n_genes, net.latent_dim, base_resolutions(config.encoding.support_resolution),
                   grids=net.smooth_blend > 0 or net.kernel_blend == 0, kernel=net.kernel_blend > 0)

    def _corner_weights(self, u: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Node ids ``(n, 2**D)`` and multilinear weights of points ``u`` (clamped to the cube) on level ``k``."""
        scaled = u.clamp(0.0, 1.0) * self.resolutions[k]
        lower = scaled.floor()
        frac = (scaled - lower)[:, None, :]
        side = int(np.ceil(self.resolutions[k])) + 2
        strides = torch.as_tensor(side ** np.arange(self.n_input_dims), device=u.device)
        ids = ((lower.long()[:, None, :] + self._corners) * strides).sum(-1)
        weights = torch.where(self._corners.bool(), frac, 1.0 - frac).prod(-1)
        return ids, weights

    def kernel_reach(self, u: torch.Tensor) -> torch.Tensor:
        """``(n, 1)`` in [0, 1]: how far each point lies from the nearest training section along z, over
        half the narrowest gap between sections (0 within a section's z extent, 1 from there on; 1
        everywhere when the cells had no section labels). The Gaussian process's weight scales with it:
        between sections it helps the network, at the measured cells it would only smooth them."""
        if self.section_lower.numel() == 0:
            return u.new_ones(u.shape[0], 1)
        z = u[:, 2:3]
        outside = torch.clamp(torch.maximum(self.section_lower.to(z.dtype) - z, z - self.section_upper.to(z.dtype)),
                              min=0.0)
        return (outside.min(dim=1, keepdim=True).values / self.reach_width.to(z.dtype)).clamp(max=1.0)

    def scores(self, u: torch.Tensor) -> torch.Tensor:
        """``(n, rank)`` principal-component scores of the multi-level grids at unit-cube points ``u`` ``(n, D)``."""
        out = u.new_zeros(u.shape[0], self.rank, dtype=torch.float32)
        for k in range(len(self.resolutions)):
            ids, values = getattr(self, f"ids{k}"), getattr(self, f"values{k}")
            if ids.numel() == 0:
                continue
            corner_ids, weights = self._corner_weights(u.float(), k)
            pos = torch.searchsorted(ids, corner_ids).clamp_(max=ids.numel() - 1)
            weights = weights * (ids[pos] == corner_ids)
            for corner in range(weights.shape[1]):  # one corner at a time: (n, rank) temporaries, not (n, 2**D, rank)
                out = out + values[pos[:, corner]] * weights[:, corner, None]
        return out

    def forward(self, u: torch.Tensor, gene_index: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, n_genes)`` the grids' smoothed standardised values at ``u`` (only the genes of ``gene_index`` when given)."""
        axes = self.axes if gene_index is None else self.axes[gene_index]
        return self.scores(u) @ axes.T

    def solve(self, u: np.ndarray, targets: np.ndarray, *, penalty: float, decay: float, seed: int = 0,
              extents: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
        """Fit the smoother to ``targets`` at ``u``: principal axes, then a ridge solve of their scores.

        Minimises ``||sum_k A_k V_k - targets @ axes||^2 + penalty * sum_k 2**(-k * decay) ||V_k||^2``
        (``A_k``: the interpolation weights of level ``k``, finest first) by one sparse direct solve of
        the normal equations for every component at once.

        Parameters
        ----------
        u
            ``(n, D)`` unit-cube coordinates of the training cells.
        targets
            ``(n, n_genes)`` standardised training values (unmeasured entries as 0, the gene's mean).
        penalty, decay
            Ridge weight on the finest level (in cells' worth of data) and how many octaves weaker it
            gets per coarser level.
        seed
            Seed of the subsample when there are more than ``MAX_SOLVE_CELLS`` cells.
        extents
            ``(lower, upper)`` unit-cube z extent of each training section, what :meth:`kernel_reach`
            measures from (None: no labelled sections).

        Returns
        -------
        dict
            ``levels`` (resolutions used), ``nodes`` (touched nodes per level used), ``cells`` (cells solved on).
        """
        import scipy.sparse as sp
        from scipy.sparse.linalg import splu

        u, targets = np.asarray(u, dtype=np.float64), np.asarray(targets, dtype=np.float64)
        if self.kernel is not None:
            self._measure_sections(extents)
        keep = solve_rows(len(u), seed)
        if keep is not None:
            u, targets = u[keep], targets[keep]
        eigenvalues, vectors = np.linalg.eigh(targets.T @ targets)
        axes = vectors[:, np.argsort(eigenvalues)[::-1][: self.rank]]
        device = self.axes.device
        self.axes = torch.from_numpy(axes.astype(np.float32)).to(device)
        summary = {}
        if self.kernel is not None:
            summary["kernel"] = self.kernel.solve(u, targets @ axes, seed=seed)
        if not self.grids:
            return {"levels": [], "nodes": [], "cells": int(len(u)), **summary}
        touched = {}
        for k in range(len(self.resolutions)):
            ids, weights = (t.numpy() for t in self._corner_weights(torch.from_numpy(u), k))
            nodes, local = np.unique(ids.ravel(), return_inverse=True)
            touched[k] = (nodes, local.reshape(ids.shape), weights)
        first = 0
        while first < len(self.resolutions) - 1 and sum(len(touched[k][0]) for k in touched if k >= first) > MAX_NODES:
            first += 1
        cols, vals, priors, blocks, offset = [], [], [], {}, 0
        for k in range(first, len(self.resolutions)):
            nodes, local, weights = touched[k]
            cols.append(local.ravel() + offset)
            vals.append(weights.ravel())
            priors.append(np.full(len(nodes), penalty * 2.0 ** (-k * decay)))
            blocks[k] = (offset, len(nodes))
            offset += len(nodes)
        rows = np.tile(np.repeat(np.arange(len(u)), len(self._corners)), len(cols))
        design = sp.csr_matrix((np.concatenate(vals), (rows, np.concatenate(cols))), shape=(len(u), offset))
        normal = (design.T @ design + sp.diags(np.concatenate(priors))).tocsc()
        # symmetric positive definite: a symmetric ordering keeps the fill-in small (COLAMD took 100x longer)
        factor = splu(normal, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        solution = factor.solve(np.asarray(design.T @ (targets @ axes)))
        for k in range(len(self.resolutions)):
            start, size = blocks.get(k, (0, 0))
            ids = touched[k][0] if k in blocks else np.zeros(0, dtype=np.int64)
            setattr(self, f"ids{k}", torch.from_numpy(ids).to(device))
            setattr(self, f"values{k}", torch.from_numpy(solution[start:start + size].astype(np.float32)).to(device))
        return {"levels": [self.resolutions[k] for k in blocks], "nodes": [size for _, size in blocks.values()],
                "cells": int(len(u)), **summary}

    def _measure_sections(self, extents: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Store the sections' z extents and half the narrowest gap between two of them."""
        lower, upper, width = np.zeros(0), np.zeros(0), 0.0
        if extents is not None and len(extents[0]) >= 2:
            order = np.argsort(extents[0])
            lower, upper = np.asarray(extents[0])[order], np.asarray(extents[1])[order]
            gaps = lower[1:] - np.maximum.accumulate(upper)[:-1]
            positive = gaps[gaps > 0]  # overlapping extents (slabs cut back to back) have no gap between them
            width = float(max(positive.min() / 2.0, 1e-6)) if positive.size else 1e-6
        device = self.axes.device
        self.section_lower = torch.tensor(lower, dtype=torch.float32, device=device)
        self.section_upper = torch.tensor(upper, dtype=torch.float32, device=device)
        self.reach_width = torch.tensor(width, dtype=torch.float32, device=device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # how many nodes each level touched, and how many sections there were, depend on the data
        for name in ("section_lower", "section_upper"):
            if prefix + name in state_dict and hasattr(self, name):
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.axes.device))
        for name in [f"{kind}{k}" for k in range(len(self.resolutions)) for kind in ("ids", "values")]:
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.axes.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
