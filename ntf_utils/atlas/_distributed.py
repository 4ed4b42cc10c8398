"""Multi-process training with ``torchrun``: DistributedDataParallel over shards of an atlas.

Launch (one node, 4 GPUs)::

    torchrun --standalone --nproc_per_node=4 -m ntf_utils.atlas.train_ddp atlas.zarr \\
        --normalize log1p --out field.safetensors

Several nodes (run the same line on every node; ``$HEAD`` is the first node's address)::

    torchrun --nnodes=8 --nproc_per_node=4 --rdzv-backend=c10d --rdzv-endpoint=$HEAD:29500 \\
        --rdzv-id=atlas1 -m ntf_utils.atlas.train_ddp /shared/atlas.zarr --normalize log1p \\
        --out /shared/field.safetensors

How it works (see :func:`ntf_utils.atlas.fit_atlas`):

* every process opens the store read-only; rank 0 measures the sampling, resolves the config,
  computes the target statistics and picks the validation cells, and broadcasts that plan;
* the store's blocks are shuffled with the seed and dealt out round-robin: rank ``r`` streams only
  its shard, so the ranks together read each block once per pass;
* the network is wrapped in ``torch.nn.parallel.DistributedDataParallel``: gradients are averaged
  across ranks every step, so all ranks keep identical parameters (the effective minibatch is
  ``world_size * batch_size``);
* validation uses the same held-out cells on every rank, so early stopping decides alike;
* each rank checkpoints into ``<checkpoint_dir>/rank<r>`` (its own data order); rank 0 saves the
  field; every rank reports a checksum of its parameters, and rank 0 checks they agree.

Backends: ``nccl`` when the processes use CUDA devices (one per process, ``cuda:$LOCAL_RANK``),
``gloo`` on CPU (what the tests run, with 2 processes).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from .._constants import Key

__all__ = ["main", "parameter_checksum"]


def parameter_checksum(module: torch.nn.Module) -> str:
    """blake2b of every parameter and buffer's bytes, in state-dict order."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=N -m ntf_utils.atlas.train_ddp",
        description="Fit a neural transcriptomic field to an atlas on disk with DistributedDataParallel.",
    )
    p.add_argument("store", help="AnnData zarr store or .h5ad file")
    p.add_argument("--out", required=True, help="where rank 0 saves the field (.safetensors)")
    p.add_argument("--layer", default=None)
    p.add_argument("--spatial-key", default=Key.obsm.spatial_3d)
    p.add_argument("--section-key", default=Key.obs.section)
    p.add_argument("--normalize", choices=["log1p"], default=None, help="stored values are counts: log1p-normalise")
    p.add_argument("--loss", choices=["mse", "poisson", "nb"], default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="cells per step per process")
    p.add_argument("--config", default=None, help="JSON file of NTFConfig fields")
    p.add_argument("--device", default="auto", help="auto (cuda:$LOCAL_RANK when CUDA is present) or cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-mb", type=float, default=512.0, help="training buffer per process, MB")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--no-validation", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward pass")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast on CUDA")
    p.add_argument("--nondeterministic", action="store_true", help="never wait for the disk (fast GPUs)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--summary", default=None, help="JSON summary written by rank 0 (default: <out>.json)")
    p.add_argument("--progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m ntf_utils.atlas.train_ddp`` (under ``torchrun`` or alone)."""
    import torch.distributed as dist

    from ..model._config import NTFConfig
    from ._fit_atlas import fit_atlas

    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    use_cuda = args.device != "cpu" and torch.cuda.is_available()
    device = args.device
    if launched:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if use_cuda:
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
        elif args.device == "auto":
            device = "cpu"
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if launched else (0, 1)
    config = NTFConfig()
    if args.config:
        config = NTFConfig.from_dict(json.loads(Path(args.config).read_text()))
    try:
        field = fit_atlas(
            args.store, layer=args.layer, spatial_key=args.spatial_key, section_key=args.section_key,
            normalize=args.normalize, config=config, steps=args.steps, batch_size=args.batch_size, loss=args.loss,
            device=device, seed=args.seed, validation=False if args.no_validation else None,
            checkpoint_dir=args.checkpoint_dir, progress=args.progress, cache_bytes=args.cache_mb * 1e6,
            deterministic=not args.nondeterministic, compile=args.compile, amp=args.amp,
        )
        checksum = parameter_checksum(field.network)
        sums = [checksum]
        if launched:
            sums = [None] * world
            dist.all_gather_object(sums, checksum)
        if rank == 0:
            out = Path(args.out)
            field.save(out)
            summary = {
                "world_size": world, "backend": dist.get_backend() if launched else None,
                "device": str(field.device), "checksums": sums, "identical": len(set(sums)) == 1,
                "out": str(out), "steps_run": field.info["steps_run"], "fit_seconds": field.info["fit_seconds"],
                "streaming": field.info["streaming"],
                "final_loss": float(field.history["loss"].iloc[-1]) if len(field.history) else None,
            }
            Path(args.summary or str(out) + ".json").write_text(json.dumps(summary, indent=2))
            print(json.dumps({k: summary[k] for k in ("world_size", "backend", "identical", "steps_run",
                                                      "fit_seconds")}), flush=True)
            if not summary["identical"]:
                print("ranks ended with different parameters", file=sys.stderr)
                return 1
        if launched:
            dist.barrier()
    finally:
        if launched and dist.is_initialized():
            # Collect the training's DistributedDataParallel wrapper (its reducer holds the process group) while
            # the group and the interpreter are alive: once, a rank left it to interpreter exit and aborted
            # there ("terminate called without an active exception") after a fit that had succeeded.
            gc.collect()
            dist.destroy_process_group()
    return 0
