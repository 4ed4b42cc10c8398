"""CPU training throughput of the hash-grid field next to plain coordinate networks, in one run.

    .venv/bin/python benchmarks/bench_train.py            # full (a few minutes)
    .venv/bin/python benchmarks/bench_train.py --quick    # seconds
    .venv/bin/python benchmarks/bench_train.py --field-batch-sizes 8192,16384   # + larger field batches
    python3 benchmarks/bench_train.py --device cuda --batch-sizes 16384,65536,262144,1048576 --csv t.csv

Every row trains on the same in-memory data (random unit-cube cells, 200 genes) with the same batch
size, MSE loss and fused Adam, and reports training cells per second (= batch * steps / seconds):

* ``ntf field``: ``ntf_utils.model._network.FieldNetwork`` (hash grid 16 levels x 2 features,
  2^19 table, base resolution 16, finest 2048 as in instant-ngp, MLP 2 x 64, latent 32, linear
  decoder to 200 genes) trained by the package's own loop ``ntf_utils.model._train.train``
  (minibatch gather, PSF jitter, learning-rate schedule, loss, backward, Adam: everything a step of
  ``tl.fit`` does except validation);
* ``ntf field (torch.compile)``: the same with the forward pass compiled by ``torch.compile``
  (inductor, C++ codegen on CPU); skipped with the reason when compilation fails;
* ``ntf field (eager, no C loops)``: the same field with the hash grid's per-corner work done by its
  PyTorch expressions instead of the C loops of ``ntf_utils/model/_native.py`` (what a machine without
  a C compiler runs; bitwise the same numbers), on CPU when the C loops are in use;
* ``plain mlp``: the same trunk and decoder without the encoding (3 coordinates -> 2 x 64 ->
  32 -> 200), trained by a minimal loop on the same batches: the cost of the network alone;
* ``proto: compiled indexing`` (with ``--prototypes``): a proposed change to the torch hash-grid
  backend, patched into one network instance here (the package is untouched): ``torch.compile`` of
  the corner indexing only;
* ``fourier_mlp`` and ``siren``: the earlier methods of ``benchmarks/inr_baselines.py`` at their
  papers' sizes (256 wide), one training step each on the same batch.

``--batch-sizes`` (a sweep) times every method at each batch size and prints the ratio field / Fourier
MLP per batch; the compiled rows come after all the others (compilation is the slow part), and
``--time-budget`` stops starting new rows once that many seconds have passed. ``--device cuda``
(default ``cpu``, unchanged) runs the same rows on the GPU: the cells are then generated on and
gathered on the GPU (:class:`DeviceCells`, a cell source of the package's loop like
``StreamingCells``), timings are bracketed by ``torch.cuda.synchronize()`` after the warm-up steps,
the peak GPU memory of each row is recorded, and bf16 autocast rows are added
(``accelerated_model(network, amp="bf16")`` for the field, ``torch.autocast`` for the baselines).
Compiled field rows use ``accelerated_model(network, compile=True)`` on CUDA (static shapes: one
compilation per batch size). ``--csv`` is rewritten after every row, so a run cut short keeps its rows.

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
from ntf_utils.model import _native  # noqa: E402
from ntf_utils.model import _train as train_mod  # noqa: E402
from ntf_utils.model._config import NTFConfig  # noqa: E402
from ntf_utils.model._network import FieldNetwork  # noqa: E402

NO_C_LOOPS = "ntf field (eager, no C loops)"
TARGET_CELLS_PER_S = 150_000


def field_config(batch_size: int, steps: int) -> NTFConfig:
    """The configuration of the issue: 16 levels x 2 features, 2^19 table, 2 x 64 MLP."""
    return NTFConfig(encoding={"n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19, "base_resolution": 16.0, "finest_resolution": 2048.0, "implementation": "torch"}, network={"hidden_width": 64, "hidden_layers": 2, "latent_dim": 32}, training={"steps": steps, "batch_size": batch_size, "psf_sigma": 0.5})


class DeviceCells(train_mod.InMemoryCells):
    """In-memory cells held on a GPU: the minibatch indices (drawn on the CPU by the training loop's
    generator, as for :class:`~ntf_utils.model._train.InMemoryCells`) are moved there and the gather
    runs on the GPU, as in ``ntf_utils.atlas.StreamingCells``."""

    def batch(self, index: torch.Tensor, device: torch.device):
        return super().batch(index.to(self.u.device, non_blocking=True), device)


def make_cells(n_cells: int, n_genes: int, seed: int = 0, device: str | torch.device = "cpu"):
    device = torch.device(device)
    if device.type == "cpu":
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand(n_cells, 3, generator=gen)
        target = torch.randn(n_cells, n_genes, generator=gen)
        return train_mod.InMemoryCells(u, target)
    gen = torch.Generator(device=device).manual_seed(seed)  # generated in place: no host copy of GBs
    u = torch.rand(n_cells, 3, generator=gen, device=device)
    target = torch.randn(n_cells, n_genes, generator=gen, device=device)
    return DeviceCells(u, target)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device="cpu") -> tuple[float, float]:
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _reset_peak(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device) -> float:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1024**3
    return float("nan")


def apply_prototype(network: FieldNetwork) -> None:
    """PROTOTYPE (not in the package): ``torch.compile`` of the encoding's corner indexing only,
    patched into ONE network instance; the gather and scatter-add stay eager."""
    enc = network.encoding
    enc.corner_rows_and_weights = torch.compile(enc.corner_rows_and_weights, dynamic=False)


def bench_field(cells, n_genes: int, batch_size: int, steps: int, warmup: int, compiled: bool = False,
                prototype: bool = False, device: str = "cpu", amp: str | None = None) -> dict:
    """Train a FieldNetwork with the package's loop; returns wall/cpu seconds for ``steps``.

    On CPU without ``amp`` the compiled row compiles the network itself (``torch.compile(network)``,
    as before); otherwise the model is ``accelerated_model(network, compile=compiled, amp=amp)``.
    """
    device = torch.device(device)
    torch.manual_seed(0)
    config = field_config(batch_size, steps)
    network = FieldNetwork(config, 3, n_genes).to(device)
    if prototype:
        apply_prototype(network)
    kwargs = {"validation": None, "seed": 0, "device": device, "progress": False}
    if compiled or amp is not None:
        if "model" not in inspect.signature(train_mod.train).parameters:
            raise RuntimeError("ntf_utils.model._train.train has no model= argument to pass a compiled module")
        if device.type == "cpu" and amp is None:
            kwargs["model"] = torch.compile(network)
        else:
            from ntf_utils.model._accelerate import accelerated_model

            kwargs["model"] = accelerated_model(network, compile=compiled, amp=amp)
    _sync(device)
    tic = time.perf_counter()
    train_mod.train(network, config.replace(training={"steps": warmup}), cells, **kwargs)  # warm-up (and compilation)
    _sync(device)
    warm_seconds = time.perf_counter() - tic
    _reset_peak(device)
    wall, cpu = _timed(lambda: train_mod.train(network, config, cells, **kwargs), device)
    return {"wall": wall, "cpu": cpu, "steps": steps, "warmup_seconds": warm_seconds,
            "n_params": sum(p.numel() for p in network.parameters()), "peak_gpu_gb": _peak_gb(device)}


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


def bench_module(module, cells, batch_size: int, steps: int, warmup: int, *, scale_input: bool,
                 amp: str | None = None) -> dict:
    """Minimal loop: gather a random batch, forward, MSE, backward, fused Adam.

    The module is moved to the cells' device; ``amp`` (``"bf16"``, CUDA only) runs the forward under
    autocast with the loss in float32, like ``accelerated_model(..., amp="bf16")`` for the field.
    """
    device = cells.u.device
    module = module.to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, fused=True)
    gen = torch.Generator().manual_seed(1)
    n = len(cells)
    use_amp = amp is not None and device.type == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp, torch.bfloat16)

    def run(k):
        for _ in range(k):
            idx = torch.randint(0, n, (batch_size,), generator=gen).to(device, non_blocking=True)
            u, target = cells.u.index_select(0, idx), cells.target.index_select(0, idx)
            if scale_input:
                u = 2.0 * u - 1.0
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=use_amp):
                out = module(u)
            loss = torch.mean((out.float() - target) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()

    run(warmup)
    _reset_peak(device)
    wall, cpu = _timed(lambda: run(steps), device)
    return {"wall": wall, "cpu": cpu, "steps": steps, "warmup_seconds": float("nan"),
            "n_params": sum(p.numel() for p in module.parameters()), "peak_gpu_gb": _peak_gb(device)}


def machine(device=None) -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{model}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {platform.python_version()}"
    if device is not None and torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        text += f"; {props.name} ({props.total_memory / 1024**3:.0f} GiB), CUDA {torch.version.cuda}"
    return text


def sweep(args, n_genes: int, steps: int, warmup: int, device: torch.device) -> list[dict]:
    """Every method at every ``--batch-sizes`` entry; the compiled field rows last; ratios per batch.

    Order: for each batch size the eager rows (field fp32, field bf16 on CUDA, plain MLP, Fourier MLP
    and SIREN in fp32 and, on CUDA, bf16), then ``torch.compile`` of the field at each batch size,
    then compile + bf16 (CUDA). ``--time-budget`` stops starting rows once spent; ``--csv`` is
    rewritten after each row and ``<csv stem>_by_batch.csv`` holds the per-batch comparison.
    """
    batches = [int(float(b)) for b in args.batch_sizes.split(",") if b.strip()]
    cuda = device.type == "cuda"
    started = time.perf_counter()
    # one pool of cells for all batch sizes (4x the largest batch; 1M cells x 200 genes = 0.8 GB)
    n_cells = max(4 * max(batches), 100_000)
    cells = make_cells(n_cells, n_genes, device=device)
    _sync(device)
    load_before = os.getloadavg()[0]
    print(f"machine: {machine(device)}")
    print(f"device {device}; batch sizes {batches}; pool of {n_cells:,} cells x {n_genes} genes on {cells.u.device}; "
          f"{steps} timed steps per field row (baselines {steps if cuda else max(2, steps // 4)}) after {warmup} "
          f"warm-up steps; "
          f"cells generated in {time.perf_counter() - started:.1f} s\n", flush=True)
    rows: list[dict] = []

    def write_csv():
        if args.csv is None or not rows:
            return
        import pandas as pd

        args.csv.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).assign(n_genes=n_genes, threads=args.threads, device=str(device),
                                  load_before=load_before).to_csv(args.csv, index=False)
        table = by_batch(rows)
        if table is not None:
            table.to_csv(args.csv.with_name(args.csv.stem + "_by_batch.csv"), index=False)

    def add(name, method, precision, compiled, batch, fn):
        elapsed = time.perf_counter() - started
        if args.time_budget is not None and elapsed > args.time_budget:
            print(f"{name:<30} b={batch:<8} skipped: time budget of {args.time_budget:.0f} s spent", flush=True)
            return
        try:
            r = fn()
        except Exception as exc:  # report and go on: one failing variant must not hide the others
            import traceback

            print(f"{name:<30} b={batch:<8} skipped: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}",
                  flush=True)
            print("    " + traceback.format_exc()[-1500:].replace("\n", "\n    "), flush=True)
            if cuda:
                torch.cuda.empty_cache()
            return
        r.update(name=name, method=method, precision=precision, compiled=compiled, batch_size=batch,
                 cells_per_s=batch * r["steps"] / r["wall"], cells_per_cpu_s=batch * r["steps"] / r["cpu"],
                 ms_per_step=1e3 * r["wall"] / r["steps"], elapsed_s=time.perf_counter() - started)
        rows.append(r)
        print(f"{name:<30} b={batch:<8} {r['cells_per_s']:>14,.0f} cells/s {r['ms_per_step']:>9.2f} ms/step  "
              f"warm-up {r['warmup_seconds']:>6.1f} s  peak GPU {r['peak_gpu_gb']:>6.2f} GB  "
              f"{r['n_params']:>10,} params", flush=True)
        write_csv()
        if cuda:
            torch.cuda.empty_cache()

    # the 256-wide baselines: a quarter of the steps on CPU (slow there), as many as the field on a GPU
    base_steps, base_warmup = (steps, warmup) if cuda else (max(2, steps // 4), min(warmup, 3))

    def field(b, compiled=False, amp=None):
        def run():
            if compiled:  # a fresh compilation per row: no recompile limit reached across rows
                torch._dynamo.reset()
            return bench_field(cells, n_genes, b, steps, warmup, compiled=compiled, device=device, amp=amp)
        return run

    def module(kind, b, amp=None):
        def run():
            torch.manual_seed(0)
            net = PlainMLP(n_genes) if kind == "plain" else ib.build_network(kind, n_genes)
            s, w = (steps, warmup) if kind == "plain" else (base_steps, base_warmup)
            return bench_module(net, cells, b, s, w, scale_input=True, amp=amp)
        return run

    names = {"plain": "plain mlp (same width)", "fourier": "fourier_mlp (256x4)", "siren": "siren (256x3)"}
    print(f"{'method':<30} {'batch':<10} {'throughput':>20} {'step':>14}")
    for b in batches:
        add("ntf field (eager)", "field", "fp32", False, b, field(b))
        if cuda:
            add("ntf field (bf16)", "field", "bf16", False, b, field(b, amp="bf16"))
        for kind in ("plain", "fourier", "siren"):
            add(names[kind], kind, "fp32", False, b, module(kind, b))
            if cuda and kind != "plain":
                add(names[kind][:-1] + ", bf16)", kind, "bf16", False, b, module(kind, b, amp="bf16"))
    if not args.no_compile and not args.quick:
        for b in batches:
            add("ntf field (torch.compile)", "field", "fp32", True, b, field(b, compiled=True))
        if cuda:
            for b in batches:
                add("ntf field (compile+bf16)", "field", "bf16", True, b, field(b, compiled=True, amp="bf16"))
    load_after = os.getloadavg()[0]
    print(f"\n1-minute load average: {load_before:.1f} before, {load_after:.1f} after; "
          f"sweep took {time.perf_counter() - started:.0f} s")
    table = by_batch(rows)
    if table is not None:
        import pandas as pd

        with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:,.2f}".format):
            print("\ncells/s by batch size (ratios: field / fourier_mlp at the same batch and precision; "
                  "best = fastest variant of each)")
            print(table.to_string(index=False))
    write_csv()
    return rows


def by_batch(rows: list[dict]):
    """One line per batch size: cells/s of each variant and the field / Fourier-MLP ratios."""
    if not rows:
        return None
    import pandas as pd

    df = pd.DataFrame(rows)
    wide = df.pivot_table(index="batch_size", columns="name", values="cells_per_s", aggfunc="max")
    out = pd.DataFrame({"batch_size": wide.index})
    for col in wide.columns:
        out[col] = wide[col].to_numpy()

    def col(name):
        return out[name] if name in out else pd.Series(float("nan"), index=out.index)

    fields = [c for c in out.columns if c.startswith("ntf field")]
    fouriers = [c for c in out.columns if c.startswith("fourier_mlp")]
    out["field_eager/fourier"] = col("ntf field (eager)") / col("fourier_mlp (256x4)")
    out["field_bf16/fourier_bf16"] = col("ntf field (bf16)") / col("fourier_mlp (256x4, bf16)")
    out["field_compile/fourier"] = col("ntf field (torch.compile)") / col("fourier_mlp (256x4)")
    if fields and fouriers:
        out["best_field/best_fourier"] = out[fields].max(axis=1) / out[fouriers].max(axis=1)
    if fields:
        out["best_field"] = [max(((r[c], c) for c in fields if r[c] == r[c]), default=(0, ""))[1]
                             for _, r in out.iterrows()]
    return out


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
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    parser.add_argument("--batch-sizes", default="",
                        help="comma-separated batch sizes (e.g. 16384,65536,262144,1048576): time every method "
                             "at each one (a sweep; replaces --batch-size and --field-batch-sizes)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="sweep only: start no new row after this many seconds (the rows done are kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n_genes = args.genes or (50 if args.quick else 200)
    steps = args.steps or (5 if args.quick else 60)
    warmup = 2 if args.quick else 10
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    if args.batch_sizes.strip():
        return sweep(args, n_genes, steps, warmup, device)
    batch = args.batch_size
    cells = make_cells(max(20 * batch, 100_000) if not args.quick else 5 * batch, n_genes, device=device)
    load_before = os.getloadavg()[0]
    print(f"machine: {machine(device)}")
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
    add("ntf field (eager)", lambda: bench_field(cells, n_genes, batch, steps, warmup, device=device))
    if device.type == "cpu" and _native.usable():
        with _native.disabled():  # the fallback where no C compiler is found: same numbers, PyTorch expressions
            add(NO_C_LOOPS, lambda: bench_field(cells, n_genes, batch, steps, warmup, device=device))
    if not args.no_compile and not args.quick:
        add("ntf field (torch.compile)", lambda: bench_field(cells, n_genes, batch, steps, warmup, compiled=True,
                                                             device=device))
    if args.prototypes:
        add("proto: compiled indexing", lambda: bench_field(cells, n_genes, batch, steps, warmup, prototype=True,
                                                            device=device))
    torch.manual_seed(0)
    add("plain mlp (same width)", lambda: bench_module(PlainMLP(n_genes), cells, batch, steps, warmup, scale_input=True))
    ff_steps = max(2, steps // 4)
    torch.manual_seed(0)
    add("fourier_mlp (256x4)", lambda: bench_module(ib.build_network("fourier", n_genes), cells, batch, ff_steps,
                                                    min(warmup, 3), scale_input=True))
    add("siren (256x3)", lambda: bench_module(ib.build_network("siren", n_genes), cells, batch, ff_steps,
                                              min(warmup, 3), scale_input=True))
    for extra in [int(b) for b in args.field_batch_sizes.split(",") if b.strip()]:
        big = make_cells(max(20 * extra, 100_000), n_genes, device=device)
        add(f"ntf field (eager) b={extra}",
            lambda big=big, b=extra: bench_field(big, n_genes, b, steps, warmup, device=device), batch=extra)
        if not args.no_compile and not args.quick:
            add(f"ntf field (torch.compile) b={extra}",
                lambda big=big, b=extra: bench_field(big, n_genes, b, steps, warmup, compiled=True, device=device),
                batch=extra)
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
        if NO_C_LOOPS in by and "ntf field (eager)" in by:
            e, t = by["ntf field (eager)"], by[NO_C_LOOPS]
            print(f"C loops / PyTorch expressions: {e['cells_per_s'] / t['cells_per_s']:.2f}x wall, "
                  f"{e['cells_per_cpu_s'] / t['cells_per_cpu_s']:.2f}x CPU (batch {batch})")
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
