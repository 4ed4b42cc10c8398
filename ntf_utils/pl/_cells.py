"""Cells as 3D WebGL point clouds: by gene / obs column, or one trace per section."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._constants import Key
from . import _utils as U

__all__ = ["cells_3d", "sections_3d"]


def _hover(label: str, units: str | None) -> str:
    return f"{U.xyz_hover(units)}<br>{label.replace('<br>', ' ')}=%{{marker.color:.3g}}<extra></extra>"


def _scatter(xyz, sel, **kwargs):
    """A ``Scatter3d`` of markers at the rows ``sel`` of ``xyz``."""
    import plotly.graph_objects as go

    return go.Scatter3d(x=xyz[sel, 0], y=xyz[sel, 1], z=xyz[sel, 2], mode="markers", **kwargs)


def _na_trace(xyz, sel, name: str, point_size, opacity):
    """Grey, fainter markers for cells without a value."""
    marker = dict(size=point_size, color=U.NA_COLOR, line=dict(width=0))
    return _scatter(xyz, sel, name=name, marker=marker, opacity=opacity * 0.6, hoverinfo="skip")


def _continuous_traces(xyz, values, spec, *, point_size, colorscale, opacity, cmin, cmax, units, name=None):
    """A colour-mapped point trace (plus a grey 'NA' trace for NaN values)."""
    traces = []
    finite = np.isfinite(values)
    if not finite.all():
        traces.append(_na_trace(xyz, ~finite, "NA (no value)", point_size, opacity))
    marker = dict(
        size=point_size,
        color=U.f32(values[finite]),
        colorscale=colorscale,
        cmin=cmin,
        cmax=cmax,
        colorbar=U.colorbar(spec.label),
        showscale=True,
        line=dict(width=0),
    )
    traces.append(
        _scatter(
            xyz,
            finite,
            name=name or spec.key,
            showlegend=False,
            marker=marker,
            opacity=opacity,
            hovertemplate=_hover(spec.label, units),
        )
    )
    return traces


def _categorical_traces(xyz, labels, spec, *, point_size, opacity, units):
    """One trace per category (legend entry = category), plus 'NA' for missing labels."""
    traces = []
    missing = pd.isna(labels)
    for cat, color in zip(spec.categories, spec.colors):
        traces.append(
            _scatter(
                xyz,
                (labels == cat) & ~missing,
                name=str(cat),
                legendgroup=str(cat),
                marker=dict(size=point_size, color=color, line=dict(width=0)),
                opacity=opacity,
                hovertemplate=f"{spec.key}={cat}<br>{U.xyz_hover(units)}<extra></extra>",
            )
        )
    if missing.any():
        traces.append(_na_trace(xyz, missing, "NA", point_size, opacity))
    return traces


@dataclass
class _Points:
    """The cells a point view draws: all coordinates, the subsample shown and how to colour it."""

    xyz_all: np.ndarray  # (n_obs, 3) float64, every cell
    idx: np.ndarray | None  # indices of the shown cells (None: all)
    spec: U.ColorSpec
    units: str | None
    seed: int

    @property
    def xyz(self) -> np.ndarray:
        """(n_shown, 3) float32 coordinates of the shown cells."""
        return U.f32(self.xyz_all if self.idx is None else self.xyz_all[self.idx])

    @property
    def values(self) -> np.ndarray:
        """Colour values (or labels) of the shown cells."""
        return self.spec.take(self.idx)

    def title(self, main: str) -> str:
        return U.title_text(main, U.subsample_note(len(self.xyz_all), self.idx, "cells", self.seed))

    def scene(self) -> dict:
        return U.scene(self.units, ranges=U.range_of(self.xyz_all))


def _points(adata, color, *, layer, spatial_key, max_points, seed, palette, units, section_key=None) -> _Points:
    """Read and check what a point view of ``adata`` coloured by ``color`` needs (``obs[section_key]`` too)."""
    U.check_adata(adata)
    if section_key is not None and section_key not in adata.obs.columns:
        raise KeyError(
            f"adata.obs has no column {section_key!r}; available columns: {list(map(str, adata.obs.columns))}. "
            "Stack sections with ntf_utils.pp.stack_sections (writes obs['section']) or pass section_key=..."
        )
    xyz_all = U.coords_3d(adata, spatial_key)
    spec = U.resolve_color(adata, color, layer, palette)
    units = U.units_of(adata, units)
    return _Points(xyz_all, U.subsample(adata.n_obs, max_points, seed), spec, units, seed)


def cells_3d(
    adata,
    color: str,
    *,
    layer: str | None = None,
    spatial_key: str = Key.obsm.spatial_3d,
    max_points: int | None = 300_000,
    point_size: float = 2.0,
    colorscale: str = "Viridis",
    opacity: float = 1.0,
    seed: int = 0,
    title: str | None = None,
    cmin: float | None = None,
    cmax: float | None = None,
    palette=None,
    units: str | None = None,
):
    """Cells as a 3D WebGL point cloud coloured by a gene or an obs column.

    Parameters
    ----------
    adata
        Stacked AnnData (``ntf_utils.pp.stack_sections``) with ``obsm[spatial_key]`` of shape (n_obs, 3)
        in original units. Not modified.
    color
        A gene in ``adata.var_names`` (values from ``X`` or ``layer``; continuous colour bar) or a column
        of ``adata.obs`` (categorical/string/bool → one trace and legend entry per category; numeric →
        colour bar).
    layer
        Layer to read gene values from; ``None`` reads ``adata.X``.
    spatial_key
        ``obsm`` key with the (x, y, z) coordinates.
    max_points
        Draw at most this many cells; above it a deterministic random subsample (``seed``) is drawn and
        the title says so. ``None`` draws all (slow in the browser above ~1M points).
    point_size
        Marker size in pixels.
    colorscale
        Plotly colour scale for continuous values.
    opacity
        Marker opacity (0–1). The default 1 keeps occlusion right: below 1, WebGL draws translucent
        traces in trace order without depth sorting, so e.g. the last category covers the others
        wherever they overlap, whatever their depth.
    seed
        Seed of the subsample.
    title
        Figure title; defaults to the colour key.
    cmin, cmax
        Colour-scale limits for continuous values; default to the finite min/max over all cells.
    palette
        Categorical colours: a list or a ``plotly.colors.qualitative`` name. By default
        ``adata.uns[color + '_colors']`` (scanpy's convention) when it has one colour per category,
        otherwise D3 / Dark24 / evenly spaced hues.
    units
        Coordinate units for the axis titles (e.g. ``"µm"``); defaults to ``adata.uns['ntf']['units']``
        when present.

    Returns
    -------
    plotly.graph_objects.Figure
        ``Scatter3d`` traces with ``aspectmode='data'``.

    Examples
    --------
    >>> fig = ntf_utils.pl.cells_3d(adata, "Sox2", layer="lognorm")  # doctest: +SKIP
    >>> ntf_utils.pl.save_html(fig, "sox2.html")  # doctest: +SKIP
    """
    import plotly.graph_objects as go

    pts = _points(adata, color, layer=layer, spatial_key=spatial_key, max_points=max_points, seed=seed,
                  palette=palette, units=units)
    spec = pts.spec
    if spec.kind == "continuous":
        lo, hi = U.finite_range(spec.values, cmin, cmax)
        traces = _continuous_traces(
            pts.xyz,
            pts.values,
            spec,
            point_size=point_size,
            colorscale=colorscale,
            opacity=opacity,
            cmin=lo,
            cmax=hi,
            units=pts.units,
        )
        legend_title = None
    else:
        traces = _categorical_traces(
            pts.xyz, pts.values, spec, point_size=point_size, opacity=opacity, units=pts.units
        )
        legend_title = spec.key

    main = (
        title
        if title is not None
        else (f"{color} ({layer})" if layer and spec.kind == "continuous" else color)
    )
    fig = go.Figure(data=traces)
    fig.update_layout(
        **U.base_layout(
            pts.title(main),
            legend_title=legend_title,
            legend="right" if spec.kind == "categorical" else "inside",
        ),
        scene=pts.scene(),
    )
    return fig


def sections_3d(
    adata,
    color: str,
    *,
    section_key: str = Key.obs.section,
    layer: str | None = None,
    spatial_key: str = Key.obsm.spatial_3d,
    max_points: int | None = 300_000,
    point_size: float = 2.0,
    colorscale: str = "Viridis",
    opacity: float = 1.0,
    seed: int = 0,
    title: str | None = None,
    cmin: float | None = None,
    cmax: float | None = None,
    palette=None,
    units: str | None = None,
):
    """Cells in 3D with each section its own trace, so sections can be toggled in the legend.

    Parameters
    ----------
    adata
        Stacked AnnData with ``obs[section_key]`` and ``obsm[spatial_key]`` (n_obs, 3). Not modified.
    color
        Gene (continuous, one shared colour bar across sections) or obs column (categorical colours are
        drawn per point and listed in a second legend; numeric columns use the colour bar).
    section_key
        ``obs`` column naming each cell's section; sections are ordered by their categories (by z for
        ``pp.stack_sections`` output) or else by mean z.
    layer, spatial_key, max_points, point_size, colorscale, opacity, seed, title, cmin, cmax, palette, units
        As in :func:`cells_3d`. Subsampling is done once over all cells, before splitting by section.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``Scatter3d`` trace per section (named ``"<section> (z=...)"``); coloured by a gene or a
        numeric column, these stay out of the legend and one empty grey trace per section, in the same
        ``legendgroup``, is its legend entry (a click toggles the section).
    """
    import plotly.graph_objects as go

    pts = _points(adata, color, layer=layer, spatial_key=spatial_key, max_points=max_points, seed=seed,
                  palette=palette, units=units, section_key=section_key)
    sec_all = adata.obs[section_key]
    sec = sec_all.to_numpy(dtype=object) if pts.idx is None else sec_all.to_numpy(dtype=object)[pts.idx]
    sections = [(s, sec == s, f"{s} (z={z:.4g})") for s, z in _section_order(sec_all, pts.xyz_all)]
    layout = U.base_layout(pts.title(title if title is not None else f"{color} by section"),
                           legend_title=f"{section_key} (click to toggle)")
    if pts.spec.kind == "continuous":
        traces = _continuous_section_traces(pts, sections, point_size=point_size, opacity=opacity)
        lo, hi = U.finite_range(pts.spec.values, cmin, cmax)
        colorbar = U.horizontal_colorbar(pts.spec.label.replace("<br>", " "))
        layout["coloraxis"] = dict(colorscale=colorscale, cmin=lo, cmax=hi, colorbar=colorbar)
    else:
        traces = _categorical_section_traces(pts, sections, point_size=point_size, opacity=opacity)
        layout["legend2"] = dict(
            layout["legend"],
            title=dict(text=f"<b>{pts.spec.key}</b>"),
            x=0.0,
            xanchor="left",
            y=1.0,
            yanchor="top",
        )
    fig = go.Figure(data=traces)
    fig.update_layout(**layout, scene=pts.scene())
    return fig


def _section_order(sec_all: pd.Series, xyz_all: np.ndarray) -> list[tuple]:
    """``(section, median z)`` in drawing order: the categories' order if categorical, else by mean z."""
    labels = sec_all.to_numpy(dtype=object)
    if isinstance(sec_all.dtype, pd.CategoricalDtype):
        present = set(sec_all.dropna().unique())
        order = [s for s in sec_all.cat.categories if s in present]
    else:
        order = list(pd.Series(xyz_all[:, 2]).groupby(labels).mean().sort_values().index)
    z_of = pd.Series(xyz_all[:, 2]).groupby(labels).median()
    return [(s, z_of[s]) for s in order]


def _continuous_section_traces(pts: _Points, sections, *, point_size, opacity) -> list:
    """One trace per section, coloured through the shared ``coloraxis``, then one legend entry per section.

    Plotly.js draws a 3D trace's legend symbol from its first value without the colour axis (a number
    is no colour: the symbol turns black, with "Invalid color specifier" in the console), so the
    section traces stay out of the legend and an empty grey trace in the same ``legendgroup`` stands
    for each; clicking it still toggles the section.
    """
    xyz, values = pts.xyz, pts.values
    traces = [
        _scatter(
            xyz,
            sel,
            name=name,
            legendgroup=str(s),
            showlegend=False,
            marker=dict(size=point_size, color=U.f32(values[sel]), coloraxis="coloraxis", line=dict(width=0)),
            opacity=opacity,
            hovertemplate=f"section={s}<br>" + _hover(pts.spec.label, pts.units),
        )
        for s, sel, name in sections
    ]
    nothing = np.full((1, 3), None)
    for s, _, name in sections:
        traces.append(_scatter(nothing, [0], name=name, legendgroup=str(s), hoverinfo="skip",
                               marker=dict(size=8, color=U.CONTEXT_COLOR)))
    return traces


def _categorical_section_traces(pts: _Points, sections, *, point_size, opacity) -> list:
    """One trace per section with per-point category colours, then a key of the categories (``legend2``)."""
    xyz, values, spec = pts.xyz, pts.values, pts.spec
    lookup = dict(zip(spec.categories, spec.colors))
    cols = np.array([lookup.get(v, U.NA_COLOR) if not pd.isna(v) else U.NA_COLOR for v in values], dtype=object)
    traces = [
        _scatter(
            xyz,
            sel,
            name=name,
            legendgroup=str(s),
            marker=dict(size=point_size, color=cols[sel], line=dict(width=0)),
            opacity=opacity,
            text=values[sel].astype(str),
            hovertemplate=f"section={s}<br>{spec.key}=%{{text}}<br>{U.xyz_hover(pts.units)}<extra></extra>",
        )
        for s, sel, name in sections
    ]
    # Category colours as a second legend of empty traces (a key; toggling them does nothing).
    nothing = np.full((1, 3), None)
    for cat, c in zip(spec.categories, spec.colors):
        traces.append(
            _scatter(nothing, [0], name=str(cat), legend="legend2", marker=dict(size=8, color=c), hoverinfo="skip")
        )
    return traces

