"""A store on disk as the fit pipeline's cell source: streamed, never read whole.

Three steps of a fit need all the data at once; :class:`StoreSource` answers them by streaming:

1. **Survey** (bounds, section spacing, in-plane spacing, the sections): one pass over the
   coordinates and section codes (``24 + 1`` bytes per cell) for exact bounds and section z values,
   each section's geometry (:class:`SectionTally`: centroid, RMS radius, median z and time) and a
   per-section subsample of about 2,000 cells, on which :func:`~ntf_utils.model._coords.measure_sampling`
   runs with the full section sizes (so the in-plane spacing is scaled to the full density).
2. **Target statistics** (library size, per-gene mean and standard deviation): from up to
   ``stats_cells`` cells in whole random blocks (all cells when the atlas is smaller), in float64.
3. **Training cells**: :class:`~ntf_utils.atlas.StreamingCells`, a bounded buffer of blocks
   refreshed in the background (each ``torchrun`` rank streams its own shard of blocks);
   validation cells are a fixed random set held out of training. With section effects or
   registration both carry each cell's training section code, as in-memory cells do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .._anndata import log1p_rows, read_sections
from .._constants import Key
from ..model._coords import Sampling, measure_sampling
from ..model._section_effects import section_codes
from ..model._sources import CellSource, Survey, capped_validation, prepare_targets, read_validation, to_cells
from ._store import AtlasStore
from ._streaming import StreamingCells, memory_bound

__all__ = ["StreamingOptions", "StoreSource", "SectionTally", "section_lookup", "shard_blocks"]

SAMPLING_CELLS_PER_SECTION = 2000  # cells per section whose spacing measure_sampling measures
SUPPORT_CELLS = 100_000  # the support's size, as model._sources.MAX_SUPPORT_POINTS
MAX_TALLIED_VALUES = 100_000  # distinct (section, z or time) pairs counted for exact medians
NORMALIZE = (None, "log1p")


@dataclass
class StreamingOptions:
    """How a store is streamed: the buffer, the readers and the statistics passes.

    Parameters
    ----------
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
    """

    cache_bytes: float = 512e6
    block_rows: int | None = None
    reuse: float = 1.0
    prefetch: int = 2
    readers: int = 1
    deterministic: bool = True
    stats_cells: int = 1_000_000
    max_validation_cells: int = 20_000


# -- the sections' geometry ------------------------------------------------------------------
class SectionTally:
    """Per-section geometry of a store, accumulated block by block in the coordinate pass.

    Sums of x, y and ``x^2 + y^2`` per section code give each section's centroid and RMS radius
    about it (``sqrt(mean(x^2 + y^2) - |centroid|^2)``, about a fixed origin for precision), and
    counts of its distinct z (and time) values its exact median, as
    :meth:`~ntf_utils.model._sources.AnnDataSource.survey` computes from all cells. Sectioned data
    have a few distinct z per section; past ``MAX_TALLIED_VALUES`` distinct pairs (z varying within
    sections) the counting stops and the medians come from the per-section sampling subsample.

    Parameters
    ----------
    n_codes
        Section codes ``0 .. n_codes - 1`` (the store's categories, and a last one for no section).
    n_dims
        Coordinate columns: 3, or 4 with time (whose median is each section's stage).
    """

    def __init__(self, n_codes: int, n_dims: int) -> None:
        self.n_codes = n_codes
        self.sums = np.zeros((n_codes, 3))  # x, y, x^2 + y^2 about origin
        self.origin = None
        self.median_columns = (2, 3) if n_dims == 4 else (2,)
        self.counts: dict | None = {}  # (column, code, value) -> cells; None once capped

    def add(self, coords: np.ndarray, codes: np.ndarray) -> None:
        """Count the cells ``coords`` (original units) of section ``codes``."""
        if self.origin is None:
            self.origin = coords[0, :2].copy() if len(coords) else np.zeros(2)
        xy = coords[:, :2] - self.origin
        for k, weights in enumerate((xy[:, 0], xy[:, 1], (xy**2).sum(1))):
            self.sums[:, k] += np.bincount(codes, weights=weights, minlength=self.n_codes)[: self.n_codes]
        if self.counts is not None:
            self._count_values(coords, codes)

    def _count_values(self, coords, codes) -> None:
        for column in self.median_columns:
            pairs, counts = np.unique(np.column_stack([codes, coords[:, column]]), axis=0, return_counts=True)
            for (code, value), count in zip(pairs.tolist(), counts.tolist()):
                key = (column, int(code), value)
                self.counts[key] = self.counts.get(key, 0) + count
        if len(self.counts) > MAX_TALLIED_VALUES:
            self.counts = None

    def planes(self, codes: list[int], cells: np.ndarray) -> np.ndarray:
        """``(len(codes), 3)`` centre x, centre y and RMS radius of the sections ``codes``."""
        n = np.maximum(cells[codes], 1)[:, None]
        mean = self.sums[codes] / n
        radius = np.sqrt(np.maximum(mean[:, 2] - (mean[:, :2] ** 2).sum(1), 0.0))
        return np.column_stack([mean[:, :2] + self.origin, radius])

    def medians(self, column: int, codes: list[int], sample: np.ndarray, sample_codes: np.ndarray) -> list:
        """Median of coordinate ``column`` in each section of ``codes``: exact from the counted
        values, or of the sampling subsample (``sample``, ``sample_codes``) past the cap."""
        if self.counts is None:
            return [float(np.median(sample[sample_codes == code, column])) for code in codes]
        by_code: dict = {}
        for (col, code, value), count in self.counts.items():
            if col == column:
                by_code.setdefault(code, []).append((value, count))
        return [_median_of_counts(np.array(by_code[code])) for code in codes]


def _median_of_counts(value_counts: np.ndarray) -> float:
    """Median of values given as ``(value, count)`` rows (the mean of the middle two for an even total)."""
    value_counts = value_counts[np.argsort(value_counts[:, 0])]
    cumulative = np.cumsum(value_counts[:, 1])
    total = int(cumulative[-1])
    middle = np.searchsorted(cumulative, [(total - 1) // 2, total // 2], side="right")
    return float(value_counts[middle, 0].mean())


def _survey_sections(store: AtlasStore, cp: dict) -> tuple[list, list, list]:
    """Sorted names of the store's sections that hold cells, their median z and their planes
    (``[centre_x, centre_y, rms_radius]``, and the median time with a time column); cells without a
    section are no section."""
    if not store.has_sections:
        return [], [], []
    tally, cells = cp["tally"], cp["counts"]
    held = {str(name): code for code, name in enumerate(store.section_names) if cells[code] > 0}
    names = sorted(held)
    codes = [held[name] for name in names]
    medians = tally.medians(2, codes, cp["coords"], cp["codes"])
    planes = tally.planes(codes, cells)
    if store.n_input_dims == 4:
        planes = np.column_stack([planes, tally.medians(3, codes, cp["coords"], cp["codes"])])
    return names, medians, planes.astype(float).tolist()


def section_lookup(store: AtlasStore, names: list) -> np.ndarray | None:
    """Training code (index into ``names``, -1: not a training section) of each of the store's
    section categories, then a last -1 that store code -1 (no section) picks; ``None`` without
    ``names`` or without sections in the store."""
    if not names or not store.has_sections:
        return None
    codes = section_codes(np.asarray(store.section_names, dtype=object), list(names))
    return np.append(codes, -1).astype(np.int64)


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
    tally = SectionTally(n_sec, store.n_input_dims)
    for a, b in blocks:
        coords = store.read_coords(a, b)
        codes = _codes(store, a, b, n_sec) if store.has_sections else np.zeros(b - a, dtype=np.int64)
        if store.has_sections:
            tally.add(coords, codes)
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
        "tally": tally,
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


def _value_pass(store, blocks, val_rows, normalize, target_sum, loss) -> dict:
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
            values = log1p_rows(values, target_sum)
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


def shard_blocks(blocks: list, rank: int, world: int, seed: int) -> list:
    """This rank's blocks: a seeded shuffle of all blocks, then every ``world``-th one."""
    order = np.random.default_rng([seed, 37]).permutation(len(blocks))
    return sorted(blocks[i] for i in order[rank::world])


class StoreSource(CellSource):
    """Cells of an open :class:`AtlasStore`, streamed.

    Parameters
    ----------
    store
        The open store.
    normalize
        ``None``: the stored values are the targets' scale already; ``"log1p"``: stored counts
        are normalised per cell on the fly (:func:`ntf_utils.pp.log_normalize`'s transform).
    target_sum
        Total of the ``"log1p"`` normalisation (default: median total over the statistics cells).
    options
        :class:`StreamingOptions`.
    loss
        The training loss (count losses take the stored counts as they are).
    """

    def __init__(self, store: AtlasStore, *, normalize: str | None, target_sum: float | None,
                 options: StreamingOptions, loss: str) -> None:
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be None or 'log1p', not {normalize!r}")
        if normalize is not None and loss != "mse":
            raise ValueError(f"loss={loss!r} models raw counts: pass normalize=None with count data")
        if store.n_obs == 0:
            raise ValueError(f"{store.path} has no cells")
        self.store, self.normalize, self.target_sum, self.options = store, normalize, target_sum, options
        self.n_obs, self.n_vars, self.n_input_dims = store.n_obs, store.n_vars, store.n_input_dims
        self.var_names = list(store.var_names)
        self.blocks = store.blocks(options.block_rows)
        self._survey_blocks: list = []
        self._held_out_rows = {}

    def survey(self, seed: int) -> Survey:
        cp = _coordinate_pass(self.store, seed)
        sections = None
        if self.store.has_sections:
            names = np.asarray([*self.store.section_names, "nan"], dtype=object)
            sections = names[cp["codes"]].astype(str)
            full_counts = {str(name): int(count) for name, count in zip(names, cp["counts"])}
        else:
            full_counts = {None: int(self.store.n_obs)}
        # the coordinates are a per-section subsample: tell measure_sampling the full section sizes
        sampling = measure_sampling(cp["coords"], sections, seed=seed, full_counts=full_counts)
        sampling = Sampling(lo=cp["lo"], hi=cp["hi"], spacing=sampling.spacing)
        self._sampling_cells = int(len(cp["coords"]))
        return Survey(sampling, sections is not None, cp["z_values"], cp["support"], *_survey_sections(self.store, cp))

    def hold_out(self, config, seed: int, validation) -> np.ndarray:
        self._survey_blocks = _survey_blocks(self.store, self.options.stats_cells, seed)
        val_rows = np.zeros(0, dtype=np.int64)
        fraction = config.training.validation_fraction
        if validation is None and fraction > 0 and self.n_obs >= 200:
            n_val = max(1, min(int(round(fraction * self.n_obs)), int(self.options.max_validation_cells)))
            rows = np.concatenate([np.arange(a, b) for a, b in self._survey_blocks])
            n_val = min(n_val, len(rows) // 2)
            val_rows = np.sort(np.random.default_rng([seed, 31]).choice(rows, n_val, replace=False))
        return val_rows

    def target_stats(self, loss: str, held_out: np.ndarray) -> dict:
        stats = _value_pass(self.store, self._survey_blocks, held_out, self.normalize, self.target_sum, loss)
        self._target_sum = stats.get("target_sum")
        return stats

    def plan_facts(self) -> dict:
        return {"stats_cells": int(sum(b - a for a, b in self._survey_blocks)),
                "stats_blocks": len(self._survey_blocks), "sampling_cells": self._sampling_cells,
                "target_sum": self._target_sum}

    def _prepare(self, plan):
        loss, stats, transform, normalize = plan.config.training.loss, plan.stats, plan.transform, self.normalize

        def prepare(coords, values, mask):
            return prepare_targets(coords, values, mask, transform, loss, stats, normalize)

        return prepare

    def training_cells(self, plan, *, rank: int, world: int, device, seed: int) -> StreamingCells:
        if len(self.blocks) < world:
            raise ValueError(f"{self.store.path} has {len(self.blocks)} blocks of "
                             f"{self.blocks[0][1] - self.blocks[0][0]} cells for {world} processes: every rank "
                             "needs at least one; pass a smaller block_rows or use fewer processes")
        mine = shard_blocks(self.blocks, rank, world, seed) if world > 1 else self.blocks
        store, opts = self.store, self.options
        # every rank maps its own shard's codes: plan.sections is the same on all of them
        lookup = section_lookup(store, plan.sections)
        row_bytes = 4 * (store.n_input_dims + store.n_vars + (1 if plan.config.training.loss != "mse" else 0)
                         + (store.n_vars if store.has_mask else 0)) + (8 if lookup is not None else 0)
        cache_blocks = max(2, int(opts.cache_bytes // (self._rows_per_block() * row_bytes)))
        self._mine, self._count_loss, self._coded = mine, plan.config.training.loss != "mse", lookup is not None
        return StreamingCells(store, self._prepare(plan), blocks=mine, cache_blocks=cache_blocks,
                              batch_size=plan.config.training.batch_size, reuse=opts.reuse, exclude=plan.held_out,
                              seed=seed + 1000 * rank, device=device, prefetch=opts.prefetch, readers=opts.readers,
                              deterministic=opts.deterministic, section_lookup=lookup)

    def _rows_per_block(self) -> int:
        return max(b - a for a, b in self.blocks)

    def validation_cells(self, plan, validation):
        prepare = self._prepare(plan)
        if len(plan.held_out):
            store, rows = self.store, plan.held_out
            mask = store.read_rows(rows, "mask") if store.has_mask else None
            lookup = section_lookup(store, plan.sections)
            codes = None if lookup is None else lookup[store.read_rows(rows, "sections")]
            return to_cells(*prepare(store.read_rows(rows, "coords"), store.read_rows(rows, "values"), mask), codes)
        if validation is None or validation is False:
            return None
        store = self.store
        validation = capped_validation(validation)
        coords, values = read_validation(validation, self.var_names, store.layer, store.spatial_key, store.time_key)
        # as AnnDataSource: cells of training sections with their effect, others at the reference level
        labels = None if store.section_key is None else read_sections(validation, store.section_key)
        return to_cells(*prepare(coords, values, None), section_codes(labels, plan.sections))

    def fingerprint(self, config, seed: int, validation, world: int) -> str:
        """Store shape/genes/encoding, a sample of its content, config, seed and streaming setup."""
        store = self.store
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{store.n_obs}x{store.n_vars};{store.x_kind};{store.layer};{store.spatial_key}".encode())
        h.update("\n".join(store.var_names).encode())
        for a, b in self.blocks[:1] + self.blocks[-1:]:
            h.update(np.ascontiguousarray(store.read_coords(a, b)).tobytes())
            h.update(np.ascontiguousarray(store.read_values(a, b)).tobytes())
        h.update(config.to_json().encode())
        h.update(f"seed={seed};world={world};normalize={self.normalize};rows={self._rows_per_block()};"
                 f"validation={type(validation).__name__}".encode())
        return h.hexdigest()

    def describe(self, plan, cells: StreamingCells) -> dict:
        store, rows = self.store, self._rows_per_block()
        streaming = {
            "blocks": len(self._mine), "block_rows": rows, "cache_blocks": cells.cache_blocks,
            "buffer_bytes": cells.buffer_bytes, "refresh_every": cells.refresh_every,
            "blocks_loaded": cells.blocks_loaded, "swaps_skipped": cells.swaps_skipped,
            "memory_bound_bytes": memory_bound(rows, store.n_vars, store.n_input_dims, cells.cache_blocks,
                                               cells.prefetch, 4, self._count_loss, store.has_mask, cells.readers,
                                               self._coded),
            "readers": cells.readers,
            "normalize": self.normalize, **plan.extra,
        }
        out = {"layer": store.layer, "spatial_key": store.spatial_key, "time_key": store.time_key,
               "store": str(store.path), "normalize": self.normalize, "target_sum": plan.extra["target_sum"],
               "streaming": streaming}
        if store.units is not None:  # as AnnDataSource.describe: views and exports label their axes with them
            out[Key.uns.units] = store.units
        return out
