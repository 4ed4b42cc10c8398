"""Plots: interactive Plotly 3D views, widgets, HTML/PNG export.

Every function takes data that already exists (an AnnData, a ``Volume``, arrays) and returns a
``plotly.graph_objects.Figure`` (``explore`` returns an ipywidgets box); nothing expensive is recomputed.

- :func:`cells_3d`, :func:`sections_3d`: cells as WebGL point clouds.
- :func:`domains_3d`: 3D domains as translucent surfaces (voxel grids) or points, colours matched to a reference.
- :func:`volume_3d`, :func:`slice_plane`: a rendered ``Volume`` as isosurfaces / a movable plane.
- :func:`gradient_arrows`: gradient vectors as cones.
- :func:`virtual_vs_real`: a predicted section next to the measured one.
- :func:`section_effects`: a field's learned per-section technical effects (heatmap).
- :func:`section_poses`: each section on its neighbour before and after registration inside the fit.
- :func:`interval_width`, :func:`trust_map`: calibrated intervals (``tl.prediction_intervals``) in 3D and
  against the distance from the sections.
- :func:`explore`: gene dropdown + z and threshold sliders over a FigureWidget.
- :func:`save_html`, :func:`save_png`: standalone HTML and PNG export.
"""

from ._cells import cells_3d, sections_3d
from ._compare import virtual_vs_real
from ._domains import domains_3d
from ._explore import explore
from ._export import save_html, save_png
from ._gradient import gradient_arrows
from ._poses import section_poses
from ._section_effects import section_effects
from ._uncertainty import interval_width, trust_map
from ._volume import slice_plane, volume_3d

__all__ = [
    "cells_3d",
    "sections_3d",
    "domains_3d",
    "volume_3d",
    "slice_plane",
    "gradient_arrows",
    "virtual_vs_real",
    "section_effects",
    "section_poses",
    "interval_width",
    "trust_map",
    "explore",
    "save_html",
    "save_png",
]
