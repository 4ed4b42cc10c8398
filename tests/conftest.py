"""Shared pytest setup: quick mode, thread limits, deterministic seeds and the shared data folder."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

# Quick mode (small data, few steps) unless the caller asked otherwise. Set before any test module
# imports ntf_utils, and inherited by notebook kernels started from the tests.
os.environ.setdefault("NTF_QUICK", "1")
# scanpy's neighbours step starts numba worker threads that then compete with torch's threads for the
# 2 cores and slow every later fit in the same process ~20x; numba reads this at import.
if "numba" in sys.modules:
    # a pytest plugin (fast_array_utils) imported numba before this file: its thread count is read, and
    # an environment that disagrees with it makes every later JIT compile fail; use one thread at run time
    import numba

    numba.set_num_threads(1)
else:
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = 0

# Under pytest-xdist (`-n auto`) each worker process gets one of the cores.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
# Modules that read the session-scoped documentation build (one xdist unit of work, see below).
DOCS_SITE_MODULES = ("test_notebooks.py", "test_docs_site.py")

try:
    import torch
except ImportError:  # torch is a core dependency, but keep pure-NumPy tests runnable without it
    torch = None
else:
    # The CI machine has 2 cores shared with other jobs; more threads only add contention.
    torch.set_num_threads(1 if XDIST_WORKER else 2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that read the documentation build first: it is the longest unit of work under xdist."""
    items.sort(key=lambda item: item.path.name not in DOCS_SITE_MODULES)  # stable: the rest keep their order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``pytest -n auto`` sends whole test modules to the workers, the two docs modules as one unit.

    A module runs whole on one worker, so its module-scoped fixtures (fitted fields) are made once; the
    modules that read the session-scoped documentation build share a worker, so the site is built once.
    Units go out in collection order, the docs build first (xdist's ``loadgroup`` cannot group these:
    it renames node ids, which pytest 9 ignores).
    """
    if config.getvalue("dist") not in ("load", "loadfile"):
        return None  # an explicit other --dist mode is the caller's choice
    from xdist.scheduler import LoadFileScheduling

    class ModuleScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "docs_site" if Path(module).name in DOCS_SITE_MODULES else module

    config.option.loadscopereorder = False  # keep collection order: longest unit first
    return ModuleScheduling(config, log)


@pytest.fixture(scope="module", autouse=True)
def _torch_threads_restored(request):
    """Fail a module that leaves torch's thread count changed: later modules would train differently.

    (One did: every module after ``test_atlas.py`` in a serial run fitted on one thread instead of two.)
    """
    before = None if torch is None else torch.get_num_threads()
    yield
    if torch is not None and torch.get_num_threads() != before:
        after = torch.get_num_threads()
        torch.set_num_threads(before)
        pytest.fail(f"{request.module.__name__} left torch at {after} threads (it had {before}); "
                    "restore the count in the fixture or test that sets it")


@pytest.fixture
def shared_data_dir() -> Path:
    """Folder with the larger shared data sets (``$NTF_SHARED_DATA``, default ``<repo>/../shared/data``).

    Skips the test when the folder does not exist.
    """
    path = Path(os.environ.get("NTF_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip("../shared/data not present")
    return path


@pytest.fixture(autouse=True)
def seed() -> int:
    """Seed Python, NumPy's global RNG and torch before every test; returns the seed.

    Tests that need their own generator should still prefer ``np.random.default_rng(seed)``.
    """
    random.seed(SEED)
    np.random.seed(SEED)
    if torch is not None:
        torch.manual_seed(SEED)
    return SEED


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    """A fresh, deterministically seeded NumPy generator."""
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def embryo():
    """A 10-section synthetic embryo (400 cells per section, 40 genes), log-normalised. Do not modify.

    Test modules that need another embryo define their own ``embryo`` fixture, which takes precedence."""
    from ntf_utils import datasets, pp

    adata = datasets.synthetic_embryo(n_sections=10, cells_per_section=400, n_genes=40, seed=0)
    pp.log_normalize(adata)
    return adata


@pytest.fixture(scope="session")
def embryo_field(embryo):
    """A short fit (200 steps, batch 1024) of :func:`embryo`, shared by the domain and gradient tests."""
    from ntf_utils import NTFConfig, tl

    return tl.fit(embryo, layer="lognorm", config=NTFConfig(training={"steps": 200, "batch_size": 1024}), progress=False)


@pytest.fixture(scope="session")
def docs_site() -> Path:
    """The documentation site, built once per test session; returns its HTML folder.

    ``tests/test_notebooks.py`` (every notebook executed, once) and ``tests/test_docs_site.py`` (pages,
    links, API reference, browser) read the same build. It is built in quick mode into
    ``docs/_build/test/html`` as ``bash .ci/docs`` builds it, except that a failing notebook does not stop
    the build (each notebook's test reports its own traceback). ``NTF_DOCS_SITE=docs/_build/html`` reuses
    an existing build instead (e.g. after ``NTF_QUICK=1 bash .ci/docs``).
    """
    from _docs_build import build_site

    return build_site()
