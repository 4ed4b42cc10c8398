"""Rigid registration of serial sections (rotation + translation, optional reflection).

Serial sections of spatial transcriptomics data (ST, Visium, HER2ST, ...) are imaged one by one
and their in-plane coordinates are not registered: each section is rotated and shifted
arbitrarily. :func:`align_sections` estimates one rigid transform per section so that
neighbouring sections overlap, chaining from a reference section.

Transform convention
--------------------
A section's aligned coordinates are ``xy_aligned = xy @ A.T + t`` where ``A`` is a 2x2
orthogonal matrix (a rotation, times a reflection ``diag(1, -1)`` on the right when the section
was mirrored) and ``t`` a translation, both stored as plain lists in ``uns["ntf"]["alignment"]``.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from .._anndata import read_coords, read_matrix
from .._constants import Key
from .._docs import doc_copy, doc_params, doc_section_key
from ._normalize import log1p_normalized, row_totals

__all__ = ["align_sections", "alignment_score"]

_FLIP = np.diag([1.0, -1.0])
# Final polish: a wide symmetric kernel (1.5 spot spacings, all fixed points within 3 sigma) so
# that spot lattices with different offsets do not lock onto each other.
POLISH_SIGMA = 1.5
POLISH_K = 64
POLISH_RADIUS = 3.0
# An alignment that raises alignment_score by less than this is reported as not helping.
MIN_SCORE_GAIN = 0.01


# ----------------------------------------------------------------------------- geometry
def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _procrustes(
    src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Proper rotation R and translation t minimising ``sum w |src @ R.T + t - dst|^2``."""
    w = np.ones(len(src)) if w is None else np.asarray(w, dtype=np.float64)
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    h = ((src - ms) * w[:, None]).T @ (dst - md)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    r = vt.T @ np.diag([1.0, d]) @ u.T
    return r, md - ms @ r.T


def _median_spacing(xy: np.ndarray) -> float:
    xy = np.unique(xy, axis=0)
    if len(xy) < 2:
        return 1.0
    d, _ = cKDTree(xy).query(xy, k=2)
    s = float(np.median(d[:, 1]))
    return s if s > 0 else 1.0


def _angle_deg(r: np.ndarray) -> float:
    return float(np.degrees(np.arctan2(r[1, 0], r[0, 0])))


# ----------------------------------------------------------------------------- expression
def _looks_like_counts(m) -> bool:
    data = m.data if sparse.issparse(m) else np.asarray(m).ravel()
    if data.size == 0:
        return False
    sample = data[:: max(data.size // 20000, 1)]
    return bool((sample >= 0).all() and np.allclose(sample, np.round(sample)))


def _expression_features(mats: list, n_pcs: int, random_state: int) -> list[np.ndarray]:
    """Joint PCA of log-normalised, standardised shared genes; one (n_i, n_pcs) array per section."""
    from sklearn.decomposition import PCA

    standardised = _standardised(mats)
    if standardised is None:
        return None
    x = np.vstack(standardised)
    n_comp = int(min(n_pcs, x.shape[1], x.shape[0] - 1))
    pcs = PCA(n_components=n_comp, random_state=random_state).fit_transform(x)
    out, start = [], 0
    for m in standardised:
        out.append(pcs[start : start + m.shape[0]])
        start += m.shape[0]
    return out


def _standardised(mats: list) -> list[np.ndarray] | None:
    """Log-normalised (counts), jointly standardised values of the (up to 2000) most variable shared genes."""
    logged = []
    for m in mats:
        m = sparse.csr_matrix(m, dtype=np.float64) if sparse.issparse(m) else np.asarray(m, np.float64)
        if _looks_like_counts(m):
            lib = row_totals(m)
            m = log1p_normalized(m, lib, np.median(lib[lib > 0]) if (lib > 0).any() else 1.0)
        logged.append(m.toarray() if sparse.issparse(m) else m)
    x = np.vstack(logged)
    var = x.var(axis=0)
    keep = np.argsort(var)[::-1][: min(2000, x.shape[1])]
    keep = keep[var[keep] > 0]
    if len(keep) < 2:
        return None
    x = x[:, keep]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    np.clip(x, -10, 10, out=x)
    return np.split(x, np.cumsum([m.shape[0] for m in logged])[:-1])


# ----------------------------------------------------------------------------- ICP
def _rows(e, idx):
    """``e[idx]``, or None for no expression features (``e`` None)."""
    return None if e is None else e[idx]


def _icp(pm, em, pf, ef, tree_f, r, t, n_iter, *, sigma0=2.0, sigma_min=0.5, k=8, radius=None, trim=0.9):
    """Rigid ICP with soft (annealed) correspondences in the joint (space, expression) space.

    Each moving point is pulled towards the Gaussian-weighted mean position of its ``k``
    nearest fixed points in the joint space (kernel width ``sigma``, annealed from ``sigma0``
    to ``sigma_min``; soft targets avoid the local minima of hard nearest neighbours on spot
    lattices). With ``radius`` (in units of sigma), only fixed points within that joint
    distance count, which keeps the kernel symmetric so that a wide kernel really blurs the
    lattice away. The 10 % of points with the worst best match are trimmed and the rigid
    transform is solved by Procrustes. ``pm``/``pf`` are in spacing units, ``em``/``ef`` scaled
    expression features (or None). Returns ``(R, t, cost)``.
    """
    k = min(k, len(pf))
    pf_pad = np.vstack([pf, np.zeros((1, 2))])  # index len(pf) = "no neighbour within the radius"
    for it in range(n_iter):
        sigma = max(sigma_min, sigma0 * 0.85**it)
        q = pm @ r.T + t
        jm = q if em is None else np.hstack([q, em])
        bound = np.inf if radius is None else radius * sigma
        d, j = tree_f.query(jm, k=k, distance_upper_bound=bound)
        d, j = d.reshape(len(pm), k), j.reshape(len(pm), k)
        found = np.isfinite(d)
        d0 = np.where(found[:, :1], d[:, :1], 0.0)
        w = np.where(found, np.exp(-0.5 * ((np.where(found, d, 0.0) ** 2 - d0**2) / sigma**2)), 0.0)
        wsum = w.sum(axis=1)
        has = wsum > 0
        target = (w[..., None] * pf_pad[j]).sum(axis=1) / np.where(has, wsum, 1.0)[:, None]
        nearest = np.where(found[:, 0], d[:, 0], np.inf)
        sel = has & (nearest <= np.quantile(nearest[has], trim)) if has.sum() >= 3 else has
        if sel.sum() < 3:
            break
        r_new, t_new = _procrustes(pm[sel], target[sel])
        small = abs(_angle_deg(r_new @ r.T)) < 1e-3 and np.linalg.norm(t_new - t) < 1e-3
        r, t = r_new, t_new
        if small and sigma <= sigma_min:
            break
    q = pm @ r.T + t
    jm = q if em is None else np.hstack([q, em])
    d_f, _ = tree_f.query(jm)
    cost = float(np.mean(np.minimum(d_f, 3.0) ** 2))
    return r, t, cost


def _register_pair(
    pm_raw, em, pf_raw, ef, *, allow_reflection, n_rotations, max_iter, max_points, rng, polish=0.5
):
    """Rigid transform (A, t, cost) mapping moving points onto fixed points."""
    s = _median_spacing(pf_raw)
    pm_all = pm_raw / s
    pf_all = pf_raw / s

    def sub(n, cap):
        return np.sort(rng.choice(n, size=cap, replace=False)) if n > cap else np.arange(n)

    im, i_f = sub(len(pm_all), max_points), sub(len(pf_all), max_points)
    im_c, if_c = im[sub(len(im), 400)], i_f[sub(len(i_f), 400)]

    def joint(p, e, idx):
        return p[idx] if e is None else np.hstack([p[idx], e[idx]])

    def refine(pm, moving, fixed, tree, r, t, n_iter):
        return _icp(pm[moving], _rows(em, moving), pf_all[fixed], _rows(ef, fixed), tree, r, t, n_iter=n_iter)

    tree_f = cKDTree(joint(pf_all, ef, i_f))
    tree_f_c = cKDTree(joint(pf_all, ef, if_c))
    cf = pf_all[i_f].mean(axis=0)

    candidates = []
    flips = (False, True) if allow_reflection else (False,)
    for flip in flips:
        pm = pm_all @ _FLIP.T if flip else pm_all
        cm = pm[im].mean(axis=0)
        for k in range(n_rotations):
            r0 = _rot(2 * np.pi * k / n_rotations)
            t0 = cf - cm @ r0.T
            r, t, cost = refine(pm, im_c, if_c, tree_f_c, r0, t0, n_iter=15)
            candidates.append((cost, flip, r, t))
    candidates.sort(key=lambda c: c[0])
    best = None
    for _, flip, r, t in candidates[:3]:
        pm = pm_all @ _FLIP.T if flip else pm_all
        r, t, cost = refine(pm, im, i_f, tree_f, r, t, n_iter=max_iter)
        if best is None or cost < best[0]:
            best = (cost, flip, r, t)
    cost, flip, r, t = best
    if em is not None and polish is not None and polish != 1.0:
        # polish: same ICP with the expression term down-weighted, so that the final pose is
        # set mostly by the spot geometry once expression has picked the basin
        pm = pm_all @ _FLIP.T if flip else pm_all
        tree_p = cKDTree(np.hstack([pf_all[i_f], polish * ef[i_f]]))
        r, t, _ = _icp(
            pm[im],
            polish * em[im],
            pf_all[i_f],
            polish * ef[i_f],
            tree_p,
            r,
            t,
            n_iter=max_iter,
            sigma0=POLISH_SIGMA,
            sigma_min=POLISH_SIGMA,
            k=POLISH_K,
            radius=POLISH_RADIUS,
        )
    a = r @ _FLIP if flip else r
    return a, t * s, cost


# ----------------------------------------------------------------------------- reading the sections
def _section_xy(adata, spatial_key: str, what: str) -> np.ndarray:
    """``obsm[spatial_key]`` (2 or 3 columns) as float64; errors name the section (``what``)."""
    try:
        return read_coords(adata, spatial_key, n_cols=(2, 3))
    except KeyError as err:
        raise KeyError(f"{what}: {err.args[0]} Pass spatial_key=... naming the in-plane coordinates.") from err
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from err


def _read_stacked(adata, spatial_key: str, section_key: str, layer, use_expression: bool):
    """Names, cell rows, full coordinates, in-plane coordinates and expression of each section."""
    if section_key not in adata.obs:
        raise KeyError(
            f"obs[{section_key!r}] not found; a stacked AnnData needs a column naming its "
            "sections (pass section_key=...), or pass a list of per-section AnnData."
        )
    col = adata.obs[section_key]
    names = (
        [str(c) for c in col.cat.categories if (col == c).any()]
        if hasattr(col, "cat")
        else [str(c) for c in dict.fromkeys(col.astype(str))]
    )
    labels = col.astype(str).to_numpy()
    rows = [np.flatnonzero(labels == nm) for nm in names]
    xy_full = _section_xy(adata, spatial_key, "adata")
    mat = read_matrix(adata, layer) if use_expression else None
    mats = [mat[r] for r in rows] if use_expression else None
    return names, rows, xy_full, [xy_full[r, :2] for r in rows], mats


def _read_list(sections: list, spatial_key: str, layer, use_expression: bool):
    """In-plane coordinates and shared-gene expression of each section (None: positions only)."""
    if len(sections) == 0:
        raise ValueError("sections is empty; pass a list of AnnData, one per section.")
    xys = [_section_xy(a, spatial_key, f"sections[{i}]")[:, :2] for i, a in enumerate(sections)]
    if not use_expression:
        return xys, None
    shared = list(sections[0].var_names)
    for a in sections[1:]:
        shared = [g for g in shared if g in set(a.var_names)]
    if len(shared) < 2:
        warnings.warn(
            "the sections share fewer than 2 genes; aligning on positions only (use_expression=False).",
            stacklevel=3,
        )
        return xys, None
    return xys, [read_matrix(a, layer)[:, a.var_names.get_indexer(shared)] for a in sections]


def _reference_index(reference, names: list) -> int:
    """Position of the fixed section: the middle one by default, else a name or an index."""
    n = len(names)
    if reference is None:
        return (n - 1) // 2
    if isinstance(reference, str):
        if reference not in names:
            raise KeyError(
                f"reference={reference!r} is not a section (sections: {names[:10]}); pass a section name or index."
            )
        return names.index(reference)
    ref = int(reference)
    if not -n <= ref < n:
        raise ValueError(f"reference={reference} is out of range for {n} sections; pass an index in [-{n}, {n - 1}].")
    return ref % n


def _scaled_features(mats: list, xys: list, n_pcs: int, random_state: int) -> list[np.ndarray] | None:
    """Expression features scaled so that the typical distance between adjacent spots is one spacing."""
    feats = _expression_features(mats, n_pcs, random_state)
    if feats is None:
        warnings.warn("no gene varies across the sections; aligning on positions only.", stacklevel=3)
        return None
    dists = []
    for xy, f in zip(xys, feats):
        if len(xy) > 1:
            _, nb = cKDTree(xy).query(xy, k=2)
            dists.append(np.linalg.norm(f - f[nb[:, 1]], axis=1))
    e0 = float(np.median(np.concatenate(dists))) if dists else 1.0
    return [f / (e0 if e0 > 0 else 1.0) for f in feats]


def _chain(xys: list, feats, ref: int, rng, **options) -> tuple[list, list]:
    """Register each section to its aligned neighbour, outwards from ``ref``: (transforms, aligned xy)."""
    n = len(xys)
    transforms: list = [None] * n
    transforms[ref] = (np.eye(2), np.zeros(2), 0.0)
    aligned: list = [None] * n
    aligned[ref] = xys[ref]
    order = [(i, i - 1) for i in range(ref + 1, n)] + [(i, i + 1) for i in range(ref - 1, -1, -1)]
    for i, j in order:
        a, t, cost = _register_pair(
            xys[i], _rows(feats, i), aligned[j], _rows(feats, j), rng=rng, **options
        )
        transforms[i] = (a, t, cost)
        aligned[i] = xys[i] @ a.T + t
    return transforms, aligned


def _record(transform, reference, spatial_key: str, key_added: str) -> dict:
    """One section's transform as plain lists (what ``uns["ntf"]["alignment"]`` stores)."""
    a, t, cost = transform
    refl = bool(np.linalg.det(a) < 0)
    r = a @ _FLIP if refl else a
    return {
        "linear": a.tolist(),
        "translation": [float(v) for v in t],
        "rotation_deg": _angle_deg(r),
        "reflection": refl,
        "reference": reference,
        "cost": float(cost),
        "spatial_key": spatial_key,
        "key_added": key_added,
    }


def _with_xy(coords: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """A float64 copy of ``coords`` with its first two columns replaced by ``xy``."""
    out = np.array(coords, dtype=np.float64, copy=True)
    out[:, :2] = xy
    return out


def _write_alignment(target, alignment: dict) -> None:
    target.uns[Key.uns.ntf] = {**target.uns.get(Key.uns.ntf, {}), Key.uns.alignment: alignment}


# ----------------------------------------------------------------------------- agreement
def _pair_agreement(xys: list, values: list, rng, max_points: int) -> float:
    """Mean over neighbouring pairs of the mean correlation of a cell's values with its in-plane nearest neighbour's."""
    scores = []
    for i in range(1, len(xys)):
        rows = np.arange(len(xys[i]))
        if len(rows) > max_points:
            rows = rng.choice(rows, max_points, replace=False)
        _, nearest = cKDTree(xys[i - 1]).query(xys[i][rows])
        a, b = values[i][rows], values[i - 1][nearest]
        a = a - a.mean(1, keepdims=True)
        b = b - b.mean(1, keepdims=True)
        norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        scores.append(float(np.mean(np.where(norm > 0, (a * b).sum(1) / np.maximum(norm, 1e-12), 0.0))))
    return float(np.mean(scores))


@doc_params(doc_section_key=doc_section_key)
def alignment_score(
    sections,
    *,
    spatial_key: str = Key.obsm.spatial,
    layer: str | None = None,
    section_key: str = Key.obs.section,
    max_points: int = 2000,
    random_state: int = 0,
) -> float:
    """How well neighbouring sections line up: compare it before and after :func:`align_sections`.

    For each pair of neighbouring sections, each cell of one (up to ``max_points``) is matched to
    the nearest cell, in the plane, of the other, and the Pearson correlation of their expression
    profiles (log-normalised when counts, standardised per gene over all sections) is averaged;
    the score is the mean over pairs. Registered sections score higher than misaligned ones:
    keep an alignment only when it raises the score.

    Parameters
    ----------
    sections
        A list of AnnData in serial order, or one stacked AnnData (sections in ``obs[section_key]``
        category order), as for :func:`align_sections`.
    spatial_key
        ``obsm`` key of the in-plane coordinates to score (e.g. before and after alignment).
    layer
        Layer with the expression (``None``: ``X``).
    {doc_section_key}
        Only for a stacked AnnData.
    max_points
        Cells per section scored (random subsample).
    random_state
        Seed of the subsample.

    Returns
    -------
    The score, between -1 and 1 (higher: neighbouring sections agree better).
    """
    if hasattr(sections, "obs") and hasattr(sections, "obsm"):
        _, _, _, xys, mats = _read_stacked(sections, spatial_key, section_key, layer, True)
    else:
        xys, mats = _read_list(list(sections), spatial_key, layer, True)
    if len(xys) < 2:
        raise ValueError("alignment_score needs at least two sections")
    values = None if mats is None else _standardised(mats)
    if values is None:
        raise ValueError("alignment_score needs at least two genes that vary, shared by the sections")
    return _pair_agreement(xys, values, np.random.default_rng(random_state), max_points)


def _check_gain(xys, aligned, mats, records, random_state: int, max_points: int) -> None:
    """Record the agreement score before and after alignment; warn when the alignment did not raise it."""
    values = None if mats is None or len(xys) < 2 else _standardised(mats)
    if values is None:
        return
    before = _pair_agreement(xys, values, np.random.default_rng(random_state), max_points)
    after = _pair_agreement(aligned, values, np.random.default_rng(random_state), max_points)
    for record in records:
        record.update(score_before=before, score_after=after)
    if after < before + MIN_SCORE_GAIN:
        largest = max(abs(r["rotation_deg"]) for r in records)
        warnings.warn(
            f"the alignment barely changed how well neighbouring sections agree (alignment_score {before:.3f} before, "
            f"{after:.3f} after) yet rotates sections by up to {largest:.1f} degrees: the sections may already be "
            "registered. Keep the original coordinates unless you know they are not",
            UserWarning, stacklevel=3)


# ----------------------------------------------------------------------------- API
@doc_params(doc_copy=doc_copy, doc_section_key=doc_section_key)
def align_sections(
    sections,
    *,
    spatial_key: str = Key.obsm.spatial,
    key_added: str = Key.obsm.spatial,
    reference: int | str | None = None,
    use_expression: bool = True,
    allow_reflection: bool = False,
    copy: bool = False,
    layer: str | None = None,
    section_key: str = Key.obs.section,
    n_rotations: int = 12,
    n_pcs: int = 10,
    max_iter: int = 100,
    max_points: int = 2000,
    random_state: int = 0,
):
    """Rigidly register unaligned serial sections to each other.

    Each section is aligned to its already-aligned neighbour, chaining outwards from the
    reference section (which keeps its coordinates). A pair is registered by ICP in a joint
    space of position (in units of the median spot spacing) and expression (a joint PCA of the
    log-normalised, standardised shared genes, scaled so that the typical expression difference
    between adjacent spots of one section counts as one spacing): each spot is pulled towards
    the Gaussian-weighted mean position of its nearest spots of the neighbouring section in that
    space (soft correspondences, kernel annealed from 2 to 0.5 spacings), the worst-matched
    10 % are trimmed, and the rigid transform is solved by Procrustes. ICP starts from
    ``n_rotations`` rotations (every 30 degrees by default, times a mirror image when
    ``allow_reflection``) after centroid alignment; the three best starts (on a 400-point
    subsample) are refined, the one with the lowest matching cost (truncated joint
    nearest-neighbour distance) is kept, and a final pass with the expression weight halved and
    a wide kernel (1.5 spacings) settles the pose on the tissue geometry without letting spot
    lattices lock onto each other. PASTE-style optimal-transport alignment is not offered.

    Parameters
    ----------
    sections
        A list of AnnData, one per section in serial order, with in-plane coordinates in
        ``obsm[spatial_key]``; or one stacked AnnData whose sections are ``obs[section_key]``
        (in category order).
    spatial_key
        ``obsm`` key of the ``(n, 2)`` in-plane coordinates to align (a third column, e.g. z, is
        kept unchanged).
    key_added
        ``obsm`` key written with the aligned coordinates (same shape as the input). For a
        stacked AnnData, ``obsm["spatial_3d"]`` (if present and different from ``key_added``)
        also gets its x, y columns replaced by the aligned ones.
    reference
        Section that stays fixed: an index into the list / the section order, or (stacked) a
        section name. Default: the middle section.
    use_expression
        Match spots by expression as well as position (recommended; without it, only the shape
        of the sections guides the registration, and symmetric shapes are ambiguous).
    allow_reflection
        Also consider mirrored sections (sections mounted upside down).
    {doc_copy}
    layer
        Layer with the expression used for matching (counts are log-normalised first; other
        values are used as they are). None uses X.
    {doc_section_key}
        Only for a stacked AnnData.
    n_rotations
        Number of initial rotations tried (evenly spaced over 360 degrees).
    n_pcs
        Number of principal components of the expression features.
    max_iter
        Maximum ICP iterations in the refinement.
    max_points
        Points per section used to estimate a transform (random subsample; the transform is
        applied to all points).
    random_state
        Seed for subsampling and PCA.

    Returns
    -------
    list of AnnData, AnnData or None
        With ``copy=False``: None, the input AnnData are modified. With ``copy=True``: a new list
        (or a new stacked AnnData). Either way the aligned coordinates go to ``obsm[key_added]``
        and the transforms to ``uns["ntf"]["alignment"]`` as plain lists: for a list input each
        AnnData gets ``{"linear": A, "translation": t, "rotation_deg", "reflection", "reference",
        "cost", "spatial_key", "key_added", "score_before", "score_after"}`` (the
        :func:`alignment_score` of the input and aligned coordinates; a warning says when the
        alignment did not raise it); a stacked AnnData gets ``{"reference": name,
        "sections": {name: {...}}}``. Aligned coordinates are ``xy @ A.T + t``.

    Examples
    --------
    >>> aligned = ntf_utils.pp.align_sections(sections, copy=True)  # doctest: +SKIP
    >>> adata = ntf_utils.pp.stack_sections(aligned, z=[0, 100, 200])  # doctest: +SKIP
    """
    if n_rotations < 1:
        raise ValueError(f"n_rotations={n_rotations} must be at least 1.")
    stacked = hasattr(sections, "obs") and hasattr(sections, "obsm")
    if stacked:
        names, rows, xy_full, xys, mats = _read_stacked(sections, spatial_key, section_key, layer, use_expression)
    else:
        sections = list(sections)
        xys, mats = _read_list(sections, spatial_key, layer, use_expression)
        names = list(range(len(sections)))
    ref = _reference_index(reference, names)
    rng = np.random.default_rng(random_state)
    feats = None if mats is None else _scaled_features(mats, xys, n_pcs, random_state)
    transforms, aligned = _chain(
        xys, feats, ref, rng, allow_reflection=allow_reflection, n_rotations=n_rotations, max_iter=max_iter,
        max_points=max_points,
    )
    records = [_record(tr, names[ref], spatial_key, key_added) for tr in transforms]
    _check_gain(xys, aligned, mats, records, random_state, max_points)

    if stacked:
        target = sections.copy() if copy else sections
        full = np.array(xy_full, dtype=np.float64, copy=True)
        for r, xy_al in zip(rows, aligned):
            full[r, :2] = xy_al
        target.obsm[key_added] = full
        if Key.obsm.spatial_3d in target.obsm and key_added != Key.obsm.spatial_3d:
            target.obsm[Key.obsm.spatial_3d] = _with_xy(target.obsm[Key.obsm.spatial_3d], full[:, :2])
        _write_alignment(target, {"reference": names[ref], "sections": dict(zip(names, records))})
        return target if copy else None

    targets = [a.copy() for a in sections] if copy else sections
    for target, xy_al, record in zip(targets, aligned, records):
        target.obsm[key_added] = _with_xy(np.asarray(target.obsm[spatial_key]), xy_al)
        _write_alignment(target, record)
    return targets if copy else None
