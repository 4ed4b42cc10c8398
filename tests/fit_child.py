"""A fit run in its own process, for tests/test_interrupt.py (not a test module itself).

Usage: ``python tests/fit_child.py OUT_DIR [--checkpoint DIR] [--seed S] [--threads T]
[--steps N] [--step-sleep SECONDS] [--slow-write SECONDS]``

Fits a field to a small synthetic embryo, then writes ``OUT_DIR/pred.npy`` (predictions at the
training cells) and ``OUT_DIR/run.json`` (steps this process trained, thread count, versions).

``--step-sleep`` slows every step of the final (checkpointed) fit so that a kill lands mid-run; ``--slow-write`` writes
each checkpoint file in 16 pieces with pauses (a stand-in for a slow disk) so that a kill lands
mid-write. Both leave the computation itself unchanged.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--slow-write", type=float, default=0.0)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)  # explicit: results must not depend on the machine's default
    import ntf_utils
    import ntf_utils.model._checkpoint as ckpt
    import ntf_utils.model._train as train_module
    from ntf_utils import NTFConfig, pp, tl
    from ntf_utils.datasets import synthetic_embryo

    steps_trained: set[int] = set()
    final_steps: set[int] = set()
    real_lr_at = train_module.lr_at

    def in_final_fit() -> bool:  # the resolution selection's candidate fits run first, unslowed
        return args.checkpoint is not None and (args.checkpoint / ckpt.RESOLUTION_SELECTION).exists()

    def counting_lr_at(step, config):  # called at every training step (once per parameter group)
        if step not in final_steps and args.step_sleep and in_final_fit():
            final_steps.add(step)
            time.sleep(args.step_sleep)
        steps_trained.add(step)
        return real_lr_at(step, config)

    train_module.lr_at = counting_lr_at

    if args.slow_write:
        real_save = torch.save

        def slow_save(obj, path, *a, **kw):  # same bytes, written slowly
            buffer = io.BytesIO()
            real_save(obj, buffer, *a, **kw)
            data = buffer.getvalue()
            with open(path, "wb") as handle:
                for i in range(16):
                    handle.write(data[i * len(data) // 16 : (i + 1) * len(data) // 16])
                    handle.flush()
                    time.sleep(args.slow_write / 16)

        ckpt.torch.save = slow_save
        real_atomic_write = ckpt.atomic_write

        def slow_atomic_write(path, write):  # a pause before every file: kills also land between files
            time.sleep(args.slow_write / 4)
            real_atomic_write(path, write)

        ckpt.atomic_write = slow_atomic_write

    adata = synthetic_embryo(n_sections=5, cells_per_section=60, n_genes=5, seed=2)
    pp.log_normalize(adata, layer="counts")
    config = NTFConfig(training={"steps": args.steps, "batch_size": 128, "eval_every": 10, "checkpoint_every": 5})
    field = tl.fit(
        adata, layer="lognorm", config=config, seed=args.seed, device="cpu", progress=False,
        checkpoint_dir=args.checkpoint,
    )
    pred = field.predict(adata.obsm["spatial_3d"])
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "pred.npy", pred)
    info = {
        "steps_trained": len(steps_trained),
        "steps_run": field.info["steps_run"],
        "threads": torch.get_num_threads(),
        "versions": {"ntf_utils": ntf_utils.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "pid": os.getpid(),
    }
    (args.out / "run.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
