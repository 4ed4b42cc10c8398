"""A Gaussian-process smoother of principal-component scores, the second partner of the blend.

Why: on every held-out *training* split measured (``docs/model.md``, "A Gaussian-process partner"),
averaging the field's prediction with a Gaussian process's gained or tied: the two err differently.
The network and the multi-level grid smoother (:mod:`._smooth_base`) both interpolate along z
through grid cells one section gap wide; a GP with an anisotropic squared-exponential kernel, its
length scales chosen by the marginal likelihood, bridges a gap as smoothly as the data say.

The GP (:class:`KernelSmoother`) regresses the scores of the targets' top principal components on
the unit-cube coordinates: ``k(u, v) = exp(-|(u - v) / l|^2 / 2)`` plus white noise, one set of
hyper-parameters for every component (each component scaled to unit variance first, as scikit-learn's
``normalize_y``), fitted by scikit-learn on a seeded subsample of at most ``max_cells`` cells (an
exact GP costs ``O(m^3)``). Its posterior mean is ``k(u, X) @ alpha``: the support points ``X``,
the weights ``alpha`` and the length scales are buffers, saved and loaded as tensors.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

__all__ = ["KernelSmoother"]

MAX_CELLS = 2000  # support points of the posterior mean (one Cholesky factor, (n, m) kernel blocks)
FIT_CELLS = 300  # cells the hyper-parameters are fitted on: 1,000 took 20 s, 300 about 1 s
FIT_COMPONENTS = 20  # hyper-parameters are fitted to the top components (the benchmark's PCA + GP: 20)
QUERY_CHUNK = 2048  # points per kernel block at prediction: (chunk, support) float64 temporaries


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
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, WhiteKernel
        from sklearn.gaussian_process.kernels import ConstantKernel as Constant

        u, scores = np.asarray(u, dtype=np.float64), np.asarray(scores, dtype=np.float64)
        order = np.random.default_rng(seed).permutation(len(u))
        keep = np.sort(order[:max_cells])  # the fit's subsample is the first part of the support's
        u, scores = u[keep], scores[keep]
        fit = np.isin(keep, order[:fit_cells])
        mean, std = scores.mean(0), scores.std(0)
        std[std == 0] = 1.0
        standard = (scores - mean) / std
        kernel = Constant(1.0, (1e-3, 1e3)) * RBF(np.full(u.shape[1], 0.3), (1e-3, 1e2)) + WhiteKernel(0.1, (1e-5, 1e1))
        gp = GaussianProcessRegressor(kernel, normalize_y=False, random_state=seed)
        with warnings.catch_warnings():
            # a length scale at its bound is a fit that says "constant along that axis": fine here
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(u[fit], standard[fit, :FIT_COMPONENTS])
        amplitude = gp.kernel_.k1.k1.constant_value
        lengths = np.atleast_1d(gp.kernel_.k1.k2.length_scale).astype(np.float64)
        noise = gp.kernel_.k2.noise_level
        gram = amplitude * gp.kernel_.k1.k2(u) + (noise + 1e-8) * np.eye(len(u))
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
