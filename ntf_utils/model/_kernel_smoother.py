"""A Gaussian-process smoother of principal-component scores, the second partner of the blend.

Why: on every held-out *training* split measured (``docs/model.md``, "A Gaussian-process partner"),
averaging the field's prediction with a Gaussian process's gained or tied: the two err differently.
The network and the multi-level grid smoother (:mod:`._smooth_base`) both interpolate along z
through grid cells one section gap wide; a GP with an anisotropic squared-exponential kernel, its
length scales chosen by the marginal likelihood, bridges a gap as smoothly as the data say.

The GP (:class:`KernelSmoother`) regresses the scores of the targets' top principal components on
the unit-cube coordinates: ``k(u, v) = exp(-|(u - v) / l|^2 / 2)`` plus white noise, one set of
hyper-parameters for every component (each component scaled to unit variance first, as scikit-learn's
``normalize_y``), chosen by the marginal likelihood on a seeded subsample of ``fit_cells`` cells (an
exact GP costs ``O(m^3)``): scikit-learn's ``GaussianProcessRegressor`` objective and search (L-BFGS-B
from the same start, within the same bounds), with its gradient computed as one ``(m, m)`` product
instead of scikit-learn's ``(m, m, components)`` one, which took most of a fit's GP time
(:func:`fit_hyperparameters`). Its posterior mean is ``k(u, X) @ alpha``: the support points ``X``,
the weights ``alpha`` and the length scales are buffers, saved and loaded as tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["KernelSmoother", "fit_hyperparameters", "negative_log_marginal_likelihood", "squared_differences"]

MAX_CELLS = 2000  # support points of the posterior mean (one Cholesky factor, (n, m) kernel blocks)
FIT_CELLS = 300  # cells the hyper-parameters are fitted on: 1,000 took 20 s, 300 about 1 s
FIT_COMPONENTS = 20  # hyper-parameters are fitted to the top components (the benchmark's PCA + GP: 20)
QUERY_CHUNK = 2048  # points per kernel block at prediction: (chunk, support) float64 temporaries
JITTER = 1e-10  # added to the Gram matrix's diagonal in the search, as scikit-learn's default ``alpha``
# the search's start and bounds (scikit-learn's kernel Constant(1) * RBF(0.3) + White(0.1)):
# amplitude, each length scale (unit-cube units), white noise level
START = (1.0, 0.3, 0.1)
BOUNDS = ((1e-3, 1e3), (1e-3, 1e2), (1e-5, 1e1))


def negative_log_marginal_likelihood(theta: np.ndarray, differences: np.ndarray, y: np.ndarray
                                     ) -> tuple[float, np.ndarray]:
    """``-log p(y | u)`` summed over the columns of ``y`` ``(n, k)``, and its gradient in ``theta``.

    The kernel is ``amplitude * exp(-|(u - v) / l|^2 / 2) + noise * [u == v]`` with
    ``theta = log([amplitude, l_1, ..., l_D, noise])``, as scikit-learn's ``Constant * RBF + White``
    (and its ``theta``); :data:`JITTER` joins the diagonal. ``differences`` ``(n, n, D)`` holds
    ``(u_d - v_d)^2`` of every pair (:func:`squared_differences`: the same for every ``theta``). The
    gradient ``0.5 * tr((a a^T - k K^-1) dK/dtheta)`` with ``a = K^-1 y`` sums over the columns first,
    so it costs one ``(n, n)`` product per parameter. Where ``K`` is not positive definite: ``inf``
    and a zero gradient, as scikit-learn returns ``-inf``.
    """
    from scipy.linalg import LinAlgError, cho_solve, cholesky

    amplitude, lengths, noise = np.exp(theta[0]), np.exp(theta[1:-1]), np.exp(theta[-1])
    n, columns = y.shape
    per_axis = differences / lengths**2  # (n, n, D): |u_d - v_d|^2 / l_d^2
    correlation = amplitude * np.exp(-0.5 * per_axis.sum(-1))
    gram = correlation + (noise + JITTER) * np.eye(n)
    try:
        factor = cholesky(gram, lower=True, check_finite=False)
    except LinAlgError:
        return np.inf, np.zeros_like(theta)
    alpha = cho_solve((factor, True), y, check_finite=False)
    log_likelihood = (-0.5 * np.einsum("ik,ik->", y, alpha) - columns * np.log(np.diag(factor)).sum()
                      - columns * n / 2 * np.log(2 * np.pi))
    inner = alpha @ alpha.T - columns * cho_solve((factor, True), np.eye(n), check_finite=False)
    weighted = inner * correlation
    gradient = np.concatenate([[weighted.sum()], np.einsum("ij,ijd->d", weighted, per_axis),
                               [noise * np.trace(inner)]]) * 0.5
    return -float(log_likelihood), -gradient


def squared_differences(u: np.ndarray) -> np.ndarray:
    """``(n, n, D)``: ``(u_d - v_d)^2`` for every pair of rows of ``u`` and every axis."""
    return (u[:, None, :] - u[None, :, :]) ** 2


def fit_hyperparameters(u: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
    """``(amplitude, length scales, noise)`` maximising the marginal likelihood of ``y`` ``(n, k)`` at
    ``u`` ``(n, D)``: L-BFGS-B from :data:`START` within :data:`BOUNDS`, in log space, as scikit-learn's
    ``GaussianProcessRegressor(Constant * RBF + White).fit`` searches (a length scale at its bound is a
    fit that says "constant along that axis": fine here)."""
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    dims = u.shape[1]
    start = np.log([START[0], *[START[1]] * dims, START[2]])
    bounds = np.log([BOUNDS[0], *[BOUNDS[1]] * dims, BOUNDS[2]])
    # on (300, 300) matrices a second BLAS thread costs more than it gives (an evaluation: 30 ms on
    # two threads, 14 ms on one)
    with threadpool_limits(1):
        theta = minimize(negative_log_marginal_likelihood, start, args=(squared_differences(u), y),
                         method="L-BFGS-B", jac=True, bounds=bounds).x
    values = np.exp(theta)
    return float(values[0]), values[1:-1], float(values[-1])


class KernelSmoother(nn.Module):
    """Posterior mean of a Gaussian process of principal-component scores at unit-cube points.

    Parameters
    ----------
    n_input_dims
        3 for (x, y, z), 4 with time.
    rank
        Principal-component scores predicted.
    """

    def __init__(self, n_input_dims: int, rank: int) -> None:
        super().__init__()
        self.n_input_dims, self.rank = int(n_input_dims), int(rank)
        self.register_buffer("support", torch.zeros(0, self.n_input_dims))
        self.register_buffer("alpha", torch.zeros(0, self.rank))
        self.register_buffer("mean", torch.zeros(self.rank))
        self.register_buffer("inverse_length", torch.ones(self.n_input_dims))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``(n, rank)`` posterior-mean scores at unit-cube points ``u`` ``(n, D)``."""
        if self.support.numel() == 0:
            return self.mean.expand(u.shape[0], self.rank).to(u.dtype)
        # float64 inside: the weights alpha of a nearly noise-free fit are large and cancel in the sum,
        # which in float32 left a noise that central differences (and smooth renders) would show
        scale = self.inverse_length.double()
        support, alpha = self.support.double() * scale, self.alpha.double()
        support_norm = (support * support).sum(1)
        chunks = []
        for start in range(0, u.shape[0], QUERY_CHUNK):
            # |a - b|^2 expanded, so that forward-mode autodiff (tl.gradients) sees plain matrix products
            a = u[start:start + QUERY_CHUNK].double() * scale
            squared = (a * a).sum(1, keepdim=True) - 2.0 * a @ support.T + support_norm
            chunks.append(torch.exp(-0.5 * squared.clamp_min(0.0)) @ alpha)
        return (torch.cat(chunks) + self.mean.double()).to(u.dtype)

    def solve(self, u: np.ndarray, scores: np.ndarray, *, max_cells: int = MAX_CELLS,
              fit_cells: int = FIT_CELLS, seed: int = 0) -> dict:
        """Fit the GP to ``scores`` ``(n, rank)`` at unit-cube points ``u`` ``(n, D)``.

        The hyper-parameters are fitted on a seeded subsample of ``fit_cells`` cells (each step of
        the marginal-likelihood search costs ``O(m^3)``), the posterior on ``max_cells`` (one
        Cholesky factor).

        Returns
        -------
        dict
            ``cells`` (support points), ``fit_cells``, the fitted kernel (``amplitude``,
            ``length_scales`` per axis in unit-cube units, ``noise_level``) and ``noise_share``
            (the white noise's share of the standardised variance, 0-1).
        """
        from scipy.linalg import cho_factor, cho_solve
        from scipy.spatial.distance import pdist, squareform

        u, scores = np.asarray(u, dtype=np.float64), np.asarray(scores, dtype=np.float64)
        order = np.random.default_rng(seed).permutation(len(u))
        keep = np.sort(order[:max_cells])  # the fit's subsample is the first part of the support's
        u, scores = u[keep], scores[keep]
        fit = np.isin(keep, order[:fit_cells])
        mean, std = scores.mean(0), scores.std(0)
        std[std == 0] = 1.0
        standard = (scores - mean) / std
        amplitude, lengths, noise = fit_hyperparameters(u[fit], standard[fit, :FIT_COMPONENTS])
        correlation = squareform(np.exp(-0.5 * pdist(u / lengths, "sqeuclidean")))
        np.fill_diagonal(correlation, 1.0)
        gram = amplitude * correlation + (noise + 1e-8) * np.eye(len(u))
        # every component with the fitted kernel: K^-1 y by one Cholesky factor (two triangular solves;
        # a general solve with the factor took 0.26 s of a 1.5 s solve at 2,000 cells)
        alpha = cho_solve(cho_factor(gram, lower=True), standard) * amplitude * std
        device = self.mean.device
        self.support = torch.from_numpy(u.astype(np.float32)).to(device)
        self.alpha = torch.from_numpy(alpha.astype(np.float32)).to(device)
        self.mean = torch.from_numpy(mean.astype(np.float32)).to(device)
        self.inverse_length = torch.from_numpy((1.0 / lengths).astype(np.float32)).to(device)
        return {"cells": int(len(u)), "fit_cells": int(fit.sum()), "amplitude": float(amplitude),
                "length_scales": [float(v) for v in lengths], "noise_level": float(noise),
                "noise_share": round(float(noise / (amplitude + noise)), 4)}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # how many support points there are depends on the data: take the saved sizes
        for name in ("support", "alpha"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.mean.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
