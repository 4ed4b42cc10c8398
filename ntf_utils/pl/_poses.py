"""`pl.section_poses`: each section on its neighbour before and after registration inside the fit."""

from __future__ import annotations

import numpy as np

from .._anndata import read_sections, read_time, sections_in_order
from .._constants import Key
from ._utils import axis_label, check_adata, coords_3d, subsample, units_of

__all__ = ["section_poses"]

BEFORE, AFTER, NEIGHBOUR = "#ff7f0e", "#1f77b4", "#b0b0b0"


def section_poses(field, adata, *, sections=None, max_points: int = 1500, n_cols: int = 4,
                  units: str | None = None, title: str | None = None):
    """Overlay of every registered section on its neighbour, as given and after the learned pose.

    Parameters
    ----------
    field
        A field fitted with ``config.network.register_sections=True`` (``field.section_poses()``).
    adata
        The cells the field was fitted to (coordinates as given, ``obs["section"]``).
    sections
        Sections to show (default: every section that moved, i.e. all but the references).
    max_points
        Cells drawn per section and panel (a random subsample above it).
    n_cols
        Panels per row.
    units
        Axis units (default: those recorded in ``adata``).
    title
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        One column per section, two rows: the section as given (orange) and moved by its pose (blue),
        each over its neighbour towards the reference section (grey, also moved by its own pose), so
        a good pose puts the tissue outlines on top of each other. The panel titles give the pose.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    check_adata(adata)
    table = field.section_poses()
    if table.empty:
        raise ValueError("this field has no section poses: fit it with "
                         "config=NTFConfig(network={'register_sections': True})")
    labels = read_sections(adata, Key.obs.section)
    if labels is None:
        raise KeyError(f"obs[{Key.obs.section!r}] not found: the poses are per section")
    table = table.set_index("section")
    missing = sorted(set(table.index) - set(labels))
    if missing:
        raise ValueError(f"{len(missing)} of the field's sections are not in adata ({missing[:3]}...): pass the "
                         "cells the field was fitted to")
    before = coords_3d(adata)
    after = field.register(adata[:, :0]).obsm[Key.obsm.spatial_3d]  # no genes: only coordinates are copied
    time_key = field.info.get("time_key") if field.n_input_dims == 4 else None
    stage = read_time(adata, time_key) if time_key is not None else None
    order = [s for s in sections_in_order(labels, before[:, 2], stage)["section"] if s in table.index]
    chosen = [s for s in order if not table.loc[s, "reference"]] if sections is None else [str(s) for s in sections]
    unknown = [s for s in chosen if s not in table.index]
    if unknown:
        raise ValueError(f"sections {unknown} have no pose; the field's sections are {list(table.index)}")
    n_cols = max(1, min(n_cols, len(chosen)))
    n_rows = 2 * int(np.ceil(len(chosen) / n_cols))
    titles = [""] * (n_rows * n_cols)
    for k, name in enumerate(chosen):
        row, col = 2 * (k // n_cols), k % n_cols
        pose = table.loc[name]
        titles[row * n_cols + col] = f"{name} as given"
        titles[(row + 1) * n_cols + col] = (f"{name} registered: {pose.rotation_deg:+.1f}°, "
                                            f"({pose.shift_x:+.2g}, {pose.shift_y:+.2g})")
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=titles, horizontal_spacing=0.03,
                        vertical_spacing=0.06)
    for k, name in enumerate(chosen):
        neighbour = _neighbour_towards_reference(order, name, table)
        row, col = 2 * (k // n_cols) + 1, k % n_cols + 1
        for offset, coords, colour, what in ((0, before, BEFORE, "as given"), (1, after, AFTER, "registered")):
            for section, shade, label in ((neighbour, NEIGHBOUR, f"neighbour {neighbour}"), (name, colour, what)):
                rows = np.flatnonzero(labels == section)
                pick = subsample(len(rows), max_points, seed=0)
                rows = rows if pick is None else rows[pick]
                fig.add_trace(go.Scattergl(x=coords[rows, 0], y=coords[rows, 1], mode="markers", name=label,
                                           marker={"size": 3, "color": shade, "opacity": 0.7},
                                           showlegend=k == 0 and (offset == 0 or section == name),
                                           legendgroup=label if section == name else "neighbour"),
                              row=row + offset, col=col)
    unit = units_of(adata, units)
    fig.update_xaxes(title_text=axis_label("x", unit), showticklabels=False)
    fig.update_yaxes(title_text=axis_label("y", unit), showticklabels=False)
    for index in range(1, n_rows * n_cols + 1):  # equal aspect in every panel
        fig.update_yaxes(scaleanchor=f"x{index if index > 1 else ''}", row=(index - 1) // n_cols + 1,
                         col=(index - 1) % n_cols + 1)
    fig.update_layout(title=title or "sections on their neighbour: as given (top) and registered (bottom)",
                      template="plotly_white", height=300 * n_rows + 80, width=max(600, 280 * n_cols),
                      legend={"itemsizing": "constant"})
    return fig


def _neighbour_towards_reference(order: list[str], name: str, table) -> str:
    """The adjacent section on the side of the (nearest) reference: the one it was registered against."""
    i = order.index(name)
    references = [j for j, s in enumerate(order) if table.loc[s, "reference"]]
    target = min(references, key=lambda j: abs(j - i)) if references else len(order) // 2
    return order[i + 1] if target > i else order[i - 1]
