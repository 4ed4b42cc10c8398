"""Synthetic ground truth: an embryo-like body, its growth over time, and a tumour imaged by IMC.

Every generator has a *model* object that evaluates the noise-free field at any coordinates, so the
truth exists everywhere (held-out sections, virtual sections, rendered volumes), not only at the
sampled cells. The model is fully determined by the generator's parameters, which are stored in
``adata.uns["ntf"]["synthetic"]``; :func:`synthetic_model` rebuilds it from an AnnData.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import Key
from .._validate import check_coords

__all__ = [
    "EmbryoModel",
    "TimeseriesEmbryoModel",
    "TumourModel",
    "synthetic_embryo",
    "synthetic_embryo_truth",
    "synthetic_embryo_domain",
    "synthetic_timeseries",
    "synthetic_timeseries_truth",
    "synthetic_tumour_proteomics",
    "synthetic_tumour_truth",
    "synthetic_tumour_truth_gradient",
    "synthetic_model",
]

EMBRYO_DOMAINS = ("outer_layer", "inner_core", "head", "trunk_anterior", "trunk_posterior", "tail")
TAILBUD = "tailbud"
OUTSIDE = "outside"

# Smooth features of the embryo (all in [0, 1]); gradient genes follow one of them.
_FEATURES = ("ap_ant", "ap_post", "ap_wave", "dv_dors", "dv_vent", "lr", "radial")
_FEATURE_AXIS = {
    "ap_ant": "x",
    "ap_post": "x",
    "ap_wave": "x",
    "dv_dors": "y",
    "dv_vent": "y",
    "lr": "z",
    "radial": "radial",
}
# The gene kinds, cycled over gene indices (40 genes -> 4 of each gradient, 12 markers, 8 mixed, 4 HK).
_KIND_CYCLE = (
    "ap_gradient",
    "domain_marker",
    "dv_gradient",
    "mixed",
    "housekeeping",
    "domain_marker",
    "lr_gradient",
    "mixed",
    "radial_gradient",
    "domain_marker",
)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def body_gradients(u, v, w, r, wave_phase: float) -> list:
    """The seven smooth programs of a synthetic body, from its normalised coordinates.

    ``u, v, w`` run from 0 to 1 across the body along x (AP), y (DV) and z, ``r`` is the ellipsoidal
    radius (1 on the surface). Returns the columns: anterior and posterior AP gradients, an AP wave,
    dorsal and ventral DV gradients, a z gradient, and a radial (centre-high) one. Shared by the
    synthetic embryo and the synthetic atlas (``ntf_utils.atlas``).
    """
    return [
        np.exp(-np.clip(u, -1, None) / 0.22),
        _sigmoid((u - 0.72) / 0.07),
        0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * u + wave_phase),
        np.exp(-np.clip(1 - v, -1, None) / 0.3),
        _sigmoid((0.38 - v) / 0.06),
        _sigmoid((w - 0.5) / 0.18),
        np.clip(1 - r, 0, 1),
    ]


def body_pattern(geo: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """The AP stripe boundaries (in u), their tilt along DV and the AP wave's phase, drawn from ``geo``.

    Shared by the synthetic embryo and the synthetic atlas (``ntf_utils.atlas``).
    """
    boundaries = np.array([0.30, 0.50, 0.70]) + geo.uniform(-0.03, 0.03, 3)
    tilt = 0.08 + geo.uniform(-0.02, 0.02)
    wave_phase = geo.uniform(0, 2 * np.pi)
    return boundaries, tilt, wave_phase


def log_normalised(proportions: np.ndarray, target_sum: float) -> np.ndarray:
    """Noise-free ``log1p(p * target_sum)`` of expression proportions, as float32."""
    return np.log1p(proportions * target_sum).astype(np.float32)


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_positive_float(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}.") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return v


def _section_names(n: int, prefix: str = "s") -> list[str]:
    width = max(2, len(str(n - 1)))
    return [f"{prefix}{k:0{width}d}" for k in range(n)]


def _sample_ellipse(rng, n: int, ax: float, by: float) -> np.ndarray:
    r = np.sqrt(rng.random(n))
    t = rng.random(n) * 2 * np.pi
    return np.column_stack([ax * r * np.cos(t), by * r * np.sin(t)])


def _sample_counts(rng, expected: np.ndarray, noise: str, dispersion: float) -> np.ndarray:
    if noise == "poisson":
        return rng.poisson(expected)
    shape = 1.0 / dispersion
    return rng.poisson(expected * rng.gamma(shape, 1.0 / shape, size=expected.shape))


class _FieldModel:
    """Shared helpers: finite-difference gradients of the truth."""

    n_cols = 3

    def truth(self, coords):  # pragma: no cover - overridden
        raise NotImplementedError

    def truth_gradient(self, coords, *, eps: float = 0.5) -> np.ndarray:
        """Spatial gradient of :meth:`truth` by central differences.

        Parameters
        ----------
        coords
            (n, 3) coordinates (or (n, 4) with time for the time-series model) in original units.
        eps
            Finite-difference step in original units.

        Returns
        -------
        numpy.ndarray
            (n, n_genes, 3) float64: d truth / d (x, y, z) per unit length. Genes with sharp domain
            boundaries have a step there, so their gradient is large (about 1/eps) on the boundary.
        """
        c = check_coords(coords, "truth_gradient", self.n_cols)
        grads = []
        for axis in range(3):
            step = np.zeros(self.n_cols)
            step[axis] = eps
            hi = self.truth(c + step).astype(np.float64)
            lo = self.truth(c - step).astype(np.float64)
            grads.append((hi - lo) / (2 * eps))
        return np.stack(grads, axis=-1)


class EmbryoModel(_FieldModel):
    """Noise-free expression field of the synthetic embryo (see :func:`synthetic_embryo`).

    The body is the ellipsoid ``(x/a)^2 + (y/b)^2 + ((z-zc)/c)^2 <= 1`` with ``a = 250``,
    ``b = 150``, ``c = n_sections * section_spacing / 2`` and ``zc = (n_sections - 1) *
    section_spacing / 2``, so sections at ``z = k * section_spacing`` cut all of it.
    Axes: x = anterior (-) to posterior (+), y = ventral (-) to dorsal (+), z = the sectioning axis.

    Parameters
    ----------
    n_sections, section_spacing
        Define the body's extent along z.
    n_genes
        Number of genes. Gene ``g``'s parameters depend only on ``(seed, g)``, so the first genes
        are the same for any ``n_genes``.
    seed
        Seed of the body (boundary jitter) and of the gene parameters.
    target_sum
        Scale of :meth:`truth`: ``log1p(p * target_sum)`` with ``p`` the expression proportions.
        :func:`synthetic_embryo` sets it to the median total count of its sampled counts.

    Attributes
    ----------
    genes : pandas.DataFrame
        One row per gene (index = gene name) with columns ``kind``, ``feature``, ``axis``,
        ``domain``, ``base``, ``amplitude``, ``domain_amplitude``.
    """

    a0 = 250.0
    b0 = 150.0

    def __init__(self, n_sections=24, section_spacing=10.0, n_genes=40, seed=0, target_sum=2000.0):
        self.n_sections = _check_positive_int(n_sections, "n_sections")
        self.section_spacing = _check_positive_float(section_spacing, "section_spacing")
        self.n_genes = _check_positive_int(n_genes, "n_genes")
        self.seed = _check_positive_int(seed, "seed", minimum=0)
        self.target_sum = _check_positive_float(target_sum, "target_sum")
        self.c = self.n_sections * self.section_spacing / 2.0
        self.zc = (self.n_sections - 1) * self.section_spacing / 2.0
        # AP stripe boundaries (in u = (x + a) / 2a), tilted by the DV position.
        self.boundaries, self.tilt, self.wave_phase = body_pattern(np.random.default_rng([self.seed, 3]))
        self.domains = self._domain_names()
        self.genes = self._make_genes()

    # -- geometry ---------------------------------------------------------------------------
    def _domain_names(self):
        return EMBRYO_DOMAINS

    def _axes(self, coords):
        """Semi-axes (a, b) per point (constant here; the time-series model grows them)."""
        n = len(coords)
        return np.full(n, self.a0), np.full(n, self.b0)

    def _geometry(self, coords):
        x, y, z = coords[:, 0], coords[:, 1], coords[:, 2]
        a, b = self._axes(coords)
        u = (x + a) / (2 * a)
        v = (y + b) / (2 * b)
        w = (z - self.zc + self.c) / (2 * self.c)
        r = np.sqrt((x / a) ** 2 + (y / b) ** 2 + ((z - self.zc) / self.c) ** 2)
        return u, v, w, r

    def _features(self, u, v, w, r):
        return np.column_stack(body_gradients(u, v, w, r, self.wave_phase))

    def _domain_codes(self, coords, u, v, w, r):
        """Integer domain per point: index into ``self.domains``; -1 = outside the body."""
        ut = u + self.tilt * (v - 0.5)
        codes = 2 + np.searchsorted(self.boundaries, ut, side="right")  # head .. tail
        codes = np.where(r < 0.45, 1, codes)
        codes = np.where(r > 0.85, 0, codes)
        return np.where(r > 1.0, -1, codes)

    def inside(self, coords) -> np.ndarray:
        """Boolean mask (n,) of the points inside the body."""
        c = check_coords(coords, "inside", self.n_cols)
        return self._geometry(c)[3] <= 1.0

    def domain(self, coords) -> np.ndarray:
        """True domain name per point, ``"outside"`` outside the body; (n,) object array."""
        c = check_coords(coords, "domain", self.n_cols)
        codes = self._domain_codes(c, *self._geometry(c))
        names = np.array(list(self.domains) + [OUTSIDE], dtype=object)
        return names[codes]  # -1 picks the trailing "outside"

    # -- genes ------------------------------------------------------------------------------
    def _make_genes(self) -> pd.DataFrame:
        rows = []
        counters = {k: 0 for k in set(_KIND_CYCLE)}
        n_dom = len(self.domains)
        for g in range(self.n_genes):
            rng = np.random.default_rng([self.seed, 7, g])
            kind = _KIND_CYCLE[g % len(_KIND_CYCLE)]
            j = counters[kind]
            counters[kind] += 1
            feature, domain, amp, damp = "", "", 0.0, 0.0
            base = rng.uniform(-1.0, 0.5)
            if kind == "ap_gradient":
                feature = ("ap_ant", "ap_post", "ap_wave")[j % 3]
                amp = rng.uniform(2.0, 3.5)
            elif kind == "dv_gradient":
                feature = ("dv_dors", "dv_vent")[j % 2]
                amp = rng.uniform(2.0, 3.5)
            elif kind == "lr_gradient":
                feature = "lr"
                amp = rng.uniform(2.0, 3.0) * (1 if j % 2 == 0 else -1)
            elif kind == "radial_gradient":
                feature = "radial"
                amp = rng.uniform(2.0, 3.5)
            elif kind == "domain_marker":
                domain = self.domains[j % n_dom]
                damp = rng.uniform(2.5, 3.5)
            elif kind == "mixed":
                feature = ("ap_ant", "dv_dors", "lr", "ap_post")[j % 4]
                domain = self.domains[(j * 2 + 1) % n_dom]
                amp = rng.uniform(1.5, 2.5)
                damp = rng.uniform(1.5, 2.5)
            else:  # housekeeping: high, nearly constant
                base = rng.uniform(1.5, 2.5)
                feature = "radial"
                amp = rng.uniform(0.05, 0.15)
            tag = {"domain_marker": f"mk_{domain}", "mixed": "mix", "housekeeping": "hk"}.get(kind, feature)
            rows.append(
                {
                    "gene": f"g{g:02d}_{tag}",
                    "kind": kind,
                    "feature": feature,
                    "axis": _FEATURE_AXIS.get(feature, "") if kind != "domain_marker" else "",
                    "domain": domain,
                    "base": base,
                    "amplitude": amp,
                    "domain_amplitude": damp,
                }
            )
        return pd.DataFrame(rows).set_index("gene")

    def _log_rate(self, coords):
        """Log expression rates (n, n_genes).

        ``mu_g = s_g + [domain(p) == d_g] * (domain_amplitude_g + c_d(p))`` with the smooth part
        ``s_g = base_g + amplitude_g * feature_g(p)``. The smooth, domain-specific offset ``c_d``
        makes every domain's markers add the same total rate ``T(p)`` (the mean over domains), so
        the total expression is continuous across domain boundaries and gradient genes stay smooth
        after library-size normalisation, as they would with balanced real markers.
        """
        u, v, w, r = self._geometry(coords)
        feats = self._features(u, v, w, r)
        codes = self._domain_codes(coords, u, v, w, r)
        g = self.genes
        fidx = np.array([_FEATURES.index(f) if f else 0 for f in g["feature"]])
        amp = g["amplitude"].to_numpy() * (g["feature"].to_numpy() != "")
        s = g["base"].to_numpy()[None, :] + feats[:, fidx] * amp[None, :]
        mu = s.copy()
        doms = g["domain"].to_numpy()
        damp = g["domain_amplitude"].to_numpy()
        marked = [d for d in self.domains if (doms == d).any()]
        if not marked:
            return mu
        es = np.exp(s)
        A = {d: es[:, doms == d].sum(axis=1) for d in marked}
        B = {d: (es[:, doms == d] * np.exp(damp[doms == d])).sum(axis=1) for d in marked}
        T = np.mean([B[d] - A[d] for d in marked], axis=0)
        dom_list = list(self.domains)
        for d in marked:
            cols = np.flatnonzero(doms == d)
            on = codes == dom_list.index(d)
            if on.any():
                c = np.log((T[on] + A[d][on]) / B[d][on])
                mu[np.ix_(on, cols)] += damp[cols][None, :] + c[:, None]
        return mu

    def proportions(self, coords) -> np.ndarray:
        """Expression proportions ``p`` (n, n_genes), rows summing to 1 (noise-free)."""
        c = check_coords(coords, "proportions", self.n_cols)
        mu = self._log_rate(c)
        e = np.exp(mu - mu.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def truth(self, coords) -> np.ndarray:
        """Noise-free log-normalised expression ``log1p(p * target_sum)``; (n, n_genes) float32.

        Defined everywhere (also outside the body, where it continues smoothly); use
        :meth:`inside` to mask.
        """
        return log_normalised(self.proportions(coords), self.target_sum)


class TimeseriesEmbryoModel(EmbryoModel):
    """The embryo growing over normalised developmental time ``t`` in [0, 1].

    Coordinates are (x, y, z, t). The half-length along x grows linearly,
    ``a(t) = 200 + 100 t`` (the body elongates from 400 to 600 units), the AP pattern scales with
    the body, and a posterior ``"tailbud"`` domain appears after ``t = 0.4``: it is the posterior
    cap ``u > 1 - 0.18 * clip((t - 0.4) / 0.4, 0, 1)`` (u = AP position in [0, 1]) and has its
    own marker genes (it takes over the posterior part of every other domain). Other parameters are as in :class:`EmbryoModel`.
    """

    n_cols = 4

    def _domain_names(self):
        return EMBRYO_DOMAINS + (TAILBUD,)

    def _axes(self, coords):
        t = coords[:, 3]
        return 200.0 + 100.0 * t, np.full(len(coords), self.b0)

    def _domain_codes(self, coords, u, v, w, r):
        codes = super()._domain_codes(coords, u, v, w, r)
        ramp = np.clip((coords[:, 3] - 0.4) / 0.4, 0.0, 1.0)
        tail = (ramp > 0) & (u > 1.0 - 0.18 * ramp) & (r <= 1.0)
        return np.where(tail, len(EMBRYO_DOMAINS), codes)


def _synthetic_info(adata: AnnData) -> dict:
    """``adata.uns["ntf"]["synthetic"]``: the parameters of the generator that made ``adata``."""
    ntf = adata.uns.get(Key.uns.ntf) if isinstance(adata, AnnData) else None
    info = ntf.get(Key.uns.synthetic) if isinstance(ntf, dict) else None
    if not isinstance(info, dict) or "generator" not in info:
        raise KeyError(
            "adata.uns['ntf']['synthetic'] with a 'generator' entry is missing: this AnnData was not made by an "
            "ntf_utils.datasets.synthetic_* function (or the entry was removed)."
        )
    return info


def _model_for(adata, generator: str, **given):
    """The truth model of ``adata`` (made by ``generator``), or one from the given parameters (None: default)."""
    cls, defaults = _GENERATORS[generator]
    explicit = {k: v for k, v in given.items() if v is not None}
    if adata is None:
        return cls(**{**defaults, **explicit})
    if explicit:
        raise ValueError(
            f"pass either adata or the generator parameters ({sorted(explicit)}), not both: the "
            "parameters are read from adata.uns['ntf']['synthetic']."
        )
    model = synthetic_model(adata)
    made_by = str(_synthetic_info(adata)["generator"])
    if made_by != generator:
        raise ValueError(
            f"adata was made by {made_by!r}, not {generator!r}; call "
            f"ntf_utils.datasets.synthetic_model(adata).truth(coords) instead."
        )
    return model


def synthetic_model(adata: AnnData):
    """Rebuild the ground-truth model of a synthetic AnnData from ``adata.uns["ntf"]["synthetic"]``.

    Parameters
    ----------
    adata
        An AnnData returned by :func:`synthetic_embryo`, :func:`synthetic_timeseries` or
        :func:`synthetic_tumour_proteomics` (or a subset/copy of one).

    Returns
    -------
    EmbryoModel or TimeseriesEmbryoModel or TumourModel
        Has ``truth(coords)``, ``truth_gradient(coords)`` and ``inside(coords)``, plus
        ``domain(coords)`` (embryo) or ``region(coords)`` (tumour).
    """
    info = _synthetic_info(adata)
    gen = str(info["generator"])
    if gen not in _GENERATORS:
        raise ValueError(f"unknown synthetic generator {gen!r} in adata.uns['ntf']['synthetic'].")
    cls, defaults = _GENERATORS[gen]
    return cls(**{name: type(default)(info[name]) for name, default in defaults.items()})


# ------------------------------------------------------------------------------------------
# embryo
# ------------------------------------------------------------------------------------------
def _check_sampling(n_sections, cells_per_section, library_size, noise, dispersion) -> tuple:
    """The checked ``(n_sections, cells_per_section, library_size, dispersion)`` of a counts generator."""
    n_sections = _check_positive_int(n_sections, "n_sections")
    cells_per_section = _check_positive_int(cells_per_section, "cells_per_section")
    library_size = _check_positive_float(library_size, "library_size")
    if noise not in ("poisson", "nb"):
        raise ValueError(f"noise must be 'poisson' or 'nb' (negative binomial), got {noise!r}.")
    return n_sections, cells_per_section, library_size, _check_positive_float(dispersion, "dispersion")


def _finish_counts(rng, props, n_cells, library_size, library_sdlog, noise, dispersion):
    lib = library_size * np.exp(library_sdlog * rng.standard_normal(n_cells))
    counts = _sample_counts(rng, props * lib[:, None], noise, dispersion).astype(np.float32)
    totals = counts.sum(axis=1)
    nz = totals > 0
    target_sum = float(np.median(totals[nz])) if nz.any() else float(library_size)
    return counts, lib, target_sum


def _set_coords(adata: AnnData, xyz: np.ndarray) -> None:
    """``obsm["spatial_3d"]`` (x, y, z) and ``obsm["spatial"]`` (x, y), float64."""
    adata.obsm[Key.obsm.spatial_3d] = xyz.astype(np.float64)
    adata.obsm[Key.obsm.spatial] = xyz[:, :2].astype(np.float64)


def _section_obs(section_names: list[str], n_per, columns: dict) -> pd.DataFrame:
    """``obs`` of cells stored section by section (``n_per[k]`` cells of ``section_names[k]``), named
    ``"<section>_c<j>"``: the ordered categorical ``section`` column, then ``columns``."""
    sec_idx = np.repeat(np.arange(len(section_names)), n_per)
    section = pd.Categorical(np.array(section_names)[sec_idx], categories=section_names, ordered=True)
    index = [f"{name}_c{j}" for name, n in zip(section_names, n_per) for j in range(n)]
    return pd.DataFrame({Key.obs.section: section, **columns}, index=index)


def _embryo_anndata(model, rng, coords, section_names, n_per, sections: dict, params: dict) -> AnnData:
    """Counts drawn at ``coords`` ((n, 3), or (n, 4) with time) of the embryo ``model``, as a stacked AnnData.

    ``params`` are the generator's parameters (with ``library_size``, ``library_sdlog``, ``noise`` and
    ``dispersion``); the median total count becomes ``model.target_sum``, the scale of ``layers["truth"]``.
    """
    props = model.proportions(coords)
    counts, lib, target_sum = _finish_counts(
        rng, props, len(coords), params["library_size"], params["library_sdlog"], params["noise"], params["dispersion"]
    )
    model.target_sum = target_sum
    columns = {Key.obs.z: coords[:, 2].astype(np.float64)}
    if coords.shape[1] == 4:
        columns[Key.obs.time] = coords[:, 3]
    columns[Key.obs.true_domain] = pd.Categorical(model.domain(coords), categories=list(model.domains))
    columns[Key.obs.library_size] = lib
    adata = AnnData(X=counts, obs=_section_obs(section_names, n_per, columns), var=model.genes.copy())
    adata.layers[Key.layers.counts] = counts.copy()
    adata.layers[Key.layers.truth] = log_normalised(props, target_sum)
    _set_coords(adata, coords[:, :3])
    adata.uns[Key.uns.ntf] = {
        Key.uns.sections: sections,
        Key.uns.synthetic: {**params, "seed": model.seed, "target_sum": target_sum, "domains": list(model.domains)},
    }
    return adata


def synthetic_embryo(
    n_sections: int = 24,
    cells_per_section: int = 1000,
    n_genes: int = 40,
    *,
    section_spacing: float = 10.0,
    library_size: float = 2000.0,
    noise: str = "poisson",
    dispersion: float = 0.2,
    library_sdlog: float = 0.3,
    seed: int = 0,
) -> AnnData:
    """Serial sections through a synthetic embryo-like body, with exact ground truth.

    A 3D ellipsoidal body (about 500 x 300 x ``n_sections * section_spacing`` units, long axis
    x = anterior-posterior, y = ventral-dorsal, z = the sectioning axis) carries

    - smooth gradients: an anterior morphogen ``exp(-u / 0.22)`` (u = AP position in [0, 1]),
      a posterior sigmoid, a periodic pair-rule-like AP wave, dorsal and ventral DV profiles,
      a gradient along z across the sections and a radial (inner-high) profile;
    - six domains with sharp boundaries: an ``"outer_layer"`` shell, an ``"inner_core"``, and
      four AP stripes in between (``"head"``, ``"trunk_anterior"``, ``"trunk_posterior"``,
      ``"tail"``) whose boundaries are slightly tilted along DV;
    - genes mixing these (``adata.var["kind"]``): gradient genes (``ap_gradient``,
      ``dv_gradient``, ``lr_gradient``, ``radial_gradient``), ``domain_marker`` genes, ``mixed``
      genes (a gradient plus a domain) and a few near-constant ``housekeeping`` genes. Marker
      levels carry a smooth domain-specific factor that gives every domain the same total marker
      load, so the total expression is continuous across domain boundaries and gradient genes stay
      smooth after library-size normalisation (see ``EmbryoModel._log_rate``).

    The body is cut at ``z = k * section_spacing`` (k = 0 .. n_sections - 1). Cells are sampled
    uniformly inside each cross-section, their number proportional to the cross-section area
    (``cells_per_section`` on average, so end sections are small). Each cell gets a library size
    ``library_size * exp(library_sdlog * N(0, 1))`` and counts drawn around
    ``library * p(x, y, z)``.

    Parameters
    ----------
    n_sections
        Number of sections.
    cells_per_section
        Mean number of cells per section.
    n_genes
        Number of genes (any positive number; kinds are cycled).
    section_spacing
        Distance between consecutive sections, in the same units as x and y.
    library_size
        Median library size (total counts per cell).
    noise
        ``"poisson"`` or ``"nb"`` (negative binomial: Poisson with a Gamma-distributed rate,
        variance ``mu + dispersion * mu^2``).
    dispersion
        NB dispersion; ignored for ``"poisson"``.
    library_sdlog
        Standard deviation of the log library size (lognormal spread).
    seed
        Seed of both the body/genes and the sampling; the same seed gives the same AnnData.

    Returns
    -------
    AnnData
        Stacked AnnData following ``docs/architecture.md``:

        - ``X``: counts (float32, dense); ``layers["counts"]``: the same counts;
        - ``layers["truth"]``: noise-free ``log1p(p * target_sum)`` at each cell, with
          ``target_sum`` the median total count of the sampled counts, i.e. the scale that
          ``ntf_utils.pp.log_normalize(adata)`` gives the counts;
        - ``obs``: ``section`` (categorical ``"s00"``, ``"s01"``, ... ordered by z), ``z``,
          ``domain`` (categorical true domain), ``library_size`` (the true per-cell library);
        - ``obsm["spatial"]`` (x, y) and ``obsm["spatial_3d"]`` (x, y, z), float64;
        - ``var``: ``kind``, ``feature``, ``axis``, ``domain``, ``base``, ``amplitude``,
          ``domain_amplitude`` of each gene;
        - ``uns["ntf"]["sections"] = {"names": [...], "z": [...]}``;
        - ``uns["ntf"]["synthetic"]``: the generator's parameters and ``target_sum``. Rebuild the truth
          anywhere with :func:`synthetic_embryo_truth` ``(coords, adata)`` or
          :func:`synthetic_model`.

    See Also
    --------
    synthetic_embryo_truth, synthetic_embryo_domain, synthetic_timeseries, EmbryoModel

    Examples
    --------
    >>> import ntf_utils as ntf
    >>> adata = ntf.datasets.synthetic_embryo(n_sections=6, cells_per_section=200, seed=1)
    >>> grid = [[0.0, 0.0, 25.0], [100.0, 50.0, 25.0]]
    >>> ntf.datasets.synthetic_embryo_truth(grid, adata).shape
    (2, 40)
    """
    n_sections, cells_per_section, library_size, dispersion = _check_sampling(
        n_sections, cells_per_section, library_size, noise, dispersion
    )
    if float(library_sdlog) < 0:
        raise ValueError(f"library_sdlog must be >= 0, got {library_sdlog!r}.")
    model = EmbryoModel(n_sections, section_spacing, n_genes, seed, target_sum=library_size)
    rng = np.random.default_rng([model.seed, 1])

    z_sec = np.arange(n_sections) * model.section_spacing
    frac = 1.0 - ((z_sec - model.zc) / model.c) ** 2  # relative cross-section area
    n_per = np.maximum(1, np.round(cells_per_section * n_sections * frac / frac.sum()).astype(int))
    xy = np.concatenate(
        [
            _sample_ellipse(rng, n, model.a0 * np.sqrt(f), model.b0 * np.sqrt(f))
            for n, f in zip(n_per, frac, strict=True)
        ]
    )
    coords = np.column_stack([xy, np.repeat(z_sec, n_per)])
    names = _section_names(n_sections)
    params = {
        "generator": "synthetic_embryo",
        "n_sections": n_sections,
        "cells_per_section": cells_per_section,
        "n_genes": model.n_genes,
        "section_spacing": model.section_spacing,
        "library_size": library_size,
        "noise": noise,
        "dispersion": dispersion,
        "library_sdlog": float(library_sdlog),
        "semi_axes": [model.a0, model.b0, model.c],
        "centre": [0.0, 0.0, model.zc],
    }
    sections = {"names": names, "z": [float(z) for z in z_sec]}
    return _embryo_anndata(model, rng, coords, names, n_per, sections, params)


def synthetic_embryo_truth(
    coords,
    adata: AnnData | None = None,
    *,
    n_sections: int | None = None,
    n_genes: int | None = None,
    section_spacing: float | None = None,
    seed: int | None = None,
    target_sum: float | None = None,
) -> np.ndarray:
    """Noise-free log-normalised expression of the synthetic embryo at any 3D coordinates.

    Parameters
    ----------
    coords
        (n, 3) array of (x, y, z) in the units of ``obsm["spatial_3d"]``.
    adata
        An AnnData from :func:`synthetic_embryo`; its ``uns["ntf"]["synthetic"]`` gives the parameters
        (including the ``target_sum`` of its counts). Pass either ``adata`` or the parameters.
    n_sections, n_genes, section_spacing, seed
        The generator's parameters (defaults 24, 40, 10.0, 0) when ``adata`` is not given.
    target_sum
        Scale of ``log1p(p * target_sum)``; defaults to 2000 (the default median library size)
        when ``adata`` is not given.

    Returns
    -------
    numpy.ndarray
        (n, n_genes) float32, columns in ``adata.var_names`` order. Points outside the body get the
        smooth continuation of the field; mask them with ``synthetic_embryo_domain(...) != "outside"``.
    """
    model = _model_for(
        adata, "synthetic_embryo", n_sections=n_sections, n_genes=n_genes, section_spacing=section_spacing,
        seed=seed, target_sum=target_sum,
    )
    return model.truth(coords)


def synthetic_embryo_domain(
    coords,
    adata: AnnData | None = None,
    *,
    n_sections: int | None = None,
    section_spacing: float | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """True domain of the synthetic embryo at any 3D coordinates.

    Parameters
    ----------
    coords
        (n, 3) array of (x, y, z).
    adata
        An AnnData from :func:`synthetic_embryo` (or pass the parameters instead).
    n_sections, section_spacing, seed
        The generator's parameters (defaults 24, 10.0, 0) when ``adata`` is not given.

    Returns
    -------
    numpy.ndarray
        (n,) object array of domain names; ``"outside"`` outside the body.
    """
    model = _model_for(adata, "synthetic_embryo", n_sections=n_sections, section_spacing=section_spacing, seed=seed)
    return model.domain(coords)


# ------------------------------------------------------------------------------------------
# time series
# ------------------------------------------------------------------------------------------
def synthetic_timeseries(
    n_times: int = 4,
    n_sections: int = 12,
    cells_per_section: int = 500,
    n_genes: int = 40,
    *,
    section_spacing: float = 20.0,
    library_size: float = 2000.0,
    noise: str = "poisson",
    dispersion: float = 0.2,
    library_sdlog: float = 0.3,
    seed: int = 0,
) -> AnnData:
    """Serial sections of the synthetic embryo at several developmental times.

    Time points are ``t = linspace(0, 1, n_times)`` (normalised developmental time). At each time
    the body of :class:`TimeseriesEmbryoModel` is cut into ``n_sections`` sections at
    ``z = k * section_spacing``. Over time the body elongates along x (400 -> 600 units; the AP
    pattern scales with it, so gradients stretch) and a posterior ``"tailbud"`` domain with its
    own marker genes appears after ``t = 0.4``. The number of cells grows with the body
    (``cells_per_section`` on average at ``t = 0.5``). Sampling is as in :func:`synthetic_embryo`.

    Parameters
    ----------
    n_times
        Number of time points.
    n_sections, cells_per_section, n_genes, section_spacing, library_size, noise, dispersion, library_sdlog, seed
        As in :func:`synthetic_embryo`.

    Returns
    -------
    AnnData
        Stacked AnnData as in :func:`synthetic_embryo` plus ``obs["time"]`` (float). Sections are
        named ``"t0_s00"``, ... and ordered by (time, z); ``uns["ntf"]["sections"]`` has ``names``,
        ``z`` and ``time``. ``layers["truth"]`` uses the median total count over all time points.
        The truth at any (x, y, z, t) is :func:`synthetic_timeseries_truth`.
    """
    n_times = _check_positive_int(n_times, "n_times")
    n_sections, cells_per_section, library_size, dispersion = _check_sampling(
        n_sections, cells_per_section, library_size, noise, dispersion
    )
    model = TimeseriesEmbryoModel(n_sections, section_spacing, n_genes, seed, target_sum=library_size)
    rng = np.random.default_rng([model.seed, 1])
    times = np.linspace(0.0, 1.0, n_times) if n_times > 1 else np.zeros(1)

    z_sec = np.arange(n_sections) * model.section_spacing
    frac = 1.0 - ((z_sec - model.zc) / model.c) ** 2
    sec_names = _section_names(n_sections)
    names, sec_z, sec_t, blocks = [], [], [], []
    for ti, t in enumerate(times):
        a_t = 200.0 + 100.0 * t
        n_per = np.maximum(
            1, np.round(cells_per_section * n_sections * frac / frac.sum() * a_t / 250.0).astype(int)
        )
        for k in range(n_sections):
            name = f"t{ti}_{sec_names[k]}"
            names.append(name)
            sec_z.append(float(z_sec[k]))
            sec_t.append(float(t))
            xy = _sample_ellipse(rng, n_per[k], a_t * np.sqrt(frac[k]), model.b0 * np.sqrt(frac[k]))
            blocks.append(np.column_stack([xy, np.full(n_per[k], z_sec[k]), np.full(n_per[k], t)]))
    params = {
        "generator": "synthetic_timeseries",
        "n_times": n_times,
        "times": [float(t) for t in times],
        "n_sections": n_sections,
        "cells_per_section": cells_per_section,
        "n_genes": model.n_genes,
        "section_spacing": model.section_spacing,
        "library_size": library_size,
        "noise": noise,
        "dispersion": dispersion,
        "library_sdlog": float(library_sdlog),
    }
    sections = {"names": names, "z": sec_z, "time": sec_t}
    n_per_section = [len(b) for b in blocks]
    return _embryo_anndata(model, rng, np.concatenate(blocks), names, n_per_section, sections, params)


def synthetic_timeseries_truth(
    coords,
    adata: AnnData | None = None,
    *,
    n_sections: int | None = None,
    n_genes: int | None = None,
    section_spacing: float | None = None,
    seed: int | None = None,
    target_sum: float | None = None,
) -> np.ndarray:
    """Noise-free log-normalised expression of the growing embryo at any (x, y, z, t).

    Parameters
    ----------
    coords
        (n, 4) array of (x, y, z, time), time in [0, 1] (values outside extrapolate the growth).
    adata
        An AnnData from :func:`synthetic_timeseries` (or pass the parameters instead).
    n_sections, n_genes, section_spacing, seed, target_sum
        The generator's parameters (defaults 12, 40, 20.0, 0, 2000.0) when ``adata`` is not given.

    Returns
    -------
    numpy.ndarray
        (n, n_genes) float32.
    """
    model = _model_for(
        adata, "synthetic_timeseries", n_sections=n_sections, n_genes=n_genes, section_spacing=section_spacing,
        seed=seed, target_sum=target_sum,
    )
    return model.truth(coords)


# ------------------------------------------------------------------------------------------
# tumour (imaging mass cytometry-like)
# ------------------------------------------------------------------------------------------
TUMOUR_MARKERS = (
    "panCK",
    "Ki-67",
    "E-cadherin",
    "P-cadherin",
    "Vimentin",
    "CD45",
    "CD3",
    "CD68",
    "aSMA",
    "HER2",
    "CA9",
    "Collagen I",
    "CD20",
    "Histone H3",
    "DNA1",
)
TUMOUR_REGIONS = ("hypoxic_core", "tumour", "invasive_front", "immune_margin", "stroma")
TUMOUR_EXPECTED = {
    "panCK": "high inside the tumour (rho < 1), low outside",
    "Ki-67": "increases outward inside the tumour: highest at the invasive front, low in the hypoxic core",
    "E-cadherin": "inside the tumour, decreases towards the invasive front (outward) and towards the hypoxic core",
    "P-cadherin": "tumour cells only, increasing along +x (lateral heterogeneity)",
    "Vimentin": "stroma, plus a peak at the invasive front (EMT)",
    "CD45": "peaks in the immune margin just outside the tumour boundary (rho ~ 1.1)",
    "CD3": "peaks in the immune margin; some infiltration into the outer tumour",
    "CD68": "immune margin and the hypoxic core (macrophages)",
    "aSMA": "stroma outside the margin (cancer-associated fibroblasts)",
    "HER2": "high in tumour cells, somewhat lower in the hypoxic core",
    "CA9": "hypoxia marker: high in the hypoxic core, decreasing outward",
    "Collagen I": "stroma, increasing away from the tumour",
    "CD20": "a B-cell aggregate (tertiary lymphoid structure) in the stroma",
    "Histone H3": "nearly constant (nuclear)",
    "DNA1": "constant (nuclear DNA intercalator)",
}


class TumourModel(_FieldModel):
    """Noise-free marker intensities of the synthetic breast tumour (see :func:`synthetic_tumour_proteomics`).

    SYNTHETIC: a made-up tumour for testing, not a model of real tissue.

    The field of view is x, y in [0, 1000] um; sections are at ``z = k * section_spacing``. The
    tumour is a lobulated ellipsoid centred near ``(500, 480, -20)`` (just below the first section, so
    it shrinks with z) with semi-axes about (360, 300, 300) um. ``rho`` is the normalised radial
    coordinate (``rho < 1`` inside the tumour). Regions: ``hypoxic_core`` (rho < 0.4), ``tumour``
    (0.4-0.8), ``invasive_front`` (0.8-1.0), ``immune_margin`` (1.0-1.25), ``stroma``.

    Parameters
    ----------
    n_sections, section_spacing
        The sectioning (kept for bookkeeping; the tumour itself does not depend on them).
    seed
        Jitters the tumour centre, the lobulation and the B-cell aggregate.
    """

    cofactor = 5.0

    def __init__(self, n_sections=12, section_spacing=10.0, seed=0):
        self.n_sections = _check_positive_int(n_sections, "n_sections")
        self.section_spacing = _check_positive_float(section_spacing, "section_spacing")
        self.seed = _check_positive_int(seed, "seed", minimum=0)
        rng = np.random.default_rng([self.seed, 11])
        self.centre = np.array([500.0, 480.0, -20.0]) + rng.uniform(-30, 30, 3) * np.array([1, 1, 0.5])
        self.semi_axes = np.array([360.0, 300.0, 300.0]) * rng.uniform(0.95, 1.05, 3)
        self.lobe_phase = rng.uniform(0, 2 * np.pi)
        self.lobe_amp = 0.08
        ang = rng.uniform(0, 2 * np.pi)
        self.tls_centre = np.array([500 + 420 * np.cos(ang), 500 + 420 * np.sin(ang), 40.0])
        self.markers = TUMOUR_MARKERS
        self.regions = TUMOUR_REGIONS

    def rho(self, coords) -> np.ndarray:
        """Normalised radial coordinate (n,): < 1 inside the tumour, 1 on its boundary."""
        c = check_coords(coords, "rho", 3)
        d = (c - self.centre) / self.semi_axes
        phi = np.arctan2(d[:, 1], d[:, 0])
        return np.sqrt((d**2).sum(axis=1)) / (1.0 + self.lobe_amp * np.sin(3 * phi + self.lobe_phase))

    def outward(self, coords, *, eps: float = 0.5) -> np.ndarray:
        """Unit vectors (n, 3) pointing away from the tumour centre (normalised gradient of rho)."""
        c = check_coords(coords, "outward", 3)
        g = np.stack([(self.rho(c + e) - self.rho(c - e)) / (2 * eps) for e in np.eye(3) * eps], axis=1)
        return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)

    def inside(self, coords) -> np.ndarray:
        """Boolean mask (n,): inside the tumour (rho < 1)."""
        return self.rho(coords) < 1.0

    def region(self, coords) -> np.ndarray:
        """Region name per point; (n,) object array."""
        rho = self.rho(coords)
        codes = np.searchsorted(np.array([0.4, 0.8, 1.0, 1.25]), rho, side="right")
        return np.array(self.regions, dtype=object)[codes]

    domain = region

    def intensity(self, coords) -> np.ndarray:
        """Mean marker intensity (ion counts) per point, (n, n_markers) float64, before arcsinh."""
        c = check_coords(coords, "intensity", 3)
        rho = self.rho(c)
        tum = _sigmoid((1.0 - rho) / 0.03)
        out = 1.0 - tum
        hyp = _sigmoid((0.45 - rho) / 0.06)
        front = np.exp(-(((rho - 0.9) / 0.12) ** 2))
        margin = np.exp(-(((rho - 1.12) / 0.1) ** 2))
        towards_front = _sigmoid((rho - 0.6) / 0.1)
        lateral = _sigmoid((c[:, 0] - 500.0) / 80.0)
        tls = np.exp(-((np.linalg.norm(c - self.tls_centre, axis=1) / 70.0) ** 2))
        cols = {
            "panCK": 5 + 60 * tum,
            "Ki-67": 1 + 40 * tum * towards_front * (1 - hyp),
            "E-cadherin": 3 + 50 * tum * (1 - 0.8 * hyp) * (1 - 0.7 * _sigmoid((rho - 0.75) / 0.08)),
            "P-cadherin": 2 + 25 * tum * lateral,
            "Vimentin": 5 + 40 * out + 25 * front,
            "CD45": 2 + 40 * margin + 8 * tum * towards_front + 30 * tls,
            "CD3": 1 + 30 * margin + 5 * tum * towards_front + 10 * tls,
            "CD68": 2 + 20 * margin + 15 * hyp * tum,
            "aSMA": 3 + 45 * out * _sigmoid((rho - 1.05) / 0.05),
            "HER2": 3 + 70 * tum * (1 - 0.3 * hyp),
            "CA9": 1 + 40 * hyp * tum,
            "Collagen I": 3 + 50 * out * _sigmoid((rho - 1.15) / 0.08),
            "CD20": 1 + 40 * tls,
            "Histone H3": 30 + 2 * tum,
            "DNA1": np.full(len(c), 60.0),
        }
        return np.column_stack([cols[m] for m in self.markers])

    def truth(self, coords) -> np.ndarray:
        """Noise-free ``arcsinh(intensity / 5)`` per point; (n, n_markers) float32."""
        return np.arcsinh(self.intensity(coords) / self.cofactor).astype(np.float32)


def synthetic_tumour_proteomics(
    n_sections: int = 12,
    cells_per_section: int = 3000,
    *,
    section_spacing: float = 10.0,
    cell_sdlog: float = 0.25,
    seed: int = 0,
) -> AnnData:
    """SYNTHETIC imaging-mass-cytometry-like serial sections of a breast tumour, with exact truth.

    This is made-up data for testing and demos, not measurements. A lobulated ellipsoidal
    tumour (see :class:`TumourModel`) sits in a 1000 x 1000 um field of view and is sectioned at
    ``z = k * section_spacing``. Fifteen markers (panCK, Ki-67, E-cadherin, P-cadherin, Vimentin,
    CD45, CD3, CD68, aSMA, HER2, CA9, Collagen I, CD20, Histone H3, DNA1) follow known
    patterns (``adata.uns["ntf"]["synthetic"]["expected"]``), among them:

    - Ki-67 increases towards the invasive front and is low in the hypoxic core;
    - E-cadherin decreases towards the invasive front and towards the hypoxic core;
    - CA9 (hypoxia) is high in the core; CD45/CD3 peak in the immune margin just outside the
      tumour; aSMA and Collagen I mark the stroma; P-cadherin has a lateral (+x) gradient.

    Cells are uniform in each section. Observed intensities are ion counts
    ``Poisson(I(x) * exp(cell_sdlog * N(0, 1)))`` and are transformed as
    ``arcsinh(intensity / 5)``, the usual IMC transform.

    Parameters
    ----------
    n_sections
        Number of sections.
    cells_per_section
        Cells per section.
    section_spacing
        Distance between sections in um.
    cell_sdlog
        Cell-to-cell lognormal spread of the intensities.
    seed
        Seed of the tumour geometry and the sampling.

    Returns
    -------
    AnnData
        Stacked AnnData (``docs/architecture.md``): ``X`` = ``arcsinh(intensity / 5)`` (float32),
        ``layers["intensity"]`` the raw ion counts, ``layers["truth"]`` the noise-free
        ``arcsinh(I / 5)``, ``obs`` ``section`` / ``z`` / ``region`` (categorical), ``obsm["spatial"]``
        and ``obsm["spatial_3d"]`` in um, and ``uns["ntf"]`` with ``"sections"``, ``"transform"`` and
        ``"synthetic"`` (with ``synthetic=True`` and the expected patterns). Truth and its
        gradient anywhere: :func:`synthetic_tumour_truth`, :func:`synthetic_tumour_truth_gradient`;
        :func:`synthetic_model` gives the :class:`TumourModel` (``rho``, ``outward``, ``region``).
    """
    n_sections = _check_positive_int(n_sections, "n_sections")
    cells_per_section = _check_positive_int(cells_per_section, "cells_per_section")
    if float(cell_sdlog) < 0:
        raise ValueError(f"cell_sdlog must be >= 0, got {cell_sdlog!r}.")
    model = TumourModel(n_sections, section_spacing, seed)
    rng = np.random.default_rng([model.seed, 1])
    names = _section_names(n_sections)
    z_sec = np.arange(n_sections) * model.section_spacing
    n = n_sections * cells_per_section
    coords = np.column_stack(
        [rng.uniform(0, 1000, n), rng.uniform(0, 1000, n), np.repeat(z_sec, cells_per_section)]
    )
    mean_int = model.intensity(coords)
    obs_int = rng.poisson(mean_int * np.exp(float(cell_sdlog) * rng.standard_normal((n, 1)))).astype(
        np.float32
    )
    X = np.arcsinh(obs_int / model.cofactor).astype(np.float32)
    truth = np.arcsinh(mean_int / model.cofactor).astype(np.float32)
    obs = _section_obs(
        names,
        [cells_per_section] * n_sections,
        {
            Key.obs.z: coords[:, 2],
            Key.obs.region: pd.Categorical(model.region(coords), categories=list(model.regions)),
        },
    )
    var = pd.DataFrame({"expected": [TUMOUR_EXPECTED[m] for m in model.markers]}, index=list(model.markers))
    adata = AnnData(X=X, obs=obs, var=var)
    adata.layers[Key.layers.intensity] = obs_int
    adata.layers[Key.layers.truth] = truth
    _set_coords(adata, coords)
    synthetic = {
        "generator": "synthetic_tumour_proteomics",
        "synthetic": True,
        "note": "SYNTHETIC data made by ntf_utils.datasets.synthetic_tumour_proteomics; not measurements.",
        "n_sections": n_sections,
        "cells_per_section": cells_per_section,
        "section_spacing": model.section_spacing,
        "cell_sdlog": float(cell_sdlog),
        "seed": model.seed,
        "units": "um",
        "regions": list(model.regions),
        "tumour_centre": [float(v) for v in model.centre],
        "tumour_semi_axes": [float(v) for v in model.semi_axes],
        "expected": dict(TUMOUR_EXPECTED),
    }
    adata.uns[Key.uns.ntf] = {
        Key.uns.sections: {"names": names, "z": [float(z) for z in z_sec]},
        Key.uns.transform: {"name": "arcsinh", "cofactor": 5.0, "formula": "X = arcsinh(intensity / 5)"},
        Key.uns.synthetic: synthetic,
    }
    return adata


_GENERATORS = {  # generator -> (its truth model, the model's parameters with their defaults)
    "synthetic_embryo": (
        EmbryoModel,
        {"n_sections": 24, "section_spacing": 10.0, "n_genes": 40, "seed": 0, "target_sum": 2000.0},
    ),
    "synthetic_timeseries": (
        TimeseriesEmbryoModel,
        {"n_sections": 12, "section_spacing": 20.0, "n_genes": 40, "seed": 0, "target_sum": 2000.0},
    ),
    "synthetic_tumour_proteomics": (TumourModel, {"n_sections": 12, "section_spacing": 10.0, "seed": 0}),
}


def synthetic_tumour_truth(
    coords,
    adata: AnnData | None = None,
    *,
    n_sections: int | None = None,
    section_spacing: float | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Noise-free ``arcsinh(intensity / 5)`` of the SYNTHETIC tumour at any 3D coordinates.

    Parameters
    ----------
    coords
        (n, 3) array of (x, y, z) in um.
    adata
        An AnnData from :func:`synthetic_tumour_proteomics` (or pass the parameters instead).
    n_sections, section_spacing, seed
        The generator's parameters (defaults 12, 10.0, 0) when ``adata`` is not given.

    Returns
    -------
    numpy.ndarray
        (n, n_markers) float32, columns in marker order (``adata.var_names``).
    """
    model = _model_for(
        adata, "synthetic_tumour_proteomics", n_sections=n_sections, section_spacing=section_spacing, seed=seed
    )
    return model.truth(coords)


def synthetic_tumour_truth_gradient(
    coords,
    adata: AnnData | None = None,
    *,
    n_sections: int | None = None,
    section_spacing: float | None = None,
    seed: int | None = None,
    eps: float = 0.5,
) -> np.ndarray:
    """Spatial gradient of :func:`synthetic_tumour_truth` at any 3D coordinates.

    Parameters
    ----------
    coords
        (n, 3) array of (x, y, z) in um.
    adata
        An AnnData from :func:`synthetic_tumour_proteomics` (or pass the parameters instead).
    n_sections, section_spacing, seed
        The generator's parameters (defaults 12, 10.0, 0) when ``adata`` is not given.
    eps
        Central-difference step in um.

    Returns
    -------
    numpy.ndarray
        (n, n_markers, 3) float64: d arcsinh(I/5) / d(x, y, z) per um. Compare with
        ``synthetic_model(adata).outward(coords)`` to check that, e.g., Ki-67 increases outward.
    """
    model = _model_for(
        adata, "synthetic_tumour_proteomics", n_sections=n_sections, section_spacing=section_spacing, seed=seed
    )
    return model.truth_gradient(coords, eps=eps)
