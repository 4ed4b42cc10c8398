"""Split a stacked AnnData into training and held-out sections."""

from __future__ import annotations

import numbers

import numpy as np

from .._anndata import read_sections
from .._constants import Key
from .._docs import doc_params, doc_section_key

__all__ = ["split_sections"]


@doc_params(doc_section_key=doc_section_key)
def split_sections(
    adata, holdout=None, keep_fraction: float | None = None, seed: int = 0, *, section_key: str = Key.obs.section
):
    """Split cells into (train, test) by whole sections.

    Parameters
    ----------
    adata
        A stacked AnnData (see :func:`stack_sections`).
    holdout
        Sections to hold out: a section name or z value, a list of them, or an int ``k`` to hold
        out ``k`` random interior sections (drawn with ``seed``). z values are matched against
        ``obs['z']`` (else ``obsm['spatial_3d'][:, 2]``).
    keep_fraction
        Keep this fraction of the sections for training, evenly spaced along z and always including
        both end sections (so the held-out ones are interpolations): ``0.1`` keeps every 10th.
    seed
        Seed for a random ``holdout``.
    {doc_section_key}

    Returns
    -------
    ``(train, test)``: two new AnnData objects (copies).
    """
    if (holdout is None) == (keep_fraction is None):
        raise ValueError("pass exactly one of holdout=[sections] or keep_fraction=<0..1>")
    labels = read_sections(adata, section_key)
    if labels is None:
        raise KeyError(f"obs[{section_key!r}] not found; stack the sections first with ntf_utils.pp.stack_sections")
    if Key.obs.z in adata.obs:
        z_cells = np.asarray(adata.obs[Key.obs.z], dtype=np.float64)
    elif Key.obsm.spatial_3d in adata.obsm:
        z_cells = np.asarray(adata.obsm[Key.obsm.spatial_3d], dtype=np.float64)[:, 2]
    else:
        z_cells = None  # sections are ordered by name and cannot be named by z
    z_by_section = {}
    for name, z in zip(labels, z_cells if z_cells is not None else np.zeros(len(labels))):
        z_by_section.setdefault(name, float(z))
    ordered = sorted(z_by_section, key=lambda n: (z_by_section[n], n))
    n = len(ordered)
    if keep_fraction is not None:
        try:
            keep_fraction = float(keep_fraction)
        except (TypeError, ValueError) as err:
            raise ValueError(f"keep_fraction must be a number in (0, 1], got {keep_fraction!r}") from err
        if not 0 < keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        n_keep = min(n, max(2, int(round(keep_fraction * n))))
        keep = set(np.unique(np.round(np.linspace(0, n - 1, n_keep)).astype(int)).tolist())
        test_names = {ordered[i] for i in range(n) if i not in keep}
    elif isinstance(holdout, (bool, np.bool_)):
        raise ValueError(f"holdout={holdout!r}: pass section names, z values or a number of sections, not a bool")
    elif isinstance(holdout, (int, np.integer)):
        if not 0 < holdout <= n - 2:
            raise ValueError(f"holdout={holdout} must be between 1 and n_sections - 2 = {n - 2}")
        rng = np.random.default_rng(seed)
        test_names = set(rng.choice(ordered[1:-1], size=int(holdout), replace=False).tolist())
    else:
        if isinstance(holdout, (str, numbers.Real)):  # one section name or z value
            holdout = [holdout]
        test_names = set()
        for item in holdout:
            if str(item) in z_by_section:
                test_names.add(str(item))
                continue
            is_z = isinstance(item, numbers.Real) and not isinstance(item, (bool, np.bool_)) and z_cells is not None
            matches = [name for name, z in z_by_section.items() if is_z and np.isclose(z, float(item))]
            if not matches:
                raise KeyError(f"holdout section {item!r} is neither a section name nor a z value; sections: {ordered[:10]}...")
            test_names.update(matches)
    if not test_names:
        raise ValueError("the split holds out no section; hold out at least one")
    if len(test_names) == n:
        raise ValueError("the split holds out every section; keep at least one for training")
    is_test = np.isin(labels, list(test_names))
    return adata[~is_test].copy(), adata[is_test].copy()
