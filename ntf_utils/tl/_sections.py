"""Sections for a stack that came without ``obs["section"]``: from its z values, or slabs along z.

Why: what :func:`ntf_utils.tl.fit` learns from sections is most of what makes it generalise between
them: the resolution race holds out whole sections, the closed-form smoother and the Gaussian-process
partner are blended in by the loss on them, and the sampling rule measures the in-plane spacing per
section. Without labels all of that was skipped and the field fell far below a 3D kNN on held-out
sections (BDTNP at 50% kept: 0.710 against the labelled fit's 0.832 and kNN's 0.788; ``docs/model.md``,
"Stacks without section labels"). So when the labels are missing they are derived:

- z takes few distinct values (a stack of sections, as :func:`ntf_utils.pp.stack_sections` makes
  them, but unlabelled): each distinct z is a section, and the fit is the labelled one's;
- z is continuous (cells located in 3D, e.g. thick slabs of STARmap or MERFISH): about :data:`SLABS`
  slabs along z (cut where z has gaps, then into equal cell counts), used to choose the resolution
  and the blends. They are not sections of the measurement, so they get no section effects.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._constants import Key
from ..model._coords import z_is_discrete

__all__ = ["SLABS", "derive_sections", "slabs"]

SLABS = 16  # slabs of a continuous cloud: on a 30,000-cell cloud, 12 and 18 did as well as true slab labels
MIN_SLAB_CELLS = 20  # fewer cells per slab and the held-out loss of a slab says little
MIN_SECTION_CELLS = 5  # cells per distinct z, on average, for the z values to be sections
GAP = 1 / 32  # of the z range: an empty stretch of z at least this long separates slabs


def derive_sections(adata, config, *, spatial_key: str, time_key: str | None):
    """``(adata, config, note)`` for :func:`ntf_utils.tl.fit`: where ``adata`` has no ``obs["section"]``
    (and no time axis), a new AnnData with derived labels (sharing the caller's arrays; the caller's
    object is not changed), ``config`` without section effects for slabs of a continuous cloud, and a
    note for ``field.info["derived_sections"]``; otherwise everything as given and ``note`` None.

    Warns once with what was derived and how to give labels instead.
    """
    import anndata as ad

    if Key.obs.section in adata.obs or time_key is not None or adata.n_obs == 0:
        return adata, config, None
    coords = np.asarray(adata.obsm[spatial_key]) if spatial_key in adata.obsm else np.zeros((0, 0))
    if coords.ndim != 2 or coords.shape[1] != 3 or not np.isfinite(coords).all():
        return adata, config, None  # the fit's own checks name what is wrong with the coordinates
    z = coords[:, 2]
    values, codes = np.unique(z, return_inverse=True)
    if len(values) == 1:
        return adata, config, None  # one plane: nothing to hold out
    # few distinct z (the sampling rule's sections), each shared by several cells
    if z_is_discrete(len(values), adata.n_obs) and adata.n_obs >= MIN_SECTION_CELLS * len(values):
        kind, n = "z values", len(values)
        labels = codes
        message = (f"adata has no obs[{Key.obs.section!r}]: its {n} distinct z values are taken as {n} sections "
                   f"(named z000, z001, ... by z)")
    else:
        if adata.n_obs // MIN_SLAB_CELLS < 3:
            return adata, config, None
        kind = "slabs"
        labels, n = slabs(z, min(SLABS, adata.n_obs // MIN_SLAB_CELLS))
        message = (f"adata has no obs[{Key.obs.section!r}] and its z is continuous: the field chooses its resolution "
                   f"and blends on {n} slabs along z (cut where z has gaps, then into equal cell counts; named "
                   f"z000, z001, ... by z), without section effects")
        if config.network.section_effects is None:
            config = config.replace(network={"section_effects": False})
    warnings.warn(f"{message}. Label the sections in obs[{Key.obs.section!r}] (e.g. with ntf.pp.stack_sections) "
                  f"to use your own.", UserWarning, stacklevel=3)
    obs = adata.obs.copy()
    width = max(3, len(str(n - 1)))  # names sort as z does
    obs[Key.obs.section] = pd.Categorical([f"z{k:0{width}d}" for k in labels])
    labelled = ad.AnnData(X=adata.X, obs=obs, var=adata.var, obsm=dict(adata.obsm), layers=dict(adata.layers),
                          uns=dict(adata.uns))
    return labelled, config, {"from": kind, "n_sections": int(n)}


def slabs(z: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """``(labels, count)``: about ``n`` slabs along ``z``, numbered by z.

    The z range is first cut where no cell lies over :data:`GAP` of it (where slabs of tissue were left
    out, e.g. held-out sections), each part keeping at least :data:`MIN_SLAB_CELLS` cells; each part then
    gets slabs of equal cell count in proportion to its cells (at least one). Why the gaps: a race that
    holds out slabs ending where the data end, as the true slabs do, chose the settings a labelled fit
    chose (``docs/model.md``, "Stacks without section labels").
    """
    order = np.argsort(z, kind="stable")
    ordered = z[order]
    wide = np.flatnonzero(np.diff(ordered) > GAP * (ordered[-1] - ordered[0])) + 1
    cuts, last = [], 0
    for start in wide:  # a part must hold enough cells on both sides of a cut
        if start - last >= MIN_SLAB_CELLS and len(z) - start >= MIN_SLAB_CELLS:
            cuts.append(start)
            last = start
    bounds = [0, *cuts, len(z)]
    labels = np.empty(len(z), dtype=np.int64)
    first = 0
    for begin, end in zip(bounds[:-1], bounds[1:]):
        share = max(1, int(round((end - begin) / len(z) * n)))
        labels[order[begin:end]] = first + np.arange(end - begin) * share // (end - begin)
        first += share
    return labels, first
