"""Original units <-> the hash grid's unit cube, anisotropic and matched to the sampling density."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

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


def measure_sampling(coords: np.ndarray, section: np.ndarray | None, seed: int = 0) -> Sampling:
    """Measure bounds and sample spacing of training coordinates.

    Parameters
    ----------
    coords
        ``(n, 3)`` or ``(n, 4)`` coordinates (x, y, z[, time]) in original units.
    section
        Section label of each cell (``None`` for a continuous 3D point cloud).
    """
    rng = np.random.default_rng(seed)
    coords = np.asarray(coords, dtype=np.float64)
    lo, hi = coords.min(0), coords.max(0)
    spacing = np.zeros(coords.shape[1])
    labels = np.zeros(len(coords), dtype=int) if section is None else np.unique(section, return_inverse=True)[1]
    in_plane = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        if len(idx) > 2000:
            idx = rng.choice(idx, 2000, replace=False)
        if len(idx) < 2:
            continue
        xy = coords[idx, :2] if section is not None else coords[idx, :3]
        dist, _ = cKDTree(xy).query(xy, k=2)
        d = dist[:, 1]
        in_plane.append(d[d > 0])
    nn = float(np.median(np.concatenate(in_plane))) if in_plane and len(np.concatenate(in_plane)) else 1.0
    spacing[:2] = nn
    z_values = np.unique(coords[:, 2])
    if section is None or len(z_values) > max(50, len(coords) // 20):
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
