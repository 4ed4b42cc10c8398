"""Fingerprints of a few small fits, to show that a refactor leaves training bitwise unchanged.

    python tests/fit_identity.py record     # write tests/data/fit_identity.json
    python tests/fit_identity.py compare    # exit 1 when a fit differs from the recorded one

Every fit runs on the CPU with one torch thread (CPU results are bitwise reproducible at a fixed
thread count). A fingerprint is the SHA-256 of every trained tensor (by parameter name), the number
of steps run, and float64 sums of the predictions at fixed points, so that a difference can also be
judged by size on a machine whose floating point differs (``tests/test_fit_identity.py``).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "data" / "fit_identity.json"


def _fingerprint(field) -> dict:
    state = field.network.state_dict()
    tensors = {name: hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
               for name, t in sorted(state.items())}
    lo, hi = field.bounds[:, 0], field.bounds[:, 1]
    points = lo + (hi - lo) * np.random.default_rng(0).random((256, len(lo)))
    pred = field.predict(points).astype(np.float64)
    return {
        "tensors": tensors,
        "steps_run": int(field.info["steps_run"]),
        "prediction_sum": float(pred.sum()),
        "prediction_abs_sum": float(np.abs(pred).sum()),
        "prediction_sample": [float(v) for v in pred[:4, :4].ravel()],
    }


def _small_embryo():
    from ntf_utils import datasets, pp

    adata = datasets.synthetic_embryo(n_sections=9, cells_per_section=200, n_genes=16, seed=3)
    pp.log_normalize(adata)
    return adata


def fits() -> dict:
    """The fits that are compared: default selection, counts, given validation, time axis, streamed."""
    from ntf_utils import NTFConfig, datasets, pp, tl
    from ntf_utils.atlas import fit_atlas, write_synthetic_atlas

    torch.set_num_threads(1)
    out = {}
    adata = _small_embryo()
    common = {"device": "cpu", "progress": False}
    out["selection"] = _fingerprint(tl.fit(adata, layer="lognorm", steps=60, batch_size=256, **common))
    out["nb_counts"] = _fingerprint(tl.fit(adata, loss="nb", steps=40, batch_size=256, validation=False, **common))
    train, test = pp.split_sections(adata, keep_fraction=0.67, seed=0)
    out["given_validation"] = _fingerprint(tl.fit(train, layer="lognorm", steps=50, batch_size=256,
                                                  validation=test, seed=1, **common))
    series = datasets.synthetic_timeseries(n_times=3, n_sections=4, cells_per_section=120, n_genes=12, seed=0)
    pp.log_normalize(series)
    out["time_axis"] = _fingerprint(tl.fit(series, layer="lognorm", time_key="time", steps=40, batch_size=256,
                                           **common))
    with tempfile.TemporaryDirectory() as tmp:
        store = write_synthetic_atlas(Path(tmp) / "atlas.zarr", 3000, 12, n_sections=8, chunk_cells=500,
                                      n_organs=3, seed=2)
        config = NTFConfig(training={"steps": 40, "batch_size": 256, "eval_every": 20})
        out["streamed"] = _fingerprint(fit_atlas(store, normalize="log1p", config=config, **common))
    return out


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    # the model name alone is not enough: virtual machines report "AMD EPYC" for generations with and
    # without AVX-512, and torch's CPU kernels (so the last bits of a sum) follow the instruction set
    return {"machine": platform.machine(), "cpu": cpu, "torch": torch.__version__,
            "capability": torch.backends.cpu.get_cpu_capability()}


def main(argv) -> int:
    mode = argv[1] if len(argv) > 1 else "compare"
    current = fits()
    if mode == "record":
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE.write_text(json.dumps({"machine": machine(), "fits": current}, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(current)} fits in {REFERENCE}")
        return 0
    reference = json.loads(REFERENCE.read_text())["fits"]
    differ = [name for name in reference if reference[name] != current.get(name)]
    for name in reference:
        print(f"{name:18s} {'DIFFERS' if name in differ else 'identical'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
