"""Atlas scale: out-of-core fitting, chunked volume rendering and multi-process training.

* :func:`write_synthetic_atlas`: a synthetic atlas of any size, written chunk by chunk as an
  AnnData zarr store, with its noise-free truth (:func:`atlas_model`).
* :class:`AtlasStore` / :func:`open_atlas`: row-range reads from a zarr store or ``.h5ad`` file.
* :class:`StreamingCells`: training cells streamed from disk through a bounded buffer
  (:func:`memory_bound`).
* :func:`fit_atlas` (also ``ntf_utils.tl.fit_atlas``): the streaming counterpart of ``tl.fit``;
  with ``torchrun`` it trains with DistributedDataParallel (:mod:`ntf_utils.atlas.train_ddp`).
* :func:`render_to_zarr` (also ``ntf_utils.tl.render_to_zarr``): dense volumes of any size,
  rendered chunk by chunk into an OME-Zarr image that napari opens.
* :class:`StoreSource` / :class:`StreamingOptions`: a store as the fit pipeline's cell source.
* :class:`FastForward`: ``torch.compile`` and mixed precision for the training forward pass.

See ``docs/scale.md`` for the design, the memory bound and measured numbers.
"""

from ..model._accelerate import FastForward, accelerated_model, compile_available
from ._fit_atlas import fit_atlas
from ._render_zarr import render_to_zarr
from ._store import AtlasStore, open_atlas
from ._store_source import StoreSource, StreamingOptions
from ._streaming import StreamingCells, memory_bound
from ._synthetic_atlas import AtlasModel, atlas_model, default_n_sections, write_synthetic_atlas

__all__ = [
    "AtlasModel",
    "AtlasStore",
    "FastForward",
    "StoreSource",
    "StreamingCells",
    "StreamingOptions",
    "accelerated_model",
    "atlas_model",
    "compile_available",
    "default_n_sections",
    "fit_atlas",
    "memory_bound",
    "open_atlas",
    "render_to_zarr",
    "write_synthetic_atlas",
]
