"""The field's configuration: a JSON-serialisable dataclass, with defaults taken from the data.

Why data-driven defaults: a hash grid with instant-ngp's NeRF defaults (16 levels from resolution
16 up) memorises count noise with its fine levels and leaves the gaps between sections untrained
(held-out Pearson 0.26-0.58 on a synthetic embryo where linear interpolation reaches 0.85). Matching
the finest resolution to the sampling density fixes that (see ``docs/model.md``):

* along z, the finest grid cell spans one gap between training sections, so every grid vertex
  between two sections is trained and the field interpolates instead of inventing;
* in-plane, the finest cell spans ``xy_cells_per_voxel`` cells, so the grid averages neighbouring
  cells (denoising) instead of fitting each one;
* the two differ, so the unit cube is filled anisotropically (:class:`CoordinateTransform`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

LOSSES = ("mse", "poisson", "nb")


@dataclass
class NTFConfig:
    """Everything that defines a field and its training, serialisable to JSON.

    ``None`` means "choose from the data" (:func:`resolve_config`); a resolved config has no ``None``
    in the encoding fields and is saved next to the weights.

    Parameters
    ----------
    n_levels
        Hash-grid levels ``L``.
    n_features_per_level
        Features per level ``F``.
    log2_hashmap_size
        ``T``: at most ``2**T`` table entries per level (``None``: the smallest power of two that
        holds the finest level densely, between 2**12 and 2**19).
    base_resolution, finest_resolution
        Resolution (vertices per unit-cube axis) of the coarsest and finest level; the per-level
        scale follows. ``None``: from the sampling density.
    xy_cells_per_voxel
        In-plane smoothing of the data-matched default: cells per finest grid cell along x and y.
    z_voxels_per_gap
        Finest grid cells per gap between training sections along z (1 = one cell per gap).
    resolution_scale
        Size of a finest grid cell along x, y and z relative to the rule above (4 = four times
        coarser on every spatial axis). Chosen per dataset when ``select_resolution`` is on; no
        effect when ``finest_resolution`` is fixed.
    select_resolution
        Choose ``resolution_scale`` and ``psf_sigma`` among ``resolution_candidates`` by the loss on
        held-out training sections (:func:`ntf_utils.tl.fit` documents when this applies).
    resolution_candidates
        ``[resolution_scale, psf_sigma]`` pairs that ``select_resolution`` compares.
    hidden_width, hidden_layers
        The MLP between encoding and latent.
    latent_dim
        Rank ``r`` of the latent; genes are a linear function of it.
    loss
        ``"mse"`` on the given (log-normalised) values, ``"poisson"`` or ``"nb"`` on raw counts.
    steps, batch_size, lr
        Training length, minibatch size (cells), Adam learning rate.
    grid_weight_decay, mlp_weight_decay
        L2 penalty on the table (keeps unvisited entries near zero) and on the MLP.
    psf_sigma
        Gaussian jitter of training coordinates, in units of the finest cell along each axis: the
        point-spread function of a measurement. It trains the grid between sections.
    smoothness
        Weight of a penalty on the latent difference between a point and a random neighbour.
    validation_fraction
        Cells held out for early stopping when no validation data is given (0 disables).
    eval_every, patience
        Steps between validation checks; checks without improvement before stopping early.
    checkpoint_every
        Steps between checkpoints when a checkpoint directory is given.
    time_scale
        With a time input: the finest grid resolution along time (``None``: one cell per stage gap).
    implementation
        Hash-grid backend: ``"auto"``, ``"torch"`` or ``"tcnn"``.
    """

    n_levels: int = 8
    n_features_per_level: int = 2
    log2_hashmap_size: int | None = None
    base_resolution: float | None = None
    finest_resolution: float | None = None
    xy_cells_per_voxel: float = 2.0
    z_voxels_per_gap: float = 1.0
    resolution_scale: float = 1.0
    select_resolution: bool = True
    resolution_candidates: list = field(default_factory=lambda: [[1.0, 0.5], [4.0, 0.0]])
    hidden_width: int = 128
    hidden_layers: int = 2
    latent_dim: int = 64
    loss: str = "mse"
    steps: int | None = None
    batch_size: int = 4096
    lr: float = 1e-2
    grid_weight_decay: float = 1e-6
    mlp_weight_decay: float = 1e-6
    psf_sigma: float = 0.5
    smoothness: float = 0.0
    validation_fraction: float = 0.05
    eval_every: int = 100
    patience: int = 8
    checkpoint_every: int = 500
    time_scale: float | None = None
    implementation: str = "auto"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        for name in ("n_levels", "n_features_per_level", "hidden_width", "latent_dim", "batch_size", "eval_every",
                     "checkpoint_every", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"config.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.steps is not None and int(self.steps) < 1:
            raise ValueError(f"config.steps must be a positive integer (or None to choose it from the data), got {self.steps!r}")
        if self.hidden_layers < 0:
            raise ValueError(f"config.hidden_layers must be >= 0, got {self.hidden_layers}")
        if self.lr <= 0:
            raise ValueError(f"config.lr must be > 0, got {self.lr}")
        if not self.resolution_scale > 0:
            raise ValueError(f"config.resolution_scale must be > 0, got {self.resolution_scale!r}")
        candidates = self.resolution_candidates
        if not candidates or any(len(c) != 2 or not c[0] > 0 or not c[1] >= 0 for c in candidates):
            raise ValueError(
                "config.resolution_candidates must be a non-empty list of [resolution_scale > 0, psf_sigma >= 0] "
                f"pairs, got {candidates!r}"
            )
        self.resolution_candidates = [[float(scale), float(psf)] for scale, psf in candidates]  # JSON round trip

    @property
    def per_level_scale(self) -> float:
        """Growth of the resolution between levels, from base to finest."""
        if self.base_resolution is None or self.finest_resolution is None:
            raise ValueError("config is not resolved yet: call resolve_config(config, ...) first")
        if self.n_levels == 1:
            return 1.0
        return math.exp(math.log(self.finest_resolution / self.base_resolution) / (self.n_levels - 1))

    @property
    def support_resolution(self) -> float:
        """Finest resolution of the sampling rule itself (before ``resolution_scale``).

        The tissue support (:meth:`NTFField.inside`) is measured in its cells, so what counts as
        inside depends on how densely the tissue was sampled, not on how coarse the grid is.
        """
        if self.finest_resolution is None:
            raise ValueError("config is not resolved yet: call resolve_config(config, ...) first")
        return self.finest_resolution * self.resolution_scale

    def to_dict(self) -> dict:
        """Plain-JSON dictionary of every field."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> NTFConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown NTFConfig fields {sorted(unknown)}; known fields: {sorted(names)}")
        return cls(**data)

    def replace(self, **changes) -> NTFConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def resolve_config(config: NTFConfig, sampling, has_sections: bool, n_genes: int, n_cells: int):
    """Fill every data-driven (``None``) field of ``config`` and build the coordinate transform.

    Parameters
    ----------
    config
        The user's config (not modified).
    sampling
        :class:`~ntf_utils.model.coords.Sampling` of the training coordinates.
    has_sections
        Whether z comes in discrete sections (then the finest z cell spans one section gap).
    n_genes, n_cells
        Size of the training data (caps the latent rank, sets the default number of steps).

    Returns
    -------
    (resolved config, :class:`~ntf_utils.model.coords.CoordinateTransform`)
    """
    import numpy as np

    from .coords import CUBE_FILL, matched_transform

    dims = len(sampling.spacing)
    cells = sampling.extent / sampling.spacing
    cells[:2] /= config.xy_cells_per_voxel
    if has_sections:
        cells[2] *= config.z_voxels_per_gap
    else:
        cells[2] /= config.xy_cells_per_voxel
    if dims == 4 and config.time_scale is not None:
        cells[3] = config.time_scale
    # a fixed finest resolution sets the overall scale itself; the data keeps deciding the anisotropy
    scale = config.resolution_scale if config.finest_resolution is None else 1.0
    cells[:3] /= scale
    cells = np.maximum(cells, 1.0)
    finest = float(cells.max() / CUBE_FILL)
    if config.finest_resolution is not None:
        cells = cells * (float(config.finest_resolution) * CUBE_FILL / cells.max())
        finest = float(config.finest_resolution)
    base = config.base_resolution
    if base is None:
        base = max(2.0, finest / 16.0) if config.n_levels > 1 else finest
    base = min(float(base), finest)
    log2_size = config.log2_hashmap_size
    if log2_size is None:
        finest_vertices = (math.ceil(finest) + 1) ** dims
        log2_size = int(min(19, max(12, math.ceil(math.log2(finest_vertices)))))
    steps = config.steps
    if steps is None:
        # ~40 passes over the data, at least 1000 and at most 4000 steps (early stopping ends sooner)
        steps = int(min(4000, max(1000, 40 * n_cells / config.batch_size)))
    resolved = config.replace(
        base_resolution=float(base),
        finest_resolution=finest,
        resolution_scale=float(scale),
        log2_hashmap_size=int(log2_size),
        latent_dim=int(min(config.latent_dim, max(1, n_genes))),
        steps=int(steps),
    )
    return resolved, matched_transform(sampling, cells, finest)
