"""Discrete 3D domains: one toggleable trace per domain, as surfaces or points, colours matched to a reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._constants import Key
from . import _utils as U
from ._cells import _categorical_traces

__all__ = ["domains_3d", "match_domains", "OMIT"]

#: Labels that name no domain and are never drawn: the synthetic generators' label of points outside
#: the body (``datasets.synthetic_embryo_domain``). Missing labels (NaN/None) are never drawn either.
OMIT = ("outside",)
_CUTAWAY = {"x": 0, "y": 1, "z": 2}
_HINT = "click a domain in the legend to hide it, double-click to show it alone"


@dataclass
class _Lattice:
    """Points that are the centres of voxels of a regular grid: the grid and each point's voxel."""

    axes: list  # three 1D float64 arrays of voxel centres
    flat: np.ndarray  # (n,) C-order flat voxel index of each point

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(len(a) for a in self.axes)


@dataclass
class _Labels:
    """What a domain view draws: every labelled point, its label, and the grid when there is one."""

    xyz: np.ndarray  # (n, 3) float64
    spec: U.ColorSpec  # categorical, values (n,) with NaN where no domain
    lattice: _Lattice | None
    what: str
    units: str | None


def _lattice(xyz: np.ndarray, max_ratio: float = 16.0) -> _Lattice | None:
    """The regular grid the points are voxel centres of (as ``tl.domains`` / ``Volume.to_anndata`` write them).

    ``None`` for scattered points (cells): a grid needs at most ``max_ratio`` voxels per point in its box,
    one point per voxel, at least two voxels per axis and most points with a neighbour along every axis.
    """
    n = len(xyz)
    if n < 8 or not np.isfinite(xyz).all():
        return None
    axes, index, total = [], [], 1.0
    for i in range(3):
        u, inv = np.unique(xyz[:, i], return_inverse=True)
        if len(u) < 2:
            return None
        step = float(np.diff(u).min())
        k = np.round((u - u[0]) / step)
        total *= float(k[-1]) + 1.0
        if total > max_ratio * n or np.abs(u - (u[0] + k * step)).max() > 1e-3 * step:
            return None
        axes.append(u[0] + np.arange(int(k[-1]) + 1) * step)
        index.append(k.astype(np.int64)[inv.ravel()])
    shape = tuple(len(a) for a in axes)
    flat = np.ravel_multi_index(tuple(index), shape)
    if len(np.unique(flat)) != n:
        return None
    # voxels of a grid touch: most have a neighbour along every axis (a hexagonal spot layout does not)
    for i, stride in enumerate(np.cumprod((shape[1:] + (1,))[::-1])[::-1]):
        up = (index[i] < shape[i] - 1) & np.isin(flat + stride, flat)
        down = (index[i] > 0) & np.isin(flat - stride, flat)
        if (up | down).sum() < 0.5 * n:
            return None
    return _Lattice(axes, flat)


def _volume_label_points(volume, labels):
    """Voxel centres inside the mask, their labels and flat voxel indices, from labels in one of three layouts."""
    labels = np.asarray(labels)
    mask = np.asarray(volume.mask, dtype=bool).reshape(-1)
    n_vox = int(np.prod(volume.shape))
    inside = np.flatnonzero(mask)
    if labels.shape == tuple(volume.shape) or (labels.ndim == 1 and labels.size == n_vox):
        values = labels.reshape(-1)[inside]
    elif labels.ndim == 1 and labels.size == len(inside):
        values = labels
    else:
        raise ValueError(
            f"labels for a Volume must have shape {tuple(volume.shape)} (one per voxel), ({n_vox},) "
            f"(flattened voxels, C order) or ({len(inside)},) (inside-mask voxels, the order of "
            f"Volume.to_anndata()); got shape {labels.shape}."
        )
    return volume.coords()[inside], values, inside


def _label_spec(owner, name: str, values, palette, omit) -> U.ColorSpec:
    """A categorical spec of domain labels with the ``omit`` labels (and missing ones) set to NaN.

    Colours are those :func:`domains_3d` gives the same labels on their own, so a reference drawn in
    its own figure and the domains matched to it share them.
    """
    series = values.reset_index(drop=True) if isinstance(values, pd.Series) else pd.Series(values)
    if not isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype("category")
    dropped = set(map(str, omit or ()))
    series = series.where(~series.astype(str).isin(dropped) | series.isna())
    if owner is not None:
        return U.categorical_spec(owner, name, series, palette)
    present = set(series.dropna().unique())
    cats = [c for c in series.cat.categories if c in present]
    return U.ColorSpec(key=name, kind="categorical", values=series.to_numpy(dtype=object), label=name,
                       categories=cats, colors=U.make_palette(len(cats), palette))


def _read(data, key, spatial_key, units) -> tuple:
    """``(xyz, labels, owner, name, lattice, what, units)`` of an AnnData column or a Volume's labels."""
    from ..model._volume import Volume

    if isinstance(data, Volume):
        if isinstance(key, str):
            raise TypeError(
                "a Volume holds no domain labels; pass the labels array as key (shape volume.shape, "
                "(n_voxels,) or (volume.mask.sum(),)), or call domains_3d(volume.to_anndata() with "
                f"obs[{key!r}] filled, {key!r})."
            )
        xyz, labels, flat = _volume_label_points(data, key)
        lattice = _Lattice([np.asarray(a, dtype=np.float64) for a in data.axes], flat)
        if min(lattice.shape) < 2:
            lattice = None
        units = units if units is not None else getattr(data, "units", None)
        return xyz, labels, None, "domain", lattice, "voxels", units
    U.check_adata(data, "data")
    if not isinstance(key, str) or key not in data.obs.columns:
        raise KeyError(
            f"{key!r} is not a column of adata.obs; available columns: {list(map(str, data.obs.columns))}. "
            "Compute domains first (ntf_utils.tl.domains, or a clustering into obs) or pass the obs column "
            "holding them."
        )
    xyz = U.coords_3d(data, spatial_key)
    lattice = _lattice(xyz)
    what = "voxels" if lattice is not None else "cells"
    return xyz, data.obs[key], data, key, lattice, what, U.units_of(data, units)


def _reference_labels(data, reference, n: int):
    """The reference labels at the same points as the domains: an obs column of ``data`` or an array."""
    from ..model._volume import Volume

    if isinstance(reference, str):
        if isinstance(data, Volume) or reference not in data.obs.columns:
            raise KeyError(
                f"reference {reference!r} is not a column of adata.obs; pass an obs column name or an array "
                "of reference labels at the same points."
            )
        return data, reference, data.obs[reference]
    if isinstance(data, Volume):
        return None, "reference", _volume_label_points(data, reference)[1]
    labels = np.asarray(reference, dtype=object).ravel()
    if len(labels) != n:
        raise ValueError(f"reference must have one label per point ({n}), got {len(labels)}.")
    return None, "reference", labels


def match_domains(labels, reference) -> dict:
    """Pair each domain with the reference domain it overlaps most, one to one (Hungarian assignment).

    Parameters
    ----------
    labels, reference
        Labels of the same points (NaN/None: unlabelled, ignored).

    Returns
    -------
    dict
        ``{label: reference label}`` for the matched domains (a domain sharing no point with any
        unmatched reference domain, or in excess of them, is left out). The assignment maximises the
        total number of points whose matched labels agree
        (:func:`scipy.optimize.linear_sum_assignment` on the contingency table).
    """
    from scipy.optimize import linear_sum_assignment

    a, b = pd.Series(np.asarray(labels, dtype=object)), pd.Series(np.asarray(reference, dtype=object))
    both = a.notna().to_numpy() & b.notna().to_numpy()
    if not both.any():
        return {}
    table = pd.crosstab(a[both].to_numpy(), b[both].to_numpy())
    rows, cols = linear_sum_assignment(-table.to_numpy())
    return {table.index[i]: table.columns[j] for i, j in zip(rows, cols) if table.iat[i, j] > 0}


def _match_colors(spec: U.ColorSpec, ref: U.ColorSpec, palette) -> tuple[list, list]:
    """Colours and legend names of ``spec``'s domains: the matched reference domain's colour and name."""
    matched = match_domains(spec.values, ref.values)
    ref_color = dict(zip(ref.categories, ref.colors))
    used = set(ref.colors)
    spare = iter(c for c in U.make_palette(len(ref.categories) + len(spec.categories), palette) if c not in used)
    colors, names = [], []
    for cat in spec.categories:
        if cat in matched:
            colors.append(ref_color[matched[cat]])
            names.append(f"{cat} (≈ {matched[cat]})" if str(cat) != str(matched[cat]) else str(cat))
        else:
            colors.append(next(spare, U.NA_COLOR))
            names.append(f"{cat} (unmatched)")
    return colors, names


def _selected(spec: U.ColorSpec, domains) -> list[int]:
    """Indices of the categories to draw (``domains=None``: all)."""
    if domains is None:
        return list(range(len(spec.categories)))
    wanted = [domains] if isinstance(domains, (str, int, np.integer)) else list(domains)
    by_name = {str(c): i for i, c in enumerate(spec.categories)}
    unknown = [d for d in wanted if str(d) not in by_name]
    if unknown:
        raise ValueError(f"domains {unknown} are not among the labels {list(map(str, spec.categories))}.")
    return sorted({by_name[str(d)] for d in wanted})


def _cut(xyz: np.ndarray, labelled: np.ndarray, cutaway) -> np.ndarray:
    """Boolean: the points kept by a cut-away (the half beyond the labelled points' mid-plane is removed)."""
    if cutaway is None:
        return np.ones(len(xyz), dtype=bool)
    if cutaway not in _CUTAWAY:
        raise ValueError(f"cutaway must be None, 'x', 'y' or 'z', got {cutaway!r}.")
    coord = xyz[:, _CUTAWAY[cutaway]]
    inside = coord[labelled] if labelled.any() else coord
    return coord <= (float(inside.min()) + float(inside.max())) / 2.0


def _surface_traces(labels: _Labels, show, colors, names, *, opacity, max_voxels, smooth, keep):
    """One closed, lightly smoothed isosurface (indicator at 0.5) per shown domain on a strided grid."""
    import plotly.graph_objects as go
    from scipy.ndimage import gaussian_filter

    from ._volume import grid_xyz, strides_for

    lat, spec = labels.lattice, labels.spec
    codes = np.full(int(np.prod(lat.shape)), -1, dtype=np.int64)
    lookup = {c: i for i, c in enumerate(spec.categories)}
    code = np.array([lookup.get(v, -1) if not pd.isna(v) else -1 for v in spec.values], dtype=np.int64)
    codes[lat.flat[keep]] = code[keep]
    codes = codes.reshape(lat.shape)
    st = strides_for(lat.shape, max_voxels)
    sl = tuple(slice(s // 2, None, s) for s in st)
    codes = np.pad(codes[sl], 1, constant_values=-1)  # an empty voxel all round: every surface closes
    axes = []
    for a, s in zip(lat.axes, sl):
        a = a[s]
        step = float(a[1] - a[0]) if len(a) > 1 else 1.0
        axes.append(np.concatenate([[a[0] - step], a, [a[-1] + step]]))
    traces = []
    for i in show:
        # each domain on its own bounding box (plus the empty rim): small traces, small HTML
        where = np.nonzero(codes == i)
        if where[0].size == 0:  # nothing of it left after striding or the cut-away
            continue
        box = tuple(slice(int(w.min()) - 1, int(w.max()) + 2) for w in where)
        ind = (codes[box] == i).astype(np.float32)
        xyz = {k: U.f32(v) for k, v in grid_xyz([a[b] for a, b in zip(axes, box)]).items()}
        if smooth:
            smoothed = gaussian_filter(ind, float(smooth), mode="constant")
            ind = smoothed if smoothed.max() > 0.5 else ind  # a domain too thin to survive smoothing stays as is
        traces.append(go.Isosurface(
            **xyz, value=ind.ravel(), isomin=0.5, isomax=0.5, surface_count=1, opacity=opacity,
            colorscale=[[0, colors[i]], [1, colors[i]]], showscale=False, showlegend=True, name=names[i],
            legendgroup=str(spec.categories[i]), caps=dict(x_show=False, y_show=False, z_show=False),
            hovertemplate=f"{spec.key}={spec.categories[i]}<extra></extra>",
            lighting=dict(ambient=0.55, diffuse=0.8, specular=0.15, roughness=0.6), flatshading=False,
        ))
    note = ""
    if st != (1, 1, 1):
        note = "downsampled {} → {} voxels".format("×".join(map(str, lat.shape)),
                                                   "×".join(str(n - 2) for n in codes.shape))
    return traces, note


def _point_traces(labels: _Labels, show, colors, names, *, keep, max_points, seed, size, opacity):
    """One point trace per shown domain (a random subsample above ``max_points``)."""
    sel = np.flatnonzero(keep & pd.notna(labels.spec.values))
    idx = U.subsample(len(sel), max_points, seed)
    rows = sel if idx is None else sel[idx]
    spec = labels.spec
    shown = U.ColorSpec(key=spec.key, kind="categorical", values=spec.values[rows], label=spec.label,
                        categories=[spec.categories[i] for i in show], colors=[colors[i] for i in show])
    traces = _categorical_traces(U.f32(labels.xyz[rows]), shown.values, shown, point_size=size,
                                 opacity=opacity, units=labels.units)
    for t, i in zip(traces, show):
        t.name = names[i]
    return traces, U.subsample_note(len(sel), idx, labels.what, seed)


def _check_kind(kind: str, labels: _Labels) -> str:
    if kind not in ("auto", "points", "surface"):
        raise ValueError(f"kind must be 'auto', 'points' or 'surface', got {kind!r}.")
    if kind == "surface" and labels.lattice is None:
        raise ValueError(
            "kind='surface' needs labels on a regular voxel grid (a Volume, tl.domains(field) or "
            "Volume.to_anndata() output, with >= 2 voxels per axis); for scattered cells use kind='points'."
        )
    if kind == "auto":
        return "surface" if labels.lattice is not None else "points"
    return kind


def domains_3d(
    data,
    key,
    *,
    kind: str = "auto",
    domains=None,
    reference=None,
    cutaway: str | None = None,
    omit=OMIT,
    spatial_key: str = Key.obsm.spatial_3d,
    max_points: int | None = 300_000,
    max_voxels: int | None = 64**3,
    smooth: float | None = 0.6,
    point_size: float | None = None,
    opacity: float | None = None,
    palette=None,
    seed: int = 0,
    title: str | None = None,
    units: str | None = None,
):
    """Discrete domain labels in 3D, one toggleable trace (legend entry) per domain.

    Domains on a voxel grid are drawn as translucent closed surfaces, so each one's shape shows
    through the others; scattered cells as points. Click a domain in the legend to hide it,
    double-click to show it alone; ``domains=`` draws only some, ``cutaway=`` opens the tissue.

    Parameters
    ----------
    data
        A stacked AnnData (cells, or voxels from ``tl.domains(field)`` / ``Volume.to_anndata()``) or a
        ``Volume``. Not modified.
    key
        For an AnnData: the ``obs`` column holding the domain labels (any dtype: integers are treated
        as labels too). For a ``Volume``: the labels themselves, an array of shape ``volume.shape``,
        ``(n_voxels,)`` in C order, or ``(volume.mask.sum(),)`` in ``Volume.to_anndata()`` order; only
        voxels inside the mask count.
    kind
        ``"surface"`` (each domain's boundary as a translucent isosurface of its indicator; needs
        labels on a regular voxel grid), ``"points"`` (a point per cell / voxel centre) or ``"auto"``
        (surfaces when the points are the voxels of a regular grid, as for a ``Volume`` or
        ``tl.domains(field)`` output, points otherwise).
    domains
        Draw only these domains (labels, or one label); default all. Colours do not change.
    reference
        Reference labels of the same points (an ``obs`` column name, or an array laid out as ``key``):
        each domain is matched to the reference domain it overlaps most (one to one, Hungarian
        assignment, :func:`match_domains`), takes the colour that reference domain has when drawn
        on its own with the same ``palette`` and is named ``"<domain> (≈ <reference>)"``.
    cutaway
        ``"x"``, ``"y"`` or ``"z"``: remove the half of the tissue beyond the mid-plane along that axis,
        to look inside. ``None`` (default) draws everything.
    omit
        Labels that are not domains and are not drawn (default ``("outside",)``, the synthetic
        generators' label outside the body). Missing labels are never drawn.
    spatial_key
        ``obsm`` key with (x, y, z) coordinates (AnnData only).
    max_points
        Points: deterministic random subsample above this many (title says so).
    max_voxels
        Surfaces: the label grid is strided (centre voxel of each block) to at most this many voxels.
    smooth
        Surfaces: Gaussian sigma, in voxels, applied to each domain's 0/1 indicator before its surface
        is drawn (rounds off the voxel staircase and drops isolated voxels; a domain too thin to
        survive it is drawn unsmoothed). ``None`` or 0: no smoothing.
    point_size
        Marker size in pixels; default 2 for cells, 3 for voxels.
    opacity
        Marker / surface opacity; default 1 for points (see :func:`cells_3d`), 0.35 for surfaces.
    palette, seed, title
        As in :func:`cells_3d`.
    units
        Coordinate units for the axis titles; default ``adata.uns['ntf']['units']`` or ``volume.units``.

    Returns
    -------
    plotly.graph_objects.Figure
        One trace per drawn domain in label order (``Isosurface`` for surfaces, ``Scatter3d`` for points).
    """
    import plotly.graph_objects as go

    xyz, values, owner, name, lattice, what, units = _read(data, key, spatial_key, units)
    spec = _label_spec(owner, name, values, palette, omit)
    labels = _Labels(xyz, spec, lattice, what, units)
    kind = _check_kind(kind, labels)
    colors, names = list(spec.colors), [str(c) for c in spec.categories]
    if reference is not None:
        ref_owner, ref_name, ref_values = _reference_labels(data, reference, len(xyz))
        colors, names = _match_colors(spec, _label_spec(ref_owner, ref_name, ref_values, palette, omit), palette)
    show = _selected(spec, domains)
    keep = _cut(xyz, pd.notna(spec.values), cutaway)
    if kind == "points":
        size = point_size if point_size is not None else (3.0 if what == "voxels" else 2.0)
        traces, note = _point_traces(labels, show, colors, names, keep=keep, max_points=max_points, seed=seed,
                                     size=size, opacity=1.0 if opacity is None else opacity)
    else:
        traces, note = _surface_traces(labels, show, colors, names, opacity=0.35 if opacity is None else opacity,
                                       max_voxels=max_voxels, smooth=smooth, keep=keep)
    drawn = xyz[pd.notna(spec.values)]
    main = title if title is not None else f"{name}: {len(spec.categories)} domains"
    notes = [n for n in (note, f"cut away beyond the mid-plane in {cutaway}" if cutaway else "", _HINT) if n]
    fig = go.Figure(data=traces)
    fig.update_layout(
        **U.base_layout(U.title_text(main, "; ".join(notes)), legend_title=f"{name}"),
        scene=U.scene(units, ranges=U.range_of(drawn if len(drawn) else xyz), fixed=kind == "surface"),
    )
    return fig
