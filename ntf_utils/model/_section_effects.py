"""Per-section technical effects, learned with the field and kept apart from it.

Serial sections differ in capture efficiency, library depth, tissue quality and staining. A field
without a place for those differences learns them as biology: on HER2ST patient A its domains were
the six sections. Here each training section ``s`` gets a per-gene offset ``b[s, g]`` and a per-gene
log scale ``a[s, g]`` on the network's output ``f_g(x)`` (standardised value, or log rate for the
count losses)::

    y_g(x, s) = c_g + (f_g(x) - c_g) * exp(a[s, g] - mean_s a[:, g]) + (b[s, g] - mean_s b[:, g])

with ``c_g`` the decoder's bias (the gene's reference level). For the count losses an offset is a
per-gene capture efficiency ``exp(b)``.

Per-section effects are confounded with biology that changes along z: six offsets per gene can
describe any trend across six sections, and sections whose make-up differs (an embryo's end sections,
Drosophila's stripes along the slab axis) differ in their mean expression for reasons of tissue.
Measured on held-out *training* sections, effects without a prior on the field soaked that up: on the
synthetic embryo (no technical effects) the held-out loss rose from 0.38 to 0.43 and the domains at
the cells fell from ARI 0.90 to 0.57. What makes them identifiable is a prior along z: with a PSF one
section gap wide along z (``TrainingConfig.section_psf``), the field at each depth is learned from
neighbouring sections together, and only what one section does differently is left to its effects.
So by default (``NetworkConfig.section_effects=None``) the effects come with that prior, and the
resolution selection decides per dataset whether the stack is better described that way.
Three more rules:

* the effects are *detrended*: their component along a low-degree polynomial in section z (degree
  ``NetworkConfig.section_trend_degree``; degree 0 is plain centring) is removed, so what changes
  smoothly along the stack (the sections' shared average and any steady drift) stays in the field,
  where it also predicts the sections in between; only section-to-section departures from it are
  effects;
* a ridge prior (``TrainingConfig.section_penalty``) keeps the effects of small sections near zero.

The *effect-free* field (no section, or ``section=-1``) is the level at which a held-out or new
section is predicted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = ["SectionEffects", "REFERENCE", "section_codes"]

REFERENCE = -1  # section code of "no section": the effect-free, reference-level field


class SectionEffects(nn.Module):
    """Per-section, per-gene offset and log scale on the network output, centred over sections.

    Parameters
    ----------
    n_sections
        Training sections (0: no effects, :meth:`apply` returns its input).
    n_genes
        Output genes.
    section_z
        ``(n_sections,)`` z of each section (its median), for the detrending.
    trend_degree
        Degree of the polynomial trend in z removed from the effects (capped at ``n_sections - 2``
        so that every effect keeps at least one degree of freedom).
    """

    def __init__(self, n_sections: int, n_genes: int, section_z=None, trend_degree: int = 0) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(n_sections, n_genes))
        self.log_scale = nn.Parameter(torch.zeros(n_sections, n_genes))
        z = np.zeros(n_sections) if section_z is None else np.asarray(section_z, dtype=np.float64)
        self.register_buffer("trend", torch.from_numpy(_trend_basis(z, trend_degree)))

    @property
    def n_sections(self) -> int:
        return self.offset.shape[0]

    def centred(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(offset, log_scale)`` without their trend along z: ``(n_sections, n_genes)`` each."""
        q = self.trend
        return self.offset - q @ (q.T @ self.offset), self.log_scale - q @ (q.T @ self.log_scale)

    def apply(self, out: torch.Tensor, level: torch.Tensor, section: torch.Tensor | None,
              gene_index: torch.Tensor | None = None) -> torch.Tensor:
        """Add each row's section effect to ``out`` ``(n, k)``; rows with ``section == -1`` are unchanged.

        ``level`` is the genes' reference level ``c`` (the decoder bias of those genes).
        """
        if section is None or self.n_sections == 0:
            return out
        offset, log_scale = self.centred()
        if gene_index is not None:
            offset, log_scale = offset[:, gene_index], log_scale[:, gene_index]
        rows = section.clamp_min(0)
        affected = level + (out - level) * torch.exp(log_scale.index_select(0, rows)) + offset.index_select(0, rows)
        return torch.where((section >= 0)[:, None], affected, out)

    def penalty(self) -> torch.Tensor:
        """Mean squared centred effect (offset and log scale): the ridge prior's value."""
        if self.n_sections == 0:
            return self.offset.sum()  # a zero that keeps the graph (and DDP) uniform
        offset, log_scale = self.centred()
        return (offset**2).mean() + (log_scale**2).mean()

    def table(self, sections: list[str], genes: list[str]) -> pd.DataFrame:
        """Long table of the centred effects: one row per section and gene."""
        if self.n_sections == 0:  # sections may be coded for registration alone
            sections = []
        offset, log_scale = (t.detach().cpu().numpy() for t in self.centred())
        return pd.DataFrame({
            "section": np.repeat(sections, len(genes)),
            "gene": np.tile(genes, len(sections)),
            "offset": offset.ravel(),
            "log_scale": log_scale.ravel(),
        })


def _trend_basis(z: np.ndarray, degree: int) -> np.ndarray:
    """``(n, k)`` float32 orthonormal basis of the polynomials of degree <= ``degree`` in ``z``."""
    n = len(z)
    if n == 0:
        return np.zeros((0, 1), dtype=np.float32)
    degree = int(max(0, min(degree, n - 2, len(np.unique(z)) - 1)))
    span = np.ptp(z)
    t = (z - z.mean()) / (span if span > 0 else 1.0)
    basis, _ = np.linalg.qr(np.vander(t, degree + 1, increasing=True))
    return basis.astype(np.float32)


def section_codes(labels: np.ndarray | None, names: list[str]) -> np.ndarray | None:
    """Integer codes of section ``labels`` in ``names`` (-1 for labels not among them)."""
    if labels is None or not names:
        return None
    lookup = {name: i for i, name in enumerate(names)}
    return np.fromiter((lookup.get(str(s), REFERENCE) for s in labels), dtype=np.int64, count=len(labels))
