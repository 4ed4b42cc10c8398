"""Per-section rigid poses in the plane, learned with the field (opt-in: ``register_sections``).

Serial sections are aligned before a fit (``ntf.pp.align_sections``), but a residual misalignment of
a cell spacing or a few degrees per section is left, and a field fitted to it blurs every boundary
along z. Here each training section ``s`` gets an in-plane rotation ``theta_s`` and translation
``t_s`` that move its *measured* coordinates into the field's frame before the encoding::

    x' = R(theta_s) (x - c_s) + c_s + t_s        (x, y in original units)

with ``c_s`` the section's in-plane centroid. The motion is rigid in original units: the unit cube
is anisotropic (a different scale per axis, :class:`~._coords.CoordinateTransform`), so unit-cube
offsets are scaled to original units, rotated, and scaled back. One section (the middle one by z)
is the reference and never moves: a rigid motion of the whole stack together with the field would
otherwise leave the loss unchanged. With a time axis each stage has its own reference (sections of
different stages are different embryos: they are not registered to each other). Rows without a training section (code -1: held-out and new
sections, and every query of the field) are not moved.

Parameters are in units of the in-plane cell spacing: the translation directly, the rotation as the
arc it moves a point at the section's RMS radius. So one learning rate means "spacings per step"
for both, whatever the data's units and the sections' size.

Coarse to fine (BARF, Lin et al. 2021): a fine hash-grid level can fit each misaligned section
where it is and leaves the poses no gradient towards alignment, so while the poses are found the
finer levels are faded in one after another (:func:`level_weights`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._anndata import read_coords, read_sections
from .._constants import Key

__all__ = ["SectionPoses", "level_weights", "apply_poses", "warn_large_poses"]

TABLE_COLUMNS = ["section", "rotation_deg", "shift_x", "shift_y", "centre_x", "centre_y", "reference"]
# a residual misalignment after ntf.pp.align_sections: the range the registration is measured on
RESIDUAL_ROTATION_DEG, RESIDUAL_SHIFT_SPACINGS = 10.0, 3.0


class SectionPoses(nn.Module):
    """In-plane rotation and translation of each training section, applied to unit-cube coordinates.

    Parameters
    ----------
    n_sections
        Training sections (in section-code order).
    section_z
        ``(n_sections,)`` z of each section: the middle one by z is the fixed reference
        (:meth:`set_geometry` can name one per stage instead).

    Notes
    -----
    The geometry (centroids, radii, the transform's scale, the spacing) is set once before training
    by :meth:`set_geometry` and kept in buffers, so it is saved and loaded with the field.
    """

    def __init__(self, n_sections: int, section_z=None) -> None:
        super().__init__()
        self._z = np.zeros(n_sections) if section_z is None else np.asarray(section_z, dtype=np.float64)
        free = _free_sections(self._z, np.zeros(n_sections))
        self.rotation = nn.Parameter(torch.zeros(n_sections))  # arc at the RMS radius, in spacings
        self.shift = nn.Parameter(torch.zeros(n_sections, 2))  # in spacings
        self.register_buffer("free", torch.from_numpy(free))  # 0: the reference section
        self.register_buffer("centre", torch.zeros(n_sections, 2))  # in-plane centroid, original units
        self.register_buffer("radius", torch.ones(n_sections))  # RMS distance from it, original units
        self.register_buffer("origin", torch.zeros(2))  # the transform's centre (x, y)
        self.register_buffer("scale", torch.ones(2))  # unit-cube units per original unit (x, y)
        self.register_buffer("spacing", torch.ones(()))  # in-plane cell spacing, original units

    @property
    def n_sections(self) -> int:
        return self.rotation.shape[0]

    @property
    def reference(self) -> int:
        """Code of the (first) reference section (-1 without sections)."""
        fixed = torch.nonzero(self.free == 0).flatten()
        return int(fixed[0]) if len(fixed) else -1

    @torch.no_grad()
    def set_geometry(self, centre, radius, transform, spacing: float, stage=None) -> None:
        """Centroid ``(n, 2)`` and RMS radius ``(n,)`` of each section (original units), the
        :class:`~._coords.CoordinateTransform` and the in-plane spacing; with ``stage`` ``(n,)`` (the
        time of each section) one reference per stage, the middle section by z of each."""
        if stage is not None and len(stage):
            self.free.copy_(torch.from_numpy(_free_sections(self._z, np.asarray(stage, dtype=np.float64))))
        self.centre.copy_(torch.as_tensor(np.asarray(centre, dtype=np.float64).reshape(-1, 2)))
        self.radius.copy_(torch.as_tensor(np.maximum(np.asarray(radius, dtype=np.float64), 1e-12)))
        self.origin.copy_(torch.as_tensor(np.asarray(transform.center[:2], dtype=np.float64)))
        self.scale.copy_(torch.as_tensor(np.asarray(transform.scale[:2], dtype=np.float64)))
        self.spacing.fill_(float(spacing))

    def angles(self) -> torch.Tensor:
        """``(n,)`` rotation of each section, radians (0 for the reference)."""
        return self.rotation * self.free * self.spacing / self.radius

    def shifts(self) -> torch.Tensor:
        """``(n, 2)`` translation of each section, original units (0 for the reference)."""
        return self.shift * (self.free * self.spacing)[:, None]

    def forward(self, u: torch.Tensor, section: torch.Tensor | None) -> torch.Tensor:
        """``u`` ``(n, D)`` with each row's (x, y) moved by its section's pose (code -1: unchanged)."""
        if section is None or self.n_sections == 0:
            return u
        rows = section.clamp_min(0)
        theta = self.angles().index_select(0, rows)[:, None]
        shift = self.shifts().index_select(0, rows)
        centre = 0.5 + (self.centre.index_select(0, rows) - self.origin) * self.scale  # in the unit cube
        d = (u[:, :2] - centre) / self.scale  # offset from the centroid, original units
        # (R - I) d + t, with cos - 1 = -2 sin^2(theta / 2): exact zero at theta = 0, no cancellation
        sin, versin = torch.sin(theta), 2.0 * torch.sin(theta / 2) ** 2
        moved = torch.stack([-versin[:, 0] * d[:, 0] - sin[:, 0] * d[:, 1],
                             sin[:, 0] * d[:, 0] - versin[:, 0] * d[:, 1]], dim=1) + shift
        xy = (u[:, :2] + moved * self.scale).clamp(0.0, 1.0)
        xy = torch.where((section >= 0)[:, None], xy, u[:, :2])
        return torch.cat([xy, u[:, 2:]], dim=1)

    def penalty(self) -> torch.Tensor:
        """Mean over the free sections of the squared pose (rotation arc and shift, in spacings): the
        Gaussian prior's value that keeps each section near its given place."""
        free = self.free
        squared = (self.rotation * free) ** 2 + ((self.shift * free[:, None]) ** 2).sum(dim=1)
        return squared.sum() / free.sum().clamp_min(1.0)

    def table(self, sections: list[str]) -> pd.DataFrame:
        """One row per section: ``rotation_deg``, ``shift_x``/``shift_y`` and ``centre_x``/``centre_y``
        (original units), ``reference``. The pose maps a measured point ``x`` of the section to
        ``R(rotation) (x - centre) + centre + shift``."""
        if self.n_sections == 0:
            return pd.DataFrame({c: [] for c in TABLE_COLUMNS})
        with torch.no_grad():
            theta = self.angles().double().cpu().numpy()
            shift = self.shifts().double().cpu().numpy()
            centre = self.centre.double().cpu().numpy()
        return pd.DataFrame({
            "section": list(sections), "rotation_deg": np.degrees(theta),
            "shift_x": shift[:, 0], "shift_y": shift[:, 1],
            "centre_x": centre[:, 0], "centre_y": centre[:, 1],
            "reference": (self.free == 0).cpu().numpy(),
        })


def warn_large_poses(table: pd.DataFrame, spacing: float) -> None:
    """Warn when a learned pose is larger than a residual misalignment (``RESIDUAL_*``).

    On real spot data (HER2ST) a pose that large was the field explaining how sections differ by
    moving them, and it lowered the held-out accuracy (``docs/model.md``): the user should know.
    """
    shift = np.hypot(table["shift_x"], table["shift_y"]) / spacing
    large = (table["rotation_deg"].abs() > RESIDUAL_ROTATION_DEG) | (shift > RESIDUAL_SHIFT_SPACINGS)
    if large.any():
        worst = table.loc[large].assign(shift=shift[large]).iloc[0]
        warnings.warn(
            f"register_sections moved {int(large.sum())} of {len(table)} sections by more than a residual "
            f"misalignment ({RESIDUAL_ROTATION_DEG:g} degrees or {RESIDUAL_SHIFT_SPACINGS:g} cell spacings), e.g. "
            f"{worst['section']} by {worst['rotation_deg']:.1f} degrees and {worst['shift']:.1f} spacings. Poses this "
            "large usually mean the field moved sections to explain how they differ (on HER2ST this lowered the "
            "held-out accuracy). Align the sections first (ntf.pp.align_sections) and check the poses "
            "(ntf.pl.section_poses), or fit with register_sections=False.",
            UserWarning, stacklevel=3)


def _free_sections(z: np.ndarray, stage: np.ndarray) -> np.ndarray:
    """``(n,)`` float32: 0 for the reference of each stage (its middle section by z), 1 elsewhere."""
    free = np.ones(len(z), dtype=np.float32)
    for value in np.unique(stage):
        members = np.flatnonzero(stage == value)
        free[members[np.argsort(z[members], kind="stable")[(len(members) - 1) // 2]]] = 0.0
    return free


def level_weights(progress: float, n_levels: int, fraction: float) -> torch.Tensor:
    """``(n_levels,)`` weights of the hash-grid levels ``progress`` (0..1) into a run.

    The coarsest level is always on; level ``k`` fades in (a half cosine) as ``1 + (L - 1) p /
    fraction`` passes ``k``, so every level is fully on from ``progress >= fraction`` (BARF's schedule).
    """
    if fraction <= 0 or progress >= fraction:
        return torch.ones(n_levels)
    alpha = 1.0 + (n_levels - 1) * progress / fraction
    ramp = np.clip(alpha - np.arange(n_levels), 0.0, 1.0)
    return torch.from_numpy((1.0 - np.cos(math.pi * ramp)) / 2.0).float()


def apply_poses(adata, poses: pd.DataFrame, *, spatial_key: str = Key.obsm.spatial_3d, copy: bool = True):
    """Move each section's coordinates by its learned pose (``NTFField.section_poses()``).

    Parameters
    ----------
    adata
        Cells with coordinates in ``obsm[spatial_key]`` and ``obs["section"]``.
    poses
        The pose table: columns ``section``, ``rotation_deg``, ``shift_x``, ``shift_y``,
        ``centre_x``, ``centre_y``. Cells of sections not in it are not moved.
    spatial_key
        The coordinates to move (x and y; z and any further column are kept).
    copy
        ``True`` (default): return a registered copy; ``False``: move the coordinates in place and
        return None (scanpy's convention).

    Returns
    -------
    The registered AnnData when ``copy=True``, else None.
    """
    coords = read_coords(adata, spatial_key, n_cols=(2, 3, 4)).copy()
    labels = read_sections(adata, Key.obs.section)
    if labels is None:
        raise KeyError(f"obs[{Key.obs.section!r}] not found: the poses are per section, so every cell needs its "
                       "section label (ntf.pp.stack_sections writes it)")
    missing = [c for c in TABLE_COLUMNS[:-1] if c not in poses]
    if missing:
        raise ValueError(f"poses lacks the columns {missing}; pass field.section_poses()")
    for row in poses.itertuples(index=False):
        rows = labels == str(row.section)
        theta = math.radians(row.rotation_deg)
        rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        centre = np.array([row.centre_x, row.centre_y])
        coords[rows, :2] = (coords[rows, :2] - centre) @ rotation.T + centre + np.array([row.shift_x, row.shift_y])
    target = adata.copy() if copy else adata
    target.obsm[spatial_key] = coords
    return target if copy else None
