"""`tl.fit`: train a field on stacked sections."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .. import __version__
from .._validate import (
    check_finite_values,
    check_nonnegative_counts,
    get_coords,
    get_matrix,
    to_dense_float32,
)
from ..model.config import NTFConfig, resolve_config
from ..model.coords import Sampling, measure_sampling
from ..model.field import NTFField
from ..model.network import FieldNetwork
from ..model.train import InMemoryCells, standardise, train
from ._resolution import applies, select_resolution

MAX_SUPPORT_POINTS = 100_000


def resolve_device(device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fit(
    adata,
    *,
    layer: str | None = None,
    spatial_key: str = "spatial_3d",
    config: NTFConfig | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    loss: str | None = None,
    time_key: str | None = None,
    device="auto",
    seed: int = 0,
    validation=None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> NTFField:
    """Fit a neural transcriptomic field to stacked sections.

    Parameters
    ----------
    adata
        Stacked sections (:func:`ntf_utils.pp.stack_sections`): coordinates in
        ``obsm[spatial_key]`` and values in ``X`` or ``layer``. Not modified.
    layer
        Layer with the values to fit (default ``X``). Log-normalised values for the default MSE
        loss (see :func:`ntf_utils.pp.log_normalize`); raw counts for ``loss="poisson"``/``"nb"``.
    spatial_key
        ``obsm`` key with (x, y, z) coordinates in original units.
    config
        A :class:`~ntf_utils.model.config.NTFConfig`; unset fields are chosen from the data.
    steps, batch_size, loss
        Shortcuts overriding the same fields of ``config``.
    time_key
        ``obs`` column with a time / developmental stage: fits a 4D (x, y, z, t) field.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
    seed
        Seeds initialisation, minibatches and the validation split; on CPU the same seed gives the
        same model bit for bit.
    validation
        Held-out data for early stopping: an AnnData (e.g. the test sections of
        :func:`ntf_utils.pp.split_sections`), ``None`` to hold out ``config.validation_fraction`` of
        the cells at random, or ``False`` to train for all ``steps``.
    checkpoint_dir
        Directory for atomic checkpoints every ``config.checkpoint_every`` steps. If it already holds
        a checkpoint of this same run (same data, config and seed), the fit resumes from it; a
        checkpoint of a different run is an error.
    progress
        Show a tqdm progress bar with the loss.

    Returns
    -------
    The trained :class:`~ntf_utils.model.field.NTFField`.

    Notes
    -----
    How coarse the grid should be depends on the tissue, so by default (``config.select_resolution``)
    the field chooses it: with at least three sections, each ``[resolution_scale, psf_sigma]`` of
    ``config.resolution_candidates`` (the sampling rule itself, and a grid four times coarser without
    PSF jitter) is fitted with every third interior section held out, and the one with the lowest
    held-out loss is refitted on all sections (about 2.5x the time of one fit). With ``validation``
    sections given, those are held out instead and the winner is returned without a refit. The
    comparison is in ``field.info["resolution_selection"]``. No selection happens with a time axis,
    a fixed ``finest_resolution``, or ``select_resolution=False``; :func:`ntf_utils.atlas.fit_atlas`
    never selects.
    """
    config = NTFConfig() if config is None else config
    overrides = {k: v for k, v in {"steps": steps, "batch_size": batch_size, "loss": loss}.items() if v is not None}
    config = config.replace(**overrides) if overrides else config
    checked = _checked_inputs(adata, layer, spatial_key, time_key, config)  # bad input fails before any fit
    options = {"layer": layer, "spatial_key": spatial_key, "time_key": time_key, "device": device, "seed": seed}
    if not applies(config, adata, time_key):
        return fit_fixed(adata, config, validation=validation, checkpoint_dir=checkpoint_dir, progress=progress,
                         checked=checked, **options)
    fingerprint = None
    if checkpoint_dir is not None:
        fingerprint = _fingerprint(*checked, list(adata.var_names), config, seed, validation)
    chosen, table, field = select_resolution(adata, config, fit_fixed, validation=validation,
                                             checkpoint_dir=checkpoint_dir, fingerprint=fingerprint,
                                             progress=progress, **options)
    if field is None:
        field = fit_fixed(adata, chosen, validation=validation, checkpoint_dir=checkpoint_dir, progress=progress,
                          checked=checked, **options)
    field.info["resolution_selection"] = table
    return field


def fit_fixed(adata, config: NTFConfig, *, layer, spatial_key, time_key, device, seed, validation, checkpoint_dir,
              progress, checked=None) -> NTFField:
    """:func:`fit` with ``config.resolution_scale`` and ``config.psf_sigma`` used as given (no selection).

    ``checked``: the ``(coords, matrix)`` of ``adata`` from :func:`_checked_inputs`, when the caller
    has already read and checked them.
    """
    coords, matrix = checked if checked is not None else _checked_inputs(adata, layer, spatial_key, time_key, config)
    mask = np.asarray(adata.layers["ntf_mask"], dtype=np.float32) if "ntf_mask" in adata.layers else None

    sections = adata.obs["section"].astype(str).to_numpy() if "section" in adata.obs else None
    sampling = measure_sampling(coords, sections, seed=seed)
    has_sections = sections is not None and len(np.unique(coords[:, 2])) <= max(50, len(coords) // 20)
    config, transform = resolve_config(config, sampling, has_sections, adata.n_vars, adata.n_obs)

    rng = np.random.default_rng(seed)
    train_idx, val_idx = np.arange(adata.n_obs), None
    if validation is None and config.validation_fraction > 0 and adata.n_obs >= 200:
        perm = rng.permutation(adata.n_obs)
        n_val = max(1, int(round(config.validation_fraction * adata.n_obs)))
        val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    values = to_dense_float32(matrix)
    stats = _target_stats(values[train_idx], None if mask is None else mask[train_idx], config.loss)
    cells = _cells(coords[train_idx], values[train_idx], None if mask is None else mask[train_idx], transform, config, stats)
    val_cells = None
    if val_idx is not None:
        val_cells = _cells(coords[val_idx], values[val_idx], None if mask is None else mask[val_idx], transform, config, stats)
    elif validation is not None and validation is not False:
        val_cells = _validation_cells(validation, adata, layer, spatial_key, time_key, transform, config, stats)

    torch.manual_seed(seed)
    dev = resolve_device(device)
    network = FieldNetwork(config, coords.shape[1], adata.n_vars).to(dev)
    _init_output_bias(network, config, stats)
    # the run's identity only matters for checkpoints; hashing all the data costs seconds at atlas size
    fingerprint = "" if checkpoint_dir is None else _fingerprint(coords, matrix, list(adata.var_names), config, seed,
                                                                  validation)
    started = time.perf_counter()
    state = train(
        network, config, cells, validation=val_cells, seed=seed, device=dev,
        checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
        fingerprint=fingerprint, progress=progress,
    )
    seconds = time.perf_counter() - started
    info = _fit_info(adata, coords, sampling, sections, state, seconds, dev, network, layer, spatial_key, time_key)
    return NTFField(
        network, config, transform, list(adata.var_names), stats["mean"], stats["std"],
        _support(coords, transform, config, seed), state.history, info,
    )


def _checked_inputs(adata, layer, spatial_key, time_key, config):
    """``(coords, matrix)`` of ``adata``, or a clear error about what is wrong with them."""
    if adata.n_obs == 0:
        raise ValueError("adata has no cells")
    coords = _coords_with_time(adata, spatial_key, time_key)
    matrix = get_matrix(adata, layer)
    what = f"layers[{layer!r}]" if layer else "adata.X"
    check_finite_values(matrix, what)
    if config.loss != "mse":
        check_nonnegative_counts(matrix, what)
    return coords, matrix


def _coords_with_time(adata, spatial_key, time_key) -> np.ndarray:
    coords = get_coords(adata, spatial_key, n_cols=3)
    if time_key is None:
        return coords
    if time_key not in adata.obs:
        raise KeyError(f"obs[{time_key!r}] not found; available columns: {list(adata.obs.columns)}")
    t = pd.to_numeric(adata.obs[time_key], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(t).all():
        raise ValueError(
            f"obs[{time_key!r}] has {int((~np.isfinite(t)).sum())} NaN/inf or non-numeric values; "
            "every cell needs a numeric time (map stage names to numbers first)"
        )
    return np.column_stack([coords, t])


def _target_stats(values: np.ndarray, mask, loss: str) -> dict:
    if loss == "mse":
        mean, std = standardise(values, mask)
        return {"mean": mean, "std": std, "median_size": 1.0}
    totals = values.sum(1)
    median = float(np.median(totals[totals > 0])) if (totals > 0).any() else 1.0
    # mean rate at size factor 1, the starting point of the log-rate output
    mean = (values.sum(0) / max(totals.sum(), 1e-8) * median).astype(np.float32)
    return {"mean": mean, "std": np.ones_like(mean), "median_size": median}


def _cells(coords, values, mask, transform, config, stats) -> InMemoryCells:
    u = torch.from_numpy(transform.to_unit(coords))
    log_size = None
    if config.loss == "mse":
        target = torch.from_numpy((values - stats["mean"]) / stats["std"])
    else:
        target = torch.from_numpy(values)
        size = np.maximum(values.sum(1, keepdims=True), 1.0) / stats["median_size"]
        log_size = torch.from_numpy(np.log(size).astype(np.float32))
    return InMemoryCells(u, target, log_size, None if mask is None else torch.from_numpy(mask))


def _validation_cells(validation, adata, layer, spatial_key, time_key, transform, config, stats) -> InMemoryCells:
    import anndata as ad

    if not isinstance(validation, ad.AnnData):
        raise TypeError("validation must be an AnnData of held-out cells, None (random cells) or False (none)")
    missing = adata.var_names.difference(validation.var_names)
    if len(missing):
        raise ValueError(f"validation lacks {len(missing)} training genes, e.g. {list(missing[:5])}")
    validation = validation[:, adata.var_names]
    coords = _coords_with_time(validation, spatial_key, time_key)
    matrix = get_matrix(validation, layer)
    check_finite_values(matrix, "validation values")
    return _cells(coords, to_dense_float32(matrix), None, transform, config, stats)


def _init_output_bias(network: FieldNetwork, config: NTFConfig, stats: dict) -> None:
    with torch.no_grad():
        if config.loss == "mse":
            network.decoder.bias.zero_()  # targets are standardised
        else:
            network.decoder.bias.copy_(torch.from_numpy(np.log(np.maximum(stats["mean"], 1e-6))))
        network.log_theta.fill_(np.log(10.0))


def _fingerprint(coords, matrix, genes, config, seed, validation) -> str:
    """Identity of a run: data, genes, config and seed (a checkpoint resumes only the same run)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(coords).tobytes())
    if sp.issparse(matrix):
        csr = matrix.tocsr()
        for part in (csr.data, csr.indices, csr.indptr):
            h.update(np.ascontiguousarray(part).tobytes())
    else:
        h.update(np.ascontiguousarray(matrix).tobytes())
    h.update("\n".join(genes).encode())
    h.update(config.to_json().encode())
    h.update(f"seed={seed};validation={type(validation).__name__}".encode())
    if validation is not None and validation is not False:
        h.update(np.ascontiguousarray(validation.obsm.get("spatial_3d", np.zeros(0))).tobytes())
    return h.hexdigest()


def _support(coords, transform, config, seed) -> np.ndarray:
    """Training positions in cells of the sampling rule (subsampled): what counts as inside the tissue.

    ``(n, 3)``; with a time axis ``(n, 4)``, the 4th column the time in original units, so that
    :meth:`NTFField.inside` can ask for the tissue of the stages around a given time.
    """
    if len(coords) > MAX_SUPPORT_POINTS:
        coords = coords[np.random.default_rng(seed).choice(len(coords), MAX_SUPPORT_POINTS, replace=False)]
    u = transform.to_grid_xyz(coords, config.support_resolution)
    if coords.shape[1] == 4:
        u = np.column_stack([u, coords[:, 3]])
    return u.astype(np.float32)


def _fit_info(adata, coords, sampling: Sampling, sections, state, seconds, device, network, layer, spatial_key, time_key):
    section_z = sorted({float(z) for z in coords[:, 2]}) if sections is not None and len(np.unique(coords[:, 2])) < 10_000 else []
    return {
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "bounds": np.column_stack([sampling.lo, sampling.hi]).tolist(),
        "spacing": sampling.spacing.tolist(),
        "xy_spacing": float(sampling.spacing[0]),
        "section_z": section_z,
        "layer": layer,
        "spatial_key": spatial_key,
        "time_key": time_key,
        "steps_run": int(state.step),
        "best_step": int(state.best_step),
        "stopped_early": bool(state.stopped_early),
        "best_validation_loss": float(state.best_val) if np.isfinite(state.best_val) else None,
        "fit_seconds": round(seconds, 3),
        "device": str(device),
        "backend": network.encoding.backend(),
        "n_params": int(sum(p.numel() for p in network.parameters())),
        "ntf_utils_version": __version__,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),  # CPU results are bitwise reproducible at a fixed thread count
    }
