"""Build the documentation site for the tests (see the ``docs_site`` fixture in conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["REPO_ROOT", "BUILD_DIR", "NOTEBOOKS", "build_site", "execute_notebooks", "executed_notebook",
           "error_report"]

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO_ROOT / "docs" / "_build" / "test"

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))  # the tutorials, in order


def build_site() -> Path:
    """Run sphinx-build (quick mode, notebooks executed, errors reported per notebook); return the HTML dir.

    The notebooks are executed first, side by side (:func:`execute_notebooks`), into a jupyter-cache
    that myst-nb then reads (``nb_execution_mode=cache``): the same kernels and outputs as a serial
    build, in about half its time on two cores. A notebook that fails there is executed again by
    myst-nb, which writes its traceback to the report that ``tests/test_notebooks.py`` shows.

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
    cache = BUILD_DIR / "jupyter_cache"
    # a fresh execution every session, as nb_execution_mode=force; and no stale pages or error reports
    # of an earlier build (Sphinx -E rebuilds every page but leaves files it no longer writes)
    for stale in (cache, html, BUILD_DIR / "jupyter_execute"):
        shutil.rmtree(stale, ignore_errors=True)
    start = time.perf_counter()
    execute_notebooks(cache, env)
    cmd = [
        sys.executable, "-m", "sphinx", "-b", "html", "-c", "docs", "-j", "1", "-E",
        "-d", str(BUILD_DIR / "doctrees"),
        "-w", str(BUILD_DIR / "warnings.txt"),
        "-D", "nb_execution_raise_on_error=0",
        "-D", "nb_execution_mode=cache",
        "-D", f"nb_execution_cache_path={cache}",
        ".", str(html),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    (BUILD_DIR / "build.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(
            f"sphinx-build failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}"
        )
    (BUILD_DIR / "build_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    _export_cached_notebooks(cache, html)
    return html


def execute_notebooks(cache: Path, env: dict) -> None:
    """Execute every notebook into the jupyter-cache ``cache``, in parallel (one process per core).

    Each kernel gets one thread (``OMP_NUM_THREADS=1``) so that the parallel kernels do not fight over
    the cores. Runs in a child process: jupyter-cache's pool and kernels must not inherit pytest's state.
    """
    env = dict(env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = (
        "import sys\n"
        "from jupyter_cache import get_cache\n"
        "from jupyter_cache.executors import load_executor\n"
        "cache = get_cache(sys.argv[1])\n"
        "for nb in sys.argv[2:]:\n"
        "    cache.add_nb_to_project(nb)\n"
        "load_executor('local-parallel', cache).run_and_cache(timeout=900, allow_errors=False)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(cache), *map(str, NOTEBOOKS)], cwd=REPO_ROOT, env=env,
                   capture_output=True, text=True)  # failures are re-run (and reported) by myst-nb


def _export_cached_notebooks(cache: Path, html: Path) -> None:
    """Put each executed notebook (outputs included) where :func:`executed_notebook` finds it.

    In cache mode myst-nb's own copy in ``jupyter_execute/`` lacks the outputs; a notebook that did not
    execute keeps that copy (its test then reads the error report).
    """
    import nbformat
    from jupyter_cache import get_cache

    jcache = get_cache(str(cache))
    for path in NOTEBOOKS:
        try:
            _, notebook = jcache.merge_match_into_file(str(path))
        except KeyError:
            continue
        nbformat.write(notebook, executed_notebook(html, path.name))


def executed_notebook(site: Path, name: str) -> Path:
    """The notebook as myst-nb executed it (``jupyter_execute/`` next to the HTML folder)."""
    return site.parent / "jupyter_execute" / "notebooks" / name


def error_report(site: Path, stem: str) -> str | None:
    """myst-nb's traceback of a notebook that failed to execute, or ``None``."""
    path = site / "reports" / "notebooks" / f"{stem}.err.log"
    return path.read_text(encoding="utf-8") if path.is_file() else None
