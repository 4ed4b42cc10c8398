"""`tl.prediction_intervals`: split-conformal error bars calibrated on whole held-out training sections.

Sections, not cells, are the exchangeable units of serial-section data (cells of one section share its
cut, its batch and its distance to the others), so the calibration holds out whole training sections:
every fold refits the field without some of them and scores it on them. The scores are kept per gene
and per *anchor* (a distance at which they were measured), and the interval of a query point is
interpolated between the anchors by its distance to the nearest training section and the width of its
gap; points farther than any calibration ever looked get an infinite interval, never a confident wrong
number. Intervals cover either a new measurement or the noise-free level (``target``). See
``docs/model.md`` ("Calibrated intervals") for the method and its guarantee.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import pandas as pd

from .._anndata import dense_float32, read_coords, read_matrix, read_sections, read_time, sections_in_order
from .._constants import Key
from .._docs import doc_adata, doc_genes, doc_params, doc_seed, doc_spatial_key, doc_time_key
from .._validate import check_coords

__all__ = ["FieldIntervals", "prediction_intervals"]

ANCHOR_CELLS = "cells"  # held-out cells of sections the fold kept: distance 0
ANCHOR_SECTIONS = "sections"  # held-out interior sections: about one section spacing from the nearest kept one
ANCHOR_ENDS = "ends"  # held-out end sections: about one spacing beyond the kept range (extrapolation)
ANCHORS = (ANCHOR_CELLS, ANCHOR_SECTIONS, ANCHOR_ENDS)
MIN_PROBE_CELLS = 20  # held-out cells per fold at least (half the kept cells at most): a 90% quantile needs 9
# How the squared half-width grows from the distance-0 quantile to an anchor's: "distance<p>" by
# (distance / reach)**p; "gap<k>" by (hardness / its reach)**k, hardness = d * (G - d) for a point at
# distance d from the nearest section in a gap of G spacings (d**2 beyond the range), so the midpoint of a
# narrow gap counts as easier than the midpoint of the wide gap a calibration fold leaves.
GROWTH_RULES = ("distance1", "distance2", "distance3", "distance4", "gap1", "gap1.5", "gap2", "gap3")
GROWTH = "distance2"  # kept after comparing on held-out training sections: benchmarks/tune_intervals.py
TARGET_OBSERVED = "observed"  # a new measurement at the point (cell or spot): the noise included
TARGET_EXPRESSION = "expression"  # the noise-free level the field would show had that section been measured
TARGETS = (TARGET_OBSERVED, TARGET_EXPRESSION)


@dataclass
class FieldIntervals:
    """Prediction intervals of a field at query points (from :func:`ntf_utils.tl.prediction_intervals`).

    Attributes
    ----------
    prediction
        ``(n, n_genes)`` float32: the field's prediction (the effect-free level of a new section).
    lower, upper
        ``(n, n_genes)`` float32: the interval at ``1 - alpha``; ``-inf``/``inf`` where it cannot hold.
    alpha
        Miscoverage level of ``lower``/``upper`` (``0.1``: 90% intervals). Other levels from
        :meth:`interval` without refitting.
    target
        What ``lower``/``upper`` cover: ``"observed"`` (a new measurement at the point, noise included)
        or ``"expression"`` (the noise-free level: what the field would predict there had that section
        been measured). Either from :meth:`interval` without refitting.
    distance
        ``(n,)`` distance along z to the nearest training section, in section spacings.
    hardness
        ``(n,)`` ``d * (G - d)`` for a point at distance ``d`` from the nearest training section in a
        gap of ``G`` spacings between two of them; ``beyond**2`` beyond the sampled range.
    beyond
        ``(n,)`` distance beyond the sampled z range, in section spacings (0 within the range).
    inside
        ``(n,)`` bool: inside the sampled tissue (:meth:`NTFField.inside`).
    flagged
        ``(n,)`` bool: no calibrated interval (outside the tissue, or farther from the sections or beyond
        the range than any calibration measured); these points get infinite intervals.
    genes, coords
        Gene names (columns) and the ``(n, 3)`` or ``(n, 4)`` query coordinates.
    spacing
        The section spacing (median gap between consecutive training sections, original z units).
    scores
        Calibration scores ``|observed - predicted|`` per anchor: ``{anchor: (m, n_genes) array}``.
    expression_scores
        The same for ``target="expression"``: ``|field - fold prediction|``, the distance between the
        field fitted with a held-out section and the fold's field fitted without it.
    smooth_share
        ``(n_genes,)`` share of the field's residual at measured cells that neighbouring cells share
        (its own error there; the rest is noise): adds ``smooth_share * q_cells**2`` to every squared
        ``expression`` quantile, ``q_cells`` the observed distance-0 quantile.
    reach, reach_hardness
        Largest calibrated distance (in spacings) and hardness per anchor (``cells``: 0).
    calibration
        One row per fold: the held-out sections, the anchor they fed, cells and fit seconds.
    sections
        The training sections: ``section``, median ``z`` and ``stage`` (time, or 0).
    field
        The fitted :class:`~ntf_utils.NTFField` that made ``prediction``.
    growth
        How the width grows from the distance-0 quantile to an anchor's (:data:`GROWTH_RULES`; default
        ``"distance2"``, the squared distance; ``benchmarks/tune_intervals.py`` compares the others).
    """

    prediction: np.ndarray
    distance: np.ndarray
    hardness: np.ndarray
    beyond: np.ndarray
    inside: np.ndarray
    genes: list[str]
    coords: np.ndarray
    spacing: float
    scores: dict
    expression_scores: dict
    smooth_share: np.ndarray
    reach: dict
    reach_hardness: dict
    calibration: pd.DataFrame
    sections: pd.DataFrame
    alpha: float = 0.1
    target: str = TARGET_OBSERVED
    field: object = None
    growth: str = GROWTH
    lower: np.ndarray = dataclass_field(init=False, repr=False)
    upper: np.ndarray = dataclass_field(init=False, repr=False)

    def __post_init__(self):
        self.target = _check_target(self.target)
        self.lower, self.upper = self.interval(self.alpha)

    @property
    def flagged(self) -> np.ndarray:
        """Points without a calibrated interval (infinite width)."""
        return ~np.isfinite(self.half_width(self.alpha)).all(axis=1)

    @property
    def width(self) -> np.ndarray:
        """``(n, n_genes)`` width ``upper - lower`` at ``alpha``."""
        return self.upper - self.lower

    def quantiles(self, alpha: float, target: str | None = None) -> dict:
        """Conformal quantile of the scores per anchor, ``{anchor: (n_genes,)}`` (inf if too few scores);
        ``target`` as in :meth:`interval`."""
        alpha = _check_alpha(alpha)
        target = self.target if target is None else _check_target(target)
        observed = {anchor: _conformal_quantile(scores, alpha) for anchor, scores in self.scores.items()}
        if target == TARGET_OBSERVED:
            return observed
        # the folds' distance from the field plus the field's own smooth error at measured cells (the
        # shared share of the distance-0 residual; the rest is measurement noise), in quadrature
        own_error = self.smooth_share * observed[ANCHOR_CELLS] ** 2
        return {anchor: np.sqrt(_conformal_quantile(scores, alpha) ** 2 + own_error)
                for anchor, scores in self.expression_scores.items()}

    def half_width(self, alpha: float, target: str | None = None) -> np.ndarray:
        """``(n, n_genes)`` half-width of the ``1 - alpha`` interval at each query point (``target`` as in
        :meth:`interval`)."""
        q = self.quantiles(alpha, target)
        q0 = q[ANCHOR_CELLS][None, :]
        beyond = self.beyond > 0
        far = np.where(beyond[:, None], q[ANCHOR_ENDS][None, :], q[ANCHOR_SECTIONS][None, :])
        if self.growth.startswith("gap"):
            position = self.hardness
            reach = np.where(beyond, self.reach_hardness[ANCHOR_ENDS], self.reach_hardness[ANCHOR_SECTIONS])
        else:
            position = np.where(beyond, self.beyond, self.distance)
            reach = np.where(beyond, self.reach[ANCHOR_ENDS], self.reach[ANCHOR_SECTIONS])
        power = float(self.growth.removeprefix("gap").removeprefix("distance"))
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.clip(position / reach, 0.0, 1.0)[:, None] ** power
            half = np.sqrt(q0**2 + np.where(w > 0, (far**2 - q0**2) * w, 0.0))
        half[np.isinf(q0) | (np.isinf(far) & (w > 0))] = np.inf  # too few scores for this level
        out = (position > reach * (1 + 1e-6)) | ~self.inside
        half[out] = np.inf
        return half.astype(np.float32)

    def interval(self, alpha: float = 0.1, target: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)``, each ``(n, n_genes)``, of the ``1 - alpha`` interval (any level, no refit).

        ``target``: ``"observed"`` (a new measurement) or ``"expression"`` (the noise-free level);
        default: :attr:`target`.
        """
        half = self.half_width(alpha, target)
        return self.prediction - half, self.prediction + half

    def at(self, coords, *, alpha: float | None = None, target: str | None = None) -> FieldIntervals:
        """The same field and calibration at other query points (e.g. a grid): no refit.

        ``coords``: an ``(n, 3)`` array, ``(n, 4)`` with a time axis; ``alpha`` and ``target`` default to
        this object's.
        """
        query = check_coords(coords, "coords", n_cols=(3, 4))
        stage = query[:, 3] if query.shape[1] == 4 else np.zeros(len(query))
        distance, beyond, hardness = _distances(query[:, 2], stage, self.sections, self.spacing)
        return FieldIntervals(prediction=self.field.predict(query, self.genes), distance=distance, hardness=hardness,
                              beyond=beyond, inside=self.field.inside(query), genes=list(self.genes),
                              coords=query.copy(), spacing=self.spacing, scores=self.scores,
                              expression_scores=self.expression_scores, smooth_share=self.smooth_share,
                              reach=self.reach, reach_hardness=self.reach_hardness, calibration=self.calibration,
                              sections=self.sections, alpha=self.alpha if alpha is None else _check_alpha(alpha),
                              target=self.target if target is None else target, field=self.field,
                              growth=self.growth)

    def coverage(self, observed, alpha: float | None = None, target: str | None = None) -> float:
        """Fraction of ``(point, gene)`` entries of ``observed`` ``(n, n_genes)`` inside the interval (for
        ``target="expression"``, pass noise-free values, e.g. a simulation's truth)."""
        lower, upper = self.interval(self.alpha if alpha is None else alpha, target)
        observed = np.asarray(observed, dtype=np.float32)
        return float(np.mean((observed >= lower) & (observed <= upper)))

    def trust_table(self, observed=None, *, alpha: float | None = None, gene: str | None = None,
                    bin_width: float = 0.25) -> pd.DataFrame:
        """Trust map as a table: per distance bin, mean finite width, fraction flagged, coverage.

        Parameters
        ----------
        observed
            Optional ``(n, n_genes)`` values measured at the query points: adds ``coverage`` per bin.
        alpha
            Level (default: ``self.alpha``).
        gene
            One gene (default: all, averaged).
        bin_width
            Distance bin in section spacings; ``distance`` is the bin's upper edge.

        Returns
        -------
        pandas.DataFrame
            ``region`` ("between sections": distance to the nearest training section; "beyond the
            range": distance beyond the first / last section), ``distance``, ``n``, ``width`` (mean over
            finite entries), ``fraction_flagged`` and, with ``observed``, ``coverage`` (an infinite
            interval covers).
        """
        columns = np.arange(len(self.genes)) if gene is None else np.array([self.genes.index(gene)])
        half = self.half_width(self.alpha if alpha is None else alpha)[:, columns]
        beyond = self.beyond > 0
        dist = np.where(beyond, self.beyond, self.distance)
        finite = np.isfinite(half)
        with np.errstate(invalid="ignore", divide="ignore"):
            width = np.where(finite, 2 * half, 0.0).sum(axis=1) / finite.sum(axis=1)  # NaN: no finite gene
        frame = pd.DataFrame({"region": np.where(beyond, "beyond the range", "between sections"),
                              "distance": np.ceil(np.round(dist / bin_width, 6)) * bin_width,
                              "width": width, "flagged": ~finite.all(axis=1)})
        aggregations = {"n": ("width", "size"), "width": ("width", "mean"), "fraction_flagged": ("flagged", "mean")}
        if observed is not None:
            observed = np.asarray(observed, dtype=np.float32)[:, columns]
            frame["coverage"] = (np.abs(observed - self.prediction[:, columns]) <= half).mean(axis=1)
            aggregations["coverage"] = ("coverage", "mean")
        return frame.groupby(["region", "distance"]).agg(**aggregations).reset_index()

    def to_anndata(self):
        """One observation per query point: ``X`` = prediction, ``layers['lower']``, ``layers['upper']``,
        ``layers['width']``, ``obs['distance_to_sections']``, ``obs['spacings_beyond']``, ``obs['inside']``,
        ``obs['flagged']``, ``obs['width_mean']`` (over genes, finite points), ``obsm['spatial_3d']`` and
        ``uns['ntf']['intervals']`` (``alpha``, ``target``, ``spacing``, ``reach``, the calibration table)."""
        import anndata as ad

        out = ad.AnnData(X=self.prediction.copy(),
                         obs=pd.DataFrame(index=[f"point_{i}" for i in range(len(self.prediction))]),
                         var=pd.DataFrame(index=list(self.genes)))
        out.layers[Key.layers.lower] = self.lower.copy()
        out.layers[Key.layers.upper] = self.upper.copy()
        out.layers[Key.layers.width] = self.width
        out.obs[Key.obs.distance_to_sections] = self.distance
        out.obs[Key.obs.spacings_beyond] = self.beyond
        out.obs[Key.obs.inside] = self.inside
        out.obs[Key.obs.flagged] = self.flagged
        out.obs[Key.obs.width_mean] = self.width.mean(axis=1) if self.width.shape[1] else np.zeros(len(self.width))
        out.obs[Key.obs.z] = self.coords[:, 2]
        out.obsm[Key.obsm.spatial_3d] = self.coords[:, :3].copy()
        table = self.calibration.astype({c: str for c in self.calibration.columns if c == "sections"})
        out.uns[Key.uns.ntf] = {Key.uns.intervals: {
            "alpha": float(self.alpha), "target": self.target, "spacing": float(self.spacing),
            "reach": {k: float(v) for k, v in self.reach.items()},
            "calibration": {c: table[c].tolist() for c in table.columns}}}
        return out


def _conformal_quantile(scores: np.ndarray, alpha: float) -> np.ndarray:
    """Per column, the finite-sample conformal quantile of ``scores`` ``(m, n_genes)``; inf if too few."""
    n = len(scores)
    rank = int(np.ceil((n + 1) * (1 - alpha)))  # the finite-sample conformal rank
    if n == 0 or rank > n:
        return np.full(scores.shape[1], np.inf)
    return np.sort(scores, axis=0)[rank - 1]


def _smooth_share(values: np.ndarray, predicted: np.ndarray, labels: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Per gene, the share of the field's residual second moment at measured cells that each cell shares
    with its nearest neighbour in the same section, in [0, 1]: measurement noise is independent between
    cells, the field's own error (under-fitting, bias) is smooth, so ``E[r_i r_j] / E[r_i^2]`` is the
    smooth share."""
    from scipy.spatial import cKDTree

    residual = values - predicted
    first, second = [], []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            continue
        _, nearest = cKDTree(xy[rows]).query(xy[rows], k=2)
        first.append(rows)
        second.append(rows[nearest[:, 1]])
    if not first:
        return np.zeros(values.shape[1])
    i, j = np.concatenate(first), np.concatenate(second)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.mean(residual[i] * residual[j], axis=0) / np.mean(residual[i] ** 2, axis=0)
    return np.nan_to_num(np.clip(share, 0.0, 1.0))


def _check_target(target) -> str:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS} ('observed': a new measurement at the point; "
                         f"'expression': its noise-free level), got {target!r}")
    return target


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < float(alpha) < 1:
        raise ValueError(f"alpha must be a number in (0, 1) (0.1 gives 90% intervals), got {alpha!r}")
    return float(alpha)


# ------------------------------------------------------------------------------------------------
# sections, their spacing and distances
# ------------------------------------------------------------------------------------------------
def _section_table(adata, spatial_key: str, time_key: str | None) -> pd.DataFrame:
    """One row per training section: ``section``, median ``z``, ``stage`` (its time, or 0), sorted."""
    labels = read_sections(adata)
    if labels is None or len(np.unique(labels)) < 2:
        raise ValueError("prediction intervals are calibrated on held-out whole sections: adata needs "
                         "obs['section'] with at least 2 sections (ntf_utils.pp.stack_sections)")
    stage = read_time(adata, time_key) if time_key is not None else None
    return sections_in_order(labels, read_coords(adata, spatial_key)[:, 2], stage)


def _spacing(table: pd.DataFrame) -> float:
    """Median gap between consecutive sections of a stage (the unit of every distance here)."""
    gaps = np.concatenate([np.diff(g["z"].to_numpy()) for _, g in table.groupby("stage")])
    gaps = gaps[gaps > 0]
    if not len(gaps):
        raise ValueError("the training sections all lie at the same z: no section spacing to calibrate with")
    return float(np.median(gaps))


def _distances(z: np.ndarray, stage: np.ndarray, table: pd.DataFrame, spacing: float):
    """``(distance to the nearest section, distance beyond the range, hardness)`` in spacings (hardness:
    ``d * (G - d)`` in a gap of ``G`` between two sections, ``beyond**2`` outside); a point is compared
    with the sections of the nearest stage."""
    stages = np.unique(table["stage"].to_numpy())
    nearest = stages[np.abs(stage[:, None] - stages[None, :]).argmin(axis=1)]
    dist, beyond, hardness = np.empty(len(z)), np.empty(len(z)), np.empty(len(z))
    for s in stages:
        rows = nearest == s
        zs = np.sort(table.loc[table["stage"] == s, "z"].to_numpy()) / spacing
        zq = z[rows] / spacing
        dist[rows] = np.abs(zq[:, None] - zs[None, :]).min(axis=1)
        beyond[rows] = np.maximum(zs[0] - zq, zq - zs[-1]).clip(min=0)
        above = np.searchsorted(zs, zq).clip(1, len(zs) - 1)
        gap_product = (zq - zs[above - 1]) * (zs[above] - zq)
        hardness[rows] = np.where(beyond[rows] > 0, beyond[rows] ** 2, gap_product.clip(min=0))
    return dist, beyond, hardness


def _folds(table: pd.DataFrame, n_folds: int) -> list[tuple[str, list[str]]]:
    """``[(anchor, held-out sections)]``: interior folds (every ``n_folds``-th interior section of each
    stage, so a held-out section keeps both neighbours) and one fold of the two end sections. With
    two sections in a stage each is held out alone (the other predicts it from one side)."""
    folds: dict = {}
    for _, g in table.groupby("stage", sort=True):
        names = g["section"].tolist()
        if len(names) == 2:
            folds.setdefault((ANCHOR_ENDS, 0), []).append(names[0])
            folds.setdefault((ANCHOR_ENDS, 1), []).append(names[1])
            continue
        interior = names[1:-1]
        for k in range(min(n_folds, len(interior))):
            folds.setdefault((ANCHOR_SECTIONS, k), []).extend(interior[k::n_folds])
        folds.setdefault((ANCHOR_ENDS, 0), []).extend([names[0], names[-1]])
    return [(anchor, held) for (anchor, _), held in sorted(folds.items(), key=lambda kv: kv[0])]


# ------------------------------------------------------------------------------------------------
# the calibration
# ------------------------------------------------------------------------------------------------
def _calibrate(adata, main, gene_list, *, layer, spatial_key, time_key, n_folds, cell_fraction, seed,
               fit_kwargs):
    """Refit without each fold's sections; score the held-out sections and held-out cells.

    Returns ``(scores, expression_scores, smooth_share, reach, reach_hardness, table, spacing)``: scores
    per anchor ``(m, n_genes)`` against the observed values and against ``main``'s prediction (which saw
    the held-out cells), the smooth share of ``main``'s residuals (:func:`_smooth_share`), the largest
    distance (spacings) and hardness each anchor measured, one row per fold, the spacing.
    """
    from ._fit import fit

    sections = _section_table(adata, spatial_key, time_key)
    spacing = _spacing(sections)
    labels = read_sections(adata).astype(str)
    xyz = read_coords(adata, spatial_key)
    stage = read_time(adata, time_key) if time_key is not None else np.zeros(len(xyz))
    columns = [list(map(str, adata.var_names)).index(g) for g in gene_list]
    values = dense_float32(read_matrix(adata, layer))[:, columns]
    cells = xyz if time_key is None else np.column_stack([xyz[:, :3], stage])
    fitted = main.predict(cells, gene_list)  # the full field at every training cell, once for all folds
    config = main.config.replace(selection={"enabled": False})
    rng = np.random.default_rng(seed)
    scores = {a: [] for a in ANCHORS}
    expression_scores = {a: [] for a in ANCHORS}
    reach = {a: 0.0 for a in ANCHORS}
    reach_hardness = {a: 0.0 for a in ANCHORS}
    rows = []
    for k, (anchor, held) in enumerate(_folds(sections, n_folds)):
        is_held = np.isin(labels, held)
        kept_cells = np.flatnonzero(~is_held)
        n_probe = max(int(round(cell_fraction * len(kept_cells))), min(MIN_PROBE_CELLS, len(kept_cells) // 2))
        probe = rng.choice(kept_cells, size=n_probe, replace=False)
        train_index = np.setdiff1d(kept_cells, probe)
        start = time.perf_counter()
        # one section left cannot separate section effects from biology: that fold fits without them
        single = len(np.unique(labels[train_index])) < 2
        fold_config = config.replace(network={"section_effects": False}) if single else config
        fold_field = fit(adata[train_index], layer=layer, config=fold_config, seed=int(seed) + 1 + k,
                         spatial_key=spatial_key, time_key=time_key, **fit_kwargs)
        seconds = time.perf_counter() - start
        for part, index in ((anchor, np.flatnonzero(is_held)), (ANCHOR_CELLS, probe)):
            predicted = fold_field.predict(cells[index], gene_list)
            scores[part].append(np.abs(values[index] - predicted))
            expression_scores[part].append(np.abs(fitted[index] - predicted))
        remaining = sections[~sections["section"].isin(held)]
        dist, beyond, hardness = _distances(xyz[is_held, 2], stage[is_held], remaining, spacing)
        reach[anchor] = max(reach[anchor], float((beyond if anchor == ANCHOR_ENDS else dist).max()))
        reach_hardness[anchor] = max(reach_hardness[anchor], float(hardness.max()))
        rows.append({"fold": k, "anchor": anchor, "sections": list(held), "n_cells": int(is_held.sum()),
                     "n_probe_cells": len(probe), "distance_median": float(np.median(dist)),
                     "beyond_max": float(beyond.max()), "seconds": round(seconds, 3)})
        del fold_field
    if not scores[ANCHOR_SECTIONS]:  # two sections per stage: one-sided predictions stand in for gaps
        for kind in (scores, expression_scores):
            kind[ANCHOR_SECTIONS] = list(kind[ANCHOR_ENDS])
        reach[ANCHOR_SECTIONS], reach_hardness[ANCHOR_SECTIONS] = reach[ANCHOR_ENDS], reach_hardness[ANCHOR_ENDS]

    def stacked(kind):
        return {a: np.concatenate(s) if s else np.zeros((0, len(gene_list)), np.float32) for a, s in kind.items()}

    share = _smooth_share(values, fitted, labels, xyz[:, :2])
    return (stacked(scores), stacked(expression_scores), share, reach, reach_hardness, pd.DataFrame(rows),
            spacing)


@doc_params(doc_adata=doc_adata, doc_genes=doc_genes, doc_seed=doc_seed, doc_spatial_key=doc_spatial_key,
            doc_time_key=doc_time_key)
def prediction_intervals(
    adata,
    coords,
    *,
    alpha: float = 0.1,
    target: str = TARGET_OBSERVED,
    field=None,
    layer: str | None = None,
    genes=None,
    n_folds: int = 3,
    cell_fraction: float = 0.1,
    config=None,
    seed: int = 0,
    spatial_key: str = Key.obsm.spatial_3d,
    time_key: str | None = None,
    **fit_kwargs,
) -> FieldIntervals:
    """Prediction intervals with a coverage guarantee for new sections (split conformal by section).

    The field (``field``, or one fitted here with :func:`ntf_utils.tl.fit`) predicts ``coords``. To
    calibrate its error bars, whole training sections are held out and the field refitted without
    them (same settings as ``field``, no resolution selection): ``n_folds`` folds of interior sections
    (every ``n_folds``-th interior section, so each keeps both neighbours and is predicted from about
    one section spacing away) and one fold of the two end sections (predicted from about one spacing
    beyond the remaining range). Each fold also holds out ``cell_fraction`` of the remaining cells at
    random (the error at distance 0). The scores ``|observed - predicted|`` of each gene give, per
    *anchor* (held-out cells, interior sections, end sections), the conformal quantile; a query
    point's half-width is interpolated between the distance-0 quantile and the anchor's by its
    distance to the nearest training section in section spacings (squared half-width growing with
    the squared distance; other rules, compared in ``docs/model.md``, did no better). Points farther
    than the calibration measured (beyond the range by more than the end fold's distance, or between
    sections farther apart than any held-out gap) and points outside the sampled tissue get infinite
    intervals (``flagged``).

    ``target="expression"`` gives intervals for the noise-free level instead of a new measurement:
    the same folds are scored against ``field``'s own prediction at the held-out cells (the field
    fitted with them) instead of their noisy values, so the interval covers where the field would be
    had that section been measured, and the field's own error at measured cells is added (in
    quadrature, from the part of its residuals that neighbouring cells share: noise is independent
    between cells, the field's error is smooth). Where measurement noise is much of the error they are
    much narrower than ``"observed"`` ones.

    Parameters
    ----------
    {doc_adata}
        The training sections, labelled in ``obs['section']`` (at least 2); not modified. Without the
        labels, the sections :func:`ntf_utils.tl.fit` derives (its distinct z values, or slabs along a
        continuous z), with its warning.
    coords
        Query points: an ``(n, 3)`` array (``(n, 4)`` with a time axis), or an AnnData with
        ``obsm[spatial_key]`` (and ``obs[time_key]``).
    alpha
        Miscoverage level in (0, 1): ``0.1`` gives 90% intervals. Any other level is available later
        from :meth:`FieldIntervals.interval` at no cost.
    target
        ``"observed"`` (default): intervals for a new measurement at the point (a cell or spot, noise
        included); ``"expression"``: for its noise-free level. Both are calibrated at once; the other
        is available later from :meth:`FieldIntervals.interval` at no cost.
    field
        A field already fitted on ``adata`` (e.g. by :func:`ntf_utils.tl.fit`); default: fit one here.
    layer
        Layer with the observed values (default ``X``), the one the field was (or is) fitted to.
    {doc_genes}
    n_folds
        Interior calibration folds (>= 1). Cost: ``n_folds + 1`` fits without resolution selection
        (two with two sections per stage), plus one default fit when ``field`` is not given.
    cell_fraction
        Fraction of the kept cells held out in each fold for the distance-0 anchor, in (0, 0.5].
    config
        :class:`~ntf_utils.NTFConfig` of the field fitted here (ignored when ``field`` is given).
    {doc_seed}
    {doc_spatial_key}
    {doc_time_key}
    **fit_kwargs
        Passed on to every :func:`ntf_utils.tl.fit` (e.g. ``steps``, ``device``, ``progress``).

    Returns
    -------
    FieldIntervals
        ``prediction``, ``lower``, ``upper`` ``(n, n_genes)``, ``distance``, ``beyond``, ``inside``,
        ``flagged`` ``(n,)``, the calibration ``scores`` and table; ``.interval(alpha, target)`` for
        another level or target, ``.to_anndata()`` for an AnnData.

    Notes
    -----
    Guarantee: a new section exchangeable with the held-out interior (end) training sections, at their
    distance from the rest, is covered with probability at least ``1 - alpha`` (averaged over its cells
    and the draw of sections); closer points rely on the interpolation to the distance-0 anchor.

    Examples
    --------
    >>> res = ntf_utils.tl.prediction_intervals(train, test, alpha=0.1, layer="lognorm")  # doctest: +SKIP
    >>> res.coverage(test.layers["lognorm"])  # doctest: +SKIP
    """
    import anndata as ad

    from ..model._config import NTFConfig
    from ._fit import fit
    from ._sections import derive_sections

    alpha, target = _check_alpha(alpha), _check_target(target)
    if isinstance(n_folds, bool) or int(n_folds) != n_folds or n_folds < 1:
        raise ValueError(f"n_folds must be an integer >= 1, got {n_folds!r}")
    if not 0 < float(cell_fraction) <= 0.5:
        raise ValueError(f"cell_fraction must be in (0, 0.5], got {cell_fraction!r}")
    query = _query(coords, spatial_key, time_key, ad)
    # a stack without obs["section"] is calibrated on the sections tl.fit would derive (with its warning)
    adata, config, _ = derive_sections(adata, NTFConfig() if config is None else config, spatial_key=spatial_key,
                                       time_key=time_key)
    sections = _section_table(adata, spatial_key, time_key)  # bad input fails here, before any fit
    fit_kwargs.setdefault("progress", False)
    if field is None:
        field = fit(adata, layer=layer, config=config, seed=seed, spatial_key=spatial_key, time_key=time_key,
                    **fit_kwargs)
    gene_list = [field.genes[j] for j in field.gene_index(genes)]
    scores, expression_scores, smooth_share, reach, reach_hardness, table, spacing = _calibrate(
        adata, field, gene_list, layer=layer, spatial_key=spatial_key, time_key=time_key, n_folds=int(n_folds),
        cell_fraction=float(cell_fraction), seed=seed, fit_kwargs=fit_kwargs)
    empty = np.zeros(0)
    calibrated = FieldIntervals(prediction=np.zeros((0, len(gene_list)), np.float32), distance=empty,
                                hardness=empty, beyond=empty, inside=np.zeros(0, bool), genes=gene_list,
                                coords=np.zeros((0, query.shape[1])), spacing=spacing, scores=scores,
                                expression_scores=expression_scores, smooth_share=smooth_share, reach=reach,
                                reach_hardness=reach_hardness,
                                calibration=table, sections=sections, alpha=alpha, target=target, field=field)
    return calibrated.at(query)


def _query(coords, spatial_key, time_key, ad) -> np.ndarray:
    """Query coordinates as ``(n, 3)``, or ``(n, 4)`` with the time of an AnnData's ``obs[time_key]``."""
    if isinstance(coords, ad.AnnData):
        xyz = read_coords(coords, spatial_key)
        if time_key is not None and xyz.shape[1] == 3:
            xyz = np.column_stack([xyz, read_time(coords, time_key)])
        return xyz
    return check_coords(coords, "coords", n_cols=(3, 4))
