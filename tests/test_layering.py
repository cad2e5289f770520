"""Imports flow downward (DESIGN.md); inference packages never import Lightning; import is inert."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "matgen"

# Layer of each subpackage; a module may import from its own layer or below.
LAYERS = {
    "data": 0,
    "representations": 1,
    "nn": 2,
    "generators": 3,
    "mlff": 3,
    "relax": 4,
    "screen": 4,
    "evaluate": 4,
    "training": 5,
    "api": 6,
    "cli": 6,
    "integrations": 6,
}
NO_LIGHTNING = {
    "data",
    "representations",
    "nn",
    "generators",
    "mlff",
    "relax",
    "screen",
    "evaluate",
    "integrations",
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] == "__init__":
            continue
        yield path, parts[0]


def test_every_subpackage_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert packages | modules <= set(LAYERS)


def test_imports_flow_downward():
    violations = []
    for path, package in _modules():
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.ImportFrom) and n.level > 0 for n in ast.walk(tree)):
            violations.append(
                f"{path.relative_to(PACKAGE)} uses a relative import (this check needs absolute ones)"
            )
        for name in _imports(path):
            if name.startswith("matgen."):
                target = name.split(".")[1]
                if target in LAYERS and LAYERS[target] > LAYERS[package]:
                    violations.append(f"{path.relative_to(PACKAGE)} imports {name}")
            if package in NO_LIGHTNING and name.split(".")[0] in {"lightning", "pytorch_lightning"}:
                violations.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not violations, "\n".join(violations)


def test_import_has_no_side_effects():
    code = (
        "import sys, os, torch; before = dict(os.environ); dtype = torch.get_default_dtype();"
        "import matgen, matgen.data;"
        "assert dict(os.environ) == before; assert torch.get_default_dtype() == dtype;"
        "assert 'pytorch_lightning' not in sys.modules and 'lightning' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
