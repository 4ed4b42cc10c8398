"""`tl.fit_atlas`: fit a field to an atlas on disk, streaming it chunk by chunk.

The same pipeline as :func:`ntf_utils.tl.fit` (:func:`ntf_utils.model.fit_field`) with a
:class:`~ntf_utils.atlas.StoreSource` as the cell source. With an initialised ``torch.distributed``
process group (``torchrun``) each rank streams its own shard of blocks and the network is wrapped
in ``DistributedDataParallel``; see :mod:`ntf_utils.atlas.train_ddp`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .._constants import Key
from .._docs import doc_fit_options, doc_params
from ..model._config import NTFConfig
from ..model._field import NTFField
from ..model._pipeline import config_with_overrides, fit_field
from ._store import open_atlas
from ._store_source import StoreSource, StreamingOptions

__all__ = ["fit_atlas"]


@doc_params(fit_options=doc_fit_options)
def fit_atlas(
    store,
    *,
    layer: str | None = None,
    spatial_key: str = Key.obsm.spatial_3d,
    section_key: str | None = Key.obs.section,
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
    streaming: StreamingOptions | dict | None = None,
    compile: bool = False,
    amp: str | None = None,
    **streaming_options,
) -> NTFField:
    """Fit a neural transcriptomic field to an atlas on disk, streaming it chunk by chunk.

    Memory stays bounded whatever the number of cells: the training buffer holds
    ``streaming.cache_bytes`` of cells (see :func:`ntf_utils.atlas.memory_bound`), the statistics
    passes hold one block at a time, and only ``max_validation_cells`` cells and a
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
    {fit_options}
    streaming
        :class:`~ntf_utils.atlas.StreamingOptions` (or a dict of its fields): buffer size, block
        size, readers, statistics cells, validation cap.
    compile, amp
        Faster training forward passes (:class:`~ntf_utils.atlas.FastForward`): ``torch.compile``
        and, on CUDA, autocast ``"bf16"``/``"fp16"``.
    **streaming_options
        Fields of :class:`~ntf_utils.atlas.StreamingOptions` given directly (``cache_bytes=...``).

    Returns
    -------
    The trained :class:`~ntf_utils.NTFField` (on every rank in a distributed fit).
    ``field.info["streaming"]`` records the buffer, the bound and what was read.

    Notes
    -----
    The streamed fit does not choose the grid resolution on held-out sections (that needs several
    fits of the data): it uses ``config.encoding.resolution_scale`` as given, and a config with
    ``selection.enabled=True`` is refused. ``batch_size`` is per process in a distributed fit.
    Per-section technical effects (``network.section_effects``) and in-plane registration
    (``network.register_sections``) work as in :func:`ntf_utils.tl.fit`, on the sections of
    ``section_key``: the streamed cells carry their section codes.
    """
    config = config_with_overrides(config, steps, batch_size, loss)
    if config.selection.enabled:
        raise ValueError("fit_atlas does not select the grid resolution (selection.enabled=True): set "
                         "config.encoding.resolution_scale yourself, or choose it with tl.fit on a subsample")
    options = _streaming_options(streaming, streaming_options)
    opened = open_atlas(store, layer=layer, spatial_key=spatial_key, section_key=section_key, time_key=time_key)
    try:
        source = StoreSource(opened, normalize=normalize, target_sum=target_sum, options=options,
                             loss=config.training.loss)
        field = fit_field(source, config, seed=seed, device=device, validation=validation,
                          checkpoint_dir=checkpoint_dir, progress=progress, compile=compile, amp=amp)
    finally:
        if opened is not store:
            opened.close()
    info = field.info
    info["streaming"].update({key: info[key] for key in ("train_seconds", "train_cpu_seconds", "cells_per_s",
                                                        "world_size", "plan_seconds")}, compile=bool(compile), amp=amp)
    return field


def _streaming_options(streaming, given: dict) -> StreamingOptions:
    names = {f.name for f in dataclasses.fields(StreamingOptions)}
    unknown = set(given) - names
    if unknown:
        raise TypeError(f"fit_atlas got unexpected keyword arguments {sorted(unknown)}; streaming options are "
                        f"{sorted(names)}")
    if streaming is None:
        streaming = StreamingOptions()
    elif isinstance(streaming, dict):
        streaming = StreamingOptions(**streaming)
    return dataclasses.replace(streaming, **given) if given else streaming
