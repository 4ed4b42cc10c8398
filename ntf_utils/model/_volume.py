"""A dense voxel volume rendered from a field, with its coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._constants import Key

__all__ = ["Volume"]


@dataclass
class Volume:
    """Gene expression sampled on a regular 3D grid.

    Attributes
    ----------
    values
        ``(nx, ny, nz, n_genes)`` float32 array of predicted expression.
    axes
        Three 1D arrays with the voxel-centre coordinates along x, y and z in original units.
    genes
        Gene names, one per last axis of ``values``.
    mask
        ``(nx, ny, nz)`` boolean array, True where the voxel lies inside the sampled tissue.
    units
        Units of the coordinates (e.g. ``"µm"``), or None when unknown. :meth:`NTFField.render` copies
        them from ``field.info["units"]`` (the fitted AnnData's ``uns["ntf"]["units"]``); the plots label
        their axes with them.
    """

    values: np.ndarray
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    genes: list[str]
    mask: np.ndarray
    units: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape ``(nx, ny, nz)``."""
        return tuple(self.values.shape[:3])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along x, y, z in original units (0 for an axis with one voxel)."""
        return np.array([a[1] - a[0] if len(a) > 1 else 0.0 for a in self.axes])

    def coords(self) -> np.ndarray:
        """All voxel centres as an ``(nx * ny * nz, 3)`` array in C order (x slowest)."""
        grid = np.meshgrid(*self.axes, indexing="ij")
        return np.stack([g.ravel() for g in grid], axis=1)

    def gene(self, name: str) -> np.ndarray:
        """The ``(nx, ny, nz)`` volume of one gene, NaN outside the tissue mask."""
        if name not in self.genes:
            raise KeyError(f"gene {name!r} is not in this volume; rendered genes: {self.genes[:10]}...")
        out = self.values[..., self.genes.index(name)].astype(np.float32, copy=True)
        out[~self.mask] = np.nan
        return out

    def to_anndata(self, inside_only: bool = True):
        """One observation per voxel, ``obsm['spatial_3d']`` holding its centre (``uns['ntf']['units']`` its units).

        Parameters
        ----------
        inside_only
            Keep only voxels inside the tissue mask.
        """
        import anndata as ad

        coords = self.coords()
        values = self.values.reshape(-1, len(self.genes))
        keep = self.mask.ravel() if inside_only else np.ones(len(coords), dtype=bool)
        adata = ad.AnnData(
            X=values[keep],
            obs=pd.DataFrame(index=[f"voxel_{i}" for i in np.flatnonzero(keep)]),
            var=pd.DataFrame(index=list(self.genes)),
        )
        adata.obsm[Key.obsm.spatial_3d] = coords[keep]
        adata.obs[Key.obs.z] = coords[keep, 2]
        if self.units is not None:
            adata.uns[Key.uns.ntf] = {Key.uns.units: str(self.units)}
        return adata
