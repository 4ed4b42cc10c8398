"""DistributedDataParallel training over atlas shards: torchrun, 2 processes, gloo on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from ntf_utils import NTFField
from ntf_utils.atlas import atlas_model, write_synthetic_atlas

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)


def test_torchrun_two_processes_train_identical_parameters(tmp_path):
    store = write_synthetic_atlas(tmp_path / "atlas.zarr", 6000, 20, n_sections=10, chunk_cells=500, n_organs=3,
                                  seed=1)
    out = tmp_path / "field.safetensors"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "ntf_utils.atlas.train_ddp", str(store), "--out", str(out), "--normalize", "log1p",
        "--steps", "150", "--batch-size", "512", "--device", "cpu", "--threads", "1", "--cache-mb", "0.1",
        "--checkpoint-dir", str(tmp_path / "ckpt"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]

    logs = f"stdout:\n{run.stdout[-2000:]}\nstderr:\n{run.stderr[-3000:]}"
    summary = json.loads(Path(str(out) + ".json").read_text())
    assert summary["identical"], summary["checksums"]
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert summary["identical"] and len(summary["checksums"]) == 2
    assert len(set(summary["checksums"])) == 1
    # each rank streamed its own half of the 12 blocks, through a buffer smaller than its shard
    stream = summary["streaming"]
    assert stream["blocks"] == 6 and stream["blocks_loaded"] > stream["cache_blocks"], (stream, logs)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["rank0", "rank1"]

    field = NTFField.load(out)
    assert field.info["steps_run"] == 150, logs
    model = atlas_model(store)
    rng = np.random.default_rng(0)
    pts = rng.uniform(field.bounds[:, 0], field.bounds[:, 1], (6000, 3))
    pts = pts[model.inside(pts)][:2000]
    truth = np.log1p(model.proportions(pts) * field.info["target_sum"])
    mse_field = float(((field.predict(pts) - truth) ** 2).mean())
    mse_mean = float(((field.gene_mean[None, :] - truth) ** 2).mean())
    assert mse_field < 0.5 * mse_mean, (mse_field, mse_mean, logs)
