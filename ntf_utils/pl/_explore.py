"""An ipywidgets explorer: gene dropdown, section (z) slider and expression threshold over a 3D point cloud."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._anndata import read_matrix
from .._constants import Key
from . import _utils as U

__all__ = ["explore"]

_MAX_DROPDOWN = 2000


def _gene_list(adata, genes):
    if genes is not None:
        genes = [genes] if isinstance(genes, str) else list(genes)
        missing = [g for g in genes if g not in adata.var_names]
        if missing:
            raise KeyError(
                f"genes {missing} are not in adata.var_names; available genes (first 20 of {adata.n_vars}): "
                f"{list(map(str, adata.var_names[:20]))}."
            )
        if not genes:
            raise ValueError("genes is empty; pass at least one gene name, or None for all genes.")
        return genes
    names = list(map(str, adata.var_names))
    if len(names) <= _MAX_DROPDOWN:
        return names
    if "highly_variable" in adata.var.columns:
        hv = [g for g, keep in zip(names, adata.var["highly_variable"].to_numpy()) if keep]
        if hv:
            return hv[:_MAX_DROPDOWN]
    warnings.warn(
        f"adata has {len(names)} genes; the dropdown lists the first {_MAX_DROPDOWN}. Pass genes=[...] to choose.",
        stacklevel=3,
    )
    return names[:_MAX_DROPDOWN]


def _section_planes(adata, xyz, idx, section_key):
    """Per shown cell: the z of its section; and the sorted section z values with their names."""
    if section_key is not None and section_key in adata.obs.columns:
        sec_all = adata.obs[section_key].to_numpy(dtype=object)
        sec = sec_all if idx is None else sec_all[idx]
        med = pd.Series(xyz[:, 2]).groupby(sec).median().sort_values()
        cell_z = med.reindex(sec).to_numpy(dtype=np.float64)
        return cell_z, med.to_numpy(dtype=np.float64), [str(s) for s in med.index]
    zs = np.unique(np.round(xyz[:, 2], 6))
    return np.round(xyz[:, 2], 6), zs, [f"z={z:.4g}" for z in zs]


def explore(
    adata,
    *,
    genes=None,
    layer: str | None = None,
    spatial_key: str = Key.obsm.spatial_3d,
    section_key: str | None = Key.obs.section,
    max_points: int | None = 100_000,
    point_size: float = 2.0,
    colorscale: str = "Viridis",
    seed: int = 0,
    units: str | None = None,
):
    """An interactive explorer of a stacked AnnData in 3D (ipywidgets + Plotly FigureWidget).

    A gene dropdown recolours the cells; a z slider highlights the nearest section (other sections stay
    faint); a threshold slider hides cells whose value is below it.

    Parameters
    ----------
    adata
        Stacked AnnData (``obsm[spatial_key]`` (n_obs, 3)). Not modified; the shown cells' values are
        read once per gene (and cached).
    genes
        Genes offered in the dropdown; default all genes (the first 2,000, or the highly variable ones,
        when there are more).
    layer
        Layer to read values from; ``None`` reads ``X``.
    spatial_key
        ``obsm`` key with (x, y, z).
    section_key
        ``obs`` column naming sections; without it, sections are the distinct z values.
    max_points
        At most this many cells are shown (deterministic random subsample with ``seed``).
    point_size
        Marker size; the highlighted section is drawn 1.6 times larger.
    colorscale
        Plotly colour scale.
    seed
        Subsample seed.
    units
        Coordinate units for the axis titles.

    Returns
    -------
    ipywidgets.VBox
        Controls on top, the ``plotly.graph_objects.FigureWidget`` below (``box.children[-1]``). For
        convenience the box also carries ``box.figure``, ``box.gene_dropdown``, ``box.z_slider`` and
        ``box.threshold_slider``. Trace 0 holds the faint other sections, trace 1 the highlighted one.
    """
    widgets, go = _widget_modules()
    U.check_adata(adata)
    gene_names = _gene_list(adata, genes)
    read_matrix(adata, layer)  # validates the layer now, not on first interaction
    xyz_all = U.coords_3d(adata, spatial_key)
    units = U.units_of(adata, units)
    idx = U.subsample(adata.n_obs, max_points, seed)
    xyz = U.f32(xyz_all if idx is None else xyz_all[idx])
    cell_z, planes, plane_names = _section_planes(adata, xyz, idx, section_key)
    values = _ShownValues(adata, layer, idx)

    dropdown = widgets.Dropdown(options=gene_names, value=gene_names[0], description="gene")
    z_slider, threshold = _sliders(widgets, planes, *values.range(gene_names[0]))
    section_label = widgets.HTML()
    fig = _figure(go, xyz, gene_names[0], values, layer=layer, units=units, point_size=point_size,
                  colorscale=colorscale)
    note = U.subsample_note(adata.n_obs, idx, "cells", seed)
    unit = f" {units}" if units else ""
    state = {"busy": False}

    def redraw():
        gene = dropdown.value
        v = values.of(gene)
        k = int(np.argmin(np.abs(planes - z_slider.value)))
        zsel = planes[k]
        in_sec = np.isclose(cell_z, zsel)
        keep = np.isfinite(v) & (v >= threshold.value)
        lo, hi = values.range(gene)
        hidden = int((~keep).sum())
        sub = f"section {plane_names[k]} (z={zsel:.4g}{unit}) highlighted; {hidden:,} cells below threshold hidden"
        if note:
            sub += f"; {note}"
        with fig.batch_update():
            for trace, sel in ((fig.data[0], keep & ~in_sec), (fig.data[1], keep & in_sec)):
                trace.x, trace.y, trace.z = xyz[sel, 0], xyz[sel, 1], xyz[sel, 2]
                trace.marker.color = v[sel]
            fig.data[1].name = f"section {plane_names[k]}"
            fig.layout.coloraxis.cmin = lo
            fig.layout.coloraxis.cmax = hi
            fig.layout.coloraxis.colorbar.title.text = values.label(gene)
            fig.layout.title.text = U.title_text(values.label(gene, sep=" "), sub)
        section_label.value = f"<b>{plane_names[k]}</b>"

    def on_gene(change):
        state["busy"] = True
        try:
            _reset_threshold(threshold, *values.range(change["new"]))
        finally:
            state["busy"] = False
        redraw()

    def on_other(change):
        if not state["busy"]:
            redraw()

    dropdown.observe(on_gene, names="value")
    z_slider.observe(on_other, names="value")
    threshold.observe(on_other, names="value")
    redraw()

    box = widgets.VBox([widgets.HBox([dropdown, z_slider, section_label, threshold]), fig])
    box.figure = fig
    box.gene_dropdown = dropdown
    box.z_slider = z_slider
    box.threshold_slider = threshold
    return box


def _widget_modules():
    """``(ipywidgets, plotly.graph_objects)``, or an ImportError that says what to install."""
    try:
        import ipywidgets as widgets
        import plotly.graph_objects as go

        go.FigureWidget()  # plotly >= 6 raises ImportError here without anywidget
    except ImportError as err:
        raise ImportError(
            f"pl.explore needs ipywidgets and plotly's FigureWidget ({err}); install them with "
            "`pip install ipywidgets anywidget` (and use Jupyter to display the widget)."
        ) from err
    return widgets, go


class _ShownValues:
    """One gene's values at the shown cells (float32), read once per gene, and their finite range."""

    def __init__(self, adata, layer, idx):
        self.adata, self.layer, self.idx = adata, layer, idx
        self.cache: dict[str, np.ndarray] = {}

    def of(self, gene: str) -> np.ndarray:
        if gene not in self.cache:
            v = U.gene_values(self.adata, gene, self.layer)
            self.cache[gene] = U.f32(v if self.idx is None else v[self.idx])
        return self.cache[gene]

    def range(self, gene: str) -> tuple[float, float]:
        return U.finite_range(self.of(gene))

    def label(self, gene: str, sep: str = "<br>") -> str:
        return U.value_label(gene, self.layer, self.of(gene), sep=sep)


def _sliders(widgets, planes, lo0, hi0):
    """The z slider (over the section planes) and the threshold slider (over the first gene's range)."""
    z_lo, z_hi = float(planes[0]), float(planes[-1])
    if z_hi <= z_lo:
        z_hi = z_lo + 1.0
    gaps = np.diff(planes)
    z_step = float(gaps[gaps > 0].min() / 4) if np.any(gaps > 0) else (z_hi - z_lo) / 100
    z_slider = widgets.FloatSlider(
        value=float(planes[len(planes) // 2]),
        min=z_lo,
        max=z_hi,
        step=z_step,
        description="z",
        continuous_update=False,
        readout_format=".4g",
    )
    threshold = widgets.FloatSlider(
        value=lo0,
        min=lo0,
        max=hi0,
        step=(hi0 - lo0) / 100,
        description="threshold",
        continuous_update=False,
        readout_format=".3g",
    )
    return z_slider, threshold


def _reset_threshold(threshold, lo: float, hi: float) -> None:
    """Move the threshold slider to a new gene's range ``[lo, hi]``, starting at ``lo``."""
    with threshold.hold_trait_notifications():
        threshold.max = max(hi, threshold.min)
        threshold.min = lo
        threshold.max = hi
        threshold.step = (hi - lo) / 100
        threshold.value = lo


def _figure(go, xyz, gene, values: _ShownValues, *, layer, units, point_size, colorscale):
    """The FigureWidget: trace 0 the faint other sections, trace 1 the highlighted one, one coloraxis."""
    hover = f"{U.xyz_hover(units)}<br>%{{marker.color:.3g}}<extra></extra>"
    traces = [
        go.Scatter3d(
            x=[],
            y=[],
            z=[],
            mode="markers",
            name=name,
            marker=dict(size=size, color=[], coloraxis="coloraxis", line=dict(width=0)),
            opacity=opacity,
            hovertemplate=hover,
        )
        for name, size, opacity in (("other sections", point_size, 0.12), ("section", point_size * 1.6, 1.0))
    ]
    fig = go.FigureWidget(data=traces)
    lo, hi = values.range(gene)
    fig.update_layout(
        **U.base_layout("", legend_title=None, legend="inside"),
        height=650,
        coloraxis=dict(
            colorscale=colorscale, cmin=lo, cmax=hi, colorbar=U.colorbar(values.label(gene))
        ),
        scene=U.scene(units, ranges=U.range_of(xyz), fixed=True),
    )
    return fig
