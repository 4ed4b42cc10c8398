"""The package's shape: imports run one way, keys are named once, functions stay short, names are public.

Layers, from the top: the application (``ntf_utils/__init__``, ``demo``) -> ``pp`` / ``tl`` / ``pl``
-> ``atlas`` (the streamed data source) -> ``model`` (field, training, the fit pipeline) ->
``datasets`` / ``metrics`` -> the AnnData access layer -> constants and checks. A module may import
only from its own unit or a lower layer, so there are no import cycles.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ntf_utils"
LAYER = {
    "_constants": 0, "_docs": 0, "_version": 0,
    "_validate": 1,
    "_anndata": 2,
    "datasets": 3, "metrics": 3,
    "model": 4,
    "atlas": 5,
    "pp": 6, "tl": 6, "pl": 6,
    "demo": 7, "__main__": 7, "__init__": 7,
}
TOP = max(LAYER.values())
MAX_FUNCTION_LINES = 100


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield path, ".".join(parts), is_package


def _unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1] if parts[1] in LAYER else "__init__"  # ntf_utils.NTFConfig -> the package itself


def _imports(path: Path, module: str, is_package: bool):
    """Every ``ntf_utils`` module imported anywhere in a file (function-level imports too)."""
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ntf_utils":
                continue
            if node.module is None or target == "ntf_utils":
                yield from (f"{target}.{alias.name}" for alias in node.names)
            else:
                yield target
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.split(".")[0] == "ntf_utils")


def test_every_unit_has_a_layer():
    units = {_unit(module) for _, module, _ in _modules()}
    assert units <= set(LAYER), f"give these a layer in LAYER: {sorted(units - set(LAYER))}"


def test_imports_run_one_way_down_the_layers():
    wrong = []
    for path, module, is_package in _modules():
        here = _unit(module)
        for target in _imports(path, module, is_package):
            there = _unit(target)
            application = LAYER[here] == TOP  # the entry points on top may import each other
            if there != here and LAYER[there] >= LAYER[here] and not application:
                wrong.append(f"{path.relative_to(ROOT)} ({here}, layer {LAYER[here]}) imports {target} "
                             f"({there}, layer {LAYER[there]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def _function_lines(node, lines) -> int:
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        start = first.end_lineno + 1  # the docstring does not count
    else:
        start = first.lineno
    code = [line for line in lines[start - 1 : node.end_lineno] if line.strip() and not line.strip().startswith("#")]
    return len(code)


def test_no_function_is_longer_than_100_lines_of_code():
    long = []
    for path, _, _ in _modules():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _function_lines(node, lines)
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "split these functions:\n" + "\n".join(long)


# AnnData keys that have no other meaning: as a string of their own in code they can only be a key
# ("section" also names a column of result tables, so it is not in this list)
KEY_NAMES = {"spatial_3d", "spatial_3d_true", "ntf_mask", "ntf_domain", "lognorm"}


def test_key_names_are_written_only_in_the_constants_module():
    found = []
    for path, _, _ in _modules():
        if path.name == "_constants.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in KEY_NAMES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "use ntf_utils._constants.Key instead of:\n" + "\n".join(found)


def test_every_public_module_declares_all():
    missing = []
    for path, _, _ in _modules():
        if path.name in ("__main__.py",):
            continue
        tree = ast.parse(path.read_text())
        names = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                 for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
        if "__all__" not in names:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, "define __all__ in:\n" + "\n".join(missing)


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_use_only_public_names(notebook):
    private = re.compile(r"ntf_utils(\.\w+)*\._\w+|\bntf\.(\w+\.)*_\w+|from ntf_utils\.\w+(\.\w+)* import _")
    cells = json.loads(notebook.read_text())["cells"]
    code = ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]
    hits = [line for source in code for line in source.splitlines() if private.search(line)]
    assert not hits, f"{notebook.name} uses private names:\n" + "\n".join(hits)
