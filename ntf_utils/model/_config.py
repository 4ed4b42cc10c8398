"""The field's configuration, in tiny-cuda-nn's parts: encoding, network, training, selection.

Each part is a small dataclass; :class:`NTFConfig` holds one of each and serialises to JSON next to
the weights, so a model is fully described by data. ``None`` in a field means "choose from the data"
(:func:`resolve_config`).

Why data-driven resolutions: a hash grid with instant-ngp's NeRF defaults (16 levels from
resolution 16 up) memorises count noise with its fine levels and leaves the gaps between sections
untrained. Matching the finest resolution to the sampling density fixes that (``docs/model.md``):

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
import numbers
from dataclasses import dataclass, field

__all__ = [
    "LOSSES",
    "EncodingConfig",
    "NetworkConfig",
    "TrainingConfig",
    "SelectionConfig",
    "NTFConfig",
    "resolve_config",
    "default_steps",
]

LOSSES = ("mse", "poisson", "nb")
FORMAT_VERSION = 2  # 1: one flat dict of every field (ntf_utils <= 0.1 files); 2: the four parts


class _Part:
    """Shared behaviour of the config parts: copy with changes, plain-dict round trip."""

    def replace(self, **changes):
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain-JSON dictionary of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """Build the part from :meth:`to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known fields: {sorted(names)}")
        return cls(**data)


def _require_ints(part, names, minimum: int = 1) -> None:
    for name in names:
        value = getattr(part, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise ValueError(f"{type(part).__name__}.{name} must be {what}, got {value!r}")


def _is_weight(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and 0 <= value < 1


def _require_weight(part, name) -> None:
    """``part.name`` must be a weight in [0, 1); stored as a float."""
    value = getattr(part, name)
    if not _is_weight(value):
        raise ValueError(f"{type(part).__name__}.{name} must be a weight in [0, 1), got {value!r}")
    setattr(part, name, float(value))


def _require_weights(part, name) -> None:
    """``part.name`` must be a list of weights in [0, 1); stored as floats."""
    value = getattr(part, name)
    if not isinstance(value, (list, tuple)) or not all(_is_weight(v) for v in value):
        raise ValueError(f"{type(part).__name__}.{name} must be a list of weights in [0, 1), got {value!r}")
    setattr(part, name, [float(v) for v in value])


def _require_bool(part, name) -> None:
    value = getattr(part, name)
    if value not in (True, False):
        raise ValueError(f"{type(part).__name__}.{name} must be True or False, got {value!r}")


def _require_optional_bool(part, name) -> None:
    value = getattr(part, name)
    if value not in (None, True, False):
        raise ValueError(f"{type(part).__name__}.{name} must be None, True or False, got {value!r}")


@dataclass
class EncodingConfig(_Part):
    """The multi-resolution hash grid (tiny-cuda-nn's ``"HashGrid"`` encoding) and its resolution rule.

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
        coarser on every spatial axis); chosen per dataset by the selection. No effect when
        ``finest_resolution`` is fixed.
    time_scale
        With a time input: the finest grid resolution along time (``None``: one cell per stage gap).
    implementation
        Hash-grid backend: ``"auto"``, ``"torch"`` or ``"tcnn"``.
    n_frequencies
        Octaves of a smooth frequency encoding concatenated with the hash grid (tiny-cuda-nn's
        ``"Composite"`` of ``"Frequency"`` and ``"HashGrid"``): ``sin`` and ``cos`` of
        ``2**k * pi * u`` for ``k < n_frequencies`` along each spatial axis. 0: the hash grid alone.
    """

    n_levels: int = 8
    n_features_per_level: int = 2
    log2_hashmap_size: int | None = None
    base_resolution: float | None = None
    finest_resolution: float | None = None
    xy_cells_per_voxel: float = 2.0
    z_voxels_per_gap: float = 1.0
    resolution_scale: float = 1.0
    time_scale: float | None = None
    implementation: str = "auto"
    n_frequencies: int = 0

    def __post_init__(self) -> None:
        _require_ints(self, ("n_levels", "n_features_per_level"))
        _require_ints(self, ("n_frequencies",), minimum=0)
        if not self.resolution_scale > 0:
            raise ValueError(f"EncodingConfig.resolution_scale must be > 0, got {self.resolution_scale!r}")

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


@dataclass
class NetworkConfig(_Part):
    """The MLP after the encoding and the low-rank gene decoder.

    Parameters
    ----------
    hidden_width, hidden_layers
        The MLP between encoding and latent.
    latent_dim
        Rank ``r`` of the latent; genes are a linear function of it (capped at the number of genes).
    section_effects
        A per-section, per-gene offset and scale on the output, learned with the field and kept
        apart from it (:mod:`ntf_utils.model._section_effects`). ``None`` (default): on when the
        cells come in at least two labelled sections (``obs["section"]``) and a prior along z is
        on (``TrainingConfig.section_psf``, which the resolution selection decides per dataset, or
        ``TrainingConfig.section_sparsity``); without one, per-section effects also soak up tissue
        that changes from section to section. ``True``: on whenever there are sections, in every
        selection candidate; ``False``: off.
    section_trend_degree
        Degree of the polynomial trend along z that section effects may not hold: it stays in the
        field (0: effects are only centred over sections).
    register_sections
        Learn an in-plane rotation and translation of every labelled training section with the field,
        the middle section by z fixed as the reference (:mod:`ntf_utils.model._poses`;
        ``field.section_poses()``, ``field.register(adata)``, ``ntf.pl.section_poses``). Off by
        default: after ``ntf.pp.align_sections`` it removes two thirds of the residual misalignment
        of synthetic sections, but lowers the held-out accuracy on real ST sections, whose
        neighbours agree too little (``docs/model.md``; ``benchmarks/registration.py``). Needs at least two labelled sections (with a time axis, one reference per stage);
        works in streamed fits (:func:`ntf_utils.tl.fit_atlas`) as in :func:`ntf_utils.tl.fit`.
    smooth_blend
        Weight ``beta`` of a smoother solved in closed form in the field's prediction,
        ``(1 - beta) * network + beta * smoother`` (:mod:`ntf_utils.model._smooth_base`): multi-level
        grids from the sampling rule's resolution down to one cell across the cube, their values
        the ridge solution for the training targets. The network trains as without it. 0 (default):
        none; :func:`ntf_utils.tl.fit` chooses it on held-out training sections
        (``SelectionConfig.blends``) unless it is set here. MSE loss and in-memory fits on one process
        only. With section effects the smoother is solved after training, on the targets with each
        cell's learned section effect taken out, so it smooths the effect-free tissue.
    kernel_blend
        Weight ``gamma`` of a Gaussian-process smoother (:mod:`ntf_utils.model._kernel_smoother`):
        the prediction becomes ``(1 - gamma) * [the above] + gamma * kernel``. Its anisotropic
        squared-exponential kernel is fitted by the marginal likelihood to the training targets' top
        principal components (on 300 cells; the posterior on up to 2,000). 0 (default): none;
        :func:`ntf_utils.tl.fit` chooses it with ``smooth_blend`` after a race
        (``SelectionConfig.kernel_blends``). Same conditions as ``smooth_blend``.
    smooth_base_penalty, smooth_base_decay
        The smoother's ridge weight on its finest level (in cells' worth of data) and how many
        octaves weaker it gets per coarser level.
    """

    hidden_width: int = 128
    hidden_layers: int = 2
    latent_dim: int = 64
    section_effects: bool | None = None
    section_trend_degree: int = 2
    register_sections: bool = False
    smooth_blend: float = 0.0
    kernel_blend: float = 0.0
    smooth_base_penalty: float = 1.0
    smooth_base_decay: float = 1.0

    def __post_init__(self) -> None:
        _require_ints(self, ("hidden_width", "latent_dim"))
        _require_ints(self, ("hidden_layers", "section_trend_degree"), minimum=0)
        _require_optional_bool(self, "section_effects")
        _require_bool(self, "register_sections")
        for name in ("smooth_blend", "kernel_blend"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"NetworkConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.smooth_base_penalty > 0 or not self.smooth_base_decay >= 0:
            raise ValueError("NetworkConfig.smooth_base_penalty must be > 0 and smooth_base_decay >= 0, got "
                             f"{self.smooth_base_penalty!r} and {self.smooth_base_decay!r}")


@dataclass
class TrainingConfig(_Part):
    """Loss, optimiser, augmentation, early stopping and checkpoints.

    Parameters
    ----------
    loss
        ``"mse"`` on the given (log-normalised) values, ``"poisson"`` or ``"nb"`` on raw counts.
    steps, batch_size, lr
        Training length (``None``: about 40 passes over the cells, 1,000 to 4,000 steps;
        ``docs/model.md``, "How long to train"), minibatch size (cells), Adam learning rate.
    grid_weight_decay, mlp_weight_decay
        L2 penalty on the table (keeps unvisited entries near zero) and on the MLP.
    psf_sigma
        Gaussian jitter of training coordinates, in units of the finest cell along each axis: the
        point-spread function of a measurement. It trains the grid between sections.
    smoothness
        Weight of a penalty on the latent difference between a point and a random neighbour.
    section_penalty
        Weight of the ridge prior on the section effects (mean squared centred offset and log
        scale, added to the per-entry loss).
    section_psf
        With section effects: the PSF jitter along z is at least this many section gaps (Gaussian
        sigma), so the field at each depth is learned from neighbouring sections together and
        section-to-section differences go to the section effects (0: ``psf_sigma`` only).
    section_sparsity
        With section effects: weight of an L1 penalty on the field's change over one section gap
        along z at the minibatch's cells (effect-free output, per gene). Tissue changes between
        neighbouring sections in places (a boundary moves), a technical effect shifts a whole
        section: under an L1 penalty the first is cheap in the field and the second is cheaper as
        the section's effect. 0 (default): off. Turns section effects on when they are left to
        ``None``. Measured (``docs/model.md``, "Two priors on how the tissue may change"): with 0.03 the
        learned offsets of known injected effects correlate >= 0.9 with them on three of three seeds
        (without: one), at 1.3x the fit time, and real ST sections left out one at a time are
        predicted better (HER2ST 0.206 -> 0.218, Ståhl 0.208 -> 0.217, 5 and 3 sections fitted).
        Not a default: on held-out training sections of sparse stacks the field's change between
        sections is mostly tissue, and with two sections it lost. Use it with five or more sections.
    registration_lr
        With ``register_sections``: Adam's step for the section poses, in in-plane cell spacings
        (the rotation as the arc at the section's RMS radius); it follows the cosine schedule of ``lr``.
    registration_prior
        With ``register_sections``: weight of a Gaussian prior that keeps every section near its
        given place (the mean over the moved sections of the squared rotation arc and shift, in cell
        spacings, added to the per-entry loss), so a pose moves only as far as the data insist. 0 (default):
        no prior; 1e-3 stops the poses drifting on real spot sections but gives up half of the
        correction on synthetic ones (``docs/model.md``, "A prior on the poses").
    registration_coarse_to_fine
        With ``register_sections``: the fraction of the steps over which the finer hash-grid levels
        are faded in, coarsest first, so the poses are found before fine levels fit each section
        where it lies (0: all levels from the start).
    validation_fraction
        Cells held out for early stopping when no validation data is given (0 disables); at most
        50,000 (``model._sources.MAX_VALIDATION_CELLS``), the rest train.
    average_from
        Polyak weight averaging (opt-in): from this fraction of the steps on, the weights at every
        validation check enter a running average, and the field keeps the average up to the best
        check instead of that check's weights alone (``None``, the default: no averaging; no effect
        without validation cells). Measured: better held-out sections on sparse stacks, worse
        denoising of the training cells (``docs/model.md``, "Averaged weights").
    eval_every, patience
        Steps between validation checks; checks without improvement before stopping early (4: on
        every benchmark split and held-out training section measured, no later check improved on a
        best one after four worse ones, and fits whose best check comes early stop 400-500 steps
        sooner; ``docs/model.md``, "How long to train").
    checkpoint_every
        Steps between checkpoints when a checkpoint directory is given.
    """

    loss: str = "mse"
    steps: int | None = None
    batch_size: int = 4096
    lr: float = 1e-2
    grid_weight_decay: float = 1e-6
    mlp_weight_decay: float = 1e-6
    psf_sigma: float = 0.5
    smoothness: float = 0.0
    section_penalty: float = 0.1
    section_psf: float = 0.0
    section_sparsity: float = 0.0
    registration_lr: float = 0.05
    registration_prior: float = 0.0
    registration_coarse_to_fine: float = 0.5
    validation_fraction: float = 0.05
    average_from: float | None = None
    eval_every: int = 100
    patience: int = 4
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        _require_ints(self, ("batch_size", "eval_every", "checkpoint_every", "patience"))
        if self.steps is not None:
            if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) or self.steps < 1:
                raise ValueError("TrainingConfig.steps must be a positive integer (or None to choose it from the "
                                 f"data), got {self.steps!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainingConfig.lr must be > 0, got {self.lr}")
        for name in ("section_penalty", "section_psf", "section_sparsity", "registration_prior"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TrainingConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.registration_lr > 0:
            raise ValueError(f"TrainingConfig.registration_lr must be > 0, got {self.registration_lr}")
        if self.average_from is not None and not 0 <= self.average_from <= 1:
            raise ValueError(f"TrainingConfig.average_from must be a fraction of the steps in [0, 1] or None, "
                             f"got {self.average_from!r}")
        if not 0 <= self.registration_coarse_to_fine <= 1:
            raise ValueError("TrainingConfig.registration_coarse_to_fine must be a fraction of the steps in [0, 1], "
                             f"got {self.registration_coarse_to_fine}")


@dataclass
class SelectionConfig(_Part):
    """Choosing the grid resolution per dataset on held-out training sections.

    Parameters
    ----------
    enabled
        ``None`` (default): :func:`ntf_utils.tl.fit` selects when it applies (at least three
        sections, no time axis, no fixed ``finest_resolution``); the streamed fit does not select.
        ``True``: required (the streamed fit refuses it with an error); ``False``: off.
    candidates
        Rows compared: ``[resolution_scale, psf_sigma, section_psf, section_trend_degree,
        n_frequencies, section_sparsity]`` (the last four may be left out: then the config's own). The
        defaults are three hypotheses about the stack: sections that differ by biology along z (no z prior and,
        with ``section_effects=None``, no section effects; at the sampling rule's resolution with
        PSF jitter, and four times coarser without); sections that are technical replicates of a
        slowly changing tissue (a PSF one section gap wide along z, and section effects that may
        drift); and tissue that changes smoothly and globally, where two octaves of a frequency
        encoding next to the grid carry the curvature between sections that the grid can only
        interpolate linearly (``docs/model.md``, "A smooth component").
    rungs
        Successive halving: fractions of the training steps at which the candidates still in the
        race are compared by their best held-out loss so far and the worse half is dropped
        (``[0.125, 0.25]``: four candidates train an eighth of their steps, two go on to a quarter,
        one wins; each rung is rounded up to a validation step, and comes after two validation
        checks at the earliest, each later rung one check later). The winner is then refitted on every
        section, so with a single candidate left no run trains to its end. ``[]`` trains every
        candidate to its end (as before halving, about twice the cost; ``docs/model.md``,
        "Successive halving").
    blends
        Weights ``beta`` of the closed-form smoother (``NetworkConfig.smooth_blend``) tried after the
        race: the winner's held-out loss is computed at each, with a smoother solved on the same
        cells, and the lowest is kept for the refit (a few solves, well under a second on the
        benchmark's data). ``[]`` or ``[0]``: no blend. Not when ``smooth_blend`` is set, with
        ``validation=`` sections (the race's winner is returned as trained), a count loss or more
        than one process.
    blend_without_race
        The smoother's weight where no race can choose one because the stack has only two labelled
        sections (nothing interior to hold out). Chosen on held-out *training* sections: fitted on two
        sections, the middle one of three was predicted better at 0.25 than without the smoother on
        BDTNP and HER2ST and within 0.005 on the synthetic embryo, where larger weights lost on HER2ST
        (``docs/model.md``, "With two sections"). 0: none. Not with ``enabled=False``, a fixed
        ``finest_resolution``, a time axis, ``blends=[]``, a ``smooth_blend`` of the caller's, or where
        the smoother does not apply (count loss, streamed or multi-process fit).
    kernel_blend
        The Gaussian-process smoother's weight (``NetworkConfig.kernel_blend``) where a fit blends in
        the smoother above by default without racing its weight: with two sections, or after a race
        when ``kernel_blends`` is empty (even where the race chose ``beta = 0``). 0 (default): none.
        Chosen on held-out *training* sections: fitted on two neighbouring sections, 0.25 gained on the
        embryos and lost 0.030 on STARmap (``docs/model.md``, "A Gaussian-process partner"). Not where
        the caller set ``smooth_blend`` or ``kernel_blend``.
    kernel_blends
        Weights of the Gaussian-process smoother tried after the race next to ``blends`` (every pair,
        and 0; the pair with the lowest held-out loss is kept). Raced rather than fixed because the
        held-out *training* sections gained more from it (``docs/model.md``, "A Gaussian-process
        partner"). ``[]``: not raced, ``kernel_blend`` is used after a race too (so ``kernel_blends=[]``
        with ``kernel_blend=0`` turns the Gaussian process off).
    batch_size
        Largest minibatch of the candidate fits when the winner is refitted afterwards (``None``:
        the fit's own). The race only has to rank the candidates: with 1,024 instead of 4,096 cells
        per step it chose the same candidate on every benchmark split, and the race cost 1.5-2.7x less
        on the synthetic embryo (``docs/model.md``, "The resolution is chosen per dataset"). The
        refit, and with ``validation=`` sections the winner itself, train with
        ``TrainingConfig.batch_size``.
    """

    enabled: bool | None = None
    candidates: list = field(default_factory=lambda: [[1.0, 0.5, 0.0, 2], [4.0, 0.0, 0.0, 2], [1.0, 0.5, 1.0, 0],
                                                      [1.0, 0.5, 0.0, 2, 2]])
    rungs: list = field(default_factory=lambda: [0.125, 0.25])
    blends: list = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75])
    blend_without_race: float = 0.25
    kernel_blend: float = 0.0
    kernel_blends: list = field(default_factory=lambda: [0.25, 0.5])
    batch_size: int | None = 1024

    def __post_init__(self) -> None:
        _require_optional_bool(self, "enabled")
        if self.batch_size is not None:
            _require_ints(self, ("batch_size",))
        rungs = self.rungs
        if (not isinstance(rungs, (list, tuple)) or any(isinstance(r, bool) or not isinstance(r, numbers.Real)
                                                         or not 0 < r <= 1 for r in rungs)
                or list(rungs) != sorted(set(rungs))):
            raise ValueError(f"SelectionConfig.rungs must be increasing fractions in (0, 1], got {rungs!r}")
        self.rungs = [float(r) for r in rungs]
        for name in ("blends", "kernel_blends"):
            _require_weights(self, name)
        for name in ("blend_without_race", "kernel_blend"):
            _require_weight(self, name)
        candidates = self.candidates
        if not candidates or any(not 2 <= len(c) <= 6 or not c[0] > 0 or not all(v >= 0 for v in c[1:])
                                 or any(v != int(v) for v in c[3:5]) for c in candidates):
            raise ValueError(
                "SelectionConfig.candidates must be a non-empty list of rows [resolution_scale > 0, psf_sigma >= 0"
                "[, section_psf >= 0[, section_trend_degree (an integer >= 0)[, n_frequencies (an integer >= 0)"
                f"[, section_sparsity >= 0]]]]], got {candidates!r}"
            )
        self.candidates = [[float(v) for v in row] for row in candidates]  # JSON round trip


PARTS = {"encoding": EncodingConfig, "network": NetworkConfig, "training": TrainingConfig,
         "selection": SelectionConfig}
# format 1 (flat) names of the fields that format 2 renamed inside their part
_RENAMED = {"select_resolution": ("selection", "enabled"), "resolution_candidates": ("selection", "candidates")}


@dataclass
class NTFConfig:
    """Everything that defines a field and its training: four parts, serialisable to JSON.

    Each part may be given as its dataclass or as a dict of the fields to change from the
    defaults, as tiny-cuda-nn's JSON configs are written::

        NTFConfig(encoding={"n_levels": 12}, training={"steps": 2000, "loss": "nb"})

    Parameters
    ----------
    encoding
        :class:`EncodingConfig`: the hash grid and its resolution rule.
    network
        :class:`NetworkConfig`: MLP and latent.
    training
        :class:`TrainingConfig`: loss, optimiser, early stopping, checkpoints.
    selection
        :class:`SelectionConfig`: choosing the resolution on held-out training sections.
    """

    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def __post_init__(self) -> None:
        for name, cls in PARTS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls.from_dict(value))
            elif not isinstance(value, cls):
                raise TypeError(f"NTFConfig.{name} must be a {cls.__name__} or a dict of its fields, "
                                f"got {type(value).__name__}")

    def replace(self, **parts) -> NTFConfig:
        """A copy with parts replaced: each keyword a part name, given a part or a dict of changes.

        ``config.replace(training={"steps": 500})`` keeps every other training field.
        """
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise TypeError(f"NTFConfig.replace takes the parts {sorted(PARTS)}, not {sorted(unknown)}")
        new = {name: (getattr(self, name).replace(**value) if isinstance(value, dict) else value)
               for name, value in parts.items()}
        return dataclasses.replace(self, **new)

    def to_dict(self) -> dict:
        """Plain-JSON dictionary: ``{"format": 2, "encoding": {...}, "network": {...}, ...}``."""
        return {"format": FORMAT_VERSION, **{name: getattr(self, name).to_dict() for name in PARTS}}

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> NTFConfig:
        """Build a config from :meth:`to_dict` output, of this format or the flat format 1."""
        data = dict(data)
        version = data.pop("format", 1 if not set(data) & set(PARTS) else FORMAT_VERSION)
        if version == 1:
            data = _from_flat(data)
        elif version != FORMAT_VERSION:
            raise ValueError(f"config format {version!r} is newer than this ntf_utils understands "
                             f"({FORMAT_VERSION}); upgrade ntf_utils to load it")
        unknown = set(data) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown NTFConfig parts {sorted(unknown)}; known parts: {sorted(PARTS)}")
        return cls(**{name: PARTS[name].from_dict(value) for name, value in data.items()})


def _from_flat(flat: dict) -> dict:
    """Format 1 (one flat dict) -> format 2 (a dict per part); ``extra`` (never used) is dropped."""
    # format 1 had one namespace; a name two parts share now (batch_size: training, and the selection
    # race since format 2) meant the earlier part's field, so the first owner wins
    owner: dict = {}
    for part, cls in PARTS.items():
        for f in dataclasses.fields(cls):
            owner.setdefault(f.name, (part, f.name))
    owner.update(_RENAMED)
    parts: dict = {name: {} for name in PARTS}
    for key, value in flat.items():
        if key == "extra":
            continue
        if key not in owner:
            raise ValueError(f"unknown NTFConfig field {key!r} in a format-1 config")
        part, name = owner[key]
        parts[part][name] = value
    return parts


def default_steps(n_cells: int, batch_size: int) -> int:
    """Training steps when ``steps=None``: about 40 passes over the cells, between 1,000 and 4,000.

    Fewer steps were tried on held-out *training* sections (``docs/model.md``, "How long to train"):
    500 won on five small benchmark splits and lost on a 10,000-cell stack and on the demo's BDTNP
    slabs, where it also changed which selection candidate won; the rule was kept. Early stopping
    may end a fit sooner.
    """
    return int(min(4000, max(1000, 40 * n_cells / batch_size)))


def resolve_config(config: NTFConfig, sampling, has_sections: bool, n_genes: int, n_cells: int):
    """Fill every data-driven (``None``) field of ``config`` and build the coordinate transform.

    Parameters
    ----------
    config
        The user's config (not modified).
    sampling
        :class:`~ntf_utils.model._coords.Sampling` of the training coordinates.
    has_sections
        Whether z comes in discrete sections (then the finest z cell spans one section gap).
    n_genes, n_cells
        Size of the training data (caps the latent rank, sets the default number of steps).

    Returns
    -------
    (resolved config, :class:`~ntf_utils.model._coords.CoordinateTransform`)
    """
    import numpy as np

    from ._coords import CUBE_FILL, matched_transform

    enc, training = config.encoding, config.training
    dims = len(sampling.spacing)
    cells = sampling.extent / sampling.spacing
    cells[:2] /= enc.xy_cells_per_voxel
    if has_sections:
        cells[2] *= enc.z_voxels_per_gap
    else:
        cells[2] /= enc.xy_cells_per_voxel
    if dims == 4 and enc.time_scale is not None:
        cells[3] = enc.time_scale
    # a fixed finest resolution sets the overall scale itself; the data keeps deciding the anisotropy
    scale = enc.resolution_scale if enc.finest_resolution is None else 1.0
    cells[:3] /= scale
    cells = np.maximum(cells, 1.0)
    finest = float(cells.max() / CUBE_FILL)
    if enc.finest_resolution is not None:
        cells = cells * (float(enc.finest_resolution) * CUBE_FILL / cells.max())
        finest = float(enc.finest_resolution)
    base = enc.base_resolution
    if base is None:
        base = max(2.0, finest / 16.0) if enc.n_levels > 1 else finest
    base = min(float(base), finest)
    log2_size = enc.log2_hashmap_size
    if log2_size is None:
        finest_vertices = (math.ceil(finest) + 1) ** dims
        log2_size = int(min(19, max(12, math.ceil(math.log2(finest_vertices)))))
    steps = training.steps
    if steps is None:
        steps = default_steps(n_cells, training.batch_size)
    resolved = config.replace(
        encoding={"base_resolution": float(base), "finest_resolution": finest, "resolution_scale": float(scale),
                  "log2_hashmap_size": int(log2_size)},
        network={"latent_dim": int(min(config.network.latent_dim, max(1, n_genes)))},
        training={"steps": int(steps)},
    )
    return resolved, matched_transform(sampling, cells, finest)
