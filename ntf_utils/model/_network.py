"""The field network: hash-grid encoding -> MLP -> rank-r latent -> linear decoder to all genes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._config import NTFConfig
from ._frequency import FrequencyEncoding
from ._hashgrid import HashGridEncoding
from ._poses import SectionPoses
from ._section_effects import SectionEffects
from ._smooth_base import SmoothBase

__all__ = ["FieldNetwork"]


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
    section_z
        z of each training section (in section-code order). They get their own technical effects
        (:mod:`._section_effects`) unless ``config.network.section_effects`` is False, and their
        own in-plane pose with ``config.network.register_sections`` (:mod:`._poses`). None or
        empty: neither.

    Notes
    -----
    The gene decoder is linear, so predicting ``k`` of ``G`` genes costs ``O(k r)`` per point after
    the shared ``O(r)`` trunk: :meth:`forward` takes the gene indices to decode.
    """

    def __init__(self, config: NTFConfig, n_input_dims: int, n_genes: int, section_z=None) -> None:
        super().__init__()
        enc, net = config.encoding, config.network
        self.encoding = HashGridEncoding(
            n_input_dims=n_input_dims,
            n_levels=enc.n_levels,
            n_features_per_level=enc.n_features_per_level,
            log2_hashmap_size=enc.log2_hashmap_size,
            base_resolution=enc.base_resolution,
            per_level_scale=enc.per_level_scale,
            implementation=enc.implementation,
        )
        self.frequencies = FrequencyEncoding(n_input_dims, enc.n_frequencies) if enc.n_frequencies else None
        layers: list[nn.Module] = []
        width = self.encoding.n_output_dims + (self.frequencies.n_output_dims if self.frequencies else 0)
        for _ in range(net.hidden_layers):
            layers += [nn.Linear(width, net.hidden_width), nn.ReLU()]
            width = net.hidden_width
        layers.append(nn.Linear(width, net.latent_dim))
        self.trunk = nn.Sequential(*layers)
        self.decoder = nn.Linear(net.latent_dim, n_genes)
        # extra per-gene parameter of the NB loss (log inverse dispersion); unused otherwise
        self.log_theta = nn.Parameter(torch.zeros(n_genes))
        # the smoothers blended into the prediction (solved by the pipeline): the grids' weight beta and
        # the Gaussian process's gamma (which scales with the distance from the training sections)
        self.smooth_blend, self.kernel_blend = float(net.smooth_blend), float(net.kernel_blend)
        wanted = self.smooth_blend > 0 or self.kernel_blend > 0
        self.smooth_base = SmoothBase.for_field(config, n_input_dims, n_genes) if wanted else None
        section_z = [] if section_z is None else list(section_z)
        effect_z = [] if net.section_effects is False else section_z
        self.section_effects = SectionEffects(len(effect_z), n_genes, effect_z, net.section_trend_degree)
        # registration only: absent otherwise, so that fields without it keep their exact state_dict
        self.poses = SectionPoses(len(section_z), section_z) if net.register_sections else None
        if self.poses is not None:
            # coarse-to-fine weights of the levels (training sets them; all ones otherwise); not saved
            self.register_buffer("level_weights", torch.ones(enc.n_levels), persistent=False)
        else:
            self.level_weights = None

    @property
    def blended(self) -> bool:
        """Whether the closed-form smoother is part of the output now (eval mode, with a smoother)."""
        return self.smooth_base is not None and not self.training

    @property
    def kernel_blended(self) -> bool:
        """Whether the Gaussian process is part of the output now (its weight varies from point to point)."""
        return self.blended and self.smooth_base.kernel is not None and self.kernel_blend > 0

    @property
    def latent_width(self) -> int:
        """Columns of :meth:`latent`: ``latent_dim``, plus the smoother's scores when :attr:`blended`
        (and, with the Gaussian process, the smoothers' share of the point)."""
        return self.decoder.in_features + (self.smooth_base.rank + self.kernel_blended if self.blended else 0)

    def latent(self, u: torch.Tensor) -> torch.Tensor:
        """``(n, latent_width)`` latent at unit-cube points ``u`` ``(n, D)``.

        When :attr:`blended` it is ``[(1 - beta) * MLP latent, beta * smoother scores]``, so that
        :meth:`decode` of it is the blended prediction and what clusters the latent (``tl.domains``)
        sees what the field predicts.
        """
        latent = self._network_latent(u)
        if self.kernel_blended:
            return self._blend_with_kernel(latent, u)
        if self.blended:
            beta = self.smooth_blend
            latent = torch.cat(((1.0 - beta) * latent, beta * self.smooth_base.scores(u).to(latent.dtype)), dim=1)
        return latent

    def _network_latent(self, u: torch.Tensor) -> torch.Tensor:
        """``(n, latent_dim)`` the MLP's latent at ``u``, before any smoother is blended in."""
        features = self.encoding(u)
        if self.level_weights is not None:
            features = features * self.level_weights.repeat_interleave(self.encoding.n_features_per_level)
        if self.frequencies is not None:
            features = torch.cat((features, self.frequencies(u).to(features.dtype)), dim=1)
        return self.trunk(features)

    @torch.no_grad()
    def blend_parts(self, u: torch.Tensor, section: torch.Tensor | None = None) -> BlendParts:
        """What the eval-mode prediction at ``u`` is blended from, for scoring many blend weights at once.

        Each part is evaluated once; :meth:`BlendParts.output` combines them for any weights as
        :meth:`forward` would with those weights set (the network and the Gaussian process are the
        costly parts: scoring 12 weight pairs by a forward pass each took 12 s of a 23 s fit of
        100,000 cells). Needs a solved :attr:`smooth_base`.
        """
        if self.poses is not None:
            u = self.poses(u, section)
        base = self.smooth_base
        network = self.decoder(self._network_latent(u))
        grids = base(u).to(network.dtype) if base.grids else None
        kernel = reach = None
        if base.kernel is not None:
            kernel = base.kernel(u.float()).to(network.dtype) @ base.axes.T.to(network.dtype)
            reach = base.kernel_reach(u.float()).to(network.dtype)
        return BlendParts(self, network, grids, kernel, reach, section)

    def _blend_with_kernel(self, latent: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``[(1 - s) z, (1 - g) beta grids + g kernel, s]`` with ``g = gamma * reach(u)`` and
        ``s = 1 - (1 - beta)(1 - g)`` the smoothers' share of each point: decoded by
        ``[W, axes, -b] . + b`` it is ``(1 - g)((1 - beta)(W z + b) + beta grids) + g kernel``."""
        base, beta = self.smooth_base, self.smooth_blend
        gamma = self.kernel_blend * base.kernel_reach(u.float()).to(latent.dtype)
        share = 1.0 - (1.0 - beta) * (1.0 - gamma)
        smooth = gamma * base.kernel(u.float()).to(latent.dtype)
        if beta > 0:
            smooth = smooth + (1.0 - gamma) * beta * base.scores(u).to(latent.dtype)
        return torch.cat(((1.0 - share) * latent, smooth, share), dim=1)

    def decoder_matrix(self, gene_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight (genes, latent_width), bias)`` that :meth:`decode` applies to :meth:`latent` now."""
        weight, bias = self.decoder.weight, self.decoder.bias
        if gene_index is not None:
            weight, bias = weight[gene_index], bias[gene_index]
        if self.blended:  # (1 - beta) (W z + b) + beta A s  =  [W, A] [(1 - beta) z, beta s] + (1 - beta) b
            axes = self.smooth_base.axes if gene_index is None else self.smooth_base.axes[gene_index]
            if self.kernel_blended:  # the share varies by point: its bias term is a column (_blend_with_kernel)
                return torch.cat((weight, axes.to(weight.dtype), -bias[:, None]), dim=1), bias
            weight, bias = torch.cat((weight, axes.to(weight.dtype)), dim=1), (1.0 - self.smooth_blend) * bias
        return weight, bias

    def decode(self, z: torch.Tensor, gene_index: torch.Tensor | None = None) -> torch.Tensor:
        """Linear decoder of :meth:`latent`, restricted to ``gene_index`` when given."""
        if gene_index is None and not self.blended:
            return self.decoder(z)
        return nn.functional.linear(z, *self.decoder_matrix(gene_index))

    def forward(self, u: torch.Tensor, gene_index: torch.Tensor | None = None, return_latent: bool = False,
                section: torch.Tensor | None = None, return_effect_free: bool = False):
        """``(n, n_genes)`` raw output (standardised value, or log rate for count losses).

        ``section`` ``(n,)`` adds each row's section effect and, with registration, first moves
        each row by its section's pose (-1 or None: the effect-free field at ``u`` as given).
        In eval mode the smoothers are blended in (``NetworkConfig.smooth_blend``, ``kernel_blend``; training
        fits the network alone). With ``return_latent`` also the latent: training calls the module once per step this way,
        so wrappers that hook ``forward`` (DistributedDataParallel) see every parameter use. With
        ``return_effect_free`` (and ``return_latent``) the output before the section effects comes last.
        """
        if self.poses is not None:
            u = self.poses(u, section)
        latent = self.latent(u)
        effect_free = out = self.decode(latent, gene_index)  # blended with the smoother in eval mode
        if section is not None:
            bias = self.decoder.bias if gene_index is None else self.decoder.bias[gene_index]
            out = self.section_effects.apply(out, bias, section, gene_index)
        if return_effect_free:
            return out, latent, effect_free
        return (out, latent) if return_latent else out


@dataclass
class BlendParts:
    """The parts of a field's eval-mode prediction at some points (:meth:`FieldNetwork.blend_parts`):
    the network's decoded output ``W z + b``, the grid smoother's and the Gaussian process's
    predictions (``None`` where the smoother has none), and the GP's reach ``(n, 1)``."""

    field_network: FieldNetwork
    network: torch.Tensor
    grids: torch.Tensor | None
    kernel: torch.Tensor | None
    reach: torch.Tensor | None
    section: torch.Tensor | None

    def output(self, smooth_blend: float, kernel_blend: float) -> torch.Tensor:
        """The prediction with these weights, section effects included: as
        :meth:`FieldNetwork._blend_with_kernel` decodes, ``(1 - g)((1 - beta) N + beta G) + g K`` with
        ``g = gamma * reach``."""
        out = self.network if smooth_blend == 0 else (1.0 - smooth_blend) * self.network + smooth_blend * self.grids
        if kernel_blend > 0:
            share = kernel_blend * self.reach
            out = (1.0 - share) * out + share * self.kernel
        net = self.field_network
        return net.section_effects.apply(out, net.decoder.bias, self.section)
