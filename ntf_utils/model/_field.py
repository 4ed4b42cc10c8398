"""`NTFField`: a trained field, queried anywhere in original units."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.autograd.forward_ad as fwAD
from scipy.spatial import cKDTree

from .._anndata import coords_with_time, gene_positions, read_coords, read_sections
from .._constants import Key
from .._validate import check_box, check_coords, check_number, check_positive_int
from . import _checkpoint as ckpt
from ._config import NTFConfig
from ._coords import CoordinateTransform
from ._network import FieldNetwork
from ._poses import TABLE_COLUMNS as _POSE_COLUMNS
from ._poses import apply_poses
from ._section_effects import section_codes
from ._volume import Volume

__all__ = ["NTFField"]

# A point is "inside the tissue" within this many finest grid cells of a training cell.
SUPPORT_RADIUS = 1.5
# With more distinct training times than this, inside() uses the tissue of all times together.
MAX_SUPPORT_STAGES = 64
# gradient() takes derivatives in forward mode (one pass per axis) above this many genes per axis, in
# reverse mode (one pass per gene) below: a forward pass along one axis costs about as much as three
# backward passes (3,000 points, 1 thread: 0.05 s per axis, 0.018 s per gene; 12 genes 1.4x, 40 genes 4.1x faster).
FORWARD_MODE_GENES_PER_AXIS = 3


class NTFField:
    """A continuous expression field learned from serial sections.

    Build one with :func:`ntf_utils.tl.fit`; restore one with :meth:`load`. Every method takes and
    returns coordinates in the original units of the training data.

    Attributes
    ----------
    config
        The resolved :class:`NTFConfig`.
    genes
        Gene names, in output order.
    history
        Training curve: a DataFrame with ``step``, ``loss`` and (when validated) ``val_loss``.
    info
        Plain-JSON facts about the fit (cells, seconds, device, backend, section z, ...).
    """

    def __init__(
        self,
        network: FieldNetwork,
        config: NTFConfig,
        transform: CoordinateTransform,
        genes: list[str],
        gene_mean: np.ndarray,
        gene_std: np.ndarray,
        support: np.ndarray,
        history: list[dict] | None = None,
        info: dict | None = None,
    ) -> None:
        self.network = network.eval()
        self.config = config
        self.transform = transform
        self.genes = list(genes)
        self.gene_mean = np.asarray(gene_mean, dtype=np.float32)
        self.gene_std = np.asarray(gene_std, dtype=np.float32)
        self.support = np.asarray(support, dtype=np.float32)
        # distinct training times of the support (its 4th column, when the field has a time axis)
        self._support_stages = np.unique(self.support[:, 3]) if self.support.shape[1] == 4 else np.zeros(0)
        self._support_trees: dict = {}
        self.history = pd.DataFrame(history or [])
        self.info = dict(info or {})

    # -- basic facts --------------------------------------------------------------------------
    @property
    def n_genes(self) -> int:
        return len(self.genes)

    @property
    def n_input_dims(self) -> int:
        """3 for (x, y, z), 4 when the field has a time axis."""
        return self.network.encoding.n_input_dims

    @property
    def device(self) -> torch.device:
        return self.network.encoding.params.device

    @property
    def sections(self) -> list[str]:
        """Training sections with their own technical effects and/or learned pose (empty when none)."""
        return list(self.info.get("sections", []))

    @property
    def bounds(self) -> np.ndarray:
        """``(D, 2)`` min/max of the training coordinates, original units."""
        return np.asarray(self.info["bounds"], dtype=np.float64)

    def __repr__(self) -> str:
        c = self.config.encoding
        return (
            f"NTFField({self.n_genes} genes, {self.n_input_dims}D input, hash grid {c.n_levels} levels x "
            f"{c.n_features_per_level} features, 2^{c.log2_hashmap_size} table, resolution "
            f"{c.base_resolution:.3g}..{c.finest_resolution:.3g}, latent {self.config.network.latent_dim}, "
            f"loss {self.config.training.loss!r})"
        )

    def to(self, device) -> NTFField:
        """Move the network to ``device`` (e.g. ``"cuda"``); returns self."""
        self.network.to(device)
        return self

    # -- queries ------------------------------------------------------------------------------
    def gene_index(self, genes) -> np.ndarray:
        """Output columns of ``genes`` (None: all); unknown genes raise ``KeyError``."""
        if genes is None:
            return np.arange(self.n_genes)
        return gene_positions(self.genes, genes, "this field (not in this field's genes, field.genes)")

    def _prepare_coords(self, coords, time) -> np.ndarray:
        coords = check_coords(coords, "coords", n_cols=(3, 4))
        if self.n_input_dims == 4 and coords.shape[1] == 3:
            if time is None:
                raise ValueError("this field has a time axis: pass (n, 4) coordinates or time=<stage>")
            coords = np.column_stack([coords, np.full(len(coords), float(time))])
        elif self.n_input_dims == 3 and coords.shape[1] == 4:
            raise ValueError("this field has no time axis: pass (n, 3) coordinates (x, y, z)")
        return coords

    def _output_to_values(self, out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.config.training.loss == "mse":
            std = torch.as_tensor(self.gene_std, device=out.device)[index]
            mean = torch.as_tensor(self.gene_mean, device=out.device)[index]
            return out * std + mean
        return torch.exp(out.clamp(max=30.0))  # expected counts at the median library size

    def _section_codes(self, section, n: int) -> torch.Tensor | None:
        """Codes of one section name (or one per point) for :meth:`predict`; None for the effect-free field."""
        if section is None:
            return None
        labels = np.asarray([section] * n if np.ndim(section) == 0 else section).astype(str)
        if len(labels) != n:
            raise ValueError(f"section has {len(labels)} labels for {n} points; pass one name or one per point")
        unknown = sorted(set(labels) - set(self.sections))
        if unknown:
            raise KeyError(f"section(s) {unknown[:5]} have no learned effect; this field's sections are "
                           f"{self.sections[:10]} (field.sections). Pass section=None for the effect-free field")
        return torch.from_numpy(section_codes(labels, self.sections))

    def predict(self, coords, genes=None, *, time=None, section=None, batch_size: int = 65536) -> np.ndarray:
        """Expression at arbitrary coordinates.

        Parameters
        ----------
        coords
            ``(n, 3)`` (x, y, z) or ``(n, 4)`` (x, y, z, time) in original units.
        genes
            Gene names to predict (default all). Fewer genes cost proportionally less: the decoder
            is linear in the latent.
        time
            Time for a field with a time axis when ``coords`` has 3 columns.
        section
            ``None`` (default): the effect-free field, the level at which a new section is predicted.
            A training section's name (or one name per point, see :attr:`sections`): add that
            section's learned technical effect, i.e. predict what that section measured (with
            registration, ``coords`` are then taken as measured in that section and moved by its pose).
        batch_size
            Points per chunk; memory stays bounded by it whatever ``n`` is.

        Returns
        -------
        ``(n, len(genes))`` float32 array in the space of the training target (log-normalised values
        for the MSE loss; expected counts at the median library size for count losses).
        """
        coords = self._prepare_coords(coords, time)
        batch_size = check_positive_int(batch_size, "batch_size")
        index = torch.as_tensor(self.gene_index(genes), device=self.device)
        codes = self._section_codes(section, len(coords))
        out = np.empty((len(coords), len(index)), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(coords), batch_size):
                u = torch.from_numpy(self.transform.to_unit(coords[start : start + batch_size])).to(self.device)
                rows = None if codes is None else codes[start : start + len(u)].to(self.device)
                raw = self.network(u, index, section=rows)
                out[start : start + len(u)] = self._output_to_values(raw, index).cpu().numpy()
        return out

    def latent(self, coords, *, time=None, batch_size: int = 65536) -> np.ndarray:
        """The ``(n, latent_width)`` latent: a compact description of the expression state at each point.

        ``latent_dim`` columns, plus the weighted principal scores of the closed-form smoother when the
        field blends one in (``config.network.smooth_blend``), so that the gene decoder of the latent is
        the field's prediction.
        """
        coords = self._prepare_coords(coords, time)
        batch_size = check_positive_int(batch_size, "batch_size")
        out = np.empty((len(coords), self.network.latent_width), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(coords), batch_size):
                u = torch.from_numpy(self.transform.to_unit(coords[start : start + batch_size])).to(self.device)
                out[start : start + len(u)] = self.network.latent(u).cpu().numpy()
        return out

    def gradient(self, coords, genes=None, *, time=None, batch_size: int = 16384) -> np.ndarray:
        """Spatial gradient of expression by automatic differentiation, in value units per original
        coordinate unit.

        Exact derivatives of the field (not finite differences). For many genes they are taken in
        forward mode, one pass per axis for every gene at once; for a few genes in reverse mode, one
        pass per gene. Both give the same numbers (to float32 rounding).

        Returns
        -------
        ``(n, len(genes), D)`` float32 array: d value / d (x, y, z[, time]).
        """
        coords = self._prepare_coords(coords, time)
        batch_size = check_positive_int(batch_size, "batch_size")
        index = torch.as_tensor(self.gene_index(genes), device=self.device)
        scale = torch.as_tensor(self.transform.scale, dtype=torch.float32, device=self.device)
        many_genes = len(index) > FORWARD_MODE_GENES_PER_AXIS * coords.shape[1]
        forward_mode = many_genes and self.network.encoding.backend(self.device) != "tcnn"  # tcnn has no jvp
        derivative = self._gradient_forward if forward_mode else self._gradient_reverse
        out = np.empty((len(coords), len(index), coords.shape[1]), dtype=np.float32)
        for start in range(0, len(coords), batch_size):
            u = torch.from_numpy(self.transform.to_unit(coords[start : start + batch_size])).to(self.device)
            out[start : start + len(u)] = (derivative(u, index) * scale).cpu().numpy()  # chain rule du/dx
        return out

    def _gradient_reverse(self, u: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``(n, genes, D)`` d value / du: one backward pass per gene."""
        u = u.detach().requires_grad_(True)
        values = self._output_to_values(self.network(u, index), index)
        grads = [torch.autograd.grad(values[:, j].sum(), u, retain_graph=j < len(index) - 1)[0]
                 for j in range(len(index))]
        return torch.stack(grads, dim=1).detach()

    def _gradient_forward(self, u: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``(n, genes, D)`` d value / du: one forward-mode pass per axis, every gene at once."""
        grads = []
        with torch.no_grad(), fwAD.dual_level():
            for axis in range(u.shape[1]):
                direction = torch.zeros_like(u)
                direction[:, axis] = 1.0
                values = self._output_to_values(self.network(fwAD.make_dual(u, direction), index), index)
                grads.append(fwAD.unpack_dual(values).tangent)
        return torch.stack(grads, dim=2)

    # -- tissue support -----------------------------------------------------------------------
    def inside(self, coords, *, time=None) -> np.ndarray:
        """True where a point lies within the sampled tissue (near a training cell, in cells of the sampling rule).

        Parameters
        ----------
        coords
            ``(n, 3)`` (x, y, z) or ``(n, 4)`` (x, y, z, time), original units.
        time
            For a field with a time axis and 3-column ``coords``: the time to ask at.

        Notes
        -----
        With a time axis and a time, the tissue is that of the measured stages around it: the
        stage itself, or the two stages a time between stages lies between (times outside the
        measured range use the nearest stage). Without a time, or for fields saved before the
        support recorded time, or with more than :data:`MAX_SUPPORT_STAGES` distinct times, it is
        the tissue of all stages together.
        """
        coords = check_coords(coords, "coords", n_cols=(3, 4))
        u = self.transform.to_grid_xyz(coords, self.config.encoding.support_resolution)
        if coords.shape[1] == 4:
            time = coords[:, 3]
        elif time is not None:
            time = np.full(len(coords), check_number(time, "time"))
        stages = self._support_stages
        if time is None or not 1 <= len(stages) <= MAX_SUPPORT_STAGES:
            return self._near_support(u, None)
        out = np.zeros(len(coords), dtype=bool)
        for t in np.unique(time):
            rows = time == t
            # the stages around t: itself, its two neighbours, or the nearest end
            below, above = stages[stages <= t], stages[stages >= t]
            around = tuple(sorted({(below[-1] if len(below) else above[0]), (above[0] if len(above) else below[-1])}))
            out[rows] = self._near_support(u[rows], around)
        return out

    def _near_support(self, u: np.ndarray, stages: tuple | None) -> np.ndarray:
        """Within SUPPORT_RADIUS of a support point (of ``stages`` only, when given)."""
        tree = self._support_trees.get(stages)
        if tree is None:
            points = self.support[:, :3]
            if stages is not None:
                points = points[np.isin(self.support[:, 3], stages)]
            tree = self._support_trees[stages] = cKDTree(points)
        dist, _ = tree.query(u, k=1, distance_upper_bound=SUPPORT_RADIUS + 1e-9)
        return np.isfinite(dist)

    # -- AnnData-level tools ------------------------------------------------------------------
    def denoise(self, adata, key_added: str = Key.layers.denoised, *, spatial_key: str | None = None,
                time_key: str | None = None, section_effects: bool = False, copy: bool = False,
                layer_added: str | None = None):
        """Write the field's prediction at every measured cell into ``adata.layers[key_added]``.

        Parameters
        ----------
        adata
            Cells with coordinates in ``obsm[spatial_key]``; its genes must be in the field.
        key_added
            Layer to write.
        spatial_key, time_key
            Coordinates key in ``obsm`` and the ``obs`` time column (for a field with a time axis);
            default: the keys the field was fitted with (``field.info``).
        section_effects
            ``False`` (default): the effect-free field, comparable across sections. ``True``: add each
            cell's section effect (by ``obs["section"]``; every section must be one of :attr:`sections`).
        copy
            Return a denoised copy instead of writing into ``adata``.
        layer_added
            Former name of ``key_added`` (deprecated).

        Returns
        -------
        None, or the new AnnData when ``copy=True``.
        """
        if layer_added is not None:
            warnings.warn("denoise(layer_added=...) is now key_added=... (as in scanpy); layer_added will be "
                          "removed", FutureWarning, stacklevel=2)
            key_added = layer_added
        spatial_key = self.info.get("spatial_key") or Key.obsm.spatial_3d if spatial_key is None else spatial_key
        if time_key is None and self.n_input_dims == 4:
            time_key = self.info.get("time_key")
        if time_key is not None:
            coords = coords_with_time(adata, spatial_key, time_key)
        else:
            coords = read_coords(adata, spatial_key, n_cols=(3, 4))
        section = None
        if section_effects:
            section = read_sections(adata, Key.obs.section)
            if section is None:
                raise ValueError(f"section_effects=True needs obs[{Key.obs.section!r}] to know each cell's section")
        values = self.predict(coords, genes=list(adata.var_names), section=section)
        target = adata.copy() if copy else adata
        target.layers[key_added] = values
        return target if copy else None

    def slice(self, z: float, resolution: float | None = None, *, genes=None, bounds=None, time=None,
              inside_only: bool = True, max_bytes: float = 4e9):
        """A virtual section at height ``z``: a regular in-plane grid of predicted spots.

        Parameters
        ----------
        z
            Height of the section, original units (any value, not only measured ones).
        resolution
            Spot spacing in-plane (default: the training data's median in-plane cell spacing).
        genes
            Genes to predict (default all).
        bounds
            ``((xmin, xmax), (ymin, ymax))``; default the training bounds.
        time
            Time, for a field with a time axis.
        inside_only
            Keep only spots within the sampled tissue (see :meth:`inside`).
        max_bytes
            Refuse (with the size needed) grids whose coordinates and values would exceed this;
            pass a coarser ``resolution``, smaller ``bounds`` or fewer genes instead.

        Returns
        -------
        AnnData with ``obsm['spatial']`` (x, y), ``obsm['spatial_3d']``, ``obs['z']`` (and
        ``uns['ntf']['units']`` when the field knows its units, ``info["units"]``).
        """
        import anndata as ad

        z = check_number(z, "z")
        resolution = check_number(self.info["xy_spacing"] if resolution is None else resolution, "resolution")
        if resolution <= 0:
            raise ValueError(f"resolution must be > 0, got {resolution}")
        (x0, x1), (y0, y1) = check_box(self.bounds[:2] if bounds is None else bounds, "bounds", 2)
        nx, ny = int(np.floor((x1 - x0) / resolution)) + 1, int(np.floor((y1 - y0) / resolution)) + 1
        gene_list = [self.genes[i] for i in self.gene_index(genes)]
        # per spot of the returned AnnData: spatial_3d + spatial (40 B), values, obs name and index (~100 B)
        needed = float(nx) * float(ny) * (140 + 4 * len(gene_list))
        if needed > max_bytes:
            raise MemoryError(
                f"a {nx} x {ny} slice with {len(gene_list)} genes needs {needed / 1e9:.1f} GB (max_bytes="
                f"{max_bytes / 1e9:.1f} GB); pass a coarser resolution, smaller bounds or fewer genes"
            )
        parts = []
        for start in range(0, nx * ny, 1_000_000):  # spots in chunks: the inside test runs on bounded memory
            ix, iy = np.divmod(np.arange(start, min(start + 1_000_000, nx * ny)), ny)
            part = np.column_stack([x0 + resolution * ix, y0 + resolution * iy, np.full(len(ix), z)])
            parts.append(part[self.inside(part, time=time)] if inside_only else part)
        coords = np.concatenate(parts)
        values = self.predict(coords, gene_list, time=time)
        out = ad.AnnData(X=values, var=pd.DataFrame(index=gene_list))
        out.obs_names = [f"virtual_{i}" for i in range(out.n_obs)]
        out.obsm[Key.obsm.spatial] = coords[:, :2].copy()
        out.obsm[Key.obsm.spatial_3d] = coords
        out.obs[Key.obs.z] = z
        out.obs[Key.obs.section] = pd.Categorical([f"virtual z={z:g}"] * out.n_obs)
        if self.info.get(Key.uns.units) is not None:
            out.uns[Key.uns.ntf] = {Key.uns.units: str(self.info[Key.uns.units])}
        return out

    def render(self, shape=64, genes=None, *, bounds=None, time=None, batch_size: int = 65536,
               max_bytes: float = 4e9) -> Volume:
        """Predict a dense voxel volume.

        Parameters
        ----------
        shape
            Voxels per axis: an int (longest axis; the others keep the data's aspect ratio) or
            ``(nx, ny, nz)``.
        genes
            Genes to render (default all).
        bounds
            ``(3, 2)`` box in original units (default the training bounds).
        time
            Time, for a field with a time axis.
        batch_size
            Voxels per chunk: beyond the returned volume, memory stays bounded by it.
        max_bytes
            Refuse (with the size needed) volumes larger than this; render a few genes, a smaller
            shape, or stream to disk with :func:`ntf_utils.tl.render_to_zarr` instead.

        Returns
        -------
        :class:`~ntf_utils.model._volume.Volume`, with ``units`` from ``info["units"]`` (None when unknown).
        """
        box = check_box(self.bounds[:3] if bounds is None else bounds, "bounds", 3)
        shape = self.grid_shape(shape, box)
        batch_size = check_positive_int(batch_size, "batch_size")
        gene_list = [self.genes[i] for i in self.gene_index(genes)]
        n_voxels = float(np.prod(np.asarray(shape, dtype=np.float64)))
        needed = n_voxels * (len(gene_list) * 4 + 1)  # float32 values + the boolean mask
        if needed > max_bytes:
            raise MemoryError(
                f"rendering {shape} voxels x {len(gene_list)} genes needs {needed / 1e9:.1f} GB (max_bytes="
                f"{max_bytes / 1e9:.1f} GB); render fewer genes or a smaller shape, or write to disk in chunks"
            )
        axes = tuple(np.linspace(lo, hi, n) for (lo, hi), n in zip(box, shape))
        volume = Volume(np.empty((*shape, len(gene_list)), np.float32), axes, gene_list, np.zeros(shape, bool),
                        units=self.info.get(Key.uns.units))
        n_voxels = int(n_voxels)
        values = volume.values.reshape(n_voxels, len(gene_list))
        mask = volume.mask.reshape(n_voxels)
        for start in range(0, n_voxels, batch_size):  # voxel coordinates chunk by chunk: bounded extra memory
            stop = min(start + batch_size, n_voxels)
            ijk = np.unravel_index(np.arange(start, stop), shape)
            coords = np.column_stack([axis[i] for axis, i in zip(axes, ijk)])
            values[start:stop] = self.predict(coords, gene_list, time=time, batch_size=batch_size)
            mask[start:stop] = self.inside(coords, time=time)
        return volume

    def grid_shape(self, shape, box: np.ndarray) -> tuple[int, int, int]:
        """Voxel counts for ``shape`` (int = voxels along the longest axis of ``box``)."""
        if np.isscalar(shape):
            shape = check_positive_int(shape, "shape (voxels along the longest axis; or three ints)")
            extent = np.maximum(box[:, 1] - box[:, 0], 1e-12)
            out = np.maximum(1, np.round(extent / extent.max() * int(shape))).astype(int)
            # keep at least one voxel per section along a thin z
            out[2] = max(out[2], min(int(shape), len(self.info.get("section_z", [])) or 1))
            return tuple(int(v) for v in out)
        try:
            shape = tuple(shape)
        except TypeError as err:
            raise ValueError(f"shape must be an int or three positive ints, got {shape!r}") from err
        if len(shape) != 3:
            raise ValueError(f"shape must be an int or three positive ints, got {shape}")
        return tuple(check_positive_int(v, f"shape[{i}] (voxels along {'xyz'[i]})") for i, v in enumerate(shape))

    # -- section effects ----------------------------------------------------------------------
    def section_effects(self, genes=None) -> pd.DataFrame:
        """The learned per-section technical effects: one row per section and gene.

        Columns ``section``, ``gene``, ``offset`` (added to the output: standardised units for the
        MSE loss, log rate for the count losses, where ``exp(offset)`` is the section's relative
        capture efficiency of the gene) and ``log_scale`` (of the gene's spatial variation), both
        centred over the training sections. Empty when the field has no section effects.
        """
        table = self.network.section_effects.table(self.sections, self.genes)
        if genes is not None:
            keep = [self.genes[i] for i in self.gene_index(genes)]
            table = table[table["gene"].isin(keep)].reset_index(drop=True)
        return table

    def section_poses(self) -> pd.DataFrame:
        """The learned in-plane pose of each training section (``register_sections=True``).

        Columns ``section``, ``rotation_deg``, ``shift_x``, ``shift_y``, ``centre_x``, ``centre_y``
        (original units) and ``reference`` (the fixed section). A measured point ``x`` of a section
        lies at ``R(rotation_deg) (x - centre) + centre + shift`` in the field's frame. Empty when
        the field was fitted without registration.
        """
        if self.network.poses is None:
            return pd.DataFrame({c: [] for c in _POSE_COLUMNS})
        return self.network.poses.table(self.sections)

    def register(self, adata, *, spatial_key: str | None = None, copy: bool = True):
        """Move each section's coordinates into the field's frame by its learned pose.

        The field was fitted in that frame: run this before tools that read the cells' coordinates
        (``denoise``, ``tl.domains`` at the cells, ...) on the training sections of a registered field.

        Parameters
        ----------
        adata
            Cells with coordinates in ``obsm[spatial_key]`` and ``obs["section"]``; cells of sections
            the field has no pose for (held-out, new) are not moved.
        spatial_key
            Default: the key the field was fitted with.
        copy
            ``True`` (default): return a registered copy; ``False``: move the coordinates in place
            and return None.
        """
        if self.network.poses is None:
            raise ValueError("this field has no section poses: it was fitted without registration; fit with "
                             "config=NTFConfig(network={'register_sections': True}) to learn them")
        spatial_key = self.info.get("spatial_key") or Key.obsm.spatial_3d if spatial_key is None else spatial_key
        return apply_poses(adata, self.section_poses(), spatial_key=spatial_key, copy=copy)

    # -- persistence --------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Save to one safetensors file (weights + JSON config), atomically.

        Loading never executes code: the file holds raw arrays and JSON only.
        """
        path = Path(path)
        tensors = {f"network.{k}": v for k, v in self.network.state_dict().items()}
        tensors["gene_mean"] = torch.from_numpy(self.gene_mean)
        tensors["gene_std"] = torch.from_numpy(self.gene_std)
        tensors["support"] = torch.from_numpy(self.support)
        metadata = {
            "config": self.config.to_dict(),
            "transform": self.transform.to_dict(),
            "genes": self.genes,
            "n_input_dims": self.n_input_dims,
            "history": self.history.to_dict(orient="list"),
            "info": self.info,
        }
        ckpt.save_field_file(path, tensors, metadata)
        return path

    @classmethod
    def load(cls, path, device: str | torch.device = "cpu") -> NTFField:
        """Load a field written by :meth:`save` (no code is executed; damaged files raise ``ValueError``)."""
        tensors, meta = ckpt.load_field_file(Path(path))
        try:
            config = NTFConfig.from_dict(meta["config"])
            network = FieldNetwork(config, int(meta["n_input_dims"]), len(meta["genes"]),
                                   meta.get("info", {}).get("sections_z", []))
            state = {k[len("network."):]: v for k, v in tensors.items() if k.startswith("network.")}
            for name, empty in network.section_effects.state_dict(prefix="section_effects.").items():
                state.setdefault(name, empty)  # fields saved before section effects have none
            network.load_state_dict(state)
            history = pd.DataFrame(meta.get("history", {})).to_dict(orient="records")
            field = cls(
                network.to(device), config, CoordinateTransform.from_dict(meta["transform"]), meta["genes"],
                tensors["gene_mean"].numpy(), tensors["gene_std"].numpy(), tensors["support"].numpy(),
                history, meta.get("info", {}),
            )
        except (KeyError, RuntimeError, TypeError) as err:
            raise ValueError(f"{path} does not hold a complete ntf_utils field: {err}") from err
        return field
