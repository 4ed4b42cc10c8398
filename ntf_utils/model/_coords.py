"""Original units <-> the hash grid's unit cube, anisotropic and matched to the sampling density."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

__all__ = ["Sampling", "measure_sampling", "CoordinateTransform", "matched_transform", "z_is_discrete"]

# The widest axis fills this fraction of the cube; the rest is margin for extrapolation.
CUBE_FILL = 0.8


@dataclass
class Sampling:
    """How densely the training data samples space.

    Attributes
    ----------
    lo, hi
        Per-axis data bounds in original units.
    spacing
        Per-axis sample spacing: the median in-plane nearest-neighbour distance for x and y, the
        largest gap between training sections for z (a continuous z uses the 3D spacing), the
        largest gap between time points for time.
    """

    lo: np.ndarray
    hi: np.ndarray
    spacing: np.ndarray

    @property
    def extent(self) -> np.ndarray:
        return np.maximum(self.hi - self.lo, 0.0)


SPACING_QUERY_CELLS = 2000  # nearest-neighbour distances measured per section


def z_is_discrete(n_values: int, n_cells: int) -> bool:
    """Whether ``n_values`` distinct z among ``n_cells`` cells are section planes, not a continuous cloud."""
    return n_values <= max(50, n_cells // 20)


def measure_sampling(coords: np.ndarray, section: np.ndarray | None, seed: int = 0,
                     full_counts: dict | None = None) -> Sampling:
    """Measure bounds and sample spacing of training coordinates.

    Parameters
    ----------
    coords
        ``(n, 3)`` or ``(n, 4)`` coordinates (x, y, z[, time]) in original units.
    section
        Section label of each cell (``None`` for a continuous 3D point cloud).
    seed
        Seed of the cells whose nearest-neighbour distance is measured.
    full_counts
        When ``coords`` is a uniform random subsample of larger data (the streaming atlas path):
        the number of cells each section label has in the full data (key ``None`` without
        sections). The spacing measured on the subsample is scaled to the full density.

    Notes
    -----
    The in-plane spacing is the median distance from up to 2,000 cells per section to their nearest
    neighbour among *all* cells of that section (measuring within a subsample would overestimate it
    by ``sqrt(n / 2000)`` for dense sections). For a subsample of ``m`` of ``N`` cells the distances
    are multiplied by ``(m / N) ** (1 / d)`` (``d`` = 2 in a section, 3 in a cloud): the
    nearest-neighbour distance of a point pattern scales with its density that way.
    """
    rng = np.random.default_rng(seed)
    coords = np.asarray(coords, dtype=np.float64)
    lo, hi = coords.min(0), coords.max(0)
    spacing = np.zeros(coords.shape[1])
    if section is None:
        labels, names = np.zeros(len(coords), dtype=np.int64), [None]
    else:
        # factorize + sort: np.unique's order, without sorting millions of label strings
        labels, names = pd.factorize(np.asarray(section), sort=True)
    # the cells of each section, ascending, from one stable sort instead of a scan per section
    by_label = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[by_label], np.arange(len(names) + 1))
    dims = 3 if section is None else 2
    in_plane = []
    for lab, name in enumerate(names):
        idx = by_label[starts[lab] : starts[lab + 1]]
        if len(idx) < 2:
            continue
        points = coords[idx, :dims]
        query = points if len(idx) <= SPACING_QUERY_CELLS else points[rng.choice(len(idx), SPACING_QUERY_CELLS, replace=False)]
        dist, _ = cKDTree(points).query(query, k=2)
        d = dist[:, 1]
        if full_counts is not None:
            key = name if section is None else str(name)
            total = full_counts.get(key, len(idx))
            if total > len(idx):
                d = d * (len(idx) / total) ** (1.0 / dims)
        in_plane.append(d[d > 0])
    distances = np.concatenate(in_plane) if in_plane else np.zeros(0)
    nn = float(np.median(distances)) if len(distances) else 1.0
    spacing[:2] = nn
    z_values = np.unique(coords[:, 2])
    if section is None or not z_is_discrete(len(z_values), len(coords)):
        spacing[2] = nn  # a continuous 3D cloud: z is sampled like x and y
    else:
        spacing[2] = float(np.diff(z_values).max()) if len(z_values) > 1 else nn
    if coords.shape[1] == 4:
        t_values = np.unique(coords[:, 3])
        spacing[3] = float(np.diff(t_values).max()) if len(t_values) > 1 else 1.0
    return Sampling(lo=lo, hi=hi, spacing=np.maximum(spacing, 1e-12))


@dataclass
class CoordinateTransform:
    """Affine per-axis map ``u = 0.5 + (x - center) * scale`` into the unit cube.

    Stored with the model so that every public call takes and returns original units.
    """

    center: np.ndarray
    scale: np.ndarray

    def to_unit(self, coords: np.ndarray) -> np.ndarray:
        """Original units -> unit cube (float32), clipped to ``[0, 1]``."""
        u = 0.5 + (np.asarray(coords, dtype=np.float64) - self.center) * self.scale
        return np.clip(u, 0.0, 1.0).astype(np.float32)

    def to_grid_xyz(self, coords: np.ndarray, resolution: float) -> np.ndarray:
        """(x, y, z) of ``coords`` (3 or more columns) -> positions in cells of a grid of ``resolution``
        vertices per unit-cube axis, unclipped: the space in which the tissue support is measured."""
        xyz = np.asarray(coords, dtype=np.float64)[:, :3]
        return (0.5 + (xyz - self.center[:3]) * self.scale[:3]) * resolution

    def inside(self, coords: np.ndarray) -> np.ndarray:
        """True where a coordinate maps inside the cube (no clipping needed)."""
        u = 0.5 + (np.asarray(coords, dtype=np.float64) - self.center) * self.scale
        return np.all((u >= 0) & (u <= 1), axis=1)

    def to_dict(self) -> dict:
        return {"center": self.center.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> CoordinateTransform:
        return cls(center=np.asarray(data["center"], dtype=np.float64), scale=np.asarray(data["scale"], dtype=np.float64))


def matched_transform(sampling: Sampling, cells_per_axis: np.ndarray, finest_resolution: float) -> CoordinateTransform:
    """The transform that gives axis ``a`` ``cells_per_axis[a]`` finest grid cells across its extent.

    Parameters
    ----------
    sampling
        Bounds and spacing of the training data.
    cells_per_axis
        Wanted number of finest-level grid cells across each axis's data extent.
    finest_resolution
        Resolution of the finest level on the unit cube.
    """
    extent = np.where(sampling.extent > 0, sampling.extent, sampling.spacing)
    fraction = np.asarray(cells_per_axis, dtype=np.float64) / finest_resolution  # share of the cube
    scale = fraction / extent
    center = (sampling.lo + sampling.hi) / 2.0
    return CoordinateTransform(center=center, scale=scale)
