"""fedpa_book.experiments uses the public fedpa API only (no private module, function or name)."""

import ast
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "src" / "fedpa_book" / "experiments"


def _private_uses(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "fedpa":
            parts = node.module.split(".") + [a.name for a in node.names]
            found += [node.module] if any(p.startswith("_") for p in parts) else []
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("fedpa._")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            chain, base = [node.attr], node.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in {"fedpa", "posterior", "samplers"}:
                found.append(".".join([base.id, *reversed(chain)]))
    return found


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.py")), ids=lambda p: p.name)
def test_no_private_fedpa_names(path):
    assert _private_uses(path.read_text()) == []


def test_the_check_can_fail():
    bad = "import fedpa\nfedpa.rounds._run_jit\nposterior._delta_direct\n"
    assert _private_uses(bad) == ["fedpa.rounds._run_jit", "posterior._delta_direct"]
    assert _private_uses("from fedpa._validate import rho\n") == ["fedpa._validate"]
    assert _private_uses("from fedpa.posterior import _moments\n") == ["fedpa.posterior"]
