"""Datasets: shipped real subsets, a registry of downloadable sets, synthetic ground truth.

Real data (each loader takes ``source="auto" | "shipped" | "full"`` and records what it used in
``adata.uns["ntf"]["source"]``, with details in ``adata.uns["ntf"]["dataset"]``):

- :func:`drosophila_bdtnp` and :func:`slab_sections` (cut a 3D atlas into serial slabs),
- :func:`breast_cancer_stahl`, :func:`her2st`, :func:`starmap_cardiac_organoid`.

Where files come from: :func:`registry`, :func:`fetch`, :func:`download` (pooch + sha256).

Synthetic ground truth: :func:`synthetic_embryo`, :func:`synthetic_timeseries`,
:func:`synthetic_tumour_proteomics`, with the truth at any coordinates from
:func:`synthetic_embryo_truth`, :func:`synthetic_timeseries_truth`, :func:`synthetic_tumour_truth`,
:func:`synthetic_tumour_truth_gradient` or :func:`synthetic_model`; known technical section effects
added to any of them with :func:`inject_section_effects`, and a known residual misalignment of the
sections with :func:`misalign_sections`.
"""

from . import _misalign, _real, _registry, _section_effects, _synthetic
from ._misalign import *  # noqa: F403
from ._real import *  # noqa: F403 (each module's __all__ is its public API)
from ._registry import *  # noqa: F403
from ._section_effects import *  # noqa: F403
from ._synthetic import *  # noqa: F403

__all__ = [*_synthetic.__all__, *_real.__all__, *_registry.__all__, *_section_effects.__all__, *_misalign.__all__]
