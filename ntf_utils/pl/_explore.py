"""An ipywidgets explorer: gene dropdown, section (z) slider and expression threshold over a 3D point cloud."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from . import _utils as U

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
    spatial_key: str = "spatial_3d",
    section_key: str | None = "section",
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
    try:
        import ipywidgets as widgets
        import plotly.graph_objects as go

        go.FigureWidget()  # plotly >= 6 raises ImportError here without anywidget
    except ImportError as err:
        raise ImportError(
            f"pl.explore needs ipywidgets and plotly's FigureWidget ({err}); install them with "
            "`pip install ipywidgets anywidget` (and use Jupyter to display the widget)."
        ) from err

    U.check_adata(adata)
    gene_names = _gene_list(adata, genes)
    _ = U._matrix(adata, layer)  # validates the layer now, not on first interaction
    xyz_all = U.coords_3d(adata, spatial_key)
    units = U.units_of(adata, units)
    n = adata.n_obs
    idx = U.subsample(n, max_points, seed)
    xyz = U.f32(xyz_all if idx is None else xyz_all[idx])
    cell_z, planes, plane_names = _section_planes(adata, xyz, idx, section_key)

    cache: dict[str, np.ndarray] = {}

    def values_of(gene):
        if gene not in cache:
            v = U.gene_values(adata, gene, layer)
            cache[gene] = U.f32(v if idx is None else v[idx])
        return cache[gene]

    def vrange(gene):
        return U.finite_range(values_of(gene))

    g0 = gene_names[0]
    lo0, hi0 = vrange(g0)
    z_lo, z_hi = float(planes[0]), float(planes[-1])
    if z_hi <= z_lo:
        z_hi = z_lo + 1.0
    gaps = np.diff(planes)
    z_step = float(gaps[gaps > 0].min() / 4) if np.any(gaps > 0) else (z_hi - z_lo) / 100

    dropdown = widgets.Dropdown(options=gene_names, value=g0, description="gene")
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
    section_label = widgets.HTML()

    unit = f" {units}" if units else ""
    hover = f"x=%{{x:.4g}}{unit}<br>y=%{{y:.4g}}{unit}<br>z=%{{z:.4g}}{unit}<br>%{{marker.color:.3g}}<extra></extra>"
    fig = go.FigureWidget(
        data=[
            go.Scatter3d(
                x=[],
                y=[],
                z=[],
                mode="markers",
                name="other sections",
                marker=dict(size=point_size, color=[], coloraxis="coloraxis", line=dict(width=0)),
                opacity=0.12,
                hovertemplate=hover,
            ),
            go.Scatter3d(
                x=[],
                y=[],
                z=[],
                mode="markers",
                name="section",
                marker=dict(size=point_size * 1.6, color=[], coloraxis="coloraxis", line=dict(width=0)),
                opacity=1.0,
                hovertemplate=hover,
            ),
        ]
    )
    layout = U.base_layout("", legend_title=None, legend="inside")
    fig.update_layout(
        **layout,
        height=650,
        coloraxis=dict(
            colorscale=colorscale, cmin=lo0, cmax=hi0, colorbar=U.colorbar(f"{g0}<br>({layer or 'X'})")
        ),
        scene=U.scene(units, ranges=U.range_of(xyz), fixed=True),
    )

    state = {"busy": False}

    def redraw():
        gene = dropdown.value
        v = values_of(gene)
        k = int(np.argmin(np.abs(planes - z_slider.value)))
        zsel = planes[k]
        in_sec = np.isclose(cell_z, zsel)
        keep = np.isfinite(v) & (v >= threshold.value)
        a = keep & ~in_sec
        b = keep & in_sec
        lo, hi = vrange(gene)
        note = U.subsample_note(n, idx, "cells", seed)
        hidden = int((~keep).sum())
        sub = f"section {plane_names[k]} (z={zsel:.4g}{unit}) highlighted; {hidden:,} cells below threshold hidden"
        if note:
            sub += f"; {note}"
        with fig.batch_update():
            for trace, sel in ((fig.data[0], a), (fig.data[1], b)):
                trace.x, trace.y, trace.z = xyz[sel, 0], xyz[sel, 1], xyz[sel, 2]
                trace.marker.color = v[sel]
            fig.data[1].name = f"section {plane_names[k]}"
            fig.layout.coloraxis.cmin = lo
            fig.layout.coloraxis.cmax = hi
            fig.layout.coloraxis.colorbar.title.text = f"{gene}<br>({layer or 'X'})"
            fig.layout.title.text = U.title_text(f"{gene} ({layer or 'X'})", sub)
        section_label.value = f"<b>{plane_names[k]}</b>"

    def on_gene(change):
        lo, hi = vrange(change["new"])
        state["busy"] = True
        try:
            with threshold.hold_trait_notifications():
                threshold.max = max(hi, threshold.min)
                threshold.min = lo
                threshold.max = hi
                threshold.step = (hi - lo) / 100
                threshold.value = lo
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

    controls = widgets.HBox([dropdown, z_slider, section_label, threshold])
    box = widgets.VBox([controls, fig])
    box.figure = fig
    box.gene_dropdown = dropdown
    box.z_slider = z_slider
    box.threshold_slider = threshold
    return box
