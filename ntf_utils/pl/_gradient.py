"""Gradient vectors as 3D cones, thinned to a regular lattice and sized to its spacing."""

from __future__ import annotations

import numpy as np

from . import _utils as U
from ._volume import context_cloud, context_xyz

__all__ = ["gradient_arrows", "thin_to_grid"]

# Default cone lengths, in arrow spacings: the strongest arrows (95th percentile of magnitude and above)
# reach LONGEST, the weakest drawn ones SHORTEST. Gradients are heavy-tailed (steep at a few boundaries),
# so lengths proportional to magnitude leave most cones a speck; the colour carries the magnitude.
LONGEST = 0.9
SHORTEST = 0.3


def thin_to_grid(xyz: np.ndarray, max_points: int) -> tuple[np.ndarray, float]:
    """At most ``max_points`` of the points, one per cell of a regular cubic grid, and the cell size.

    The cell size is the smallest (found by bisection) at which no more than ``max_points`` cells are
    occupied; each occupied cell keeps the point nearest its centre, so the kept points lie about one
    cell apart, as on a lattice. Returns sorted indices into ``xyz``.
    """
    lo = xyz.min(axis=0)
    diag = float(np.linalg.norm(np.ptp(xyz, axis=0))) or 1.0

    def flat_codes(h: float) -> np.ndarray:
        codes = np.floor((xyz - lo) / h).astype(np.int64)
        return np.ravel_multi_index(codes.T, tuple(codes.max(axis=0) + 1))

    small, big = diag * 1e-5, diag * 1.01  # too many cells / a single cell
    for _ in range(30):
        mid = float(np.sqrt(small * big))
        if len(np.unique(flat_codes(mid))) > max_points:
            small = mid
        else:
            big = mid
    codes = flat_codes(big)
    centre = lo + (np.floor((xyz - lo) / big) + 0.5) * big
    order = np.lexsort((np.linalg.norm(xyz - centre, axis=1), codes))
    first = np.ones(len(order), dtype=bool)
    first[1:] = codes[order][1:] != codes[order][:-1]
    return np.sort(order[first]), big


def _spacing(xyz: np.ndarray) -> float:
    """Median distance from each point to its nearest neighbour (the arrows' spacing)."""
    from scipy.spatial import cKDTree

    if len(xyz) < 2:
        return float(np.linalg.norm(np.ptp(xyz, axis=0))) * 0.05 or 1.0
    dist, _ = cKDTree(xyz).query(xyz, k=2)
    d = dist[:, 1]
    return float(np.median(d[d > 0])) if np.any(d > 0) else 1.0


def _arrows(coords, vectors, magnitude):
    """Finite ``(xyz, vec, norm)``: the vectors rescaled to ``magnitude`` when it is given."""
    xyz = np.asarray(coords, dtype=np.float64)
    vec = np.asarray(vectors, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"coords must be an (n, 3) array of positions, got shape {xyz.shape}.")
    if vec.shape != xyz.shape:
        raise ValueError(f"vectors must have the same shape as coords {xyz.shape}, got {vec.shape}.")
    norm = np.linalg.norm(vec, axis=1)
    if magnitude is not None:
        mag = np.asarray(magnitude, dtype=np.float64).ravel()
        if mag.shape != (len(xyz),):
            raise ValueError(f"magnitude must have shape ({len(xyz)},), got {np.shape(magnitude)}.")
        with np.errstate(invalid="ignore", divide="ignore"):
            vec = np.where(norm[:, None] > 0, vec / norm[:, None], 0.0) * mag[:, None]
        norm = np.abs(mag)
    keep = np.all(np.isfinite(xyz), axis=1) & np.all(np.isfinite(vec), axis=1)
    if not keep.any():
        raise ValueError("no finite arrows to draw (all coords/vectors are NaN or inf).")
    return xyz[keep], vec[keep], norm[keep]


def _select(xyz, norm, max_arrows, min_quantile):
    """Indices of the arrows drawn, their spacing and a note: weak arrows dropped, the rest thinned."""
    n = len(xyz)
    strong = norm > 0
    if min_quantile:
        strong &= norm >= float(np.quantile(norm, float(min_quantile)))
    if not strong.any():
        strong = np.ones(n, dtype=bool)
    sel = np.flatnonzero(strong)
    notes = []
    if len(sel) < n:
        notes.append(f"{n - len(sel):,} weakest dropped")
    if max_arrows is not None and len(sel) > max_arrows:
        if max_arrows < 1:
            raise ValueError(f"max_arrows must be >= 1 (got {max_arrows}); pass None to draw every arrow.")
        keep, cell = thin_to_grid(xyz[sel], int(max_arrows))
        sel = sel[keep]
        notes.append(f"one per {cell:.3g}-wide cell")
    spacing = _spacing(xyz[sel])
    if len(sel) < n:
        notes.insert(0, f"{len(sel):,} of {n:,} arrows shown")
    return sel, spacing, ", ".join(notes)


def _floored_lengths(vec, norm, spacing, lowest, colorbar):
    """Vectors redrawn ``SHORTEST``-``LONGEST`` spacings long by magnitude (linear from the weakest drawn
    magnitude ``lowest`` to the 95th percentile, capped there), the colour range in drawn lengths, and a
    colour bar whose ticks read as magnitudes."""
    top = float(np.percentile(norm, 95))
    top = top if top > lowest else float(norm.max())
    span = top - lowest
    scale = (lambda m: np.clip((m - lowest) / span, 0.0, 1.0)) if span > 0 else (lambda m: np.ones_like(m))

    def length(m):
        return spacing * (SHORTEST + (LONGEST - SHORTEST) * scale(np.asarray(m, dtype=np.float64)))

    with np.errstate(invalid="ignore", divide="ignore"):
        direction = np.where(norm[:, None] > 0, vec / norm[:, None], 0.0)
    ticks = np.linspace(lowest, top, 5) if span > 0 else np.array([top])
    labels = [f"{t:.3g}" for t in ticks]
    labels[-1] = f"≥ {labels[-1]}" if span > 0 and norm.max() > top else labels[-1]
    colorbar = {**colorbar, "tickvals": length(ticks).tolist(), "ticktext": labels}
    return direction * length(norm)[:, None], (float(length(lowest)), float(length(top))), colorbar


def gradient_arrows(
    coords,
    vectors,
    *,
    magnitude=None,
    max_arrows: int | None = 1500,
    sizeref: float | None = None,
    colorscale: str = "Plasma",
    context=None,
    gene: str | None = None,
    seed: int = 0,
    title: str | None = None,
    units: str | None = None,
    min_quantile: float | None = 0.2,
):
    """Gradient vectors drawn as cones, coloured by magnitude, on a regular lattice of arrows.

    Arrows weaker than the ``min_quantile`` quantile of the magnitudes are dropped (where the gene is
    flat the direction means nothing); above ``max_arrows`` the rest are thinned to one per cell of a
    regular grid (:func:`thin_to_grid`), so arrows stand about one cell apart, and every cone is sized
    to their spacing: the 95th-percentile magnitude and above span 90% of the median distance between
    neighbours, the weakest drawn arrow 30%, linearly in between, so that every drawn arrow shows its
    direction; the colour (and the hover) gives the magnitude.

    Parameters
    ----------
    coords
        ``(n, 3)`` arrow positions in original units.
    vectors
        ``(n, 3)`` gradient vectors in original units (expression per unit length).
    magnitude
        Optional ``(n,)`` magnitudes. Cones are coloured and sized by the length of the drawn vector, so
        when ``magnitude`` is given the arrows point along ``vectors`` with length ``magnitude``.
        Default: ``‖vectors‖``.
    max_arrows
        At most this many cones: above it, one arrow per cell of a regular cubic grid (the one nearest
        the cell's centre), with the cell the smallest that leaves at most ``max_arrows`` cells
        occupied; the title says so. ``None`` draws every arrow.
    sizeref
        Cone length per unit magnitude, in original units (plotly ``sizemode='raw'``): given, a cone is
        ``sizeref * magnitude`` long (lengths proportional to magnitude). Default: the lengths above,
        from 30% to 90% of the median distance between neighbouring drawn arrows.
    colorscale
        Plotly colour scale for the magnitude.
    context
        Optional faint grey point cloud behind the cones: an AnnData (``obsm['spatial_3d']``) or an
        ``(m, 3)`` coordinate array (subsampled to 50,000 points).
    gene
        Gene name for the colour-bar title (``|∇ gene|``).
    seed
        Seed of the context cloud's subsample (the arrows' thinning is deterministic).
    title
        Figure title.
    units
        Coordinate units for the axis titles; default the context AnnData's ``uns['ntf']['units']``.
    min_quantile
        Drop arrows whose magnitude is below this quantile of all magnitudes (zero-length arrows are
        always dropped); ``None`` or 0 keeps every non-zero arrow.

    Returns
    -------
    plotly.graph_objects.Figure
        A ``Cone`` trace (and a ``Scatter3d`` context trace first when ``context`` is given).
    """
    import plotly.graph_objects as go

    xyz, vec, norm = _arrows(coords, vectors, magnitude)
    sel, spacing, note = _select(xyz, norm, max_arrows, min_quantile)
    xyz, vec, norm = xyz[sel], vec[sel], norm[sel]
    if units is None and hasattr(context, "uns"):
        units = U.units_of(context, None)
    label = f"|∇ {gene}|" if gene else "|gradient|"
    traces = [] if context is None else [context_cloud(context, seed=seed)]
    lo, hi = U.finite_range(norm)
    ranges = U.range_of(xyz if context is None else np.concatenate([xyz, context_xyz(context)]))
    colorbar = U.colorbar(label)
    if sizeref is None:  # drawn length = an affine map of the magnitude; the colour bar is labelled back
        vec, colour_range, colorbar = _floored_lengths(vec, norm, spacing, lo, colorbar)
        sizeref = 1.0
    else:
        colour_range = (lo, hi)
    traces.append(
        go.Cone(
            x=U.f32(xyz[:, 0]), y=U.f32(xyz[:, 1]), z=U.f32(xyz[:, 2]),
            u=vec[:, 0], v=vec[:, 1], w=vec[:, 2],
            sizemode="raw",
            sizeref=float(sizeref),
            anchor="center",  # each cone sits in its cell: neighbours do not run into each other
            colorscale=colorscale,
            cmin=colour_range[0],
            cmax=colour_range[1],
            colorbar=colorbar,
            name=label,
            customdata=norm,
            lighting=dict(ambient=0.7, diffuse=0.6, specular=0.1),
            hovertemplate=f"{U.xyz_hover(units)}<br>{label}=%{{customdata:.3g}}<extra></extra>",
        )
    )
    fig = go.Figure(data=traces)
    main = title if title is not None else (f"gradient of {gene}" if gene else "gradient")
    fig.update_layout(
        **U.base_layout(U.title_text(main, note), legend="inside"),
        scene=U.scene(units, ranges=ranges),
    )
    return fig
