"""Does a cheaper selection race choose the same candidate? Compare selection settings on the benchmark.

    .venv/bin/python benchmarks/selection_agreement.py                    # race batch 4,096 vs 1,024
    .venv/bin/python benchmarks/selection_agreement.py --datasets drosophila \\
        --variants '{"4096": {"selection": {"batch_size": null}}, "512": {"selection": {"batch_size": 512}}}'

For every benchmark training split (``pp.split_sections(keep_fraction=f)``) on which ``tl.fit`` selects,
each variant (``NTFConfig`` keyword dicts) is fitted with the same seed. Printed per variant: the chosen
candidate, the seconds of the race and of the refit, the held-out losses of the candidates, and the
benchmark's held-out Pearson. A setting that only makes the race cheaper must choose the same candidate
(then the refit, and so the field, is the same); the held-out Pearson is printed to show that, not to
choose anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ntf_utils as ntf  # noqa: E402
from benchmarks import inr_baselines as ib  # noqa: E402
from benchmarks import run as bench  # noqa: E402
from benchmarks._variants import parse_variant_arguments  # noqa: E402
from ntf_utils.tl._resolution import applies  # noqa: E402

DEFAULT_VARIANTS = {"race batch 4096": {"selection": {"batch_size": None}}, "race batch 1024": {}}


def main(argv=None) -> None:
    args, variants = parse_variant_arguments(__doc__, argv, fractions="0.5,0.25,0.1", default_variants=DEFAULT_VARIANTS)
    print("dataset\tkept\tvariant\tchosen\trace_s\trefit_s\tcandidate_losses\theldout_pearson")
    for name in args.datasets:
        adata, truth_layer = bench.load_dataset(name, bench.settings(False))
        for fraction in args.fractions:
            train, test = ntf.pp.split_sections(adata, keep_fraction=fraction)
            if not applies(ntf.NTFConfig(), train, None):
                print(f"{name}\t{fraction}\t(no selection: fewer than three training sections)")
                continue
            for label, overrides in variants.items():
                field = ntf.tl.fit(train, layer="lognorm", config=ntf.NTFConfig(**overrides), seed=args.seed,
                                   progress=False)
                table, phases = field.info["resolution_selection"], field.info["phases"]
                chosen = next(k + 1 for k, row in enumerate(table) if row["chosen"])
                race = sum(p["seconds"] for p in phases if p["phase"].startswith("candidate"))
                losses = [None if row["validation_loss"] is None else round(row["validation_loss"], 4) for row in table]
                print(f"{name}\t{fraction}\t{label}\t{chosen}\t{race:.1f}\t{phases[-1]['seconds']:.1f}\t{losses}\t"
                      f"{ib.heldout_pearson(field, test, layer=truth_layer):.4f}", flush=True)


if __name__ == "__main__":
    main()
