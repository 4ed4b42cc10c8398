"""`tl.uncertainty`: a deep ensemble of fields (seeds x section bootstrap) -> mean and spread."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .._anndata import read_coords, read_sections
from .._constants import Key
from .._docs import doc_adata, doc_genes, doc_params
from .._validate import check_coords

__all__ = ["FieldUncertainty", "uncertainty"]

MIN_BOOTSTRAP_SECTIONS = 4


@dataclass
class FieldUncertainty:
    """Ensemble prediction with its spread at query points (from :func:`ntf_utils.tl.uncertainty`).

    Attributes
    ----------
    mean
        ``(n, n_genes)`` float32: mean prediction of the ensemble members.
    std
        ``(n, n_genes)`` float32: standard deviation across members (``ddof=1``), in the units of the
        prediction. Larger where the data constrain the field less: between sparse sections, far from
        any cell, outside the sampled range.
    distance_to_data
        ``(n,)`` float64: distance in original units from each point to the nearest training cell.
    inside
        ``(n,)`` bool: inside the sampled tissue (:meth:`NTFField.inside`) for a majority of members.
    genes
        Gene names, one per column.
    coords
        ``(n, 3)`` query coordinates.
    seeds
        Seed of each member.
    sections
        Training sections of each member (repeated names: drawn more than once by the bootstrap).
    models
        The fitted members (only with ``return_models=True``; otherwise empty).
    """

    mean: np.ndarray
    std: np.ndarray
    distance_to_data: np.ndarray
    inside: np.ndarray
    genes: list[str]
    coords: np.ndarray
    seeds: list[int]
    sections: list[list[str]]
    models: list = field(default_factory=list)

    @property
    def n_models(self) -> int:
        """Number of ensemble members."""
        return len(self.seeds)

    def to_anndata(self):
        """One observation per query point: ``X`` = mean, ``layers['std']``, ``obs['distance_to_data']``,
        ``obs['inside']``, ``obs['std_mean']`` (the mean std over genes), ``obsm['spatial_3d']`` and
        ``uns['ntf']['uncertainty']`` (``n_models``, ``seeds``)."""
        import anndata as ad

        out = ad.AnnData(
            X=self.mean.copy(),
            obs=pd.DataFrame(index=[f"point_{i}" for i in range(len(self.mean))]),
            var=pd.DataFrame(index=list(self.genes)),
        )
        out.layers[Key.layers.std] = self.std.copy()
        out.obs[Key.obs.distance_to_data] = self.distance_to_data
        out.obs[Key.obs.inside] = self.inside
        out.obs[Key.obs.std_mean] = self.std.mean(axis=1) if self.std.shape[1] else np.zeros(len(self.std))
        out.obs[Key.obs.z] = self.coords[:, 2]
        out.obsm[Key.obsm.spatial_3d] = self.coords[:, :3].copy()
        out.uns[Key.uns.ntf] = {Key.uns.uncertainty: {"n_models": self.n_models, "seeds": list(self.seeds)}}
        return out


def _section_labels(adata) -> np.ndarray | None:
    """Section of each cell: ``obs["section"]``, else the cell's ``obs["z"]``, else None."""
    labels = read_sections(adata)
    if labels is None and Key.obs.z in adata.obs:
        return np.asarray(adata.obs[Key.obs.z]).astype(str)
    return labels


def _bootstrap_index(labels: np.ndarray, z: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Cells of a bootstrap sample of whole sections.

    The two end sections (lowest and highest mean z) are always kept once, so every member spans the
    same z range and the spread does not mistake a shorter training range for uncertainty; the
    ``n - 2`` interior sections are drawn with replacement from the interior ones.
    """
    names = np.unique(labels)
    order = np.argsort([z[labels == n].mean() for n in names], kind="stable")
    names = [str(names[i]) for i in order]
    interior = names[1:-1]
    drawn = sorted(rng.choice(len(interior), size=len(interior), replace=True).tolist()) if interior else []
    chosen = [names[0]] + [interior[k] for k in drawn] + [names[-1]]
    index = np.concatenate([np.flatnonzero(labels == n) for n in chosen])
    return index, chosen


@doc_params(doc_adata=doc_adata, doc_genes=doc_genes)
def uncertainty(
    adata,
    coords,
    *,
    n_models: int = 5,
    layer: str | None = None,
    config=None,
    seed: int = 0,
    genes=None,
    return_models: bool = False,
    bootstrap: bool | None = None,
    spatial_key: str = Key.obsm.spatial_3d,
    **fit_kwargs,
) -> FieldUncertainty:
    """Predictive uncertainty of a field from an ensemble of fits.

    Fits ``n_models`` fields with :func:`ntf_utils.tl.fit` that differ in their seed (initialisation,
    minibatches, validation split) and, when the data have at least 4 sections, in their training
    sections: each member is trained on a bootstrap sample of whole sections (the two end sections
    are always kept, so every member spans the same z range; the interior sections are drawn with
    replacement, and a section drawn twice counts twice). The members are evaluated at ``coords``
    and summarised by their mean and standard deviation per point and gene.

    The spread measures how little the data constrain the field there: it grows in gaps between
    sections, far outside the sampled range (where the hash grid was never trained) and where the
    data are noisy. It is a spread of plausible fits, not a calibrated error bar: ``mean +- 2 std``
    covers far less than 95% of held-out sections on real data (``benchmarks/results/coverage.csv``).
    For intervals with a coverage guarantee on new sections use
    :func:`ntf_utils.tl.prediction_intervals`.

    Parameters
    ----------
    {doc_adata}
        The training sections; not modified.
    coords
        Query points: an ``(n, 3)`` array in original units, or an AnnData with ``obsm[spatial_key]``.
    n_models
        Ensemble size (>= 2). Each member is a full fit: the cost is ``n_models`` times one fit.
    layer
        Layer with the values to fit (default ``X``), as in :func:`ntf_utils.tl.fit`.
    config
        :class:`~ntf_utils.model._config.NTFConfig` shared by all members.
    seed
        Member ``i`` is fitted with seed ``seed + i``; the section bootstrap is drawn from ``seed``.
    {doc_genes}
        The genes to predict.
    return_models
        Keep the fitted members in the result's ``models``.
    bootstrap
        Resample the interior sections per member; default (None): when ``adata`` has at least 4
        sections.
    spatial_key
        ``obsm`` key of the coordinates (training data and AnnData ``coords``).
    **fit_kwargs
        Passed on to :func:`ntf_utils.tl.fit` (e.g. ``steps``, ``loss``, ``device``, ``progress``).

    Returns
    -------
    FieldUncertainty
        ``mean``, ``std`` ``(n, n_genes)``, ``distance_to_data`` and ``inside`` ``(n,)``, ``genes``,
        and (``return_models=True``) the members; ``.to_anndata()`` gives an AnnData.

    Examples
    --------
    >>> unc = ntf_utils.tl.uncertainty(train, test, n_models=5, layer="lognorm")  # doctest: +SKIP
    >>> unc.std.mean(1)  # per-point spread  # doctest: +SKIP
    """
    import anndata as ad

    from ._fit import fit

    if isinstance(n_models, bool) or int(n_models) != n_models or n_models < 2:
        raise ValueError(f"n_models must be an integer >= 2 (a spread needs several fits), got {n_models!r}")
    if isinstance(coords, ad.AnnData):
        query = read_coords(coords, spatial_key)
    else:
        query = check_coords(coords, "coords", n_cols=(3, 4))
    train_xyz = read_coords(adata, spatial_key)[:, :3]
    labels = _section_labels(adata)
    n_sections = 0 if labels is None else len(np.unique(labels))
    if bootstrap is None:
        bootstrap = n_sections >= MIN_BOOTSTRAP_SECTIONS
    elif bootstrap and n_sections < 2:
        raise ValueError(
            "bootstrap=True resamples whole sections, but adata has no obs['section'] (or only one section); "
            "stack the sections with ntf_utils.pp.stack_sections or pass bootstrap=False"
        )
    fit_kwargs.setdefault("progress", False)

    rng = np.random.default_rng(seed)
    means, models, seeds, member_sections, inside_votes = [], [], [], [], []
    gene_list = None
    for i in range(int(n_models)):
        member_seed = int(seed) + i
        if bootstrap:
            index, drawn = _bootstrap_index(labels, train_xyz[:, 2], rng)
            with warnings.catch_warnings():  # sections drawn twice repeat their cell names; renamed below
                warnings.filterwarnings("ignore", message="Observation names are not unique", category=UserWarning)
                train = adata[index].copy()
            train.obs_names_make_unique()
        else:
            train = adata
            drawn = sorted(set(labels.tolist())) if labels is not None else []
        model = fit(train, layer=layer, config=config, seed=member_seed, spatial_key=spatial_key, **fit_kwargs)
        if gene_list is None:
            gene_list = [model.genes[j] for j in model.gene_index(genes)]
        means.append(model.predict(query, gene_list))
        inside_votes.append(model.inside(query))
        seeds.append(member_seed)
        member_sections.append(drawn)
        if return_models:
            models.append(model)
        del model, train

    stack = np.stack(means).astype(np.float64)  # (models, n, genes)
    distance, _ = cKDTree(train_xyz).query(query[:, :3], k=1)
    return FieldUncertainty(
        mean=stack.mean(0).astype(np.float32),
        std=stack.std(0, ddof=1).astype(np.float32),
        distance_to_data=np.asarray(distance, dtype=np.float64),
        inside=np.mean(inside_votes, axis=0) > 0.5,
        genes=list(gene_list),
        coords=query[:, :3].copy(),
        seeds=seeds,
        sections=member_sections,
        models=models,
    )
