"""Atlas-scale throughput: training cells/s and peak memory against dataset size, streamed from disk.

    .venv/bin/python benchmarks/bench_scale.py                 # 10^5, 10^6, 10^7 cells x 500 genes
    .venv/bin/python benchmarks/bench_scale.py --quick         # 2x10^4 and 10^5 cells, few steps
    .venv/bin/python benchmarks/bench_scale.py --cells 100000000 --genes 500 --device cuda
    .venv/bin/python benchmarks/bench_scale.py --cells 10000000 --converge   # fit to early stopping

For each size it writes a synthetic atlas (:func:`ntf_utils.atlas.write_synthetic_atlas`, dense
uint16 counts in 8,192-cell chunks) under ``--workdir`` (default ``/tmp/ntf_atlas_bench``; reused
when it exists), then, in a fresh process (so that peak memory is that size's alone), fits a field
with :func:`ntf_utils.tl.fit_atlas` streaming from that store with ``normalize="log1p"``, and
measures:

* ``plan_s``: the passes before training (coordinates of every cell; values of up to 10^6 cells);
* ``cells_per_s``: training throughput, ``steps * batch_size / training seconds`` (minibatch cells
  per second, PSF jitter and the background reader included);
* ``read_cells_per_s``: the disk path alone: blocks read, decompressed and turned into training
  targets per second (the ceiling of training throughput when every cell is used once);
* ``peak_rss_gb``: the fitting process's peak resident memory (``VmHWM``), and on CUDA the
  peak GPU memory.

The table is printed at the end; its last line reads
``cells=N genes=G cells_per_s=X peak_rss_gb=Y device=D`` for the largest size. The machine's load
average is printed too: on a shared machine, throughput is only comparable between runs at similar
load, and ``cells/cpu-s`` (cells per CPU-second of the fitting process, all its threads) is the
steadier number. Nothing here is timed in the test suite.

``--compare-compile`` times steady-state training steps of the eager and the ``torch.compile``d
network (interleaved, CPU time on CPU, wall time with synchronisation on CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._memory import peak_rss_mb  # noqa: E402

DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (20_000, 100_000)


def _parse_size(text: str) -> int:
    return int(float(text))


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=_parse_size, default=None, help="one atlas size (e.g. 1e7)")
    p.add_argument("--sizes", default=None, help="comma-separated sizes (e.g. 1e5,1e6,1e7,1e8)")
    p.add_argument("--genes", type=int, default=500)
    p.add_argument("--quick", action="store_true", help="small sizes and few steps (smoke test)")
    p.add_argument("--steps", type=int, default=None, help="training steps timed (default 200; quick 30)")
    p.add_argument("--batch-size", type=int, default=None, help="default 4096 on CPU, 262144 on CUDA")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--cache-mb", type=float, default=512.0)
    p.add_argument("--workdir", default="/tmp/ntf_atlas_bench")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing the atlas")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    p.add_argument("--converge", action="store_true", help="fit with early stopping; report accuracy vs truth")
    p.add_argument("--compare-compile", action="store_true",
                   help="only time steady-state training steps, eager vs torch.compile, on --device")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _store_path(workdir: Path, n: int, genes: int) -> Path:
    return workdir / f"atlas_{n}x{genes}_seed0.zarr"


def _ensure_store(path: Path, n: int, genes: int, workers: int) -> float:
    from ntf_utils.atlas import write_synthetic_atlas
    from ntf_utils.atlas._synthetic_atlas import read_spec

    if path.exists():
        try:
            spec = read_spec(path)
            if spec["n_cells"] == n and spec["model"]["n_genes"] == genes and spec["complete"]:
                return 0.0
        except Exception:  # a half-written store: rewrite it
            pass
    started = time.perf_counter()
    write_synthetic_atlas(path, n, genes, n_workers=workers, overwrite=True, progress=False)
    return time.perf_counter() - started


def _device_label(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda({torch.cuda.get_device_name(device).replace(' ', '_')})"
    return f"cpu({torch.get_num_threads()}threads)"


def child(args) -> None:
    """Fit one store in this process and print one JSON line of measurements."""
    import numpy as np
    import torch

    from ntf_utils import NTFConfig
    from ntf_utils.atlas import atlas_model, fit_atlas, open_atlas
    from ntf_utils.model._pipeline import resolve_device
    from ntf_utils.model._sources import prepare_targets

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (30 if args.quick else (500 if cuda else 200))
    batch = args.batch_size or (262_144 if cuda else 4096)
    config = NTFConfig(training={"batch_size": batch})
    if not args.converge:
        config = config.replace(training={"steps": steps})
    started = time.perf_counter()
    field = fit_atlas(
        args.child, normalize="log1p", config=config, device=device, progress=False,
        validation=None if args.converge else False, cache_bytes=args.cache_mb * 1e6,
        deterministic=not cuda, compile=args.compile, amp=args.amp,
    )
    wall = time.perf_counter() - started
    s = field.info["streaming"]
    # the disk path alone: read + decompress + prepare random blocks
    store = open_atlas(args.child)
    blocks = store.blocks()
    pick = np.random.default_rng(0).choice(len(blocks), min(12, len(blocks)), replace=False)
    stats = {"mean": field.gene_mean, "std": field.gene_std, "target_sum": field.info["target_sum"]}

    def prepare(coords, values, mask):
        return prepare_targets(coords, values, mask, field.transform, "mse", stats, "log1p")
    t = time.perf_counter()
    rows = 0
    for i in pick:
        a, b = blocks[i]
        prepare(store.read_coords(a, b), store.read_values(a, b), None)
        rows += b - a
    read_rate = rows / (time.perf_counter() - t)
    out = {
        "cells": store.n_obs, "genes": store.n_vars, "device": _device_label(device),
        "steps": field.info["steps_run"], "batch_size": field.config.training.batch_size,
        "plan_s": s["plan_seconds"], "train_s": s["train_seconds"], "wall_s": round(wall, 1),
        "cells_per_s": s["cells_per_s"], "read_cells_per_s": round(read_rate),
        "cells_per_cpu_s": round(field.info["steps_run"] * field.config.training.batch_size / max(s["train_cpu_seconds"], 1e-9)),
        "peak_rss_gb": peak_rss_mb() / 1024,
        "buffer_mb": s["buffer_bytes"] / 1e6, "bound_mb": s["memory_bound_bytes"] / 1e6,
        "blocks_loaded": s["blocks_loaded"], "finest_resolution": field.config.encoding.finest_resolution,
        "log2_table": field.config.encoding.log2_hashmap_size, "loadavg": os.getloadavg()[0],
    }
    if cuda:
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 1024**3
    if args.converge:
        model = atlas_model(args.child)
        rng = np.random.default_rng(1)
        pts = rng.uniform(field.bounds[:, 0], field.bounds[:, 1], (30_000, 3))
        pts = pts[model.inside(pts)][:5000]
        truth = np.log1p(model.proportions(pts) * field.info["target_sum"])
        pred = field.predict(pts)
        out["pearson_vs_truth"] = float(np.mean([np.corrcoef(pred[:, j], truth[:, j])[0, 1]
                                                 for j in range(truth.shape[1])]))
        out["stopped_early"] = field.info["stopped_early"]
    print("RESULT " + json.dumps(out), flush=True)


def compare_compile(args) -> None:
    """Steady-state seconds per training step (forward, backward, Adam), eager vs compiled, interleaved."""
    import torch

    from ntf_utils.atlas import FastForward
    from ntf_utils.model._config import NTFConfig
    from ntf_utils.model._network import FieldNetwork
    from ntf_utils.model._pipeline import resolve_device
    from ntf_utils.model._train import loss_fn, make_optimizer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batch = args.batch_size or (262_144 if device.type == "cuda" else 4096)
    # the resolved config of the 10^6-cell benchmark atlas
    cfg = NTFConfig(encoding={"base_resolution": 6.3, "finest_resolution": 101.0, "log2_hashmap_size": 19}, training={"steps": 100, "batch_size": batch})
    net = FieldNetwork(cfg, 3, args.genes).to(device)
    opt = make_optimizer(net, cfg)
    u, y = torch.rand(batch, 3, device=device), torch.randn(batch, args.genes, device=device)
    models = {"eager": FastForward(net, amp=args.amp), "compiled": FastForward(net, compile=True, amp=args.amp)}

    def step(model):
        loss = loss_fn(cfg, net, model(u), y, None, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for model in models.values():  # warm-up (and compilation)
        step(model)
        step(model)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    seconds = {name: [] for name in models}
    for _ in range(5):
        for name, model in models.items():
            t = clock()
            for _ in range(5):
                step(model)
            seconds[name].append((clock() - t) / 5)
    what = "wall" if device.type == "cuda" else "CPU"
    for name, values in seconds.items():
        med = sorted(values)[len(values) // 2]
        print(f"{name}: {med * 1e3:.1f} ms {what} per step of {batch} cells x {args.genes} genes "
              f"-> {batch / med:,.0f} cells per {what}-second ({_device_label(device)}, amp={args.amp})")


def main(argv=None) -> int:
    args = _args(argv)
    if args.child:
        child(args)
        return 0
    if args.compare_compile:
        compare_compile(args)
        return 0
    if args.cells:
        sizes = [args.cells]
    elif args.sizes:
        sizes = [_parse_size(s) for s in args.sizes.split(",")]
    else:
        sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sizes:
        path = _store_path(workdir, n, args.genes)
        write_s = _ensure_store(path, n, args.genes, args.workers)
        disk_gb = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e9
        cmd = [sys.executable, __file__, "--child", str(path), "--device", args.device, "--cache-mb", str(args.cache_mb)]
        for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--threads", args.threads),
                            ("--amp", args.amp)):
            if value is not None:
                cmd += [flag, str(value)]
        cmd += ["--quick"] * args.quick + ["--compile"] * args.compile + ["--converge"] * args.converge
        run = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if run.returncode != 0 or not lines:
            print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(lines[-1][len("RESULT "):])
        row.update({"write_s": round(write_s, 1), "disk_gb": round(disk_gb, 2)})
        rows.append(row)
        print(f"[bench_scale] {n} cells done: {row['cells_per_s']:.0f} cells/s, peak RSS {row['peak_rss_gb']:.2f} GB",
              file=sys.stderr, flush=True)

    header = ("cells", "genes", "disk_gb", "write_s", "plan_s", "steps", "batch", "cells/s", "cells/cpu-s",
              "read cells/s",
              "peak_rss_gb", "buffer_mb", "loadavg", "device")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(str(v) for v in (
            r["cells"], r["genes"], r["disk_gb"], r["write_s"], r["plan_s"], r["steps"], r["batch_size"],
            f"{r['cells_per_s']:.0f}", f"{r['cells_per_cpu_s']:.0f}", f"{r['read_cells_per_s']:.0f}", f"{r['peak_rss_gb']:.2f}",
            f"{r['buffer_mb']:.0f}", f"{r['loadavg']:.1f}", r["device"])))
        extra = {k: r[k] for k in ("peak_gpu_gb", "pearson_vs_truth", "stopped_early") if k in r}
        if extra:
            print("    " + json.dumps(extra))
    last = rows[-1]
    print(f"cells={last['cells']} genes={last['genes']} cells_per_s={last['cells_per_s']:.0f} "
          f"peak_rss_gb={last['peak_rss_gb']:.2f} device={last['device']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
