"""The one fit pipeline: plan -> cells -> train -> field, for any cell source.

:func:`ntf_utils.tl.fit` (an AnnData in memory) and :func:`ntf_utils.tl.fit_atlas` (a store on
disk, optionally across ``torchrun`` ranks) differ only in the :class:`~._sources.CellSource`
they pass; every other step is here and runs once per fit, in order.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._constants import Key
from .._version import __version__
from ._config import NTFConfig, resolve_config
from ._coords import CoordinateTransform, Sampling
from ._field import NTFField
from ._network import FieldNetwork
from ._poses import warn_large_poses
from ._sources import MAX_SUPPORT_POINTS, CellSource
from ._train import Training, TrainState

__all__ = ["FitPlan", "plan_fit", "fit_field", "FitRun", "config_with_overrides", "resolve_device", "distributed_rank"]


@dataclass
class FitPlan:
    """Everything decided before training (identical on every rank of a distributed fit).

    Attributes
    ----------
    config, transform, sampling
        Resolved config, coordinate transform and measured sampling.
    has_sections
        Whether z comes in discrete sections.
    stats
        ``mean``/``std`` (per gene), ``median_size`` (count losses) and ``target_sum`` (log1p).
    section_z
        Sorted z of the sections (empty for a continuous cloud or too many values).
    support
        Training positions in cells of the sampling rule (the field's inside-the-tissue test).
    held_out
        Sorted rows held out of training for early stopping.
    sections, sections_z
        Training sections with their own technical effects and/or pose, in code order, and their
        median z (empty: neither).
    sections_xy
        With registration: ``[centre_x, centre_y, rms_radius]`` of each of ``sections``.
    seconds
        Wall time of planning.
    extra
        Source-specific facts of the planning passes (:meth:`~._sources.CellSource.plan_facts`).
    """

    config: NTFConfig
    transform: CoordinateTransform
    sampling: Sampling
    has_sections: bool
    stats: dict
    section_z: list
    support: np.ndarray
    held_out: np.ndarray
    sections: list = field(default_factory=list)
    sections_z: list = field(default_factory=list)
    sections_xy: list = field(default_factory=list)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def config_with_overrides(config: NTFConfig | None, steps, batch_size, loss) -> NTFConfig:
    """``config`` (default :class:`NTFConfig`) with the ``steps``/``batch_size``/``loss`` shortcuts applied."""
    config = NTFConfig() if config is None else config
    overrides = {k: v for k, v in {"steps": steps, "batch_size": batch_size, "loss": loss}.items() if v is not None}
    return config.replace(training=overrides) if overrides else config


def resolve_device(device, world: int = 1) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``.

    In a distributed fit a bare ``"cuda"`` means this process's current CUDA device.
    """
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and world > 1:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of an initialised ``torch.distributed`` group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def support_points(coords: np.ndarray, transform: CoordinateTransform, config: NTFConfig, seed: int) -> np.ndarray:
    """Training positions in cells of the sampling rule (subsampled): what counts as inside the tissue.

    ``(n, 3)``; with a time axis ``(n, 4)``, the 4th column the time in original units, so that
    :meth:`NTFField.inside` can ask for the tissue of the stages around a given time.
    """
    if len(coords) > MAX_SUPPORT_POINTS:
        coords = coords[np.random.default_rng(seed).choice(len(coords), MAX_SUPPORT_POINTS, replace=False)]
    u = transform.to_grid_xyz(coords, config.encoding.support_resolution)
    if coords.shape[1] == 4:
        u = np.column_stack([u, coords[:, 3]])
    return u.astype(np.float32)


def plan_fit(source: CellSource, config: NTFConfig, *, seed: int, validation, world: int = 1) -> FitPlan:
    """Survey the coordinates, resolve the config, hold out validation rows, compute target statistics."""
    started = time.perf_counter()
    survey = source.survey(seed)
    n_z = math.inf if survey.z_values is None else len(survey.z_values)
    has_sections = survey.sectioned and n_z <= max(50, source.n_obs // 20)
    config, transform = resolve_config(config, survey.sampling, has_sections, source.n_vars, source.n_obs)
    effects = config.network.section_effects
    if effects is None:
        effects = section_effects_on(config, len(survey.sections))
    elif effects and len(survey.sections) < 2:
        raise ValueError("config.network.section_effects=True needs cells in at least two labelled sections "
                         f"(obs[{Key.obs.section!r}]); found {len(survey.sections)}. Label the sections "
                         "(ntf.pp.stack_sections does) or pass section_effects=None/False")
    if config.training.section_sparsity > 0 and not effects:
        _warn_sparsity_ignored(config.network.section_effects, len(survey.sections))
    config = config.replace(network={"section_effects": bool(effects)})
    if (config.network.smooth_blend > 0 or config.network.kernel_blend > 0) and not smooth_base_applies(
            source.in_memory, config, world, warn=True):
        config = config.replace(network={"smooth_blend": 0.0, "kernel_blend": 0.0})
    register = config.network.register_sections
    if register:
        _check_registration(survey)
    coded = effects or register  # cells carry section codes for either
    held_out = source.hold_out(config, seed, validation)
    stats = source.target_stats(config.training.loss, held_out)
    section_z = []
    if survey.sectioned and n_z < 10_000:
        section_z = [float(z) for z in survey.z_values]
    return FitPlan(config=config, transform=transform, sampling=survey.sampling, has_sections=has_sections,
                   stats=stats, section_z=section_z, support=support_points(survey.support, transform, config, seed),
                   held_out=held_out, sections=list(survey.sections) if coded else [],
                   sections_z=list(survey.section_z) if coded else [],
                   sections_xy=list(survey.section_xy) if register else [],
                   seconds=time.perf_counter() - started, extra=source.plan_facts())


def _warn_sparsity_ignored(section_effects: bool | None, n_sections: int) -> None:
    """``section_sparsity`` is a prior on section effects: say so when the fit has none."""
    why = ("config.network.section_effects=False turns them off" if section_effects is False
           else f"the cells come in {n_sections} labelled section(s), and effects need at least two")
    warnings.warn(f"TrainingConfig.section_sparsity is a prior that separates section effects from the tissue, but "
                  f"this fit has no section effects ({why}): the prior is ignored. Label the sections "
                  f"(obs[{Key.obs.section!r}]; ntf.pp.stack_sections does) and leave section_effects at None, or set "
                  "section_sparsity=0.", UserWarning, stacklevel=4)


def section_effects_on(config: NTFConfig, n_sections: int) -> bool:
    """Whether ``section_effects=None`` turns section effects on: with two or more labelled sections and a
    prior along z (``section_psf`` or ``section_sparsity``), which makes them identifiable
    (:mod:`._section_effects`)."""
    prior = config.training.section_psf > 0 or config.training.section_sparsity > 0
    return n_sections >= 2 and prior


def smooth_base_applies(in_memory: bool, config: NTFConfig, world: int, warn: bool = False) -> bool:
    """Whether a closed-form smoother can be solved for this fit (with ``warn``, say why not and the fix)."""
    why = None
    if config.training.loss != "mse":
        why = f"it is solved for standardised values and this fit uses the {config.training.loss!r} loss"
    elif not in_memory:
        why = "it is solved on every training cell at once and this fit streams its cells"
    elif world > 1:
        why = f"it is solved on one process and this fit runs on {world}"
    if why is not None and warn:
        warnings.warn(f"NetworkConfig.smooth_blend and kernel_blend are ignored: {why}. Use loss='mse' on log-normalised values in "
                      "tl.fit on one process, or set smooth_blend=0 and kernel_blend=0.", UserWarning,
                      stacklevel=4)
    return why is None


def solve_smooth_base(base, cells, config: NTFConfig, seed: int, network=None, source=None, plan=None) -> dict:
    """Solve ``base`` (:class:`~._smooth_base.SmoothBase`) on the training cells; its summary for ``field.info``.

    With a Gaussian-process part, the fit's ``source`` and ``plan`` tell it where the sections lie
    (:func:`section_extents`).

    With a trained ``network`` that has section effects, the smoother is solved on the targets with
    each cell's section effect taken out (:func:`effect_free_targets`), so that it smooths the
    effect-free tissue as the field predicts it, not the sections as measured.
    """
    from ._smooth_base import solve_rows

    started = time.perf_counter()
    rows = solve_rows(len(cells.u), seed)  # the solve's own subsample, taken before anything is copied

    def solved(tensor):
        return None if tensor is None else (tensor if rows is None else tensor[torch.from_numpy(rows)]).detach().cpu()

    targets = solved(cells.target).double().numpy()
    if network is not None:
        targets = effect_free_targets(targets, solved(cells.section), network)
    if cells.mask is not None:  # unmeasured entries count as the gene's mean
        targets = targets * solved(cells.mask).numpy()
    net = config.network
    extents = section_extents(source, plan) if base.kernel is not None and source is not None else None
    summary = base.solve(solved(cells.u).numpy(), targets, penalty=net.smooth_base_penalty,
                         decay=net.smooth_base_decay, seed=seed, extents=extents)
    return {**summary, "blend": float(net.smooth_blend), "kernel_blend": float(net.kernel_blend),
            "seconds": round(time.perf_counter() - started, 3)}


def section_extents(source, plan) -> tuple[np.ndarray, np.ndarray] | None:
    """``(lower, upper)`` unit-cube z extent of each labelled section of an in-memory ``source``
    (None without labels)."""
    sections = getattr(source, "sections", None)
    if sections is None:
        return None
    z = plan.transform.to_unit(source.coords)[:, 2]
    labelled = pd.Series(np.asarray(sections).astype(str))
    extent = pd.Series(z).groupby(labelled.to_numpy()).agg(["min", "max"])
    return extent["min"].to_numpy(), extent["max"].to_numpy()


def effect_free_targets(targets: np.ndarray, section, network) -> np.ndarray:
    """``targets`` ``(n, G)`` with each cell's learned section effect inverted (rows of section -1 as given).

    The network models a cell of section ``s`` as ``c + (f - c) * exp(a[s]) + b[s]`` (``c``: the decoder
    bias, :class:`~._section_effects.SectionEffects`), so ``c + (y - b[s] - c) * exp(-a[s])`` is the
    measurement at the reference level.
    """
    effects = network.section_effects
    if section is None or effects.n_sections == 0:
        return targets
    offset, log_scale = (t.detach().cpu().double().numpy() for t in effects.centred())
    level = network.decoder.bias.detach().cpu().double().numpy()
    codes = section.detach().cpu().numpy()
    rows = np.flatnonzero(codes >= 0)
    out = np.array(targets, dtype=np.float64, copy=True)
    s = codes[rows]
    out[rows] = level + (out[rows] - offset[s] - level) * np.exp(-log_scale[s])
    return out


def _check_registration(survey) -> None:
    """Refuse ``register_sections`` where this version cannot apply it, with the fix."""
    if len(survey.sections) < 2:
        raise ValueError("config.network.register_sections=True needs cells in at least two labelled sections "
                         f"(obs[{Key.obs.section!r}]); found {len(survey.sections)}. Label the sections "
                         "(ntf.pp.stack_sections does) or pass register_sections=False")
    if len(survey.section_xy) != len(survey.sections):  # a CellSource whose survey leaves section_xy out
        raise ValueError("config.network.register_sections=True needs the sections' in-plane geometry "
                         "(Survey.section_xy), which this cell source does not provide; pass register_sections=False")


def _plan_on_rank0(source, config, seed, validation, rank, world) -> FitPlan:
    """Plan once (rank 0) and share it, so every rank trains the same resolved model."""
    plan = None
    if rank == 0:
        try:
            plan = plan_fit(source, config, seed=seed, validation=validation, world=world)
        except Exception as err:
            if world == 1:
                raise
            plan = err  # tell the other ranks instead of leaving them waiting in the broadcast
    if world > 1:
        import torch.distributed as dist

        box = [plan]
        dist.broadcast_object_list(box, src=0)
        plan = box[0]
        if isinstance(plan, Exception):
            raise RuntimeError(f"rank 0 failed to plan the fit: {plan}") from plan
    return plan


def init_output_bias(network: FieldNetwork, config: NTFConfig, stats: dict) -> None:
    """Start the outputs at the data's level: 0 for standardised targets, log mean rate for counts."""
    with torch.no_grad():
        if config.training.loss == "mse":
            network.decoder.bias.zero_()
        else:
            network.decoder.bias.copy_(torch.from_numpy(np.log(np.maximum(stats["mean"], 1e-6))))
        network.log_theta.fill_(np.log(10.0))


def _forward_model(network: FieldNetwork, config: NTFConfig, dev, world: int, compile: bool, amp):
    """What the training step calls: the network, optionally compiled/autocast, wrapped in DDP."""
    from ._accelerate import accelerated_model

    model = accelerated_model(network, compile=compile, amp=amp)
    if world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if config.training.loss != "nb":
        network.log_theta.requires_grad_(False)  # unused: DDP needs every trained parameter used
    if network.section_effects.n_sections == 0:
        network.section_effects.requires_grad_(False)
    return DDP(model if model is not None else network, device_ids=[dev.index] if dev.type == "cuda" else None)


def fit_field(source: CellSource, config: NTFConfig, *, seed: int = 0, device="auto", validation=None,
              checkpoint_dir: str | Path | None = None, progress: bool = True, compile: bool = False,
              amp: str | None = None, description: str = "fitting field") -> NTFField:
    """Fit a field to the cells of ``source``: the pipeline behind ``tl.fit`` and ``tl.fit_atlas``.

    Parameters
    ----------
    source
        Where the cells come from (:class:`~._sources.AnnDataSource`, a streamed store ...).
    config
        The caller's config; data-driven fields are resolved here.
    seed, device, validation, checkpoint_dir, progress
        As in :func:`ntf_utils.tl.fit`. With an initialised process group (``torchrun``) each rank
        trains on its shard and checkpoints into ``checkpoint_dir/rank<k>``.
    compile, amp
        ``torch.compile`` and, on CUDA, autocast (``"bf16"``/``"fp16"``) of the training forward pass.
    description
        Label of the progress bar (the phase of the fit).
    """
    run = FitRun(source, config, seed=seed, device=device, validation=validation, checkpoint_dir=checkpoint_dir,
                 progress=progress, compile=compile, amp=amp, description=description)
    run.advance()
    return run.finish()


class FitRun:
    """A pipeline fit that trains in stages: ``advance(until)`` as often as wanted, then ``finish()``.

    :func:`fit_field` is ``FitRun(...).advance()`` then ``.finish()``; resolution selection advances
    several runs side by side and finishes only the one it keeps. Arguments as in :func:`fit_field`.
    """

    def __init__(self, source: CellSource, config: NTFConfig, *, seed: int = 0, device="auto", validation=None,
                 checkpoint_dir: str | Path | None = None, progress: bool = True, compile: bool = False,
                 amp: str | None = None, description: str = "fitting field"):
        self.started = time.perf_counter()
        self.source, self.seed = source, seed
        self.rank, self.world = distributed_rank()
        self.plan = _plan_on_rank0(source, config, seed, validation, self.rank, self.world)
        config = self.plan.config
        self.device = resolve_device(device, self.world)
        val_cells = source.validation_cells(self.plan, validation)
        torch.manual_seed(seed)
        self.network = FieldNetwork(config, source.n_input_dims, source.n_vars, self.plan.sections_z)
        if self.network.poses is not None:
            planes = np.asarray(self.plan.sections_xy, dtype=np.float64)
            self.network.poses.set_geometry(planes[:, :2], planes[:, 2], self.plan.transform,
                                            self.plan.sampling.spacing[0],
                                            stage=planes[:, 3] if planes.shape[1] == 4 else None)
        self.network.to(self.device)
        init_output_bias(self.network, config, self.plan.stats)
        model = _forward_model(self.network, config, self.device, self.world, compile, amp)
        ckpt_dir = None
        if checkpoint_dir is not None:
            ckpt_dir = Path(checkpoint_dir) / f"rank{self.rank}" if self.world > 1 else Path(checkpoint_dir)
        # the run's identity only matters for checkpoints; hashing all the data costs seconds at atlas size
        fingerprint = "" if ckpt_dir is None else source.fingerprint(config, seed, validation, self.world)
        self.cells = source.training_cells(self.plan, rank=self.rank, world=self.world, device=self.device,
                                           seed=seed)
        self.smooth_base, self.deferred_base = None, None
        if self.network.smooth_base is not None and self.network.section_effects.n_sections:
            # solved on the effect-free targets, so after training has learned the effects
            # (training and its checkpoints see the network alone)
            self.deferred_base, self.network.smooth_base = self.network.smooth_base, None
        elif self.network.smooth_base is not None:
            self.smooth_base = solve_smooth_base(self.network.smooth_base, self.cells, config, seed,
                                                 source=source, plan=self.plan)
        try:
            self.training = Training(self.network, config, self.cells, validation=val_cells, seed=seed,
                                     device=self.device, checkpoint_dir=ckpt_dir, fingerprint=fingerprint,
                                     progress=progress and self.rank == 0, model=model, description=description)
        except BaseException:
            self._close_cells()
            raise
        self.train_seconds, self.train_cpu_seconds = 0.0, 0.0
        self.setup_seconds = time.perf_counter() - self.started  # its own: runs may take turns training

    @property
    def state(self) -> TrainState:
        """Where training stands (steps run, best validation loss ...)."""
        return self.training.state

    @property
    def done(self) -> bool:
        """Whether training has used its steps or stopped early."""
        return self.training.done

    def advance(self, until: int | None = None) -> TrainState:
        """Train up to step ``until`` (default: to the end or an early stop)."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return self.training.advance(until)
        except BaseException:
            self._close_cells()
            raise
        finally:
            self.train_seconds += time.perf_counter() - wall
            self.train_cpu_seconds += time.process_time() - cpu

    @property
    def seconds(self) -> float:
        """Wall time this run has cost so far (setting up and its own training, not other runs' turns)."""
        return self.setup_seconds + self.train_seconds

    def finish(self, note: str | None = None) -> NTFField:
        """End training (best weights kept, ``note`` on the progress bar) and return the field."""
        finishing = time.perf_counter()
        try:
            state = self.training.finish(note)
            extra = self.source.describe(self.plan, self.cells)
            if self.deferred_base is not None:
                self.network.smooth_base = self.deferred_base
                self.smooth_base = solve_smooth_base(self.network.smooth_base, self.cells, self.plan.config,
                                                     self.seed, network=self.network, source=self.source,
                                                     plan=self.plan)
        finally:
            self._close_cells()
        network, plan = self.network, self.plan
        network.requires_grad_(True)
        seconds = self.seconds + time.perf_counter() - finishing
        info = _fit_info(self.source, plan, state, network, self.device, self.world, seconds,
                         self.train_seconds, self.train_cpu_seconds)
        info.update(extra)
        if self.smooth_base is not None:
            info["smooth_base"] = self.smooth_base
        if network.poses is not None:
            warn_large_poses(network.poses.table(list(plan.sections)), plan.sampling.spacing[0])
        return NTFField(network, plan.config, plan.transform, list(self.source.var_names), plan.stats["mean"],
                        plan.stats["std"], plan.support, state.history, info)

    def abandon(self, note: str = "dropped") -> dict:
        """Stop without a field (the progress bar says ``note``); returns the cost so far for the phases."""
        self.training.close_bar(note)
        self._close_cells()
        return {"n_cells": int(self.source.n_obs), "batch_size": int(self.plan.config.training.batch_size),
                "steps_run": int(self.state.step), "seconds": round(self.seconds, 3)}

    def _close_cells(self) -> None:
        close = getattr(self.cells, "close", None)
        if close is not None:
            close()


def _fit_info(source, plan: FitPlan, state: TrainState, network, dev, world, seconds, train_s, train_cpu_s) -> dict:
    batch = plan.config.training.batch_size
    return {
        "n_cells": int(source.n_obs),
        "n_genes": int(source.n_vars),
        "bounds": np.column_stack([plan.sampling.lo, plan.sampling.hi]).tolist(),
        "spacing": plan.sampling.spacing.tolist(),
        "xy_spacing": float(plan.sampling.spacing[0]),
        "section_z": plan.section_z,
        "sections": list(plan.sections),
        "sections_z": list(plan.sections_z),
        "steps_run": int(state.step),
        "best_step": int(state.best_step),
        "stopped_early": bool(state.stopped_early),
        "best_validation_loss": float(state.best_val) if np.isfinite(state.best_val) else None,
        "fit_seconds": round(seconds, 3),
        "plan_seconds": round(plan.seconds, 3),
        "train_seconds": round(train_s, 3),
        "train_cpu_seconds": round(train_cpu_s, 3),
        "cells_per_s": round(state.step * batch * world / max(train_s, 1e-9), 1),
        "world_size": world,
        "device": str(dev),
        "backend": network.encoding.backend(),
        "n_params": int(sum(p.numel() for p in network.parameters())),
        "ntf_utils_version": __version__,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),  # CPU results are bitwise reproducible at a fixed thread count
    }
