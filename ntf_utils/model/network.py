"""The field network: hash-grid encoding -> MLP -> rank-r latent -> linear decoder to all genes."""

from __future__ import annotations

import torch
from torch import nn

from .config import NTFConfig
from .hashgrid import HashGridEncoding


class FieldNetwork(nn.Module):
    """Maps unit-cube coordinates to a latent and decodes it to genes.

    Parameters
    ----------
    config
        A resolved :class:`NTFConfig` (no ``None`` in the encoding fields).
    n_input_dims
        3 for (x, y, z), 4 with time.
    n_genes
        Number of output genes.

    Notes
    -----
    The gene decoder is linear, so predicting ``k`` of ``G`` genes costs ``O(k r)`` per point after
    the shared ``O(r)`` trunk: :meth:`forward` takes the gene indices to decode.
    """

    def __init__(self, config: NTFConfig, n_input_dims: int, n_genes: int) -> None:
        super().__init__()
        self.encoding = HashGridEncoding(
            n_input_dims=n_input_dims,
            n_levels=config.n_levels,
            n_features_per_level=config.n_features_per_level,
            log2_hashmap_size=config.log2_hashmap_size,
            base_resolution=config.base_resolution,
            per_level_scale=config.per_level_scale,
            implementation=config.implementation,
        )
        layers: list[nn.Module] = []
        width = self.encoding.n_output_dims
        for _ in range(config.hidden_layers):
            layers += [nn.Linear(width, config.hidden_width), nn.ReLU()]
            width = config.hidden_width
        layers.append(nn.Linear(width, config.latent_dim))
        self.trunk = nn.Sequential(*layers)
        self.decoder = nn.Linear(config.latent_dim, n_genes)
        # extra per-gene parameter of the NB loss (log inverse dispersion); unused otherwise
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def latent(self, u: torch.Tensor) -> torch.Tensor:
        """``(n, latent_dim)`` latent at unit-cube points ``u`` ``(n, D)``."""
        return self.trunk(self.encoding(u))

    def decode(self, z: torch.Tensor, gene_index: torch.Tensor | None = None) -> torch.Tensor:
        """Linear decoder, restricted to ``gene_index`` when given."""
        if gene_index is None:
            return self.decoder(z)
        return nn.functional.linear(z, self.decoder.weight[gene_index], self.decoder.bias[gene_index])

    def forward(self, u: torch.Tensor, gene_index: torch.Tensor | None = None, return_latent: bool = False):
        """``(n, n_genes)`` raw output (standardised value, or log rate for count losses).

        With ``return_latent`` also the latent: training calls the module once per step this way,
        so wrappers that hook ``forward`` (DistributedDataParallel) see every parameter use.
        """
        latent = self.latent(u)
        out = self.decode(latent, gene_index)
        return (out, latent) if return_latent else out
