"""Cell sources: where a fit's cells come from. The fit pipeline's only source-specific stage.

:func:`ntf_utils.model.fit_field` asks a source for five things, in order: a survey of the
coordinates (bounds, spacing, section z, the tissue support), the rows held out for early stopping,
the per-gene target statistics, the training cells and the validation cells. :class:`AnnDataSource`
answers from an AnnData in memory; :class:`ntf_utils.atlas.StoreSource` streams a store on disk.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._anndata import coords_with_time, dense_float32, read_mask, read_matrix, read_sections, read_units
from .._constants import Key
from .._validate import check_finite_values, check_nonnegative_counts, looks_like_raw_counts
from ._coords import Sampling, measure_sampling
from ._section_effects import section_codes
from ._train import InMemoryCells, standardise

__all__ = ["Survey", "CellSource", "AnnDataSource", "capped_validation", "prepare_targets", "to_cells",
           "read_validation"]

MAX_SUPPORT_POINTS = 100_000  # training positions kept as the field's inside-the-tissue test


@dataclass
class Survey:
    """What a source knows about its coordinates before training.

    Attributes
    ----------
    sampling
        Bounds and sample spacing (:func:`~ntf_utils.model._coords.measure_sampling`).
    sectioned
        Whether cells carry section labels.
    z_values
        Sorted distinct z values (``None`` when there are too many to list).
    support
        Training coordinates (all, or a random subsample) for the tissue support.
    sections
        Distinct section labels, sorted (empty when the cells carry none).
    section_z
        Median z of each of ``sections``.
    section_xy
        ``[centre_x, centre_y, rms_radius]`` of each of ``sections`` in the plane, original units
        (the pivot and size of its pose when registering; empty where unknown); with a time axis a
        fourth entry, the section's median time (its stage).
    """

    sampling: Sampling
    sectioned: bool
    z_values: np.ndarray | None
    support: np.ndarray
    sections: list = field(default_factory=list)
    section_z: list = field(default_factory=list)
    section_xy: list = field(default_factory=list)


class CellSource:
    """Interface of a fit's data source (see the module docstring for the order of the calls).

    Attributes
    ----------
    n_obs, n_vars, n_input_dims
        Cells, genes, and coordinate columns (3, or 4 with time).
    var_names
        Gene names in output order.
    """

    in_memory = False  # training cells are InMemoryCells (what the closed-form smoother is solved on)

    n_obs: int
    n_vars: int
    n_input_dims: int
    var_names: list

    def survey(self, seed: int) -> Survey:
        """Bounds, spacing, section z and support coordinates."""
        raise NotImplementedError

    def hold_out(self, config, seed: int, validation) -> np.ndarray:
        """Sorted rows held out of training for early stopping (empty for none)."""
        raise NotImplementedError

    def target_stats(self, loss: str, held_out: np.ndarray) -> dict:
        """``mean``, ``std`` (per gene), ``median_size`` and ``target_sum`` of the training targets."""
        raise NotImplementedError

    def training_cells(self, plan, *, rank: int, world: int, device: torch.device, seed: int):
        """The cells the training loop draws from (:class:`~ntf_utils.model._train.TrainingCells`)."""
        raise NotImplementedError

    def validation_cells(self, plan, validation) -> InMemoryCells | None:
        """Validation cells: the held-out rows, or the given AnnData; ``None`` without validation."""
        raise NotImplementedError

    def fingerprint(self, config, seed: int, validation, world: int) -> str:
        """Identity of the run for resuming checkpoints."""
        raise NotImplementedError

    def plan_facts(self) -> dict:
        """Facts of the planning passes that the training ranks need (plain JSON; in ``plan.extra``)."""
        return {}

    def describe(self, plan, cells) -> dict:
        """Source-specific facts added to ``field.info`` after training."""
        return {}

    def close(self) -> None:
        """Release what the source holds open (files, threads)."""


def _section_planes(coords: np.ndarray, labels: np.ndarray, names: list) -> list:
    """``[centre_x, centre_y, rms_radius]`` of the cells of each section in ``names`` (original units),
    and with a time column (``coords`` ``(n, 4)``) the section's median time."""
    xy = pd.DataFrame(coords[:, :2], columns=["x", "y"])
    centre = xy.groupby(labels).mean().loc[names]
    offset = xy.to_numpy() - centre.loc[labels].to_numpy()
    radius = np.sqrt(pd.Series((offset**2).sum(1)).groupby(labels).mean().loc[names].to_numpy())
    planes = np.column_stack([centre.to_numpy(), radius])
    if coords.shape[1] == 4:
        planes = np.column_stack([planes, pd.Series(coords[:, 3]).groupby(labels).median().loc[names].to_numpy()])
    return planes.astype(float).tolist()


def prepare_targets(coords, values, mask, transform, loss: str, stats: dict, normalize: str | None = None):
    """Coordinates to the unit cube and values to training targets, in place on ``values``.

    MSE: ``(value - mean) / std`` per gene (after ``log1p`` normalisation when ``normalize`` is
    ``"log1p"``); count losses: raw counts and the log size factor of each cell.

    Returns
    -------
    ``(u, target, log_size, mask)`` float32 arrays (``log_size``/``mask`` may be ``None``).
    """
    from .._anndata import log1p_rows

    u = transform.to_unit(coords)
    log_size = None
    if loss == "mse":
        if normalize == "log1p":
            values = log1p_rows(values, stats["target_sum"])
        values -= stats["mean"]
        values /= stats["std"]
    else:
        size = np.maximum(values.sum(1, keepdims=True), 1.0) / stats["median_size"]
        log_size = np.log(size).astype(np.float32)
    return u, values, log_size, mask


def to_cells(u, target, log_size, mask, section=None) -> InMemoryCells:
    """:class:`InMemoryCells` of prepared float32 arrays (no copy when they already are) and section codes."""

    def tensor(x):
        return None if x is None else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    codes = None if section is None else torch.from_numpy(np.ascontiguousarray(section, dtype=np.int64))
    return InMemoryCells(tensor(u), tensor(target), tensor(log_size), tensor(mask), codes)


MAX_VALIDATION_CELLS = 50_000  # a held-out loss from more cells chooses no differently, and costs in proportion


def capped_validation(validation):
    """``validation`` itself, or a seeded subsample of :data:`MAX_VALIDATION_CELLS` of its cells (in
    their order) when it has more: every evaluation of the held-out loss (early stopping, the selection
    race and its blend weights) reads all of them, and on a large atlas that was most of a fit's time
    (1,000,000 cells: 11 of 26 s scoring the race's blend weights on 330,000 held-out cells)."""
    if validation is None or validation is False or getattr(validation, "n_obs", 0) <= MAX_VALIDATION_CELLS:
        return validation
    keep = np.sort(np.random.default_rng(0).choice(validation.n_obs, MAX_VALIDATION_CELLS, replace=False))
    return validation[keep]


def read_validation(validation, var_names, layer, spatial_key, time_key) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates and float32 values of a validation AnnData, in the training genes' order."""
    import anndata as ad

    if not isinstance(validation, ad.AnnData):
        raise TypeError("validation must be an AnnData of held-out cells, None (random cells) or False (none)")
    present = set(validation.var_names)
    missing = [g for g in var_names if g not in present]
    if missing:
        raise ValueError(f"validation lacks {len(missing)} training genes, e.g. {missing[:5]}")
    validation = validation[:, list(var_names)]
    coords = coords_with_time(validation, spatial_key, time_key)
    matrix = read_matrix(validation, layer)
    check_finite_values(matrix, "validation values")
    return coords, dense_float32(matrix).copy()


class AnnDataSource(CellSource):
    """An AnnData in memory, read and checked once.

    Parameters
    ----------
    adata
        Cells with coordinates in ``obsm[spatial_key]`` and values in ``X`` or ``layer``.
    layer, spatial_key, time_key
        Where the values, coordinates and (optional) time are.
    loss
        The training loss: count losses need non-negative values.
    """

    in_memory = True

    def __init__(self, adata, *, layer: str | None, spatial_key: str, time_key: str | None, loss: str) -> None:
        if adata.n_obs == 0:
            raise ValueError("adata has no cells")
        self.adata = adata
        self.layer, self.spatial_key, self.time_key = layer, spatial_key, time_key
        self.coords = coords_with_time(adata, spatial_key, time_key)
        self.matrix = read_matrix(adata, layer)
        what = f"layers[{layer!r}]" if layer else "adata.X"
        check_finite_values(self.matrix, what)
        if loss != "mse":
            check_nonnegative_counts(self.matrix, what)
        elif looks_like_raw_counts(self.matrix):
            warnings.warn(
                f"{what} holds raw counts (non-negative integers up to {self.matrix.max():.0f}) and the loss is "
                "'mse', which fits them as they are: deep spots and highly expressed genes dominate and library "
                "size is learned as biology. Log-normalise first (ntf.pp.log_normalize(adata); "
                "tl.fit(adata, layer='lognorm')) or fit the counts with loss='poisson' or 'nb'",
                UserWarning, stacklevel=3)
        self.mask = read_mask(adata)
        self.sections = read_sections(adata, Key.obs.section)
        self.n_obs, self.n_vars = adata.n_obs, adata.n_vars
        self.n_input_dims = self.coords.shape[1]
        self.var_names = list(adata.var_names)
        self._values = None
        # a selection race fits one source several times (ntf_utils.tl.fit): its survey and target
        # statistics are computed once (on 1,000,000 cells they took 1.3 s per candidate)
        self._surveys, self._stats = {}, {}
        self._train_rows = np.arange(self.n_obs)

    def survey(self, seed: int) -> Survey:
        if seed not in self._surveys:
            self._surveys[seed] = self._measure(seed)
        return self._surveys[seed]

    def _measure(self, seed: int) -> Survey:
        sampling = measure_sampling(self.coords, self.sections, seed=seed)
        z_values = np.unique(self.coords[:, 2])
        names, medians, planes = [], [], []
        if self.sections is not None:
            by_section = pd.Series(self.coords[:, 2]).groupby(self.sections).median()
            names, medians = list(by_section.index), [float(z) for z in by_section]
            planes = _section_planes(self.coords, self.sections, names)
        return Survey(sampling, self.sections is not None, z_values, self.coords, names, medians, planes)

    def hold_out(self, config, seed: int, validation) -> np.ndarray:
        fraction = config.training.validation_fraction
        held_out, self._train_rows = np.zeros(0, dtype=np.int64), np.arange(self.n_obs)
        if validation is None and fraction > 0 and self.n_obs >= 200:
            perm = np.random.default_rng(seed).permutation(self.n_obs)
            n_val = min(max(1, int(round(fraction * self.n_obs))), MAX_VALIDATION_CELLS)  # the rest trains
            held_out, self._train_rows = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        return held_out

    def _rows(self, rows):
        if self._values is None:
            self._values = dense_float32(self.matrix)
        return self._values[rows], None if self.mask is None else self.mask[rows]

    def target_stats(self, loss: str, held_out: np.ndarray) -> dict:
        key = (loss, hashlib.blake2b(np.ascontiguousarray(self._train_rows).tobytes(), digest_size=16).digest())
        if key not in self._stats:
            self._stats[key] = self._target_stats(loss)
        return self._stats[key]

    def _target_stats(self, loss: str) -> dict:
        values, mask = self._rows(self._train_rows)
        if loss == "mse":
            mean, std = standardise(values, mask)
            return {"mean": mean, "std": std, "median_size": 1.0, "target_sum": None}
        totals = values.sum(1)
        median = float(np.median(totals[totals > 0])) if (totals > 0).any() else 1.0
        # mean rate at size factor 1, the starting point of the log-rate output
        mean = (values.sum(0) / max(totals.sum(), 1e-8) * median).astype(np.float32)
        return {"mean": mean, "std": np.ones_like(mean), "median_size": median, "target_sum": None}

    def _cells(self, rows, plan) -> InMemoryCells:
        values, mask = self._rows(rows)
        prepared = prepare_targets(self.coords[rows], values, mask, plan.transform, plan.config.training.loss,
                                   plan.stats)
        codes = None if self.sections is None else section_codes(self.sections[rows], plan.sections)
        return to_cells(*prepared, codes)

    def training_cells(self, plan, *, rank: int, world: int, device: torch.device, seed: int) -> InMemoryCells:
        rows = self._train_rows if world == 1 else self._train_rows[rank::world]
        return self._cells(rows, plan)

    def validation_cells(self, plan, validation) -> InMemoryCells | None:
        if len(plan.held_out):
            return self._cells(plan.held_out, plan)
        if validation is None or validation is False:
            return None
        validation = capped_validation(validation)
        coords, values = read_validation(validation, self.var_names, self.layer, self.spatial_key, self.time_key)
        prepared = prepare_targets(coords, values, None, plan.transform, plan.config.training.loss, plan.stats)
        # held-out sections are predicted at the reference level; cells of training sections with their effect
        labels = read_sections(validation, Key.obs.section)
        codes = None if labels is None else section_codes(labels, plan.sections)
        return to_cells(*prepared, codes)

    def fingerprint(self, config, seed: int, validation, world: int) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(np.ascontiguousarray(self.coords).tobytes())
        if sp.issparse(self.matrix):
            csr = self.matrix.tocsr()
            for part in (csr.data, csr.indices, csr.indptr):
                h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(np.ascontiguousarray(self.matrix).tobytes())
        h.update("\n".join(self.var_names).encode())
        h.update(config.to_json().encode())
        h.update(f"seed={seed};validation={type(validation).__name__};world={world}".encode())
        if validation is not None and validation is not False:
            h.update(np.ascontiguousarray(validation.obsm.get(self.spatial_key, np.zeros(0))).tobytes())
        return h.hexdigest()

    def describe(self, plan, cells) -> dict:
        out = {"layer": self.layer, "spatial_key": self.spatial_key, "time_key": self.time_key}
        units = read_units(self.adata)
        if units is not None:  # the coordinates' units (uns["ntf"]["units"]): views label their axes with them
            out[Key.uns.units] = units
        return out
