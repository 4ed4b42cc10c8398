"""Collect the results of ``benchmarks/gpu_check.sh`` into ``$OUT/scale.csv`` and ``$OUT/summary.txt``.

    python3 benchmarks/gpu_report.py OUT_DIR SCALE_LOG...

* ``scale.csv``: one row per ``bench_scale.py`` run (each SCALE_LOG is the captured output of one run;
  the run's flags are read from its ``=== scale ...`` header line written by gpu_check.sh);
* ``summary.txt``: every step's exit code and seconds (from ``log.txt``), the pytest result line, the
  per-batch training table (``train_by_batch.csv``) and the scale table, also printed.

Only the standard library and pandas (present on the GPU machine) are used; a missing input is
reported, never fatal.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

SCALE_COLUMNS = ("cells", "genes", "disk_gb", "write_s", "plan_s", "steps", "batch", "cells_per_s", "cells_per_cpu_s",
                 "read_cells_per_s", "peak_rss_gb", "buffer_mb", "loadavg", "device")


def parse_scale(path: Path) -> list[dict]:
    """The table rows (and the extra JSON line after each, e.g. ``peak_gpu_gb``) of one bench_scale run."""
    text = path.read_text(errors="replace")
    flags = ""
    m = re.search(r"^# flags: (.*)$", text, re.M)
    if m:
        flags = m.group(1).strip()
    rows = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(" | ")]
        if len(parts) == len(SCALE_COLUMNS) and parts[0].isdigit():
            rows.append({"run": path.stem, "flags": flags, **dict(zip(SCALE_COLUMNS, parts))})
        elif line.startswith("    {") and rows:
            try:
                rows[-1].update(json.loads(line.strip()))
            except json.JSONDecodeError:
                pass
    if not rows:
        rows.append({"run": path.stem, "flags": flags, "cells": "", "device": "NO RESULT (failed or timed out)"})
    return rows


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: gpu_report.py OUT_DIR SCALE_LOG...\n\n{__doc__}")
        return 0 if argv else 2
    out = Path(argv[0])
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text)
        lines.append(text)

    log = out / "log.txt"
    say("== steps (exit code, seconds)")
    if log.exists():
        for m in re.finditer(r"^=== (.+?): rc=(\d+) in (\d+) s$", log.read_text(errors="replace"), re.M):
            say(f"{m.group(1):<40} rc={m.group(2):<4} {m.group(3):>5} s")
        for m in re.finditer(r"^=== (.+?): (skipped|TIMED OUT|stopped).*$|^=== note: .*$|^\[writer\] .*$",
                             log.read_text(errors="replace"), re.M):
            say(m.group(0).removeprefix("=== "))
    else:
        say("no log.txt")

    say("\n== pytest (CUDA tests)")
    pytest_txt = out / "pytest.txt"
    if pytest_txt.exists():
        text = pytest_txt.read_text(errors="replace").splitlines()
        tail = [ln for ln in text if re.search(r"passed|failed|skipped|error|SKIPPED|FAILED|ERROR", ln)]
        for ln in tail[-8:]:
            say(ln)
    else:
        say("no pytest.txt")

    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is on the GPU machine
        pd = None

    say("\n== training throughput by batch size (cells/s; ratios field / fourier_mlp)")
    by_batch = out / "train_by_batch.csv"
    if by_batch.exists() and pd is not None:
        df = pd.read_csv(by_batch)
        with pd.option_context("display.width", 250, "display.max_columns", 40, "display.float_format", "{:,.2f}".format):
            say(df.to_string(index=False))
    else:
        say("no train_by_batch.csv")
    train = out / "train.csv"
    if train.exists() and pd is not None:
        df = pd.read_csv(train)
        keep = [c for c in ("name", "batch_size", "cells_per_s", "ms_per_step", "warmup_seconds", "peak_gpu_gb")
                if c in df]
        with pd.option_context("display.width", 250, "display.float_format", "{:,.2f}".format):
            say(df[keep].sort_values(["batch_size", "name"]).to_string(index=False))

    say("\n== bench_scale (streamed atlas fits)")
    rows = []
    for name in argv[1:]:
        path = Path(name)
        if path.exists():
            rows += parse_scale(path)
        else:
            rows.append({"run": path.stem, "cells": "", "device": "NOT RUN"})
    if rows and pd is not None:
        df = pd.DataFrame(rows)
        df.to_csv(out / "scale.csv", index=False)
        keep = [c for c in ("run", "flags", "cells", "steps", "batch", "cells_per_s", "plan_s", "write_s",
                            "read_cells_per_s", "peak_rss_gb", "peak_gpu_gb", "device") if c in df]
        with pd.option_context("display.width", 250, "display.max_columns", 40):
            say(df[keep].to_string(index=False))
    else:
        say("no bench_scale output")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
