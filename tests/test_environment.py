"""The project's environment descriptions agree with each other.

pyproject.toml (core + [test] + [notebooks] + [docs]) and environment.yml (pip section) must name the same packages
with the same version bounds; the README's commands must be the ones CI runs; the torch pin in .ci/setup
must satisfy pyproject's torch requirement.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_EXTRAS = ("test", "notebooks", "docs")  # the extras environment.yml mirrors (not "gpu")
README_COMMANDS = [
    "bash .ci/setup && .venv/bin/python -m ntf_utils.demo --out ntf_demo",
    "bash .ci/setup && .venv/bin/python -m pytest -q -n auto",
]


def normalize(name: str) -> str:
    """PEP 503 name: lowercase, runs of ``-``, ``_`` and ``.`` become one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirements(lines: list[str]) -> dict[str, SpecifierSet]:
    """``{normalised name: version specifier}``; extras and markers are dropped.

    Raises ``ValueError`` when one name appears twice with different bounds.
    """
    out: dict[str, SpecifierSet] = {}
    for line in lines:
        req = Requirement(line)
        name = normalize(req.name)
        if name in out and out[name] != req.specifier:
            raise ValueError(f"{name} listed twice with different bounds: {out[name]} vs {req.specifier}")
        out[name] = req.specifier
    return out


def compare(pyproject: dict[str, SpecifierSet], env: dict[str, SpecifierSet]) -> list[str]:
    """Human-readable differences between two requirement maps (empty when they agree)."""
    problems = [
        f"{n}: in pyproject.toml, missing from environment.yml" for n in sorted(pyproject.keys() - env.keys())
    ]
    problems += [
        f"{n}: in environment.yml, missing from pyproject.toml" for n in sorted(env.keys() - pyproject.keys())
    ]
    problems += [
        f"{n}: pyproject.toml has '{pyproject[n]}', environment.yml has '{env[n]}'"
        for n in sorted(pyproject.keys() & env.keys())
        if pyproject[n] != env[n]
    ]
    return problems


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with open(REPO_ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)


@pytest.fixture(scope="module")
def environment() -> dict:
    with open(REPO_ROOT / "environment.yml") as fh:
        return yaml.safe_load(fh)


def _env_pip_lines(environment: dict) -> list[str]:
    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one `pip:` section"
    return pip_sections[0]


def _pyproject_lines(pyproject: dict) -> list[str]:
    project = pyproject["project"]
    lines = list(project["dependencies"])
    for extra in ENV_EXTRAS:
        lines += project["optional-dependencies"][extra]
    return lines


def test_environment_yml_structure(environment: dict) -> None:
    assert isinstance(environment, dict)
    assert set(environment) == {"name", "channels", "dependencies"}
    assert environment["name"] == "ntf"
    assert environment["channels"] == ["conda-forge"]
    conda_deps = [d for d in environment["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda_deps
    assert "pip" in conda_deps
    pip_lines = _env_pip_lines(environment)
    assert "-e ." in pip_lines, "environment.yml should install the package itself with `-e .`"


def test_pyproject_basics(pyproject: dict) -> None:
    project = pyproject["project"]
    assert project["name"] == "ntf_utils"
    assert SpecifierSet(project["requires-python"]) == SpecifierSet(">=3.10")
    assert set(project["optional-dependencies"]) >= {"test", "notebooks", "docs", "gpu"}
    assert pyproject["tool"]["setuptools"]["packages"]["find"]["include"] == ["ntf_utils*"]
    markers = {m.split(":")[0] for m in pyproject["tool"]["pytest"]["ini_options"]["markers"]}
    assert markers >= {"slow", "notebook", "browser"}


def test_no_conflicting_duplicates_in_pyproject(pyproject: dict) -> None:
    # A package in two extras (ipykernel) must carry the same bound in both.
    parse_requirements(_pyproject_lines(pyproject))


def test_every_requirement_has_a_lower_bound(pyproject: dict) -> None:
    reqs = parse_requirements(
        _pyproject_lines(pyproject) + pyproject["project"]["optional-dependencies"]["gpu"]
    )
    unbounded = [n for n, spec in reqs.items() if not any(s.operator in (">=", "==", "~=") for s in spec)]
    upper = [n for n, spec in reqs.items() if any(s.operator in ("<", "<=") for s in spec)]
    assert not unbounded, f"no lower bound: {unbounded}"
    assert not upper, f"upper pins (not wanted): {upper}"


def test_environment_yml_matches_pyproject(pyproject: dict, environment: dict) -> None:
    env_lines = [line for line in _env_pip_lines(environment) if not line.startswith("-")]
    problems = compare(parse_requirements(_pyproject_lines(pyproject)), parse_requirements(env_lines))
    assert not problems, "environment.yml and pyproject.toml disagree:\n" + "\n".join(problems)


def test_compare_detects_drift() -> None:
    # The check above must be able to fail: names are normalised, bounds are compared.
    a = parse_requirements(["Scikit_Learn>=1.3", "torch>=2.2", "pytest[extra]>=7"])
    assert compare(a, parse_requirements(["scikit-learn>=1.3", "torch>=2.2", "pytest>=7"])) == []
    assert compare(a, parse_requirements(["scikit-learn>=1.2", "torch>=2.2", "pytest>=7"]))
    assert compare(a, parse_requirements(["scikit-learn>=1.3", "torch>=2.2"]))
    with pytest.raises(ValueError, match="twice"):
        parse_requirements(["ipykernel>=6", "ipykernel>=7"])


def test_torch_pin_in_setup_satisfies_pyproject(pyproject: dict) -> None:
    text = (REPO_ROOT / ".ci" / "setup").read_text()
    match = re.search(r"NTF_TORCH_SPEC:-(torch==[0-9][^}\s]*)", text)
    assert match, ".ci/setup should default NTF_TORCH_SPEC to a pinned torch==X"
    pinned = Requirement(match.group(1)).specifier
    (version,) = [s.version for s in pinned]
    core = parse_requirements(pyproject["project"]["dependencies"])
    assert core["torch"].contains(version), (
        f"torch {version} from .ci/setup violates pyproject's {core['torch']}"
    )


def test_readme_starts_with_the_two_commands() -> None:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert lines[:2] == README_COMMANDS


def test_ci_runs_the_readme_test_command() -> None:
    lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert README_COMMANDS[1] in lines
    assert any(line.startswith(".venv/bin/python -m ruff check") for line in lines)
