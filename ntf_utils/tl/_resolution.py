"""Choosing the grid resolution of a field by the loss on held-out training sections.

Why: how coarse the finest grid cell should be depends on the tissue, not only on the sampling. On
the synthetic embryo (smooth programs and sharp domain boundaries, ~1,000 noisy cells per section) a
grid four times coarser than the sampling rule, with no PSF jitter, predicts held-out sections far
better (median Pearson 0.992 vs 0.968): the MLP draws the sharp boundaries and the coarse cells
average the count noise. On HER2ST spots and the Drosophila atlas the sampling rule is better. A
held-out training section tells the two apart, so :func:`ntf_utils.tl.fit` asks one.
"""

from __future__ import annotations

import numpy as np

MIN_SECTIONS = 3  # one interior section to hold out and at least two to interpolate it from


def applies(config, adata, time_key) -> bool:
    """Whether :func:`select_resolution` runs for this call of :func:`ntf_utils.tl.fit`.

    It needs discrete sections (``obs["section"]``, at least three) and leaves alone what the caller
    fixed: ``select_resolution=False``, a ``finest_resolution``, or a single candidate. Fields with a
    time axis use the first candidate (sections of different stages do not interpolate each other).
    """
    if not config.select_resolution or config.finest_resolution is not None or len(config.resolution_candidates) < 2:
        return False
    if time_key is not None or adata.n_obs == 0 or "section" not in adata.obs:
        return False
    return adata.obs["section"].nunique() >= MIN_SECTIONS


def heldout_sections(adata, spatial_key: str) -> list[str]:
    """Every third interior section along z (by median z): the internal validation sections."""
    import pandas as pd

    z = np.asarray(adata.obsm[spatial_key])[:, 2]
    order = pd.Series(z).groupby(adata.obs["section"].astype(str).to_numpy()).median().sort_values()
    interior = list(order.index[1:-1])
    return interior[::3]


def select_resolution(adata, config, fit_fixed, *, validation, checkpoint_dir, fingerprint, progress, **options):
    """Fit each of ``config.resolution_candidates`` and keep the one with the lowest held-out loss.

    Parameters
    ----------
    adata
        The training sections passed to :func:`ntf_utils.tl.fit`.
    config
        The caller's config; each candidate replaces its ``resolution_scale`` and ``psf_sigma``.
    fit_fixed
        The fitting function (``ntf_utils.tl._fit.fit_fixed``).
    validation
        The caller's ``validation``. Held-out sections given as an AnnData are used as they are and
        the winning candidate, already fitted on all of ``adata``, is returned. Otherwise every third
        interior training section is held out, the candidates are fitted on the rest, and the winner
        is refitted on everything by the caller.
    checkpoint_dir, fingerprint
        The caller's checkpoint directory and the run's identity. The outcome is recorded there
        (atomically) and a resumed run reuses it instead of fitting the candidates again; only the
        final fit checkpoints its training, so with a directory the winner is always refitted.
    progress
        Show the candidates' progress bars.
    **options
        ``layer``, ``spatial_key``, ``time_key``, ``device``, ``seed`` of the fit.

    Returns
    -------
    (chosen config, table, field)
        ``table`` is a list of dicts (``resolution_scale``, ``psf_sigma``, ``validation_loss``,
        ``finest_resolution``, ``chosen``), stored in ``field.info["resolution_selection"]``;
        ``field`` is the fitted winner when ``validation`` was an AnnData (and no checkpoint
        directory was given), else ``None``.
    """
    import anndata as ad

    from ..model import checkpoint as ckpt

    if checkpoint_dir is not None:
        table = ckpt.load_selection(checkpoint_dir, fingerprint)
        if table is not None:
            return _chosen(config, table), table, None
    if isinstance(validation, ad.AnnData):
        fit_on, held_out = adata, validation
    else:
        names = heldout_sections(adata, options["spatial_key"])
        is_held = adata.obs["section"].astype(str).isin(names).to_numpy()
        fit_on, held_out = adata[~is_held], adata[is_held]
    table, fields = [], []
    for scale, psf in config.resolution_candidates:
        candidate = config.replace(resolution_scale=scale, psf_sigma=psf)
        field = fit_fixed(fit_on, candidate, validation=held_out, checkpoint_dir=None, progress=progress, **options)
        table.append({"resolution_scale": scale, "psf_sigma": psf,
                      "validation_loss": field.info["best_validation_loss"],
                      "finest_resolution": field.config.finest_resolution})
        fields.append(field)
    losses = [np.inf if row["validation_loss"] is None else row["validation_loss"] for row in table]
    best = int(np.argmin(losses))
    for i, row in enumerate(table):
        row["chosen"] = i == best
    if checkpoint_dir is not None:
        ckpt.save_selection(checkpoint_dir, table, fingerprint)
    reuse = fit_on is adata and checkpoint_dir is None
    return _chosen(config, table), table, fields[best] if reuse else None


def _chosen(config, table):
    row = next(row for row in table if row["chosen"])
    return config.replace(resolution_scale=row["resolution_scale"], psf_sigma=row["psf_sigma"])
