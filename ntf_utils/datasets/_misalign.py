"""Known residual misalignment added to aligned sections: the test bed of registration inside the fit."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._anndata import read_coords, read_sections, sections_in_order
from .._constants import Key

__all__ = ["misalign_sections"]


def misalign_sections(
    adata,
    *,
    rotation_deg: tuple[float, float] = (1.0, 10.0),
    shift_spacings: tuple[float, float] = (0.5, 3.0),
    reference: str | None = None,
    spatial_key: str = Key.obsm.spatial_3d,
    seed: int = 0,
    copy: bool = True,
):
    """Move every section but a reference by a random in-plane rigid motion of known size.

    Sections are never mounted in one frame: after ``ntf.pp.align_sections`` a residual of a few
    degrees and a cell spacing or two is left. This applies one to an aligned stack (e.g.
    :func:`synthetic_embryo`), with known values: each section ``s`` but the reference is rotated
    about its centroid ``c_s`` by ``theta_s`` (uniform in ``rotation_deg``, random sign) and shifted
    by ``t_s`` (length uniform in ``shift_spacings`` times the in-plane cell spacing, random
    direction): ``x' = R(theta_s) (x - c_s) + c_s + t_s``. z (and time) are kept.

    Parameters
    ----------
    adata
        Stacked sections with ``obsm[spatial_key]`` and ``obs["section"]``.
    rotation_deg, shift_spacings
        Ranges of the rotation (degrees) and of the shift (in-plane cell spacings, the median nearest
        neighbour distance within a section).
    reference
        The section left in place (default: the middle one by z).
    spatial_key
        The coordinates to move.
    seed
        Seed of the motions.
    copy
        Return a moved copy (default) instead of moving ``adata`` in place.

    Returns
    -------
    AnnData or None
        With ``obsm[spatial_key]`` moved and the motions in ``uns["ntf"]["misalignment"]``: a table
        (dict of lists) with ``section``, ``rotation_deg``, ``shift_x``, ``shift_y`` (original units),
        ``centre_x``, ``centre_y`` and ``spacing``. ``None`` with ``copy=False``. The pose that undoes
        section ``s``'s motion (as ``field.section_poses()`` reports it) rotates by ``-theta_s`` and
        shifts by ``-t_s``.
    """
    if not 0 <= rotation_deg[0] <= rotation_deg[1] or not 0 <= shift_spacings[0] <= shift_spacings[1]:
        raise ValueError(f"rotation_deg and shift_spacings must be ranges (low, high) with 0 <= low <= high, got "
                         f"{rotation_deg!r} and {shift_spacings!r}")
    labels = read_sections(adata, Key.obs.section)
    if labels is None:
        raise KeyError(f"obs[{Key.obs.section!r}] not found: stack the sections first (ntf.pp.stack_sections)")
    coords = read_coords(adata, spatial_key, n_cols=(3, 4)).copy()
    names = list(sections_in_order(labels, coords[:, 2])["section"])
    reference = names[(len(names) - 1) // 2] if reference is None else str(reference)
    if reference not in names:
        raise ValueError(f"reference {reference!r} is not a section; the sections are {names}")
    spacing = _in_plane_spacing(coords[:, :2], labels)
    rng = np.random.default_rng(seed)
    rows_out = []
    for name in names:
        if name == reference:
            continue
        rows = labels == name
        theta = np.radians(rng.uniform(*rotation_deg)) * rng.choice([-1.0, 1.0])
        direction = rng.uniform(0.0, 2.0 * np.pi)
        shift = rng.uniform(*shift_spacings) * spacing * np.array([np.cos(direction), np.sin(direction)])
        centre = coords[rows, :2].mean(0)
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        coords[rows, :2] = (coords[rows, :2] - centre) @ rotation.T + centre + shift
        rows_out.append({"section": name, "rotation_deg": float(np.degrees(theta)), "shift_x": float(shift[0]),
                         "shift_y": float(shift[1]), "centre_x": float(centre[0]), "centre_y": float(centre[1]),
                         "spacing": spacing})
    target = adata.copy() if copy else adata
    target.obsm[spatial_key] = coords
    target.uns.setdefault(Key.uns.ntf, {})["misalignment"] = pd.DataFrame(rows_out).to_dict(orient="list")
    return target if copy else None


def _in_plane_spacing(xy: np.ndarray, labels: np.ndarray) -> float:
    """Median distance from each cell to its nearest neighbour in the same section (the fit's spacing)."""
    from scipy.spatial import cKDTree

    distances = [cKDTree(xy[labels == name]).query(xy[labels == name], k=2)[0][:, 1]
                 for name in np.unique(labels) if (labels == name).sum() > 1]
    return float(np.median(np.concatenate(distances))) if distances else 1.0
