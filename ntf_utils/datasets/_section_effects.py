"""Known technical section effects injected into counts: the test bed of the section-effect model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._anndata import dense_float32, read_matrix, read_sections
from .._constants import Key
from .._validate import check_nonnegative_counts

__all__ = ["inject_section_effects"]


def inject_section_effects(
    adata,
    *,
    efficiency: tuple[float, float] = (0.5, 2.0),
    n_groups: int = 4,
    ambient: float = 0.5,
    resample: bool = False,
    seed: int = 0,
    copy: bool = True,
):
    """Give every section its own capture efficiency per gene group and an ambient background.

    Serial sections are measured with different efficiency (tissue quality, permeabilisation, library
    depth) and pick up different ambient RNA. This applies both, with known values, to the counts of
    a stacked AnnData (e.g. :func:`synthetic_embryo`): for section ``s`` and gene ``g`` in group
    ``k(g)``, the counts become ``counts * e[s, k(g)] + a[s, g]`` (or a Poisson draw around it with
    ``resample=True``) with ``e`` log-uniform in ``efficiency`` and ``a`` an ambient level
    ``ambient * u[s, g] * mean count of g``, ``u`` uniform in [0, 1]. Without resampling the values
    are no longer integers but carry no extra noise, so a comparison with the unchanged data isolates
    the effects. Noise-free layers (``"truth"``) are left as they are: they stay the effect-free truth.

    Parameters
    ----------
    adata
        Stacked sections with counts in ``X`` and ``obs["section"]``.
    efficiency
        Range of the per-section, per-group capture efficiency (relative; drawn log-uniformly).
    n_groups
        Gene groups sharing an efficiency (genes are assigned round-robin: gene ``g`` is in group
        ``g % n_groups``).
    ambient
        Scale of the additive ambient rate, relative to each gene's mean count.
    resample
        Draw new Poisson counts around the changed values (adds noise) instead of keeping them.
    seed
        Seed of the effects and of the resampled counts.
    copy
        Return a new AnnData (default, since the counts are replaced) instead of changing ``adata``.

    Returns
    -------
    AnnData or None
        With ``X`` (and ``layers["counts"]`` when present) replaced, and the injected effects in
        ``uns["ntf"]["section_effects"]``: ``sections``, ``log_efficiency`` ``(n_sections, n_genes)``
        and ``ambient`` ``(n_sections, n_genes)`` (expected ambient counts per cell). ``None`` with
        ``copy=False``.
    """
    lo, hi = (float(v) for v in efficiency)
    if not 0 < lo <= hi:
        raise ValueError(f"efficiency must be a range (low, high) with 0 < low <= high, got {efficiency!r}")
    if n_groups < 1 or ambient < 0:
        raise ValueError(f"n_groups must be >= 1 and ambient >= 0, got {n_groups!r} and {ambient!r}")
    labels = read_sections(adata, Key.obs.section)
    if labels is None:
        raise KeyError(f"obs[{Key.obs.section!r}] not found: stack the sections first (ntf.pp.stack_sections)")
    counts = dense_float32(read_matrix(adata, None)).astype(np.float64)
    check_nonnegative_counts(counts, "adata.X")
    sections = sorted(set(labels))
    code = pd.Categorical(labels, categories=sections).codes
    rng = np.random.default_rng(seed)
    n_sections, n_genes = len(sections), counts.shape[1]
    log_eff_group = rng.uniform(np.log(lo), np.log(hi), size=(n_sections, n_groups))
    log_efficiency = log_eff_group[:, np.arange(n_genes) % n_groups]
    rate_ambient = ambient * rng.uniform(size=(n_sections, n_genes)) * counts.mean(0)[None, :]
    rate = counts * np.exp(log_efficiency[code]) + rate_ambient[code]
    new_counts = (rng.poisson(rate) if resample else rate).astype(np.float32)

    out = adata.copy() if copy else adata
    out.X = new_counts
    if Key.layers.counts in out.layers:
        out.layers[Key.layers.counts] = new_counts.copy()
    out.uns.setdefault(Key.uns.ntf, {})["section_effects"] = {
        "sections": sections,
        "log_efficiency": log_efficiency.tolist(),
        "ambient": rate_ambient.tolist(),
    }
    return out if copy else None
