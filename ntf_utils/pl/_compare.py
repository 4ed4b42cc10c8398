"""Side-by-side 2D panels: a virtual section predicted by a field next to the measured one."""

from __future__ import annotations

import numpy as np

from .._constants import Key
from . import _utils as U

__all__ = ["virtual_vs_real"]


def _auto_size(n: int) -> float:
    return float(np.clip(450.0 / np.sqrt(max(n, 1)), 2.0, 7.0))


def virtual_vs_real(
    pred_adata,
    real_adata,
    gene: str,
    *,
    layer: str | None = None,
    pred_layer: str | None = None,
    spatial_key: str | None = None,
    point_size: float | None = None,
    colorscale: str = "Viridis",
    cmin: float | None = None,
    cmax: float | None = None,
    max_points: int | None = 200_000,
    seed: int = 0,
    panel_titles: tuple[str, str] = ("virtual (field)", "measured"),
    title: str | None = None,
    units: str | None = None,
):
    """A virtual section predicted by a field next to the measured held-out section, one colour scale.

    Parameters
    ----------
    pred_adata
        The predicted section (e.g. from ``NTFField.slice`` or ``NTFField.predict`` at the held-out
        section's cells). Not modified.
    real_adata
        The measured section. Not modified.
    gene
        Gene to show; must be in both ``var_names``.
    layer
        Layer of ``real_adata`` to read (``None``: ``X``), e.g. the log-normalised layer so both panels
        are on the field's scale.
    pred_layer
        Layer of ``pred_adata`` to read (``None``: ``X``).
    spatial_key
        ``obsm`` key with in-plane coordinates (first two columns are used); default ``"spatial"``,
        falling back to ``"spatial_3d"``.
    point_size
        Marker size in pixels; default from the number of cells (2–8).
    colorscale
        Plotly colour scale shared by both panels.
    cmin, cmax
        Shared colour limits; default the finite min/max over both panels.
    max_points
        Per panel, at most this many cells (deterministic random subsample; title says so).
    seed
        Subsample seed.
    panel_titles
        Titles of the left (predicted) and right (measured) panels.
    title
        Figure title.
    units
        Coordinate units for the axis titles.

    Returns
    -------
    plotly.graph_objects.Figure
        Two ``Scattergl`` panels (``make_subplots(1, 2)``) sharing one ``coloraxis`` and linked,
        equal-aspect axes.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    U.check_adata(pred_adata, "pred_adata")
    U.check_adata(real_adata, "real_adata")
    for name, ad_ in (("pred_adata", pred_adata), ("real_adata", real_adata)):
        if gene not in ad_.var_names:
            genes = list(map(str, ad_.var_names[:20]))
            raise KeyError(
                f"gene {gene!r} is not in {name}.var_names; available genes (first 20 of {ad_.n_vars}): {genes}."
            )
    pv = U.gene_values(pred_adata, gene, pred_layer)
    rv = U.gene_values(real_adata, gene, layer)
    pxy = U.coords_2d(pred_adata, spatial_key)
    rxy = U.coords_2d(real_adata, spatial_key)
    lo, hi = U.finite_range(np.concatenate([pv, rv]), cmin, cmax)
    units = U.units_of(real_adata, units)
    unit = f" {units}" if units else ""

    fig = make_subplots(rows=1, cols=2, subplot_titles=list(panel_titles), horizontal_spacing=0.06)
    notes = []
    for col, (xy, v, label, layer_name, what) in enumerate(
        [(pxy, pv, panel_titles[0], pred_layer, "predicted"), (rxy, rv, panel_titles[1], layer, "measured")],
        start=1,
    ):
        n = len(v)
        idx = U.subsample(n, max_points, seed)
        if idx is not None:
            xy, v = xy[idx], v[idx]
            notes.append(f"{what}: {U.subsample_note(n, idx, 'cells', seed)}")
        size = point_size if point_size is not None else _auto_size(len(v))
        fig.add_trace(
            go.Scattergl(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="markers",
                name=label,
                showlegend=False,
                marker=dict(size=size, color=v, coloraxis="coloraxis", line=dict(width=0)),
                hovertemplate=f"x=%{{x:.4g}}{unit}<br>y=%{{y:.4g}}{unit}<br>"
                f"{U.value_label(gene, layer_name, v, sep=' ')}=%{{marker.color:.3g}}<extra>{label}</extra>",
            ),
            row=1,
            col=col,
        )
    label = _colorbar_title(gene, pred_layer, pv, layer, rv)
    main = title if title is not None else f"{gene}: virtual vs measured section"
    layout = U.base_layout(U.title_text(main, "; ".join(notes)))
    layout["margin"] = dict(l=50, r=20, t=90, b=50)
    fig.update_layout(
        **layout,
        coloraxis=dict(colorscale=colorscale, cmin=lo, cmax=hi, colorbar=U.colorbar(label)),
    )
    axis_style = dict(
        showgrid=False, zeroline=False, linecolor="#bbbbbb", mirror=True, ticks="outside", constrain="domain"
    )
    fig.update_xaxes(**axis_style, title_text=U.axis_label("x", units))
    fig.update_yaxes(**axis_style, title_text=U.axis_label("y", units))
    fig.update_yaxes(scaleanchor="x", scaleratio=1, row=1, col=1)
    fig.update_xaxes(matches="x", row=1, col=2)
    fig.update_yaxes(matches="y", scaleanchor="x2", scaleratio=1, title_text="", row=1, col=2)
    return fig


def _colorbar_title(gene: str, pred_layer, pv, layer, rv) -> str:
    """``"KRT19<br>(log-normalised)"``; both scales named when the two panels' values differ in kind."""
    pred, real = U.layer_description(pred_layer, pv), U.layer_description(layer, rv)
    if pred == real or pred_layer in (None, Key.layers.denoised):
        # the field's prediction (a virtual section's X, or the denoised layer) is on the scale of the
        # measured layer it was fitted to
        return U.value_label(gene, layer, rv)
    return f"{gene}<br>(predicted: {pred};<br>measured: {real})"
