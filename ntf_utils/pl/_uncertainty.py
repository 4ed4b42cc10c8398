"""`pl.interval_width` and `pl.trust_map`: calibrated intervals (``tl.prediction_intervals``) in 3D and
against the distance from the measured sections."""

from __future__ import annotations

import numpy as np

from . import _utils as U

__all__ = ["interval_width", "trust_map"]

FLAGGED_COLOR = "#d62728"  # points without a calibrated interval


def _gene_columns(intervals, gene) -> tuple[np.ndarray, str]:
    """Column indices of ``gene`` (all genes when None) and a label for it."""
    if gene is None:
        return np.arange(len(intervals.genes)), "mean over genes"
    if gene not in intervals.genes:
        raise KeyError(f"gene {gene!r} is not among the intervals' genes ({len(intervals.genes)}: "
                       f"{', '.join(intervals.genes[:5])}{', ...' if len(intervals.genes) > 5 else ''})")
    return np.array([intervals.genes.index(gene)]), str(gene)


def _per_point(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Mean over the chosen genes; infinite where any of them is."""
    return values[:, columns].astype(np.float64).mean(axis=1)


def interval_width(intervals, gene: str | None = None, *, alpha: float | None = None, point_size: float = 2.0,
                   max_points: int | None = 50_000, seed: int = 0, title: str | None = None,
                   units: str | None = None):
    """The prediction next to the width of its calibrated interval, as two linked 3D point clouds.

    Parameters
    ----------
    intervals
        A :class:`~ntf_utils.tl.FieldIntervals` (:func:`ntf_utils.tl.prediction_intervals`), e.g. at the
        voxels of a grid or at the cells of a stack.
    gene
        Gene to show (default: the mean over all genes of the prediction and of the width).
    alpha
        Level of the width (default: the intervals' ``alpha``).
    point_size, max_points, seed
        Marker size; at most this many points (deterministic subsample with ``seed``).
    title, units
        Figure title; coordinate units for the axis titles.

    Returns
    -------
    plotly.graph_objects.Figure
        Left: the prediction. Right: the interval width (``upper - lower``); points without a calibrated
        interval (infinite width: outside the tissue or farther from the sections than the
        calibration measured) in red, labelled "no calibrated interval".
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    columns, label = _gene_columns(intervals, gene)
    level = intervals.alpha if alpha is None else alpha
    width = _per_point(2 * intervals.half_width(level), columns)
    value = _per_point(intervals.prediction, columns)
    xyz = intervals.coords[:, :3]
    idx = U.subsample(len(xyz), max_points, seed)
    if idx is not None:
        xyz, width, value = xyz[idx], width[idx], value[idx]
    finite = np.isfinite(width)
    hover = U.xyz_hover(units) + "<br>%{marker.color:.3g}<extra></extra>"
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "scene"}, {"type": "scene"}]], horizontal_spacing=0.02,
                        subplot_titles=(f"prediction ({label})", f"{1 - level:.0%} interval width"))
    lo, hi = U.finite_range(value)
    fig.add_trace(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", name="prediction",
                               marker=dict(size=point_size, color=U.f32(value), colorscale="Viridis", cmin=lo, cmax=hi,
                                           colorbar=dict(U.colorbar("prediction"), x=0.45)),
                               hovertemplate=hover, showlegend=False), row=1, col=1)
    lo, hi = U.finite_range(width[finite]) if finite.any() else (0.0, 1.0)
    fig.add_trace(go.Scatter3d(x=xyz[finite, 0], y=xyz[finite, 1], z=xyz[finite, 2], mode="markers", name="width",
                               marker=dict(size=point_size, color=U.f32(width[finite]), colorscale="Magma", cmin=lo,
                                           cmax=hi, colorbar=dict(U.colorbar("width"), x=1.0)),
                               hovertemplate=hover, showlegend=False), row=1, col=2)
    if (~finite).any():
        fig.add_trace(go.Scatter3d(x=xyz[~finite, 0], y=xyz[~finite, 1], z=xyz[~finite, 2], mode="markers",
                                   name="no calibrated interval", marker=dict(size=point_size, color=FLAGGED_COLOR),
                                   hovertemplate=U.xyz_hover(units) + "<br>no calibrated interval<extra></extra>"),
                      row=1, col=2)
    ranges = U.range_of(xyz)
    note = U.subsample_note(len(intervals.coords), idx, "points", seed)
    fig.update_layout(**U.base_layout(U.title_text(title or f"calibrated intervals: {label}", note), legend="inside"),
                      scene=U.scene(units, ranges), scene2=U.scene(units, ranges), height=520)
    return fig


def trust_map(intervals, observed=None, *, alpha: float | None = None, gene: str | None = None,
              bin_width: float = 0.25, title: str | None = None):
    """Trust map: interval width, calibration reach and (with ``observed``) coverage against distance.

    Parameters
    ----------
    intervals
        A :class:`~ntf_utils.tl.FieldIntervals`.
    observed
        Optional ``(n, n_genes)`` values measured at the query points (held-out sections): adds the
        empirical coverage per distance bin against the nominal level.
    alpha
        Level (default: the intervals' ``alpha``).
    gene
        One gene (default: all genes, widths averaged).
    bin_width
        Distance bin, in section spacings.
    title
        Figure title.

    Returns
    -------
    plotly.graph_objects.Figure
        Top: mean finite width per distance bin, between sections and beyond the sampled range. Bottom:
        the fraction of points without a calibrated interval (infinite: past the calibration's reach,
        or outside the tissue) and the coverage, with the nominal level dashed.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    level = intervals.alpha if alpha is None else alpha
    table = intervals.trust_table(observed, alpha=level, gene=gene, bin_width=bin_width)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=(f"{1 - level:.0%} interval width", "no calibrated interval / coverage"))
    colors = {"between sections": "#1f77b4", "beyond the range": "#ff7f0e"}
    for region, part in table.groupby("region"):
        fig.add_trace(go.Scatter(x=part["distance"], y=part["width"], mode="lines+markers", name=f"width, {region}",
                                 line=dict(color=colors[region])), row=1, col=1)
        fig.add_trace(go.Bar(x=part["distance"], y=part["fraction_flagged"], name=f"no interval, {region}",
                             marker_color=colors[region], opacity=0.35, width=bin_width * 0.8), row=2, col=1)
        if "coverage" in part:
            fig.add_trace(go.Scatter(x=part["distance"], y=part["coverage"], mode="lines+markers",
                                     name=f"coverage, {region}", line=dict(color=colors[region], dash="dot")),
                          row=2, col=1)
    fig.add_hline(y=1 - level, line_dash="dash", line_color="#444444", row=2, col=1)
    fig.update_xaxes(title_text="distance from the nearest training section (section spacings)", row=2, col=1)
    fig.update_yaxes(range=[0, 1.02], row=2, col=1)
    fig.update_layout(**U.base_layout(title or "trust map: where the intervals hold"), height=560, barmode="overlay")
    return fig
