"""Datasets: shipped real subsets, a registry of downloadable sets, synthetic ground truth.

Real data (each loader takes ``source="auto" | "shipped" | "full"`` and records what it used in
``adata.uns["ntf_source"]``):

- :func:`drosophila_bdtnp` and :func:`slab_sections` (cut a 3D atlas into serial slabs),
- :func:`breast_cancer_stahl`, :func:`her2st`, :func:`starmap_cardiac_organoid`.

Where files come from: :func:`registry`, :func:`fetch`, :func:`download` (pooch + sha256).

Synthetic ground truth: :func:`synthetic_embryo`, :func:`synthetic_timeseries`,
:func:`synthetic_tumour_proteomics`, with the truth at any coordinates from
:func:`synthetic_embryo_truth`, :func:`synthetic_timeseries_truth`, :func:`synthetic_tumour_truth`,
:func:`synthetic_tumour_truth_gradient` or :func:`synthetic_model`.
"""

from ._real import breast_cancer_stahl, drosophila_bdtnp, her2st, slab_sections, starmap_cardiac_organoid
from ._registry import DataChecksumError, download, fetch, registry
from ._synthetic import (
    EmbryoModel,
    TimeseriesEmbryoModel,
    TumourModel,
    synthetic_embryo,
    synthetic_embryo_domain,
    synthetic_embryo_truth,
    synthetic_model,
    synthetic_timeseries,
    synthetic_timeseries_truth,
    synthetic_tumour_proteomics,
    synthetic_tumour_truth,
    synthetic_tumour_truth_gradient,
)

__all__ = [
    "synthetic_embryo",
    "synthetic_embryo_truth",
    "synthetic_embryo_domain",
    "synthetic_timeseries",
    "synthetic_timeseries_truth",
    "synthetic_tumour_proteomics",
    "synthetic_tumour_truth",
    "synthetic_tumour_truth_gradient",
    "synthetic_model",
    "EmbryoModel",
    "TimeseriesEmbryoModel",
    "TumourModel",
    "drosophila_bdtnp",
    "slab_sections",
    "breast_cancer_stahl",
    "her2st",
    "starmap_cardiac_organoid",
    "registry",
    "fetch",
    "download",
    "DataChecksumError",
]
