"""`tl.fit`: train a field on stacked sections in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._anndata import check_in_memory
from .._constants import Key
from .._docs import doc_fit_options, doc_params
from ..model._checkpoint import check_directory
from ..model._config import NTFConfig
from ..model._field import NTFField
from ..model._pipeline import FitRun, config_with_overrides, fit_field
from ..model._sources import AnnDataSource
from ._resolution import applies, blend_without_race, phase_cost, select_resolution
from ._sections import derive_sections

__all__ = ["fit"]


@doc_params(fit_options=doc_fit_options)
def fit(
    adata,
    *,
    layer: str | None = None,
    spatial_key: str = Key.obsm.spatial_3d,
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
    time_key
        ``obs`` column with a time / developmental stage: fits a 4D (x, y, z, t) field.
    {fit_options}

    Returns
    -------
    The trained :class:`~ntf_utils.NTFField`. ``field.info`` records the fit (cells, steps run,
    wall time, batch size and steps of each phase in ``info["phases"]``, their sums in ``info["total_seconds"]``
    and ``info["total_steps"]``, device ...).

    Notes
    -----
    How coarse the grid should be depends on the tissue, so by default (``config.selection``) the
    field chooses it: with at least three sections, the rows of ``config.selection.candidates`` are
    fitted with every third interior section held out and raced by successive halving
    (``config.selection.rungs``: all train an eighth of their steps, the better half goes on to a
    quarter of them), and the one with the lowest held-out loss is refitted on all sections. With ``validation`` sections
    given, those are held out instead and the winner is returned without a refit. The comparison is
    in ``field.info["resolution_selection"]``. No selection happens with a time axis, a fixed
    ``finest_resolution``, or ``selection.enabled=False``. With only two sections the field's prediction
    is blended with a closed-form smoother at ``selection.blend_without_race`` (``field.info["smooth_base"]``).

    Without ``obs["section"]`` the sections are derived, with a warning that says how
    (``field.info["derived_sections"]``): each distinct z is a section where z takes few values, and
    where z is continuous (cells located in 3D) the selection holds out slabs along z instead (cut
    where z has gaps, then into equal cell counts), with no section effects (``docs/model.md``,
    "Stacks without section labels").
    """
    _check_arguments(adata, seed, checkpoint_dir)
    config = config_with_overrides(config, steps, batch_size, loss)
    # (warnings raised below point at the caller's line: keep this body one frame deep)
    adata, config, derived = derive_sections(adata, config, spatial_key=spatial_key, time_key=time_key)
    source = AnnDataSource(adata, layer=layer, spatial_key=spatial_key, time_key=time_key,
                           loss=config.training.loss)  # bad input fails here, before any fit
    common = {"seed": seed, "device": device, "progress": progress}
    if not applies(config, adata, time_key):
        config = blend_without_race(config, adata, time_key)
        field = fit_field(source, config, validation=validation, checkpoint_dir=checkpoint_dir, **common)
        field.info["phases"] = [_phase("fit", field)]
        field.info["total_seconds"] = field.info["fit_seconds"]
        field.info["total_steps"] = field.info["steps_run"]
        return _noting(field, derived)

    sources = {}  # the race's candidates fit the same cells: one source (values, survey, statistics) serves them

    def start_fit(subset, candidate, held_out, description):
        key = (id(subset), candidate.training.loss)
        if key not in sources:
            sources[key] = subset, AnnDataSource(subset, layer=layer, spatial_key=spatial_key, time_key=time_key,
                                                 loss=candidate.training.loss)
        return FitRun(sources[key][1], candidate, validation=held_out, checkpoint_dir=None, description=description,
                      **common)

    fingerprint = None if checkpoint_dir is None else source.fingerprint(config, seed, validation, 1)
    chosen, table, phases, field = select_resolution(adata, config, start_fit, validation=validation,
                                                     checkpoint_dir=checkpoint_dir, fingerprint=fingerprint,
                                                     spatial_key=spatial_key)
    if field is None:
        field = fit_field(source, chosen, validation=validation, checkpoint_dir=checkpoint_dir,
                          description="final fit", **common)
        phases.append(_phase("final fit", field))
    field.info["resolution_selection"] = table
    field.info["phases"] = phases
    field.info["total_seconds"] = round(sum(p["seconds"] for p in phases), 3)
    field.info["total_steps"] = int(sum(p["steps_run"] for p in phases))  # steps_run: the final fit's alone
    return _noting(field, derived)


def _noting(field: NTFField, derived: dict | None) -> NTFField:
    """``field`` with ``info["derived_sections"]`` where the sections were derived from z."""
    if derived is not None:
        field.info["derived_sections"] = derived
    return field


def _phase(name: str, field: NTFField) -> dict:
    """One row of ``info["phases"]``: what a fit of the pipeline cost."""
    return {"phase": name, **phase_cost(field)}


def _check_arguments(adata, seed, checkpoint_dir) -> None:
    """Clear errors for arguments that would otherwise fail deep inside the fit."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    check_in_memory(adata)
    if checkpoint_dir is not None:
        check_directory(checkpoint_dir, "checkpoint_dir")
