"""Training cells streamed from disk: a bounded buffer of blocks, refreshed in the background.

:class:`StreamingCells` is a drop-in for :class:`ntf_utils.model._train.InMemoryCells` (the
``train()`` loop only needs ``__len__``, ``sample_index`` and ``batch``):

* the buffer holds ``cache_blocks`` blocks of ``block_rows`` cells (one store chunk each), already
  transformed into training tensors (unit-cube coordinates, standardised targets, and the training
  section code of each cell when the field has per-section effects or poses) and kept on the
  training device;
* each step draws a minibatch uniformly from the cells in the buffer;
* every ``refresh_every`` steps the oldest block is replaced by the next one of a shuffled block
  order (a new permutation each pass over the data: chunk-wise shuffling), so each cell stays in
  the buffer ``cache_blocks * refresh_every`` steps and is drawn ``reuse`` times on average;
* background threads (``readers``) read, decompress and transform the next blocks while the model
  trains; blocks are handed over in sequence order whatever thread finishes first.

Memory is bounded whatever the store's size (see :func:`memory_bound`). With
``deterministic=True`` (default) blocks are swapped at fixed steps, waiting for the reader when it
is late, so a seed gives the same run; ``deterministic=False`` never waits (a late block just
leaves the current buffer in use longer), which keeps a fast GPU busy when the disk is slower.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["StreamingCells", "memory_bound"]

# Prepared block: (u, target, log_size or None, mask or None) as float32 tensors, then the int64
# section codes or None.
Prepared = tuple


def memory_bound(block_rows: int, n_genes: int, n_dims: int, cache_blocks: int, prefetch: int,
                 raw_itemsize: int = 4, log_size: bool = False, mask: bool = False, readers: int = 1,
                 sections: bool = False) -> int:
    """Upper bound in bytes of the streaming data path's memory.

    ``(cache_blocks + prefetch + 1) * block_rows * row_bytes + readers * block_rows * reader_bytes``
    with ``row_bytes = 4 * (n_dims + n_genes [+ 1 log size] [+ n_genes mask]) [+ 8 section code]``
    and ``reader_bytes = n_genes * (raw_itemsize + 8) [+ 16 section codes]``: the buffer, the
    prepared blocks waiting (or being prepared) plus the one being swapped in, and each reader's
    temporaries for one block (the decompressed chunk, its float32 copy and the row totals and
    scratch of the transform; the store's and the training's section codes). It does not depend on
    the number of cells in the store.
    """
    row_bytes = 4 * (n_dims + n_genes + (1 if log_size else 0) + (n_genes if mask else 0)) + (8 if sections else 0)
    reader_bytes = n_genes * (raw_itemsize + 8) + (16 if sections else 0)
    return int((cache_blocks + prefetch + 1) * block_rows * row_bytes + max(1, readers) * block_rows * reader_bytes)


class StreamingCells:
    """Cells of an :class:`~ntf_utils.atlas.AtlasStore` for :func:`ntf_utils.model._train.train`.

    Parameters
    ----------
    store
        The open store.
    prepare
        ``prepare(coords, values, mask) -> (u, target, log_size, mask)``: float32 arrays for one
        block (``log_size``/``mask`` may be ``None``); it must not keep references to its inputs.
    blocks
        Row ranges ``[start, stop)`` this source draws from (all of the store, or one rank's shard).
    cache_blocks
        Blocks held in the buffer (capped at ``len(blocks)``; then everything is resident and no
        further reads happen).
    batch_size
        Minibatch size of training (sets the refresh period).
    reuse
        Average times a cell is drawn while buffered: blocks are replaced every
        ``ceil(reuse * block_rows / batch_size)`` steps.
    exclude
        Sorted row indices never used for training (the validation cells).
    seed
        Seed of the block order.
    device
        Where the buffer lives (``"cuda"`` keeps it on the GPU: a step gathers its batch there).
    prefetch
        Blocks read ahead of use (being prepared or ready), at least ``readers``.
    readers
        Background reader threads (zarr/Blosc decompression and NumPy release the GIL, so several
        readers use several cores; one is enough when training is slower than the disk).
    deterministic
        Swap blocks at fixed steps, waiting for the reader if needed (reproducible); ``False``
        swaps only when the next block is ready.
    section_lookup
        ``None``: the cells carry no section codes. Else the training section code (index into
        the plan's sections, -1 for none) of each of the store's section categories, followed by
        a last entry -1 that cells without a section (store code -1) pick: see
        :func:`~ntf_utils.atlas._store_source.section_lookup`.
    """

    def __init__(self, store, prepare: Callable, *, blocks: list[tuple[int, int]], cache_blocks: int = 16,
                 batch_size: int = 4096, reuse: float = 1.0, exclude: np.ndarray | None = None, seed: int = 0,
                 device="cpu", prefetch: int = 2, readers: int = 1, deterministic: bool = True,
                 section_lookup: np.ndarray | None = None) -> None:
        if not blocks:
            raise ValueError("no blocks to stream: the store (or this rank's shard) is empty")
        self.store = store
        self.prepare = prepare
        self.section_lookup = None if section_lookup is None else np.asarray(section_lookup, dtype=np.int64)
        self.blocks = list(blocks)
        self.exclude = np.zeros(0, np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
        self.device = torch.device(device)
        self.block_rows = max(b - a for a, b in self.blocks)
        self.cache_blocks = max(1, min(int(cache_blocks), len(self.blocks)))
        self.resident = self.cache_blocks == len(self.blocks)
        self.refresh_every = max(1, math.ceil(float(reuse) * self.block_rows / max(1, int(batch_size))))
        self.readers = max(1, int(readers))
        self.prefetch = max(self.readers, int(prefetch))
        self.deterministic = bool(deterministic)
        self.seed = int(seed)
        self._n_cells = sum(b - a for a, b in self.blocks) - self._n_excluded()
        self._calls = 0
        self._next_slot = 0
        self.blocks_loaded = 0
        self.swaps_skipped = 0
        self._stop = threading.Event()
        self._order = enumerate(self._block_order())  # (sequence number, block)
        self._order_lock = threading.Lock()
        self._ready: dict = {}  # sequence number -> prepared block
        self._cond = threading.Condition()
        self._room = threading.Semaphore(self.prefetch)
        self._error: BaseException | None = None
        self._next_seq = 0
        self._inflight = None
        self._threads: list[threading.Thread] = []
        self._allocated = False
        self._fill()

    # -- the block order --------------------------------------------------------------------
    def _n_excluded(self) -> int:
        return sum(int(np.searchsorted(self.exclude, b) - np.searchsorted(self.exclude, a)) for a, b in self.blocks)

    def _block_order(self):
        """Endless block sequence: a fresh permutation of this source's blocks on every pass."""
        epoch = 0
        while True:
            rng = np.random.default_rng([self.seed, 17, epoch])
            yield from (self.blocks[i] for i in rng.permutation(len(self.blocks)))
            epoch += 1

    def _section_codes(self, a: int, b: int) -> np.ndarray | None:
        """Training section codes of rows ``[a, b)``, or ``None`` when the cells carry none."""
        if self.section_lookup is None:
            return None
        return self.section_lookup[self.store.read_sections(a, b)]  # store code -1 picks the last entry, -1

    def _load(self, block) -> Prepared:
        a, b = block
        coords = self.store.read_coords(a, b)
        values = self.store.read_values(a, b)
        mask = self.store.read_mask(a, b)
        section = self._section_codes(a, b)
        lo, hi = np.searchsorted(self.exclude, [a, b])
        if hi > lo:
            keep = np.ones(b - a, dtype=bool)
            keep[self.exclude[lo:hi] - a] = False
            coords, values = coords[keep], values[keep]
            mask = None if mask is None else mask[keep]
            section = None if section is None else section[keep]
        out = self.prepare(coords, values, mask)
        del coords, values, mask
        tensors = tuple(None if x is None else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in out)
        tensors += (None if section is None else torch.from_numpy(np.ascontiguousarray(section, dtype=np.int64)),)
        if self.device.type == "cuda":
            tensors = tuple(None if t is None else t.pin_memory() for t in tensors)
        return tensors

    def _reader(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._room.acquire(timeout=0.1):
                    continue
                with self._order_lock:
                    seq, block = next(self._order)
                item = self._load(block)
                with self._cond:
                    self._ready[seq] = item
                    self._cond.notify_all()
        except Exception as err:  # hand it to the training thread
            with self._cond:
                self._error = err
                self._cond.notify_all()

    def _get(self, block: bool) -> Prepared | None:
        """The next block in sequence order (``None`` when not ready and ``block`` is False)."""
        with self._cond:
            while self._next_seq not in self._ready:
                if self._error is not None:
                    raise RuntimeError(f"reading the atlas store {self.store.path} failed: {self._error}") from self._error
                if not block:
                    return None
                self._cond.wait(timeout=0.1)
            item = self._ready.pop(self._next_seq)
            self._next_seq += 1
        self._room.release()
        return item

    # -- the buffer -------------------------------------------------------------------------
    def _allocate(self, first: Prepared) -> None:
        rows = self.cache_blocks * self.block_rows

        def alloc(t):
            return None if t is None else torch.empty((rows, *t.shape[1:]), dtype=t.dtype, device=self.device)

        self._u, self._target, self._log_size, self._mask, self._section = (alloc(t) for t in first)
        self._lengths = np.zeros(self.cache_blocks, dtype=np.int64)
        self._allocated = True

    def _put(self, slot: int, item: Prepared) -> None:
        n = item[0].shape[0]
        start = slot * self.block_rows
        for dst, src in zip(self._buffers(), item):
            if dst is not None:
                dst[start : start + n].copy_(src, non_blocking=True)
        self._inflight = item  # pinned sources must outlive asynchronous copies
        self._lengths[slot] = n
        self._refresh_offsets()
        self.blocks_loaded += 1

    def _buffers(self) -> tuple:
        return self._u, self._target, self._log_size, self._mask, self._section

    def _refresh_offsets(self) -> None:
        self._cum = torch.from_numpy(np.cumsum(self._lengths))
        self._total = int(self._cum[-1])
        self._full = bool((self._lengths == self.block_rows).all())

    def _fill(self) -> None:
        for slot in range(self.cache_blocks):
            seq, block = next(self._order)
            item = self._load(block)
            if not self._allocated:
                self._allocate(item)
            self._put(slot, item)
            self._next_seq = seq + 1
        if self._total == 0:
            raise ValueError("the buffered blocks hold no training cells (all excluded?)")
        if not self.resident:
            for k in range(self.readers):
                thread = threading.Thread(target=self._reader, name=f"ntf-atlas-reader-{k}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _maybe_swap(self) -> None:
        if self.resident or self._calls == 0 or self._calls % self.refresh_every:
            return
        item = self._get(block=self.deterministic)
        if item is None:
            self.swaps_skipped += 1
            return
        self._put(self._next_slot, item)
        self._next_slot = (self._next_slot + 1) % self.cache_blocks

    # -- the train() interface --------------------------------------------------------------
    def __len__(self) -> int:
        return self._n_cells

    @property
    def buffer_bytes(self) -> int:
        """Bytes held by the buffer tensors."""
        return sum(t.numel() * t.element_size() for t in self._buffers() if t is not None)

    def sample_index(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """Buffer positions of one minibatch (uniform over the buffered cells)."""
        self._maybe_swap()
        self._calls += 1
        pos = torch.randint(0, self._total, (batch_size,), generator=generator)
        if self._full:
            return pos
        slot = torch.searchsorted(self._cum, pos, right=True)
        before = torch.cat([torch.zeros(1, dtype=torch.int64), self._cum[:-1]])
        return slot * self.block_rows + (pos - before[slot])

    def batch(self, index: torch.Tensor, device: torch.device):
        """The buffered cells at ``index`` on ``device``: ``(u, target, log_size, mask, section)``.

        ``section`` is the int64 training section code of each cell (-1: none), or ``None`` when
        the field has neither section effects nor poses (no ``section_lookup``).
        """
        index = index.to(self.device, non_blocking=True)

        def take(t):
            return None if t is None else t.index_select(0, index).to(device, non_blocking=True)

        return tuple(take(t) for t in self._buffers())

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the background readers and free the buffer."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads = []
        self._ready.clear()
        self._u = self._target = self._log_size = self._mask = self._section = self._inflight = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self._stop.set()
        except AttributeError:
            pass

    def __repr__(self) -> str:
        return (f"StreamingCells({self._n_cells} cells in {len(self.blocks)} blocks of <= {self.block_rows}; "
                f"buffer {self.cache_blocks} blocks on {self.device}, refresh every {self.refresh_every} steps, "
                f"{self.readers} reader(s))")
