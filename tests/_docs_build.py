"""Build the documentation site for the tests (see the ``docs_site`` fixture in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["REPO_ROOT", "BUILD_DIR", "build_site", "executed_notebook", "error_report"]

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO_ROOT / "docs" / "_build" / "test"


def build_site() -> Path:
    """Run sphinx-build (quick mode, notebooks executed, errors reported per notebook); return the HTML dir.

    Raises ``RuntimeError`` with the end of Sphinx's output when the build itself fails.
    """
    reuse = os.environ.get("NTF_DOCS_SITE")
    if reuse:
        site = (REPO_ROOT / reuse).resolve()
        if not (site / "docs" / "index.html").is_file():
            raise RuntimeError(f"NTF_DOCS_SITE={reuse}: no built site there (docs/index.html missing)")
        return site
    html = BUILD_DIR / "html"
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, NTF_QUICK="1", NUMBA_NUM_THREADS=os.environ.get("NUMBA_NUM_THREADS", "1"))
    cmd = [
        sys.executable, "-m", "sphinx", "-b", "html", "-c", "docs", "-j", "1", "-E",
        "-d", str(BUILD_DIR / "doctrees"),
        "-w", str(BUILD_DIR / "warnings.txt"),
        "-D", "nb_execution_raise_on_error=0",
        ".", str(html),
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    (BUILD_DIR / "build.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(
            f"sphinx-build failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}"
        )
    (BUILD_DIR / "build_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return html


def executed_notebook(site: Path, name: str) -> Path:
    """The notebook as myst-nb executed it (``jupyter_execute/`` next to the HTML folder)."""
    return site.parent / "jupyter_execute" / "notebooks" / name


def error_report(site: Path, stem: str) -> str | None:
    """myst-nb's traceback of a notebook that failed to execute, or ``None``."""
    path = site / "reports" / "notebooks" / f"{stem}.err.log"
    return path.read_text(encoding="utf-8") if path.is_file() else None
