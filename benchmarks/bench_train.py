"""CPU training throughput of the hash-grid field next to plain coordinate networks, in one run.

    .venv/bin/python benchmarks/bench_train.py            # full (a few minutes)
    .venv/bin/python benchmarks/bench_train.py --quick    # seconds
    .venv/bin/python benchmarks/bench_train.py --field-batch-sizes 8192,16384   # + larger field batches

Every row trains on the same in-memory data (random unit-cube cells, 200 genes) with the same batch
size, MSE loss and fused Adam, and reports training cells per second (= batch * steps / seconds):

* ``ntf field``: ``ntf_utils.model._network.FieldNetwork`` (hash grid 16 levels x 2 features,
  2^19 table, base resolution 16, finest 2048 as in instant-ngp, MLP 2 x 64, latent 32, linear
  decoder to 200 genes) trained by the package's own loop ``ntf_utils.model._train.train``
  (minibatch gather, PSF jitter, learning-rate schedule, loss, backward, Adam: everything a step of
  ``tl.fit`` does except validation);
* ``ntf field (torch.compile)``: the same with the forward pass compiled by ``torch.compile``
  (inductor, C++ codegen on CPU); skipped with the reason when compilation fails;
* ``plain mlp``: the same trunk and decoder without the encoding (3 coordinates -> 2 x 64 ->
  32 -> 200), trained by a minimal loop on the same batches: the cost of the network alone;
* ``proto: compiled indexing`` (with ``--prototypes``): a proposed change to the torch hash-grid
  backend, patched into one network instance here (the package is untouched): ``torch.compile`` of
  the corner indexing only;
* ``fourier_mlp`` and ``siren``: the earlier methods of ``benchmarks/inr_baselines.py`` at their
  papers' sizes (256 wide), one training step each on the same batch.

Wall-clock and process-CPU seconds are both reported: the machine is shared, and CPU seconds are
less sensitive to other jobs than wall seconds. The 1-minute load average before and after the run
is printed with the table.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import inr_baselines as ib  # noqa: E402
from ntf_utils.model import _train as train_mod  # noqa: E402
from ntf_utils.model._config import NTFConfig  # noqa: E402
from ntf_utils.model._network import FieldNetwork  # noqa: E402

TARGET_CELLS_PER_S = 150_000


def field_config(batch_size: int, steps: int) -> NTFConfig:
    """The configuration of the issue: 16 levels x 2 features, 2^19 table, 2 x 64 MLP."""
    return NTFConfig(encoding={"n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19, "base_resolution": 16.0, "finest_resolution": 2048.0, "implementation": "torch"}, network={"hidden_width": 64, "hidden_layers": 2, "latent_dim": 32}, training={"steps": steps, "batch_size": batch_size, "psf_sigma": 0.5})


def make_cells(n_cells: int, n_genes: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n_cells, 3, generator=gen)
    target = torch.randn(n_cells, n_genes, generator=gen)
    return train_mod.InMemoryCells(u, target)


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def apply_prototype(network: FieldNetwork) -> None:
    """PROTOTYPE (not in the package): ``torch.compile`` of the encoding's corner indexing only,
    patched into ONE network instance; the gather and scatter-add stay eager."""
    enc = network.encoding
    enc.corner_rows_and_weights = torch.compile(enc.corner_rows_and_weights, dynamic=False)


def bench_field(cells, n_genes: int, batch_size: int, steps: int, warmup: int, compiled: bool = False,
                prototype: bool = False) -> dict:
    """Train a FieldNetwork with the package's loop; returns wall/cpu seconds for ``steps``."""
    torch.manual_seed(0)
    config = field_config(batch_size, steps)
    network = FieldNetwork(config, 3, n_genes)
    if prototype:
        apply_prototype(network)
    kwargs = {"validation": None, "seed": 0, "device": torch.device("cpu"), "progress": False}
    if compiled:
        if "model" not in inspect.signature(train_mod.train).parameters:
            raise RuntimeError("ntf_utils.model._train.train has no model= argument to pass a compiled module")
        kwargs["model"] = torch.compile(network)
    tic = time.perf_counter()
    train_mod.train(network, config.replace(training={"steps": warmup}), cells, **kwargs)  # warm-up (and compilation)
    warm_seconds = time.perf_counter() - tic
    wall, cpu = _timed(lambda: train_mod.train(network, config, cells, **kwargs))
    return {"wall": wall, "cpu": cpu, "steps": steps, "warmup_seconds": warm_seconds,
            "n_params": sum(p.numel() for p in network.parameters())}


class PlainMLP(torch.nn.Module):
    """The field's trunk and decoder without the encoding: 3 -> 64 -> 64 -> 32 -> n_genes."""

    def __init__(self, n_genes: int, width: int = 64, layers: int = 2, latent: int = 32) -> None:
        super().__init__()
        mods, w = [], 3
        for _ in range(layers):
            mods += [torch.nn.Linear(w, width), torch.nn.ReLU()]
            w = width
        mods += [torch.nn.Linear(w, latent), torch.nn.Linear(latent, n_genes)]
        self.net = torch.nn.Sequential(*mods)

    def forward(self, u):
        return self.net(u)


def bench_module(module, cells, batch_size: int, steps: int, warmup: int, *, scale_input: bool) -> dict:
    """Minimal loop: gather a random batch, forward, MSE, backward, fused Adam."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, fused=True)
    gen = torch.Generator().manual_seed(1)
    n = len(cells)

    def run(k):
        for _ in range(k):
            idx = torch.randint(0, n, (batch_size,), generator=gen)
            u, target = cells.u.index_select(0, idx), cells.target.index_select(0, idx)
            if scale_input:
                u = 2.0 * u - 1.0
            loss = torch.mean((module(u) - target) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()

    run(warmup)
    wall, cpu = _timed(lambda: run(steps))
    return {"wall": wall, "cpu": cpu, "steps": steps, "warmup_seconds": float("nan"),
            "n_params": sum(p.numel() for p in module.parameters())}


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {platform.python_version()}"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps and genes (seconds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--field-batch-sizes", default="",
                        help="comma-separated extra batch sizes for the field rows only (e.g. 8192,16384): the "
                             "fixed per-step cost (Adam over the whole table) is shared by more cells")
    parser.add_argument("--genes", type=int, default=None, help="default 200 (quick: 50)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default 60, quick 5)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--prototypes", action="store_true",
                        help="also time proposed optimisations of the torch hash-grid backend (patched per instance)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n_genes = args.genes or (50 if args.quick else 200)
    steps = args.steps or (5 if args.quick else 60)
    warmup = 2 if args.quick else 10
    batch = args.batch_size
    cells = make_cells(max(20 * batch, 100_000) if not args.quick else 5 * batch, n_genes)
    load_before = os.getloadavg()[0]
    print(f"machine: {machine()}")
    print(f"batch {batch} cells, {n_genes} genes, {steps} timed steps per row after {warmup} warm-up steps\n")

    rows = []

    def add(name, fn, batch=batch):
        try:
            r = fn()
        except Exception as exc:  # report and go on: one failing variant must not hide the others
            print(f"{name:<34} skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            return
        r.update(name=name, batch_size=batch, cells_per_s=batch * r["steps"] / r["wall"],
                 cells_per_cpu_s=batch * r["steps"] / r["cpu"])
        rows.append(r)
        print(f"{name:<34} {r['cells_per_s']:>12,.0f} cells/s  {1e3 * r['wall'] / r['steps']:>8.1f} ms/step  "
              f"{r['cells_per_cpu_s']:>12,.0f} cells/CPU-s  {r['n_params']:>10,} params", flush=True)

    print(f"{'method':<34} {'wall throughput':>18}  {'step':>11}  {'CPU throughput':>18}  {'parameters':>10}")
    add("ntf field (eager)", lambda: bench_field(cells, n_genes, batch, steps, warmup))
    if not args.no_compile and not args.quick:
        add("ntf field (torch.compile)", lambda: bench_field(cells, n_genes, batch, steps, warmup, compiled=True))
    if args.prototypes:
        add("proto: compiled indexing", lambda: bench_field(cells, n_genes, batch, steps, warmup, prototype=True))
    torch.manual_seed(0)
    add("plain mlp (same width)", lambda: bench_module(PlainMLP(n_genes), cells, batch, steps, warmup, scale_input=True))
    ff_steps = max(2, steps // 4)
    torch.manual_seed(0)
    add("fourier_mlp (256x4)", lambda: bench_module(ib.build_network("fourier", n_genes), cells, batch, ff_steps,
                                                    min(warmup, 3), scale_input=True))
    add("siren (256x3)", lambda: bench_module(ib.build_network("siren", n_genes), cells, batch, ff_steps,
                                              min(warmup, 3), scale_input=True))
    for extra in [int(b) for b in args.field_batch_sizes.split(",") if b.strip()]:
        big = make_cells(max(20 * extra, 100_000), n_genes)
        add(f"ntf field (eager) b={extra}", lambda big=big, b=extra: bench_field(big, n_genes, b, steps, warmup),
            batch=extra)
        if not args.no_compile and not args.quick:
            add(f"ntf field (torch.compile) b={extra}",
                lambda big=big, b=extra: bench_field(big, n_genes, b, steps, warmup, compiled=True), batch=extra)
    load_after = os.getloadavg()[0]
    print(f"\n1-minute load average: {load_before:.1f} before, {load_after:.1f} after "
          f"(> {os.cpu_count()} means other jobs competed for the cores)")

    by = {r["name"]: r for r in rows}
    fields = [r for r in rows if r["name"].startswith("ntf field")]  # prototypes are not the package
    if fields:
        best = max(fields, key=lambda r: r["cells_per_s"])
        print(f"best field variant: {best['name']}: {best['cells_per_s']:,.0f} cells/s "
              f"({best['cells_per_s'] / TARGET_CELLS_PER_S:.2f}x the {TARGET_CELLS_PER_S:,} cells/s target; "
              f"{best['cells_per_cpu_s']:,.0f} cells per CPU-second)")
        same = max((r for r in fields if r["batch_size"] == batch), key=lambda r: r["cells_per_s"], default=None)
        for other in ("plain mlp (same width)", "fourier_mlp (256x4)", "siren (256x3)"):
            if other in by and same is not None:  # compared at the same batch size
                r = by[other]
                print(f"{same['name']} / {other}: {same['cells_per_s'] / r['cells_per_s']:.2f}x wall, "
                      f"{same['cells_per_cpu_s'] / r['cells_per_cpu_s']:.2f}x CPU (batch {batch})")
        if "ntf field (torch.compile)" in by and "ntf field (eager)" in by:
            c, e = by["ntf field (torch.compile)"], by["ntf field (eager)"]
            print(f"torch.compile / eager: {c['cells_per_s'] / e['cells_per_s']:.2f}x "
                  f"(compilation + warm-up took {c['warmup_seconds']:.0f} s)")
    if args.csv is not None:
        import pandas as pd

        args.csv.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).assign(n_genes=n_genes, threads=args.threads,
                                  load_before=load_before, load_after=load_after).to_csv(args.csv, index=False)
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
