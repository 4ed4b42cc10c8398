"""Rendered volumes: isosurfaces / volume rendering and a movable slicing plane."""

from __future__ import annotations

import numpy as np

from .._constants import Key
from . import _utils as U

__all__ = ["volume_3d", "slice_plane", "strides_for", "grid_xyz", "downsample", "context_xyz", "context_cloud"]

_AXES = {"x": 0, "y": 1, "z": 2}
#: Camera directions that look at a slicing plane's face rather than its edge.
_FACING = {"x": (1.45, -0.55, 0.95), "y": (0.55, -1.45, 0.95), "z": (0.55, -1.45, 1.3)}


def _check_volume(volume, gene):
    from ..model._volume import Volume

    if not isinstance(volume, Volume):
        raise TypeError(
            f"expected an ntf_utils Volume (from NTFField.render), got {type(volume).__name__}; for cells "
            "use ntf_utils.pl.cells_3d."
        )
    if gene not in volume.genes:
        raise KeyError(
            f"gene {gene!r} is not in this volume; rendered genes: {list(volume.genes)[:20]}"
            f"{' ...' if len(volume.genes) > 20 else ''}. Render it with field.render(shape, genes=[...])."
        )


def strides_for(shape, max_voxels: int) -> tuple[int, int, int]:
    """Smallest per-axis strides (coarsening the axis with most samples first) to fit ``max_voxels``."""
    if max_voxels is None:
        return (1, 1, 1)
    if max_voxels < 8:
        raise ValueError(f"max_voxels must be >= 8 (2 per axis), got {max_voxels}.")
    strides = [1, 1, 1]

    def counts():
        return [-(-n // s) for n, s in zip(shape, strides)]

    while np.prod(counts()) > max_voxels:
        c = counts()
        k = int(np.argmax(c))
        strides[k] += 1
    return tuple(strides)


def grid_xyz(axes) -> dict:
    """``x``, ``y``, ``z`` of every voxel of the grid ``axes`` (C order), as plotly volume-trace arguments."""
    gx, gy, gz = np.meshgrid(*axes, indexing="ij")
    return dict(x=gx.ravel(), y=gy.ravel(), z=gz.ravel())


def downsample(volume, gene, max_voxels):
    """``(values, mask, axes, note)`` of one gene, strided (centre sample of each block) to fit ``max_voxels``."""
    vals = volume.gene(gene)
    mask = np.asarray(volume.mask, dtype=bool)
    axes = [np.asarray(a, dtype=np.float64) for a in volume.axes]
    st = strides_for(vals.shape, max_voxels)
    if st == (1, 1, 1):
        return vals, mask, axes, ""
    sl = tuple(slice(s // 2, None, s) for s in st)
    new_axes = [a[s] for a, s in zip(axes, sl)]
    new = vals[sl]
    note = "downsampled {} → {} voxels".format("×".join(map(str, vals.shape)), "×".join(map(str, new.shape)))
    return new, mask[sl], new_axes, note


#: Default isosurface levels: these quantiles of the values inside the tissue (the outermost surface
#: encloses the top quarter of the tissue, the innermost its top 5%).
ISO_QUANTILES = (0.75, 0.95)


def _iso_levels(finite, isomin, isomax):
    """``(isomin, isomax)`` of isosurfaces: high quantiles of the values inside the tissue unless given."""
    if finite.size == 0:
        raise ValueError("the volume has no finite values inside its mask; nothing to draw.")
    lo, hi = (float(v) for v in np.quantile(finite, ISO_QUANTILES))
    if hi <= lo:  # a flat top: fall back to the range
        lo, hi = float(finite.min()), float(finite.max())
    imin = lo if isomin is None else float(isomin)
    imax = max(hi, imin) if isomax is None else float(isomax)
    if imax < imin:
        raise ValueError(f"isomax ({imax}) is below isomin ({imin}); pass isomin <= isomax.")
    return imin, imax


def _smoothed(vals, mask, sigma):
    """``vals`` Gaussian-smoothed (``sigma`` voxels) over the finite voxels inside ``mask`` only (normalised
    convolution: outside voxels neither contribute nor receive), NaN elsewhere."""
    from scipy.ndimage import gaussian_filter

    good = mask & np.isfinite(vals)
    num = gaussian_filter(np.where(good, vals, 0.0).astype(np.float64), sigma, mode="nearest")
    den = gaussian_filter(good.astype(np.float64), sigma, mode="nearest")
    out = np.full(vals.shape, np.nan, dtype=np.float32)
    ok = good & (den > 1e-6)
    out[ok] = (num[ok] / den[ok]).astype(np.float32)
    return out


def _default_levels(finite, isomin, isomax):
    if finite.size == 0:
        raise ValueError("the volume has no finite values inside its mask; nothing to draw.")
    lo, hi = np.percentile(finite, [1.0, 99.5])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    span = hi - lo if hi > lo else 1.0
    imin = float(lo + 0.3 * span) if isomin is None else float(isomin)
    imax = float(lo + 0.85 * span) if isomax is None else float(isomax)
    if imax < imin:
        raise ValueError(f"isomax ({imax}) is below isomin ({imin}); pass isomin <= isomax.")
    return imin, imax


def _filled(vals, mask, below):
    out = np.array(vals, dtype=np.float32, copy=True)
    out[~mask | ~np.isfinite(out)] = below
    return out


def volume_3d(
    volume,
    gene: str,
    *,
    kind: str = "isosurface",
    isomin: float | None = None,
    isomax: float | None = None,
    surface_count: int = 3,
    opacity: float = 0.3,
    max_voxels: int | None = 64**3,
    colorscale: str = "Viridis",
    title: str | None = None,
    units: str | None = None,
    smooth: float | None = 0.7,
):
    """A rendered ``Volume`` as isosurfaces (default) or volume rendering.

    By default a few nested, smooth isosurfaces: ``surface_count`` (3) levels from the 75th to the
    95th percentile of the values inside the tissue, drawn on the volume lightly smoothed (Gaussian,
    ``smooth`` = 0.7 voxel) so that they do not follow voxel-scale noise.

    Parameters
    ----------
    volume
        ``Volume`` from ``NTFField.render`` (values ``(nx, ny, nz, n_genes)``, axes in original units,
        inside-tissue mask). Not modified.
    gene
        Gene to draw (must be in ``volume.genes``).
    kind
        ``"isosurface"`` (nested surfaces at ``surface_count`` levels) or ``"volume"`` (translucent
        volume rendering; ``surface_count=15, opacity=0.1`` is a good start).
    isomin, isomax
        Lowest and highest level. Default for isosurfaces: the 75th and 95th percentiles of the
        (smoothed) values inside the mask; for volume rendering 30% and 85% of the way from their 1st
        to their 99.5th percentile.
    surface_count
        Number of levels between ``isomin`` and ``isomax``.
    opacity
        Surface opacity.
    max_voxels
        Above this many voxels the grid is strided (the centre voxel of each block is kept, coarsening
        the longest axis first) and the title says so. ``None`` draws every voxel.
    colorscale
        Plotly colour scale.
    title
        Figure title; defaults to the gene.
    units
        Coordinate units for the axis titles; default ``volume.units`` (set by ``NTFField.render`` when the
        fitted data recorded units).
    smooth
        Isosurfaces only: Gaussian sigma, in voxels of the drawn (possibly strided) grid, applied to the
        values inside the mask before the surfaces are drawn (the levels are quantiles of the smoothed
        values; hover shows them). ``None`` or 0 draws the values as rendered. Volume rendering never
        smooths.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``Isosurface`` or ``Volume`` trace. Voxels outside the mask (and NaN values) are set below
        ``isomin``, so surfaces close at the tissue boundary instead of spilling outside it.
    """
    import plotly.graph_objects as go

    _check_volume(volume, gene)
    if kind not in ("isosurface", "volume"):
        raise ValueError(f"kind must be 'isosurface' or 'volume', got {kind!r}.")
    if min(volume.shape) < 2:
        raise ValueError(
            f"volume shape {volume.shape} has an axis with one voxel; isosurfaces need >= 2 voxels per axis. "
            "Use ntf_utils.pl.slice_plane for a single plane, or render with more voxels along that axis."
        )
    units = units if units is not None else getattr(volume, "units", None)
    vals, mask, axes, note = downsample(volume, gene, max_voxels)
    if kind == "isosurface" and smooth:
        vals = _smoothed(vals, mask, float(smooth))
        note = "; ".join(x for x in (note, f"smoothed (σ = {float(smooth):g} voxel)") if x)
    finite = vals[mask & np.isfinite(vals)]
    levels_of = _iso_levels if kind == "isosurface" else _default_levels
    imin, imax = levels_of(finite, isomin, isomax)
    lo = float(min(finite.min(), imin))
    below = lo - max(abs(imax - lo), 1.0)  # clearly below every level
    filled = _filled(vals, mask, below)
    common = dict(
        **grid_xyz(axes),
        value=filled.ravel(),
        isomin=imin,
        isomax=imax,
        surface_count=int(surface_count),
        opacity=float(opacity),
        colorscale=colorscale,
        cmin=imin,
        cmax=imax,
        colorbar=U.colorbar(f"{gene}<br>(NTF prediction)"),
        name=gene,
        hovertemplate=f"{U.xyz_hover(units)}<br>{gene}=%{{value:.3g}}<extra></extra>",
    )
    if kind == "isosurface":
        trace = go.Isosurface(**common, caps=dict(x_show=False, y_show=False, z_show=False))
    else:
        trace = go.Volume(**common)
    fig = go.Figure(data=[trace])
    main = title if title is not None else f"{gene} ({kind})"
    levels = f"levels {imin:.3g}–{imax:.3g}"
    fig.update_layout(
        **U.base_layout(U.title_text(main, "; ".join(x for x in (levels, note) if x))),
        scene=U.scene(units, ranges=[(a[0], a[-1]) for a in axes], fixed=True),
    )
    return fig


def _plane(vals, axes, axis: int, k: int):
    """Surface arrays (X, Y, Z, C) for plane ``k`` along ``axis``; cells outside the mask are NaN (holes)."""
    other = [i for i in range(3) if i != axis]
    a, b = axes[other[0]], axes[other[1]]
    A, B = np.meshgrid(a, b, indexing="ij")
    C = np.take(vals, k, axis=axis).astype(np.float64)
    P = np.full(A.shape, float(axes[axis][k]))
    P[~np.isfinite(C)] = np.nan
    out = [None, None, None]
    out[other[0]], out[other[1]], out[axis] = A, B, P
    return out[0], out[1], out[2], C


def slice_plane(
    volume,
    gene: str,
    *,
    axis: str = "z",
    position: float | None = None,
    context: str | None = "mask",
    max_steps: int = 60,
    max_plane: int = 160,
    colorscale: str = "Viridis",
    cmin: float | None = None,
    cmax: float | None = None,
    title: str | None = None,
    units: str | None = None,
):
    """A slicing plane through a ``Volume``, coloured by the gene, moved along ``axis`` by a slider.

    Parameters
    ----------
    volume
        ``Volume`` from ``NTFField.render``. Not modified.
    gene
        Gene to colour the plane by.
    axis
        ``"x"``, ``"y"`` or ``"z"``: the plane is perpendicular to this axis and the slider moves it along it.
    position
        Starting position in original units (nearest voxel plane); default the middle.
    context
        What to draw faintly around the plane: ``"mask"`` (the tissue outline, an isosurface of the
        mask), ``"isosurface"`` (one faint isosurface of the gene), ``None``; or an AnnData
        (``obsm['spatial_3d']``) / ``(n, 3)`` array drawn as a faint point cloud (subsampled to 50,000).
    max_steps
        At most this many slider positions (evenly spread over the planes along ``axis``).
    max_plane
        At most this many samples per in-plane axis (strided), keeping the HTML small.
    colorscale
        Plotly colour scale.
    cmin, cmax
        Fixed colour limits for every plane; default the finite min/max of the gene inside the mask.
    title
        Figure title.
    units
        Coordinate units for the axis titles and slider label; default ``volume.units``.

    Returns
    -------
    plotly.graph_objects.Figure
        A ``Surface`` trace (holes outside the mask), one animation frame per slider step (each frame
        replaces the surface's coordinates and ``surfacecolor``; step ``i`` animates to the frame named in
        its ``args[0]``), and a slider in ``layout.sliders``. :func:`save_html` does not auto-play the
        frames; ``Figure.write_html`` does unless given ``auto_play=False`` (the sweep ends on the
        starting plane).
        Axis ranges are fixed to the volume's bounds, so the scene stays put as the plane moves.
    """
    import plotly.graph_objects as go

    _check_volume(volume, gene)
    units = units if units is not None else getattr(volume, "units", None)
    if axis not in _AXES:
        raise ValueError(f"axis must be one of 'x', 'y', 'z', got {axis!r}.")
    ax = _AXES[axis]
    vals = volume.gene(gene)
    axes = [np.asarray(a, dtype=np.float64) for a in volume.axes]
    # Stride in-plane axes so each plane has at most max_plane samples per side.
    sl = [slice(None)] * 3
    for i in range(3):
        if i != ax and len(axes[i]) > max_plane:
            s = -(-len(axes[i]) // max_plane)
            sl[i] = slice(s // 2, None, s)
    vals = vals[tuple(sl)]
    axes = [a[s] for a, s in zip(axes, sl)]
    lo, hi = U.finite_range(vals, cmin, cmax)

    n_planes = len(axes[ax])
    steps_idx = np.unique(np.round(np.linspace(0, n_planes - 1, min(max_steps, n_planes))).astype(int))
    if position is None:
        k0 = n_planes // 2
    else:
        k0 = int(np.argmin(np.abs(axes[ax] - float(position))))
    # The starting plane must be one of the steps.
    start = int(np.argmin(np.abs(steps_idx - k0)))
    k0 = int(steps_idx[start])

    unit = f" {units}" if units else ""
    traces = []
    if context is not None:
        traces.extend(_context_traces(volume, gene, context))
    X, Y, Z, C = _plane(vals, axes, ax, k0)
    surf = go.Surface(
        x=X,
        y=Y,
        z=Z,
        surfacecolor=C,
        cmin=lo,
        cmax=hi,
        colorscale=colorscale,
        name=gene,
        colorbar=U.colorbar(f"{gene}<br>(NTF prediction)"),
        showscale=True,
        connectgaps=False,
        lighting=dict(ambient=0.9, diffuse=0.1, specular=0.0, roughness=1.0),
        hovertemplate=f"{U.xyz_hover(units)}<br>{gene}=%{{surfacecolor:.3g}}<extra></extra>",
    )
    surf_index = len(traces)
    traces.append(surf)

    frames, steps = [], []
    for k in steps_idx:
        Xk, Yk, Zk, Ck = _plane(vals, axes, ax, int(k))
        name = f"{axis}[{int(k)}]={axes[ax][k]:.4g}"  # unique even when labels round alike
        frames.append(
            go.Frame(name=name, data=[go.Surface(x=Xk, y=Yk, z=Zk, surfacecolor=Ck)], traces=[surf_index])
        )
        steps.append(
            dict(
                method="animate",
                label=f"{axes[ax][k]:.4g}",
                args=[
                    [name],
                    dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0)),
                ],
            )
        )
    # Renderers that auto-play frames on load (Figure.write_html, the classic notebook) play them in list
    # order; rotating the list makes that sweep end on the starting plane.
    frames = frames[start + 1 :] + frames[: start + 1]
    slider = dict(
        active=start,
        steps=steps,
        x=0.05,
        len=0.9,
        y=0.0,
        yanchor="top",
        pad=dict(t=10, b=10),
        currentvalue=dict(prefix=f"{axis} = ", suffix=unit, font=dict(size=13, color="#222222")),
        tickcolor="#888888",
        font=dict(size=10, color="#444444"),
    )
    full_axes = [np.asarray(a, dtype=np.float64) for a in volume.axes]
    fig = go.Figure(data=traces, frames=frames)
    main = title if title is not None else f"{gene}: slice along {axis}"
    layout = U.base_layout(U.title_text(main, "drag the slider to move the plane"), legend="inside")
    layout["margin"] = dict(l=10, r=10, t=70, b=80)
    fig.update_layout(
        **layout,
        sliders=[slider],
        scene=U.scene(
            units,
            ranges=[(a[0], a[-1]) for a in full_axes],
            fixed=True,
            direction=_FACING[axis],
            distance=1.35,
        ),
    )
    return fig


def _context_traces(volume, gene, context):
    if isinstance(context, str):
        if context not in ("mask", "isosurface"):
            raise ValueError(
                f"context must be 'mask', 'isosurface', None, an AnnData or an (n, 3) array; got {context!r}."
            )
        if min(volume.shape) < 2:
            return []
        if context == "mask":
            m = np.asarray(volume.mask, dtype=np.float32)
            st = strides_for(m.shape, 40**3)
            sl = tuple(slice(s // 2, None, s) for s in st)
            m = m[sl]
            axes = [np.asarray(a)[s] for a, s in zip(volume.axes, sl)]
            if m.min() == m.max():  # all inside (or all outside): nothing to outline
                return []
            return [_faint_isosurface(axes, m, 0.5, "tissue", opacity=0.08, color="#888888")]
        vals, mask, axes, _ = downsample(volume, gene, 40**3)
        finite = vals[mask & np.isfinite(vals)]
        level, _ = _default_levels(finite, None, None)
        filled = _filled(vals, mask, float(finite.min()) - 1.0)
        return [_faint_isosurface(axes, filled, level, f"{gene} ≥ {level:.3g}", opacity=0.1, color="#777777")]
    return [context_cloud(context)]


def _faint_isosurface(axes, values, level: float, name: str, *, opacity: float, color: str):
    """One grey, translucent, uncapped isosurface of ``values`` (on the grid ``axes``) at ``level``."""
    import plotly.graph_objects as go

    return go.Isosurface(
        **grid_xyz(axes),
        value=values.ravel(),
        isomin=level,
        isomax=level,
        surface_count=1,
        opacity=opacity,
        colorscale=[[0, color], [1, color]],
        showscale=False,
        hoverinfo="skip",
        name=name,
        caps=dict(x_show=False, y_show=False, z_show=False),
    )


def context_xyz(context, spatial_key: str = Key.obsm.spatial_3d) -> np.ndarray:
    """``(n, 3)`` float64 coordinates of a context: an AnnData (``obsm[spatial_key]``) or an array."""
    if hasattr(context, "obsm"):
        return U.coords_3d(context, spatial_key)
    xyz = np.asarray(context, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"context coordinates must be an (n, 3) array or an AnnData, got shape {xyz.shape}.")
    return xyz


def context_cloud(context, max_points: int = 50_000, spatial_key: str = Key.obsm.spatial_3d, seed: int = 0):
    """A faint grey point cloud from an AnnData (``obsm[spatial_key]``) or an ``(n, 3)`` array."""
    import plotly.graph_objects as go

    xyz = context_xyz(context, spatial_key)
    idx = U.subsample(len(xyz), max_points, seed)
    if idx is not None:
        xyz = xyz[idx]
    xyz = U.f32(xyz)
    return go.Scatter3d(
        x=xyz[:, 0],
        y=xyz[:, 1],
        z=xyz[:, 2],
        mode="markers",
        name="context",
        marker=dict(size=1.5, color=U.CONTEXT_COLOR, line=dict(width=0)),
        opacity=0.15,
        hoverinfo="skip",
    )
