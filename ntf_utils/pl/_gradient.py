"""Gradient vectors as 3D cones."""

from __future__ import annotations

import numpy as np

from . import _utils as U
from ._volume import context_cloud, context_xyz

__all__ = ["gradient_arrows"]


def gradient_arrows(
    coords,
    vectors,
    *,
    magnitude=None,
    max_arrows: int | None = 3000,
    sizeref: float | None = None,
    colorscale: str = "Plasma",
    context=None,
    gene: str | None = None,
    seed: int = 0,
    title: str | None = None,
    units: str | None = None,
):
    """Gradient vectors drawn as cones, coloured by magnitude.

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
        At most this many cones (deterministic random subsample with ``seed``; title says so).
    sizeref
        Cone length per unit magnitude, in original units (plotly ``sizemode='raw'``): a cone is
        ``sizeref * magnitude`` long. Default: the 95th-percentile magnitude draws 3.5% of the
        bounding-box diagonal.
    colorscale
        Plotly colour scale for the magnitude.
    context
        Optional faint grey point cloud behind the cones: an AnnData (``obsm['spatial_3d']``) or an
        ``(m, 3)`` coordinate array (subsampled to 50,000 points).
    gene
        Gene name for the colour-bar title (``|∇ gene|``).
    seed, title, units
        Subsample seed, figure title, coordinate units for the axis titles.

    Returns
    -------
    plotly.graph_objects.Figure
        A ``Cone`` trace (and a ``Scatter3d`` context trace first when ``context`` is given).
    """
    import plotly.graph_objects as go

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
    xyz, vec, norm = xyz[keep], vec[keep], norm[keep]
    if len(xyz) == 0:
        raise ValueError("no finite arrows to draw (all coords/vectors are NaN or inf).")
    n = len(xyz)
    idx = U.subsample(n, max_arrows, seed)
    if idx is not None:
        xyz, vec, norm = xyz[idx], vec[idx], norm[idx]

    label = f"|∇ {gene}|" if gene else "|gradient|"
    traces = []
    if context is not None:
        traces.append(context_cloud(context))
    lo, hi = U.finite_range(norm)
    all_xyz = xyz if context is None else np.concatenate([xyz, context_xyz(context)])
    ranges = U.range_of(all_xyz)
    if sizeref is None:
        diag = float(np.linalg.norm([b - a for a, b in ranges]))
        ref = float(np.percentile(norm, 95)) if np.any(norm > 0) else 1.0
        sizeref = 0.035 * diag / (ref if ref > 0 else float(norm.max()) or 1.0)
    traces.append(
        go.Cone(
            x=xyz[:, 0],
            y=xyz[:, 1],
            z=xyz[:, 2],
            u=vec[:, 0],
            v=vec[:, 1],
            w=vec[:, 2],
            sizemode="raw",
            sizeref=float(sizeref),
            anchor="tail",
            colorscale=colorscale,
            cmin=lo,
            cmax=hi,
            colorbar=U.colorbar(label),
            name=label,
            lighting=dict(ambient=0.7, diffuse=0.6, specular=0.1),
            hovertemplate=f"{U.xyz_hover(units)}<br>{label}=%{{norm:.3g}}<extra></extra>",
        )
    )
    fig = go.Figure(data=traces)
    main = title if title is not None else (f"gradient of {gene}" if gene else "gradient")
    fig.update_layout(
        **U.base_layout(U.title_text(main, U.subsample_note(n, idx, "arrows", seed)), legend="inside"),
        scene=U.scene(units, ranges=ranges),
    )
    return fig
