"""Per-entry losses: MSE on (standardised) values, Poisson and negative binomial on counts."""

from __future__ import annotations

import torch

__all__ = ["masked_mean", "mse_loss", "poisson_loss", "nb_loss"]


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over entries, counting only those where ``mask`` is 1 (all when ``mask`` is None)."""
    if mask is None:
        return values.mean()
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def mse_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error of standardised values."""
    return masked_mean((output - target) ** 2, mask)


def poisson_loss(
    log_rate: torch.Tensor, counts: torch.Tensor, log_size: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Poisson negative log-likelihood (without the constant ``log(y!)``).

    ``log_rate`` is the log expected count at size factor 1; ``log_size`` ``(n, 1)`` the log size factor.
    """
    eta = log_rate + log_size
    return masked_mean(torch.exp(eta) - counts * eta, mask)


def nb_loss(
    log_rate: torch.Tensor,
    counts: torch.Tensor,
    log_size: torch.Tensor,
    log_theta: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negative-binomial negative log-likelihood with a per-gene inverse dispersion ``exp(log_theta)``."""
    eta = log_rate + log_size
    theta = torch.exp(log_theta)[None, :]
    log_theta_mu = torch.logaddexp(log_theta[None, :], eta)  # log(theta + mu)
    ll = (
        torch.lgamma(counts + theta)
        - torch.lgamma(theta)
        - torch.lgamma(counts + 1.0)
        + theta * (log_theta[None, :] - log_theta_mu)
        + counts * (eta - log_theta_mu)
    )
    return masked_mean(-ll, mask)
