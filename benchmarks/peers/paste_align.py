"""Run PASTE (Zeira et al. 2022, ``pip install paste-bio``) pairwise alignment; called by run.py.

Runs in the throwaway peer environment made by ``benchmarks/peers/setup_peers.sh`` (PASTE and POT
are not dependencies of ntf_utils). Input and output are plain ``.npz`` files so that this script
needs neither ntf_utils nor the main environment:

    python paste_align.py IN.npz OUT.npz

``IN.npz`` holds ``n`` sections as ``coords_i`` (n_i, 2), ``counts_i`` (n_i, g) (raw counts, the same
genes in every section); ``OUT.npz`` gets ``aligned_i`` (n_i, 2), the coordinates after
``paste.stack_slices_pairwise`` (each section aligned to the previous one, the first one fixed
up to a translation), and ``seconds`` (wall time of the alignment, data loading excluded).
"""

from __future__ import annotations

import sys
import time

import anndata as ad
import numpy as np


def main(inp: str, out: str, alpha: float = 0.1) -> None:
    import paste as pst

    data = np.load(inp)
    n = int(data["n"])
    slices = []
    for i in range(n):
        a = ad.AnnData(X=np.asarray(data[f"counts_{i}"], dtype=np.float32))
        a.var_names = [f"g{j}" for j in range(a.n_vars)]
        a.obsm["spatial"] = np.asarray(data[f"coords_{i}"], dtype=np.float64)
        slices.append(a)
    tic = time.perf_counter()
    pis = [pst.pairwise_align(slices[i], slices[i + 1], alpha=alpha) for i in range(n - 1)]
    new = pst.stack_slices_pairwise(slices, pis)
    seconds = time.perf_counter() - tic
    np.savez(out, seconds=seconds, **{f"aligned_{i}": np.asarray(s.obsm["spatial"]) for i, s in enumerate(new)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
