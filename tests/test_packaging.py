"""environment.yml mirrors the dependency lower bounds of pyproject.toml."""

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _normalize(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for reqs in project["optional-dependencies"].values():
        wanted |= {r for r in reqs if not r.startswith("fedpa[")}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            listed |= {d for d in dep["pip"] if not d.startswith("-e")}
        elif not dep.startswith(("python=", "pip")):
            listed.add(dep)
    assert {_normalize(r) for r in wanted} == {_normalize(r) for r in listed}
