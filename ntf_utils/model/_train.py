"""The training loop: minibatches of cells, Adam, PSF jitter, early stopping, checkpoints, resume."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from . import _checkpoint as ckpt
from ._config import NTFConfig
from ._losses import mse_loss, nb_loss, poisson_loss
from ._network import FieldNetwork
from ._poses import level_weights

__all__ = ["InMemoryCells", "TrainState", "Training", "loss_fn", "make_optimizer", "lr_at", "evaluate_loss", "evaluate_blend_losses", "TrainingCells", "train", "standardise", "improves"]


@dataclass
class InMemoryCells:
    """Training cells held as tensors: unit-cube coordinates and targets.

    Attributes
    ----------
    u
        ``(n, D)`` float32 coordinates in the unit cube.
    target
        ``(n, G)`` float32 standardised values (MSE) or raw counts (count losses).
    log_size
        ``(n, 1)`` log size factors for count losses, else None.
    mask
        ``(n, G)`` float32, 1 where measured (outer-joined genes), else None.
    section
        ``(n,)`` int64 code of each cell's training section (-1: none, the reference level), or
        None when the field has no section effects.
    """

    u: torch.Tensor
    target: torch.Tensor
    log_size: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    section: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.u.shape[0]

    def batch(self, index: torch.Tensor, device: torch.device):
        """The cells at ``index``, moved to ``device``."""

        def take(t):
            return None if t is None else t.index_select(0, index).to(device, non_blocking=True)

        return take(self.u), take(self.target), take(self.log_size), take(self.mask), take(self.section)

    def sample_index(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """Uniform random cell indices (with replacement across steps, without within one)."""
        n = len(self)
        if batch_size >= n:
            return torch.randperm(n, generator=generator)
        return torch.randint(0, n, (batch_size,), generator=generator)


@dataclass
class TrainState:
    """Everything needed to continue a run bit for bit."""

    step: int = 0
    best_val: float = math.inf
    best_step: int = 0
    bad_evals: int = 0
    history: list = field(default_factory=list)  # dicts: step, loss, val_loss
    stopped_early: bool = False
    averaged: int = 0  # validation checks in the running weight average


def loss_fn(config: NTFConfig, network: FieldNetwork, output, target, log_size, mask):
    """The configured loss on one batch."""
    loss = config.training.loss
    if loss == "mse":
        return mse_loss(output, target, mask)
    if loss == "poisson":
        return poisson_loss(output, target, log_size, mask)
    return nb_loss(output, target, log_size, network.log_theta, mask)


def make_optimizer(network: FieldNetwork, config: NTFConfig) -> torch.optim.Optimizer:
    """Adam with instant-ngp's settings for the table (beta2 0.99, eps 1e-15).

    Section poses (registration) get their own group: no weight decay (it would pull every section
    towards its given place) and their own step, ``registration_lr`` spacings, as ``lr_scale``.
    """
    mlp = [p for n, p in network.named_parameters() if not n.startswith(("encoding.", "poses."))]
    groups = [
        {"params": [network.encoding.params], "weight_decay": config.training.grid_weight_decay},
        {"params": mlp, "weight_decay": config.training.mlp_weight_decay},
    ]
    if network.poses is not None:
        groups.append({"params": list(network.poses.parameters()), "weight_decay": 0.0,
                       "lr_scale": config.training.registration_lr / config.training.lr})
    return torch.optim.Adam(groups, lr=config.training.lr, betas=(0.9, 0.99), eps=1e-15, fused=True)


def lr_at(step: int, config: NTFConfig) -> float:
    """Cosine decay from ``lr`` to ``lr / 20`` over the run, after a short warm-up."""
    steps, lr = config.training.steps, config.training.lr
    warmup = min(100, steps // 10)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def evaluate_loss(network, config, cells: InMemoryCells, device, batch_size: int = 65536) -> float:
    """Mean loss over all cells, without jitter."""
    return _mean_losses(network, config, cells, device, batch_size, [None],
                        lambda u, section: {None: network(u, section=section)})[None]


def evaluate_blend_losses(network, config, cells: InMemoryCells, device, weights, batch_size: int = 65536) -> dict:
    """Mean loss over all cells of every ``(smooth_blend, kernel_blend)`` pair in ``weights``, as
    :func:`evaluate_loss` with the network's weights set to each pair, but with the network and the
    smoothers evaluated once per batch (:meth:`~._network.FieldNetwork.blend_parts`)."""

    def outputs(u, section):
        parts = network.blend_parts(u, section)
        return {pair: parts.output(*pair) for pair in weights}

    return _mean_losses(network, config, cells, device, batch_size, weights, outputs)


@torch.no_grad()
def _mean_losses(network, config, cells: InMemoryCells, device, batch_size: int, keys, outputs) -> dict:
    """``{key: mean loss over all cells}`` of the predictions ``outputs(u, section)`` returns per batch as
    ``{key: prediction}``, with the network in eval mode (restored to training mode after)."""
    network.eval()
    totals, count = dict.fromkeys(keys, 0.0), 0
    for start in range(0, len(cells), batch_size):
        index = torch.arange(start, min(start + batch_size, len(cells)))
        u, target, log_size, mask, section = cells.batch(index, device)
        for key, out in outputs(u, section).items():
            totals[key] += float(loss_fn(config, network, out, target, log_size, mask)) * len(index)
        count += len(index)
    network.train()
    return {key: total / max(count, 1) for key, total in totals.items()}


class TrainingCells(Protocol):
    """What the training loop needs of a cell source: random minibatches on a device.

    :class:`InMemoryCells` (all cells as tensors) and :class:`ntf_utils.atlas.StreamingCells`
    (a bounded buffer refreshed from disk) implement it.
    """

    def sample_index(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """Indices of one minibatch, drawn with ``generator``."""

    def batch(self, index: torch.Tensor, device: torch.device) -> tuple:
        """``(u, target, log_size, mask, section)`` of the cells at ``index`` on ``device``."""


def train(
    network: FieldNetwork,
    config: NTFConfig,
    cells: TrainingCells,
    *,
    validation: InMemoryCells | None,
    seed: int,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    fingerprint: str = "",
    progress: bool = True,
    model: torch.nn.Module | None = None,
    description: str = "fitting field",
) -> TrainState:
    """Fit ``network`` in place; returns the final :class:`TrainState`.

    With ``checkpoint_dir``, a checkpoint of the same run found there is resumed, and a new one is
    written atomically every ``checkpoint_every`` steps and at the end. ``model`` is what the
    forward pass calls (default ``network``; e.g. a ``DistributedDataParallel`` wrapper of it).
    ``description`` labels the progress bar. The same as ``Training(...).advance()`` then ``.finish()``.
    """
    run = Training(network, config, cells, validation=validation, seed=seed, device=device,
                   checkpoint_dir=checkpoint_dir, fingerprint=fingerprint, progress=progress, model=model,
                   description=description)
    run.advance()
    return run.finish()


class Training:
    """One training run that can pause between steps and go on later, bit for bit as if it had not.

    Resolution selection races its candidates with it: each advances to a rung, the worse half is
    dropped, the rest go on (:func:`ntf_utils.tl._resolution.select_resolution`). The arguments are
    those of :func:`train`.
    """

    def __init__(self, network: FieldNetwork, config: NTFConfig, cells: TrainingCells, *,
                 validation: InMemoryCells | None, seed: int, device: torch.device,
                 checkpoint_dir: Path | None = None, fingerprint: str = "", progress: bool = True,
                 model: torch.nn.Module | None = None, description: str = "fitting field"):
        self.network, self.config, self.cells, self.validation = network, config, cells, validation
        self.device, self.checkpoint_dir, self.fingerprint = device, checkpoint_dir, fingerprint
        self.model = network if model is None else model
        self.optimizer = make_optimizer(network, config)
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.state, self.best_weights, self.average = TrainState(), None, None
        if checkpoint_dir is not None:
            ckpt.remove_stale_temporaries(checkpoint_dir)
            resumed = ckpt.load_training_checkpoint(checkpoint_dir, fingerprint)
            if resumed is not None:
                network.load_state_dict(resumed["network"])
                self.optimizer.load_state_dict(resumed["optimizer"])
                self.generator.set_state(resumed["generator"])
                self.best_weights = resumed.get("best_network")
                self.average = resumed.get("average")
                self.state = TrainState(**resumed["state"])
        sigma = psf_sigmas(config, network.section_effects.n_sections > 0, network.encoding.n_input_dims)
        self.sigma = None if sigma is None else sigma.to(device)
        self.bar = _progress_bar(config.training.steps, self.state.step, progress, description)

    @property
    def done(self) -> bool:
        """Whether the run has used its steps or stopped early."""
        return self.state.step >= self.config.training.steps or self.state.stopped_early

    def advance(self, until: int | None = None) -> TrainState:
        """Train up to step ``until`` (default: to the end of the run or an early stop)."""
        training, state, network = self.config.training, self.state, self.network
        last = training.steps if until is None else min(until, training.steps)
        network.train()
        while state.step < last and not state.stopped_early:
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(state.step, self.config) * group.get("lr_scale", 1.0)
            if network.level_weights is not None:  # registration's coarse-to-fine schedule
                network.level_weights.copy_(level_weights(state.step / training.steps, len(network.level_weights),
                                                          training.registration_coarse_to_fine))
            loss = _step_loss(self.model, network, self.config, self.cells, self.generator, self.device, self.sigma)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            state.step += 1
            record = {"step": state.step, "loss": loss.item()}
            if self.validation is not None and (state.step % training.eval_every == 0
                                                or state.step == training.steps):
                record["val_loss"] = evaluate_loss(network, self.config, self.validation, self.device)
                self._update_average()
                if _improved(state, record["val_loss"], training.patience):
                    self.best_weights = copy.deepcopy(network.state_dict() if self.average is None else self.average)
            state.history.append(record)
            if self.bar is not None:
                self.bar.update(1)
                if state.step % 20 == 0:
                    self.bar.set_postfix(loss=f"{record['loss']:.4f}", val=f"{state.best_val:.4f}")
            if self.checkpoint_dir is not None and state.step % training.checkpoint_every == 0:
                self._save()
        network.eval()
        return state

    def finish(self, note: str | None = None) -> TrainState:
        """End the run: close the progress bar (with ``note``), keep the best weights, checkpoint."""
        self.close_bar(note)
        if self.best_weights is not None:
            self.network.load_state_dict(self.best_weights)
        if self.network.level_weights is not None:
            self.network.level_weights.fill_(1.0)  # the field is used with every level
        if self.checkpoint_dir is not None:
            self._save()
        self.network.eval()
        return self.state

    def _update_average(self) -> None:
        """Add the weights to the running average once ``average_from`` of the steps have run.

        The kept weights (``best_weights``) are then the average of the checks from there up to the
        best one: Polyak averaging inside the early-stopping window, which smooths out what the last
        steps fitted to single sections (``docs/model.md``, "Averaged weights").
        """
        start = self.config.training.average_from
        if start is None or self.state.step < start * self.config.training.steps:
            return
        self.state.averaged += 1
        weights = self.network.state_dict()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in weights.items()}
            return
        for key, value in weights.items():
            if value.is_floating_point() or value.is_complex():
                self.average[key].add_(value.detach() - self.average[key], alpha=1.0 / self.state.averaged)

    def close_bar(self, note: str | None = None) -> None:
        """Close the progress bar (if any), with ``note`` in place of the loss figures."""
        if self.bar is not None:
            if note:
                self.bar.set_postfix_str(note)
            self.bar.close()

    def _save(self) -> None:
        _save(self.checkpoint_dir, self.network, self.optimizer, self.generator, self.best_weights, self.state,
              self.fingerprint, self.average)


def _step_loss(model, network, config: NTFConfig, cells: TrainingCells, generator, device, sigma) -> torch.Tensor:
    """The loss of one random minibatch: PSF jitter (``sigma``, per axis, from :func:`psf_sigmas`),
    section effects and the optional penalties.

    The points the penalties need (a random neighbour of every cell for ``smoothness``; a quarter of
    the cells one section gap up or down for ``section_sparsity``) go through the same forward call
    as the batch, so wrappers that hook ``forward`` (DistributedDataParallel) see one call per step.
    """
    training = config.training
    u, target, log_size, mask, section = cells.batch(cells.sample_index(generator, training.batch_size), device)
    if sigma is not None:
        noise = torch.randn(u.shape, generator=generator).to(device) * sigma
        u = (u + noise).clamp_(0.0, 1.0)
    prior = 0.0
    if section is not None:
        prior = training.section_penalty * network.section_effects.penalty()
        if network.poses is not None:
            prior = prior + training.registration_prior * network.poses.penalty()
    sparsity = training.section_sparsity if section is not None and network.section_effects.n_sections else 0.0
    if training.smoothness <= 0 and sparsity <= 0:
        return loss_fn(config, network, model(u, section=section), target, log_size, mask) + prior
    n = u.shape[0]
    points, codes = [u], [section]
    if training.smoothness > 0:
        shift = torch.randn(u.shape, generator=generator).to(device) * (1.0 / config.encoding.finest_resolution)
        points.append((u + shift).clamp(0.0, 1.0))
        codes.append(section)
    if sparsity > 0:
        k = max(1, n // 4)
        points.append(_one_gap_along_z(u[:k], config, generator, device))
        codes.append(section[:k])
    out, latent, effect_free = model(torch.cat(points), section=None if section is None else torch.cat(codes),
                                     return_latent=True, return_effect_free=True)
    loss = loss_fn(config, network, out[:n], target, log_size, mask) + prior
    if training.smoothness > 0:
        loss = loss + training.smoothness * ((latent[:n] - latent[n:2 * n]) ** 2).mean()
    if sparsity > 0:
        # L1: tissue changes between neighbouring sections in places, a technical effect everywhere
        loss = loss + sparsity * (effect_free[:k] - effect_free[-k:]).abs().mean()
    return loss


def _one_gap_along_z(u: torch.Tensor, config: NTFConfig, generator, device) -> torch.Tensor:
    """``u`` moved one section gap up or down along z (at random; clamped to the unit cube)."""
    step = (torch.randint(0, 2, (u.shape[0],), generator=generator).to(device) * 2 - 1) * section_gap(config)
    moved = u.clone()
    moved[:, 2] = (moved[:, 2] + step).clamp(0.0, 1.0)
    return moved


def section_gap(config: NTFConfig) -> float:
    """One gap between training sections along z, in unit-cube units (the data-matched rule puts
    ``z_voxels_per_gap / resolution_scale`` finest z cells in one gap)."""
    encoding = config.encoding
    return encoding.z_voxels_per_gap / encoding.resolution_scale / encoding.finest_resolution


def psf_sigmas(config: NTFConfig, section_effects: bool, n_dims: int) -> torch.Tensor | None:
    """Per-axis PSF jitter in unit-cube units (``None``: no jitter).

    ``psf_sigma`` finest cells on every axis; with section effects, along z at least ``section_psf``
    section gaps (:func:`section_gap`), so that each section trains the field at its neighbours' depth
    too and what differs from section to section is left to the section effects.
    """
    training, encoding = config.training, config.encoding
    sigma = torch.full((n_dims,), training.psf_sigma / encoding.finest_resolution)
    if section_effects and training.section_psf > 0:
        sigma[2] = max(float(sigma[2]), training.section_psf * section_gap(config))
    return sigma if bool((sigma > 0).any()) else None


def improves(loss: float, best: float) -> bool:
    """Whether a validation ``loss`` counts as an improvement on ``best`` (early stopping's rule).

    Any loss improves on no best yet (``best`` infinite: ``inf - 1e-5 * inf`` is NaN, which no comparison
    passes); otherwise it must be lower by more than a relative 1e-5. The benchmark's baselines
    (``benchmarks/inr_baselines.py``) stop by the same rule.
    """
    return not math.isfinite(best) or loss < best - 1e-5 * abs(best)


def _improved(state: TrainState, val: float, patience: int) -> bool:
    """Record a validation loss in ``state``; True when it is the best so far (keep these weights)."""
    if improves(val, state.best_val):
        state.best_val, state.best_step, state.bad_evals = val, state.step, 0
        return True
    state.bad_evals += 1
    state.stopped_early = state.bad_evals >= patience
    return False


def _save(directory, network, optimizer, generator, best_weights, state, fingerprint, average) -> None:
    ckpt.save_training_checkpoint(
        directory,
        {
            "network": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "best_network": best_weights,
            "average": average,
            "state": {k: v for k, v in vars(state).items()},
        },
        fingerprint,
    )


def _progress_bar(total: int, initial: int, enabled: bool, description: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit="step", leave=True)


def standardise(values: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and standard deviation (over measured entries); constant genes get std 1."""
    # float64 accumulation: float32 sums of squares overflow for values above ~1e19
    if mask is None:
        mean = values.mean(0, dtype=np.float64)
        std = values.std(0, dtype=np.float64)
    else:
        count = np.maximum(mask.sum(0, dtype=np.float64), 1)
        mean = (values * mask).sum(0, dtype=np.float64) / count
        std = np.sqrt((((values - mean) * mask) ** 2).sum(0) / count)
    std = np.where(std > 1e-8, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)
