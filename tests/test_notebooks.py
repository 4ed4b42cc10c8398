"""Every notebook in notebooks/ executes without error (quick mode) and is committed without outputs.

The notebooks are executed once, by building the documentation site (the ``docs_site`` fixture in
conftest.py: each notebook runs in ``notebooks/``, as in ``bash .ci/docs``, side by side before
myst-nb reads their outputs); these tests read what that build executed. ``tests/test_docs_site.py`` checks the same build's pages in a browser.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from _docs_build import NOTEBOOKS, error_report, executed_notebook


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_executes(path: Path, docs_site: Path) -> None:
    report = error_report(docs_site, path.stem)
    if report is not None:
        pytest.fail(f"{path.name} failed:\n{report}", pytrace=False)
    executed = executed_notebook(docs_site, path.name)
    assert executed.is_file(), f"the docs build did not execute {path.name} (no {executed})"
    nb = nbformat.read(executed, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert len(code) == sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
    not_run = [i for i, cell in enumerate(code) if cell.get("execution_count") is None]
    errors = [out for cell in code for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not not_run, f"{path.name}: code cells {not_run} were not executed"
    assert not errors, f"{path.name}: error outputs {[e.get('ename') for e in errors]}"
    assert (docs_site / "notebooks" / f"{path.stem}.html").is_file(), f"no page for {path.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_outputs_stripped(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} have outputs or execution counts; strip them before committing "
        f"(e.g. `jupyter nbconvert --clear-output --inplace notebooks/{path.name}`)"
    )
