"""Choosing the grid resolution of a field by the loss on held-out training sections.

Why: how coarse the finest grid cell should be depends on the tissue, not only on the sampling. On
the synthetic embryo (smooth programs and sharp domain boundaries, ~1,000 noisy cells per section) a
grid four times coarser than the sampling rule, with no PSF jitter, predicts held-out sections far
better (median Pearson 0.992 vs 0.968): the MLP draws the sharp boundaries and the coarse cells
average the count noise. On HER2ST spots and the Drosophila atlas the sampling rule is better. A
held-out training section tells the two apart, so :func:`ntf_utils.tl.fit` asks one.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from .._constants import Key

__all__ = ["applies", "blend_without_race", "heldout_sections", "phase_cost", "select_resolution",
           "with_kernel_blend"]

MIN_SECTIONS = 3  # one interior section to hold out and at least two to interpolate it from
MIN_CHECKS = 2  # validation checks before the race's first cut (one ranked the synthetic embryo's wrongly)


def applies(config, adata, time_key) -> bool:
    """Whether :func:`select_resolution` runs for this call of :func:`ntf_utils.tl.fit`.

    It needs discrete sections (``obs["section"]``, at least three) and leaves alone what the caller
    fixed: ``selection.enabled=False``, a ``finest_resolution``, or a single candidate. Fields with a
    time axis use the first candidate (sections of different stages do not interpolate each other).
    """
    return len(config.selection.candidates) >= 2 and _race_sections(config, adata, time_key) >= MIN_SECTIONS


def _race_sections(config, adata, time_key) -> int:
    """How many labelled sections a race could hold out from; 0 where the caller fixed the settings
    (``selection.enabled=False``, a ``finest_resolution``) or stages do not interpolate (a time axis)."""
    if config.selection.enabled is False or config.encoding.finest_resolution is not None:
        return 0
    if time_key is not None or adata.n_obs == 0 or Key.obs.section not in adata.obs:
        return 0
    return int(adata.obs[Key.obs.section].nunique())


def blend_without_race(config, adata, time_key):
    """``config`` with ``SelectionConfig.blend_without_race`` as the smoother's weight where the race
    would run but cannot for lack of sections (exactly two labelled ones); ``config`` as given otherwise.

    Quiet where the smoother does not apply (the weight is a default, not the caller's request).
    """
    from ..model._pipeline import distributed_rank, smooth_base_applies

    selection = config.selection
    weight = selection.blend_without_race if max(selection.blends, default=0.0) > 0 else 0.0
    if weight <= 0 or config.network.smooth_blend > 0 or _race_sections(config, adata, time_key) != 2:
        return config
    if not smooth_base_applies(True, config, distributed_rank()[1]):
        return config
    return with_kernel_blend(config.replace(network={"smooth_blend": weight}))


def with_kernel_blend(config):
    """``config`` with ``SelectionConfig.kernel_blend`` as the Gaussian-process smoother's weight
    (``NetworkConfig.kernel_blend``), for a fit that blends in the grid smoother by default: after a race
    whose winner's blend was chosen (even ``beta = 0``), or with two sections. ``config`` as given where
    the caller set ``kernel_blend``."""
    if config.network.kernel_blend > 0 or config.selection.kernel_blend <= 0:
        return config
    return config.replace(network={"kernel_blend": config.selection.kernel_blend})


def heldout_sections(adata, spatial_key: str) -> list[str]:
    """Every third interior section along z (by median z): the internal validation sections."""
    import pandas as pd

    z = np.asarray(adata.obsm[spatial_key])[:, 2]
    order = pd.Series(z).groupby(adata.obs[Key.obs.section].astype(str).to_numpy()).median().sort_values()
    interior = list(order.index[1:-1])
    return interior[::3]


def select_resolution(adata, config, start_fit, *, validation, checkpoint_dir, fingerprint, spatial_key):
    """Race ``config.selection.candidates`` and keep the one with the lowest held-out loss.

    Successive halving (``config.selection.rungs``): every candidate trains to the first rung, the
    half with the higher best held-out loss so far is dropped, the rest train on to the next rung,
    and so on; candidates still racing after the last rung train to their end. When the winner is
    refitted afterwards, its blend with a closed-form smoother is chosen on the same held-out
    sections (:func:`choose_blend`).

    Parameters
    ----------
    adata
        The training sections passed to :func:`ntf_utils.tl.fit`.
    config
        The caller's config; each candidate replaces the settings its row names (:func:`_settings`).
    start_fit
        ``start_fit(adata, config, validation, description) -> FitRun``: one pipeline fit, not yet
        trained (:class:`ntf_utils.model._pipeline.FitRun`).
    validation
        The caller's ``validation``. Held-out sections given as an AnnData are used as they are and
        the winning candidate, already fitted on all of ``adata``, is returned. Otherwise every third
        interior training section is held out, the candidates are fitted on the rest, and the winner
        is refitted on everything by the caller.
    checkpoint_dir, fingerprint
        The caller's checkpoint directory and the run's identity. The outcome is recorded there
        (atomically) and a resumed run reuses it instead of fitting the candidates again; only the
        final fit checkpoints its training, so with a directory the winner is always refitted.
    spatial_key
        Where the coordinates are (the held-out sections are chosen by z).

    Returns
    -------
    (chosen config, table, phases, field)
        ``table`` is a list of dicts (the candidate's settings: ``resolution_scale``, ``psf_sigma``,
        ``section_psf``, ``section_trend_degree``, ``n_frequencies``, ``section_sparsity``; then
        ``validation_loss``, ``finest_resolution``, ``steps_run``, ``chosen``, and in the chosen row the
        blend of :func:`choose_blend`), stored in ``field.info["resolution_selection"]``;
        ``phases`` lists each candidate fit (``phase``, ``n_cells``, ``batch_size``, ``steps_run``, ``seconds``);
        ``field`` is the fitted winner when ``validation`` was an AnnData (and no checkpoint
        directory was given), else ``None``.
    """
    import anndata as ad

    from ..model import _checkpoint as ckpt

    if checkpoint_dir is not None:
        table = ckpt.load_selection(checkpoint_dir, fingerprint)
        if table is not None:
            return _chosen(config, table), table, [], None
    if isinstance(validation, ad.AnnData):
        fit_on, held_out = adata, validation
    else:
        names = heldout_sections(adata, spatial_key)
        is_held = adata.obs[Key.obs.section].astype(str).isin(names).to_numpy()
        fit_on, held_out = adata[~is_held], adata[is_held]
    candidates = config.selection.candidates
    reuse = fit_on is adata and checkpoint_dir is None  # the winner is the field: it trains to its end
    race_config = config
    race_batch = config.selection.batch_size
    if not reuse and race_batch is not None and race_batch < config.training.batch_size:
        # the race only ranks the candidates, which cheaper steps do alike; the refit trains the field
        race_config = config.replace(training={"batch_size": race_batch})
    runs = []
    for k, row in enumerate(candidates):
        settings = _settings(config, row)
        runs.append(start_fit(fit_on, _with_settings(race_config, settings), held_out,
                              f"candidate {k + 1}/{len(candidates)}"))
    costs = {}  # candidate -> what it cost, once it has left the race

    def drop(k, note):
        costs[k] = runs[k].abandon(note)

    racing = list(range(len(runs)))
    for rung, fraction in enumerate(config.selection.rungs):
        if len(racing) == 1:
            break
        for k in racing:
            runs[k].advance(_rung_step(runs[k], fraction, rung))
        ranked = sorted(racing, key=lambda k: _best_loss(runs[k]))
        racing = ranked[: math.ceil(len(ranked) / 2)]
        for k in ranked[len(racing):]:
            drop(k, f"dropped at step {runs[k].state.step}")
    if len(racing) > 1 or reuse:
        for k in racing:
            runs[k].advance()
    best = min(racing, key=lambda k: _best_loss(runs[k]))
    winner, blend = None, {}
    if reuse:
        winner = runs[best].finish()
        costs[best] = phase_cost(winner)
    else:
        blending = time.perf_counter()
        blend = choose_blend(config, runs[best])
        drop(best, "chosen: refitted on every section next")
        costs[best]["seconds"] = round(costs[best]["seconds"] + time.perf_counter() - blending, 3)
    for k in racing:
        if k != best:
            drop(k, f"lost at step {runs[k].state.step}")
    table, phases = [], []
    for k, (row, run) in enumerate(zip(candidates, runs)):
        loss = _best_loss(run)
        table.append({**_settings(config, row), "validation_loss": float(loss) if np.isfinite(loss) else None,
                      "finest_resolution": run.plan.config.encoding.finest_resolution,
                      "steps_run": costs[k]["steps_run"], "chosen": k == best, **(blend if k == best else {})})
        phases.append({"phase": f"candidate {k + 1}/{len(candidates)}", **costs[k]})
    if checkpoint_dir is not None:
        ckpt.save_selection(checkpoint_dir, table, fingerprint)
    return _chosen(config, table), table, phases, winner


def choose_blend(config, run) -> dict:
    """The weights of the smoothers in the race winner's prediction, by its held-out loss.

    A smoother (:class:`~ntf_utils.model._smooth_base.SmoothBase`) is solved on the cells the winner
    trained on, and the winner's held-out loss (at its best weights) is computed with each weight of
    ``config.selection.blends`` (and, with ``config.selection.kernel_blends``, each pair of it and a
    Gaussian-process weight). Returns ``{"smooth_blend": weight, "blend_losses": {weight: loss}}``
    (with kernel weights also ``"kernel_blend"``, and the losses keyed ``"beta,gamma"``; the chosen
    row of ``info["resolution_selection"]`` carries them; the seconds go to its phase), or ``{}``
    where no blend is chosen (``NetworkConfig.smooth_blend`` set by the caller, no positive weight to
    try, a count loss, a streamed or distributed fit). A winner with section effects gets a smoother
    solved on its effect-free targets (``model._pipeline.effect_free_targets``), as its refit will.
    """
    from ..model._pipeline import distributed_rank, smooth_base_applies, solve_smooth_base
    from ..model._smooth_base import SmoothBase
    from ..model._train import evaluate_blend_losses

    plan_config, network = run.plan.config, run.network
    blends = sorted({0.0, *config.selection.blends})
    if (config.network.smooth_blend > 0 or len(blends) < 2 or run.training.validation is None
            or not smooth_base_applies(run.source.in_memory, plan_config, distributed_rank()[1])):
        return {}
    kernels = sorted({0.0, *config.selection.kernel_blends}) if config.selection.kernel_blends else [0.0]
    if run.training.best_weights is not None:
        network.load_state_dict(run.training.best_weights)
    # the grids, and the Gaussian process when one is tried
    solved = plan_config.replace(network={"smooth_blend": max(blends), "kernel_blend": max(kernels)})
    network.smooth_base = SmoothBase.for_field(solved, network.encoding.n_input_dims,
                                               network.decoder.out_features).to(run.device)
    solve_smooth_base(network.smooth_base, run.cells, solved, seed=0, network=network, source=run.source,
                      plan=run.plan)
    losses = evaluate_blend_losses(network, plan_config, run.training.validation, run.device,
                                   list(itertools.product(blends, kernels)))
    # the run is dropped next; leave it as it was built
    network.smooth_base, network.smooth_blend, network.kernel_blend = None, 0.0, 0.0
    beta, gamma = min(losses, key=losses.get)
    if len(kernels) == 1:
        return {"smooth_blend": beta, "blend_losses": {str(b): float(v) for (b, _), v in losses.items()}}
    return {"smooth_blend": beta, "kernel_blend": gamma,
            "blend_losses": {f"{b},{g}": float(v) for (b, g), v in losses.items()}}


def _rung_step(run, fraction: float, rung: int) -> int:
    """The step of rung ``rung`` (0 first): ``fraction`` of the run's steps, rounded up to a validation
    step, and not before ``MIN_CHECKS + rung`` validation checks (short runs would otherwise rank the
    candidates on one check, which ranks them wrongly: ``docs/model.md``, "Successive halving")."""
    every = run.plan.config.training.eval_every
    return int(max(math.ceil(fraction * run.plan.config.training.steps / every), MIN_CHECKS + rung) * every)


def _best_loss(run) -> float:
    """A run's best held-out loss so far (inf before its first evaluation)."""
    best = run.state.best_val
    return best if np.isfinite(best) else np.inf


def phase_cost(field) -> dict:
    """What a finished candidate fit cost, for ``info["phases"]``."""
    info = field.info
    return {"n_cells": info["n_cells"], "batch_size": int(field.config.training.batch_size),
            "steps_run": info["steps_run"], "seconds": info["fit_seconds"]}


def _settings(config, row) -> dict:
    """A candidate row ``[resolution_scale, psf_sigma[, section_psf[, section_trend_degree[, n_frequencies[,
    section_sparsity]]]]]`` by name; what the row leaves out comes from ``config``."""
    defaults = [None, None, config.training.section_psf, config.network.section_trend_degree,
                config.encoding.n_frequencies, config.training.section_sparsity]
    scale, psf, section_psf, degree, octaves, sparsity = list(row) + defaults[len(row):]
    return {"resolution_scale": float(scale), "psf_sigma": float(psf), "section_psf": float(section_psf),
            "section_trend_degree": int(degree), "n_frequencies": int(octaves), "section_sparsity": float(sparsity)}


def _chosen(config, table):
    """``config`` with the settings of the table's chosen candidate (and, where its blend was chosen,
    the Gaussian-process smoother: :func:`with_kernel_blend`)."""
    row = next(row for row in table if row["chosen"])
    chosen = _with_settings(config, row)
    return with_kernel_blend(chosen) if "smooth_blend" in row and "kernel_blend" not in row else chosen


def _with_settings(config, settings):
    """``config`` with one candidate's settings (a row of :func:`_settings` or of a recorded table)."""
    training = {"psf_sigma": settings["psf_sigma"]}
    network = {}
    encoding = {"resolution_scale": settings["resolution_scale"]}
    if "section_psf" in settings:  # tables recorded before section effects have neither
        training["section_psf"] = settings["section_psf"]
        network["section_trend_degree"] = settings["section_trend_degree"]
    if "n_frequencies" in settings:  # nor, before the frequency encoding, this
        encoding["n_frequencies"] = settings["n_frequencies"]
    if "section_sparsity" in settings:  # nor, before the sparsity prior, this
        training["section_sparsity"] = settings["section_sparsity"]
    if "smooth_blend" in settings:  # the chosen row, since blends are chosen
        network["smooth_blend"] = settings["smooth_blend"]
    if "kernel_blend" in settings:  # ... and where the race chose the Gaussian process's weight too
        network["kernel_blend"] = settings["kernel_blend"]
    return config.replace(encoding=encoding, training=training, network=network)
