"""`tl.fit_atlas`: fit a field to an atlas on disk, streaming it chunk by chunk.

The same field as :func:`ntf_utils.tl.fit` (same :class:`~ntf_utils.model.config.NTFConfig`
resolution, network, training loop and :class:`~ntf_utils.model.field.NTFField`), with the three
steps that need all the data at once replaced by streaming versions:

1. **Sampling** (bounds, section spacing, in-plane spacing): one pass over the coordinates and
   section codes (``24 + 1`` bytes per cell) for exact bounds and section z values, and a
   per-section subsample of about 2,000 cells, on which :func:`~ntf_utils.model.coords.measure_sampling`
   runs with the full section sizes, so the in-plane spacing it measures on the subsample is
   scaled to the full density (``tl.fit`` measures it against all cells of a section).
2. **Target statistics** (library size, per-gene mean and standard deviation): from up to
   ``stats_cells`` cells in whole random blocks (all cells when the atlas is smaller), accumulated in
   float64.
3. **Training cells**: :class:`~ntf_utils.atlas.StreamingCells`, a bounded buffer of blocks
   refreshed in the background; validation cells are a fixed random set held out of training.

With an initialised ``torch.distributed`` process group (``torchrun``), each rank streams its own
shard of blocks and the network is wrapped in ``DistributedDataParallel``; see
:mod:`ntf_utils.atlas.train_ddp`.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..model.config import NTFConfig, resolve_config
from ..model.coords import CoordinateTransform, Sampling, measure_sampling
from ..model.field import NTFField
from ..model.network import FieldNetwork
from ..model.train import InMemoryCells, train
from ..tl._fit import _init_output_bias, _support, resolve_device
from ._compiled import accelerated_model
from ._store import AtlasStore, open_atlas
from ._streaming import StreamingCells, memory_bound

__all__ = ["fit_atlas", "AtlasPlan", "plan_atlas_fit"]

SAMPLING_CELLS_PER_SECTION = 2000  # what measure_sampling uses per section
SUPPORT_CELLS = 100_000  # tl.fit's MAX_SUPPORT_POINTS
NORMALIZE = (None, "log1p")


@dataclass
class AtlasPlan:
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
        Training positions in finest-grid units (the field's inside-the-tissue test).
    val_rows
        Sorted rows held out for validation (never trained on).
    val_coords, val_values, val_mask
        Their coordinates and raw values (read once).
    survey
        Facts about the passes over the store (cells read, seconds).
    """

    config: NTFConfig
    transform: CoordinateTransform
    sampling: Sampling
    has_sections: bool
    stats: dict
    section_z: list
    support: np.ndarray
    val_rows: np.ndarray
    val_coords: np.ndarray | None
    val_values: np.ndarray | None
    val_mask: np.ndarray | None
    survey: dict = field(default_factory=dict)


# -- the transform from stored values to training targets ------------------------------------
def _normalise(values: np.ndarray, target_sum: float) -> np.ndarray:
    """``log1p(x / total * target_sum)`` in place (rows with total 0 stay 0), like pp.log_normalize."""
    totals = values.sum(1, keepdims=True, dtype=np.float64)
    scale = np.where(totals > 0, target_sum / np.maximum(totals, 1e-12), 0.0).astype(np.float32)
    values *= scale
    np.log1p(values, out=values)
    return values


def make_prepare(transform: CoordinateTransform, config: NTFConfig, stats: dict, normalize: str | None):
    """The block transform of :class:`StreamingCells`: coordinates to the unit cube, values to targets."""
    mean, std = stats["mean"], stats["std"]

    def prepare(coords, values, mask):
        u = transform.to_unit(coords)
        log_size = None
        if config.loss == "mse":
            if normalize == "log1p":
                values = _normalise(values, stats["target_sum"])
            values -= mean
            values /= std
        else:
            size = np.maximum(values.sum(1, keepdims=True), 1.0) / stats["median_size"]
            log_size = np.log(size).astype(np.float32)
        return u, values, log_size, mask

    return prepare


# -- passes over the store -------------------------------------------------------------------
def _coordinate_pass(store: AtlasStore, seed: int) -> dict:
    """Exact bounds and section z; the measure_sampling and support subsamples."""
    rng = np.random.default_rng([seed, 23])
    blocks = store.blocks()
    # one extra label for cells without a section (categorical code -1), as tl.fit's astype(str) gives "nan"
    n_sec = len(store.section_names) + 1 if store.has_sections else 1
    counts = np.zeros(n_sec, dtype=np.int64)
    if store.has_sections:
        for a, b in blocks:
            counts += np.bincount(_codes(store, a, b, n_sec), minlength=n_sec)[:n_sec]
    else:
        counts[0] = store.n_obs
    p_sampling = np.minimum(1.0, 1.2 * SAMPLING_CELLS_PER_SECTION / np.maximum(counts, 1))
    p_support = min(1.0, SUPPORT_CELLS / max(store.n_obs, 1))
    lo = np.full(store.n_input_dims, np.inf)
    hi = np.full(store.n_input_dims, -np.inf)
    z_values: set = set()
    z_capped = False
    picked, picked_codes, support = [], [], []
    for a, b in blocks:
        coords = store.read_coords(a, b)
        codes = _codes(store, a, b, n_sec) if store.has_sections else np.zeros(b - a, dtype=np.int64)
        lo, hi = np.minimum(lo, coords.min(0)), np.maximum(hi, coords.max(0))
        if not z_capped:
            z_values.update(np.unique(coords[:, 2]).tolist())
            z_capped = len(z_values) > 100_000
        take = rng.random(b - a) < p_sampling[codes]
        picked.append(coords[take])
        picked_codes.append(codes[take])
        support.append(coords[rng.random(b - a) < p_support])
    return {
        "lo": lo, "hi": hi, "counts": counts, "z_values": None if z_capped else np.array(sorted(z_values)),
        "coords": np.concatenate(picked), "codes": np.concatenate(picked_codes), "support": np.concatenate(support),
    }


def _codes(store: AtlasStore, a: int, b: int, n_sec: int) -> np.ndarray:
    codes = store.read_sections(a, b)
    return np.where(codes < 0, n_sec - 1, codes)


def _survey_blocks(store: AtlasStore, stats_cells: int, seed: int) -> list[tuple[int, int]]:
    blocks = store.blocks()
    order = np.random.default_rng([seed, 29]).permutation(len(blocks))
    chosen, total = [], 0
    for i in order:
        if total >= stats_cells:
            break
        chosen.append(blocks[i])
        total += blocks[i][1] - blocks[i][0]
    return sorted(chosen)


def _value_pass(store, blocks, val_rows, normalize, target_sum, loss, progress_name=None) -> dict:
    """Per-gene statistics of the targets over ``blocks`` (validation rows excluded), in float64."""
    g = store.n_vars
    totals_all, sums, squares, counted = [], np.zeros(g), np.zeros(g), np.zeros(g)
    need_median = (normalize == "log1p" and target_sum is None) or loss != "mse"
    if need_median:
        for a, b in blocks:  # all cells, as pp.log_normalize would see them before a split
            totals_all.append(store.read_values(a, b).sum(1, dtype=np.float64))
        totals = np.concatenate(totals_all)
        median = float(np.median(totals[totals > 0])) if (totals > 0).any() else 1.0
    else:
        median = 1.0
    if normalize == "log1p" and target_sum is None:
        target_sum = median
    col_totals, grand_total = np.zeros(g), 0.0
    for a, b in blocks:
        keep = _keep(a, b, val_rows)
        values = store.read_values(a, b)[keep]
        mask = store.read_mask(a, b)
        mask = None if mask is None else mask[keep]
        if loss != "mse":
            col_totals += values.sum(0, dtype=np.float64)
            grand_total += float(values.sum(dtype=np.float64))
            continue
        if normalize == "log1p":
            values = _normalise(values, target_sum)
        if mask is None:
            sums += values.sum(0, dtype=np.float64)
            squares += np.square(values, dtype=np.float64).sum(0)
            counted += len(values)
        else:
            sums += (values * mask).sum(0, dtype=np.float64)
            squares += (np.square(values, dtype=np.float64) * mask).sum(0)
            counted += mask.sum(0, dtype=np.float64)
    if loss == "mse":
        n = np.maximum(counted, 1)
        mean = sums / n
        std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
        std = np.where(std > 1e-8, std, 1.0)
        return {"mean": mean.astype(np.float32), "std": std.astype(np.float32), "median_size": 1.0,
                "target_sum": None if target_sum is None else float(target_sum)}
    mean = (col_totals / max(grand_total, 1e-8) * median).astype(np.float32)
    return {"mean": mean, "std": np.ones_like(mean), "median_size": median, "target_sum": None}


def _keep(a, b, rows) -> np.ndarray:
    keep = np.ones(b - a, dtype=bool)
    lo, hi = np.searchsorted(rows, [a, b])
    keep[rows[lo:hi] - a] = False
    return keep


def plan_atlas_fit(store: AtlasStore, config: NTFConfig, *, normalize=None, target_sum=None, seed=0,
                   validation=None, stats_cells=1_000_000, max_validation_cells=20_000) -> AtlasPlan:
    """Measure sampling, resolve the config, compute target statistics and pick validation cells.

    Reads the coordinates once and at most ``stats_cells`` cells' values twice; never all of ``X``.
    """
    started = time.perf_counter()
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be None or 'log1p', not {normalize!r}")
    if normalize is not None and config.loss != "mse":
        raise ValueError(f"loss={config.loss!r} models raw counts: pass normalize=None with count data")
    if store.n_obs == 0:
        raise ValueError(f"{store.path} has no cells")
    cp = _coordinate_pass(store, seed)
    sections = None
    if store.has_sections:
        names = np.asarray([*store.section_names, "nan"], dtype=object)
        sections = names[cp["codes"]].astype(str)
    # the coordinates are a per-section subsample: tell measure_sampling the full section sizes
    if sections is None:
        full_counts = {None: int(store.n_obs)}
    else:
        full_counts = {str(name): int(count) for name, count in zip(names, cp["counts"])}
    sampling = measure_sampling(cp["coords"], sections, seed=seed, full_counts=full_counts)
    sampling = Sampling(lo=cp["lo"], hi=cp["hi"], spacing=sampling.spacing)
    n_z = len(cp["z_values"]) if cp["z_values"] is not None else math.inf
    has_sections = sections is not None and n_z <= max(50, store.n_obs // 20)
    config, transform = resolve_config(config, sampling, has_sections, store.n_vars, store.n_obs)
    t_coords = time.perf_counter() - started

    survey = _survey_blocks(store, stats_cells, seed)
    val_rows = np.zeros(0, dtype=np.int64)
    if validation is None and config.validation_fraction > 0 and store.n_obs >= 200:
        n_val = max(1, min(int(round(config.validation_fraction * store.n_obs)), int(max_validation_cells)))
        rows = np.concatenate([np.arange(a, b) for a, b in survey])
        n_val = min(n_val, len(rows) // 2)
        val_rows = np.sort(np.random.default_rng([seed, 31]).choice(rows, n_val, replace=False))
    stats = _value_pass(store, survey, val_rows, normalize, target_sum, config.loss)
    val_coords = val_values = val_mask = None
    if len(val_rows):
        val_coords = store.read_rows(val_rows, "coords")
        val_values = store.read_rows(val_rows, "values")
        val_mask = store.read_rows(val_rows, "mask") if store.has_mask else None
    section_z = []
    if has_sections and cp["z_values"] is not None and len(cp["z_values"]) < 10_000:
        section_z = [float(z) for z in cp["z_values"]]
    support = _support(cp["support"], transform, config, seed)
    return AtlasPlan(
        config=config, transform=transform, sampling=sampling, has_sections=has_sections, stats=stats,
        section_z=section_z, support=support, val_rows=val_rows, val_coords=val_coords, val_values=val_values,
        val_mask=val_mask,
        survey={"stats_cells": int(sum(b - a for a, b in survey)), "stats_blocks": len(survey),
                "sampling_cells": int(len(cp["coords"])), "coordinate_pass_s": round(t_coords, 3),
                "plan_s": round(time.perf_counter() - started, 3), "normalize": normalize,
                "target_sum": stats.get("target_sum")},
    )


def _validation_cells(plan: AtlasPlan, prepare, validation, store, spatial_key, time_key, layer, normalize):
    if validation is False:
        return None
    if validation is None:
        if plan.val_values is None:
            return None
        u, target, log_size, mask = prepare(plan.val_coords, plan.val_values.copy(), plan.val_mask)
    else:
        import anndata as ad

        from .._validate import get_matrix, to_dense_float32
        from ..tl._fit import _coords_with_time

        if not isinstance(validation, ad.AnnData):
            raise TypeError("validation must be an AnnData of held-out cells, None (random cells) or False (none)")
        missing = [g for g in store.var_names if g not in set(validation.var_names)]
        if missing:
            raise ValueError(f"validation lacks {len(missing)} training genes, e.g. {missing[:5]}")
        validation = validation[:, store.var_names]
        coords = _coords_with_time(validation, spatial_key, time_key)
        values = to_dense_float32(get_matrix(validation, layer)).copy()
        u, target, log_size, mask = prepare(coords, values, None)

    def t(x):
        return None if x is None else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    return InMemoryCells(t(u), t(target), t(log_size), t(mask))


def _fingerprint(store: AtlasStore, config: NTFConfig, seed: int, extra: str) -> str:
    """Identity of a streaming run: store shape/genes/encoding, a sample of its content, config, seed."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{store.n_obs}x{store.n_vars};{store.x_kind};{store.layer};{store.spatial_key}".encode())
    h.update("\n".join(store.var_names).encode())
    for a, b in store.blocks()[:1] + store.blocks()[-1:]:
        h.update(np.ascontiguousarray(store.read_coords(a, b)).tobytes())
        h.update(np.ascontiguousarray(store.read_values(a, b)).tobytes())
    h.update(config.to_json().encode())
    h.update(f"seed={seed};{extra}".encode())
    return h.hexdigest()


def _dist():
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_blocks(blocks: list, rank: int, world: int, seed: int) -> list:
    """This rank's blocks: a seeded shuffle of all blocks, then every ``world``-th one."""
    order = np.random.default_rng([seed, 37]).permutation(len(blocks))
    return sorted(blocks[i] for i in order[rank::world])


def fit_atlas(
    store,
    *,
    layer: str | None = None,
    spatial_key: str = "spatial_3d",
    section_key: str | None = "section",
    time_key: str | None = None,
    normalize: str | None = None,
    target_sum: float | None = None,
    config: NTFConfig | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    loss: str | None = None,
    device="auto",
    seed: int = 0,
    validation=None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    cache_bytes: float = 512e6,
    block_rows: int | None = None,
    reuse: float = 1.0,
    prefetch: int = 2,
    readers: int = 1,
    deterministic: bool = True,
    stats_cells: int = 1_000_000,
    max_validation_cells: int = 20_000,
    compile: bool = False,
    amp: str | None = None,
) -> NTFField:
    """Fit a neural transcriptomic field to an atlas on disk, streaming it chunk by chunk.

    Memory stays bounded whatever the number of cells: the training buffer holds
    ``cache_bytes`` of cells (see :func:`ntf_utils.atlas.memory_bound` for the whole data path),
    the statistics passes hold one block at a time, and only ``max_validation_cells`` cells and a
    ~2,000-cell-per-section coordinate subsample stay in memory.

    Parameters
    ----------
    store
        An AnnData on disk: a zarr directory (``adata.write_zarr``,
        :func:`~ntf_utils.atlas.write_synthetic_atlas`) or an ``.h5ad`` file, or an AnnData opened
        with ``backed="r"``. ``X`` (or ``layer``) dense or CSR; coordinates in ``obsm[spatial_key]``.
    layer
        Layer with the values (default ``X``).
    spatial_key, section_key, time_key
        ``obsm`` key of (x, y, z); categorical ``obs`` column of the sections; numeric ``obs``
        column with time (a 4D field).
    normalize
        ``None``: fit the stored values as they are (already log-normalised, as for
        :func:`ntf_utils.tl.fit`); ``"log1p"``: stored values are counts, normalised per cell on the
        fly to ``log1p(x / total * target_sum)`` (:func:`ntf_utils.pp.log_normalize`'s transform).
    target_sum
        Total of the ``"log1p"`` normalisation (default: median total over the statistics cells).
    config, steps, batch_size, loss
        As in :func:`ntf_utils.tl.fit`. ``batch_size`` is per process in a distributed fit.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    seed
        Seeds everything; on CPU with ``deterministic=True`` the same seed gives the same model.
    validation
        ``None``: hold out ``config.validation_fraction`` of the cells (at most
        ``max_validation_cells``, from random blocks) for early stopping; an AnnData of held-out
        cells; or ``False``.
    checkpoint_dir
        Resumable checkpoints (per rank in a distributed fit). The run's identity covers the
        store's shape, genes and first/last block, the config and the seed; a resumed run
        continues from the saved weights and optimizer, but the block order restarts.
    progress
        Show a progress bar (rank 0 only).
    cache_bytes
        Size of the training buffer (more = better mixing of sections within a minibatch).
    block_rows
        Cells per read (default: the store's row chunk).
    reuse
        Average times a cell is drawn while buffered before its block is replaced.
    prefetch
        Blocks read ahead of use by the background readers.
    readers
        Background reader threads (more keep a fast GPU fed: each decompresses on its own core).
    deterministic
        Swap blocks at fixed steps (reproducible; the step waits for a late reader). ``False``:
        never wait for the disk (for fast GPUs).
    stats_cells
        Cells used for the library size and per-gene statistics (whole random blocks).
    max_validation_cells
        Cap on the held-out validation cells.
    compile, amp
        Faster training forward passes (:class:`~ntf_utils.atlas.FastForward`): ``torch.compile``
        and, on CUDA, autocast ``"bf16"``/``"fp16"``.

    Returns
    -------
    The trained :class:`~ntf_utils.model.field.NTFField` (on every rank in a distributed fit).
    ``field.info["streaming"]`` records the buffer, the bound and what was read.
    """
    config = NTFConfig() if config is None else config
    overrides = {k: v for k, v in {"steps": steps, "batch_size": batch_size, "loss": loss}.items() if v is not None}
    config = config.replace(**overrides) if overrides else config
    rank, world = _dist()
    opened = open_atlas(store, layer=layer, spatial_key=spatial_key, section_key=section_key, time_key=time_key)
    try:
        return _fit(opened, config, rank, world, normalize=normalize, target_sum=target_sum, device=device,
                    seed=seed, validation=validation, checkpoint_dir=checkpoint_dir, progress=progress,
                    cache_bytes=cache_bytes, block_rows=block_rows, reuse=reuse, prefetch=prefetch, readers=readers,
                    deterministic=deterministic, stats_cells=stats_cells,
                    max_validation_cells=max_validation_cells, compile=compile, amp=amp, layer=layer,
                    spatial_key=spatial_key, time_key=time_key)
    finally:
        if opened is not store:
            opened.close()


def _fit(store, config, rank, world, *, normalize, target_sum, device, seed, validation, checkpoint_dir,
         progress, cache_bytes, block_rows, reuse, prefetch, readers, deterministic, stats_cells, max_validation_cells,
         compile, amp, layer, spatial_key, time_key) -> NTFField:
    started = time.perf_counter()
    validation_mode = validation if validation is None or validation is False else "anndata"
    blocks = store.blocks(block_rows)
    if len(blocks) < world:
        raise ValueError(f"{store.path} has {len(blocks)} blocks of {blocks[0][1] - blocks[0][0]} cells for {world} "
                         "processes: every rank needs at least one; pass a smaller block_rows or use fewer processes")
    plan = None
    if rank == 0:
        try:
            plan = plan_atlas_fit(store, config, normalize=normalize, target_sum=target_sum, seed=seed,
                                  validation=validation_mode, stats_cells=stats_cells,
                                  max_validation_cells=max_validation_cells)
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
    config = plan.config
    prepare = make_prepare(plan.transform, config, plan.stats, normalize)
    val_cells = _validation_cells(plan, prepare, validation, store, spatial_key, time_key, layer, normalize)

    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None and world > 1:
        dev = torch.device("cuda", torch.cuda.current_device())
    mine = shard_blocks(blocks, rank, world, seed) if world > 1 else blocks
    rows = max(b - a for a, b in blocks)
    row_bytes = 4 * (store.n_input_dims + store.n_vars + (1 if config.loss != "mse" else 0)
                     + (store.n_vars if store.has_mask else 0))
    cache_blocks = max(2, int(cache_bytes // (rows * row_bytes)))

    torch.manual_seed(seed)
    network = FieldNetwork(config, store.n_input_dims, store.n_vars).to(dev)
    _init_output_bias(network, config, plan.stats)
    model = accelerated_model(network, compile=compile, amp=amp)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if config.loss != "nb":
            network.log_theta.requires_grad_(False)  # unused: DDP needs every trained parameter used
        model = DDP(model if model is not None else network, device_ids=[dev.index] if dev.type == "cuda" else None)
    ckpt_dir = None
    if checkpoint_dir is not None:
        ckpt_dir = Path(checkpoint_dir) / f"rank{rank}" if world > 1 else Path(checkpoint_dir)
    fingerprint = _fingerprint(store, config, seed, f"world={world};normalize={normalize};rows={rows}")

    cells = StreamingCells(store, prepare, blocks=mine, cache_blocks=cache_blocks, batch_size=config.batch_size,
                           reuse=reuse, exclude=plan.val_rows, seed=seed + 1000 * rank, device=dev,
                           prefetch=prefetch, readers=readers, deterministic=deterministic)
    try:
        t_train, cpu_train = time.perf_counter(), time.process_time()
        state = train(network, config, cells, validation=val_cells, seed=seed, device=dev, checkpoint_dir=ckpt_dir,
                      fingerprint=fingerprint, progress=progress and rank == 0, model=model)
        train_s, train_cpu_s = time.perf_counter() - t_train, time.process_time() - cpu_train
        streaming = {
            "blocks": len(mine), "block_rows": rows, "cache_blocks": cells.cache_blocks,
            "buffer_bytes": cells.buffer_bytes, "refresh_every": cells.refresh_every,
            "blocks_loaded": cells.blocks_loaded, "swaps_skipped": cells.swaps_skipped,
            "memory_bound_bytes": memory_bound(rows, store.n_vars, store.n_input_dims, cells.cache_blocks,
                                               cells.prefetch, 4, config.loss != "mse", store.has_mask,
                                               cells.readers),
            "readers": cells.readers,
            "train_seconds": round(train_s, 3),
            "train_cpu_seconds": round(train_cpu_s, 3),
            "cells_per_s": round(state.step * config.batch_size * world / max(train_s, 1e-9), 1),
            "world_size": world, "compile": bool(compile), "amp": amp, **plan.survey,
        }
    finally:
        cells.close()
    seconds = time.perf_counter() - started
    info = {
        "n_cells": int(store.n_obs),
        "n_genes": int(store.n_vars),
        "bounds": np.column_stack([plan.sampling.lo, plan.sampling.hi]).tolist(),
        "spacing": plan.sampling.spacing.tolist(),
        "xy_spacing": float(plan.sampling.spacing[0]),
        "section_z": plan.section_z,
        "layer": layer,
        "spatial_key": spatial_key,
        "time_key": time_key,
        "steps_run": int(state.step),
        "best_step": int(state.best_step),
        "stopped_early": bool(state.stopped_early),
        "fit_seconds": round(seconds, 3),
        "device": str(dev),
        "backend": network.encoding.backend(),
        "n_params": int(sum(p.numel() for p in network.parameters())),
        "ntf_utils_version": __version__,
        "torch_version": torch.__version__,
        "store": str(store.path),
        "normalize": normalize,
        "target_sum": plan.stats.get("target_sum"),
        "streaming": streaming,
    }
    network.log_theta.requires_grad_(True)
    return NTFField(network, config, plan.transform, list(store.var_names), plan.stats["mean"], plan.stats["std"],
                    plan.support, state.history, info)
