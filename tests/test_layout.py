"""The package's shape: layers whose imports run one way, no cycles, small files, pure layers free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "sirt"
LAYERS = ["config", "runs", "tasks", "plan", "theory", "models", "stages", "loop", "perf"]  # bottom to top
PURE = ["config", "runs", "tasks", "plan", "theory"]  # never import torch
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every sirt module ``path`` imports: at the top, inside functions and under TYPE_CHECKING alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sirt")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sirt"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return {m for m in found if m in MODULES and m != "sirt"}


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def layer(module: str) -> int:
    """A module's layer; the command-line apps directly under sirt/ sit on top."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 or parts[-1] in LAYERS else len(LAYERS)


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target):], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_imports_run_down_the_layers():
    upward = [f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets if layer(t) > layer(m)]
    assert not upward, "imports that point up a layer: " + ", ".join(sorted(upward))


def test_apps_do_not_import_each_other():
    apps = {m for m in MODULES if layer(m) == len(LAYERS) and m != "sirt"}
    crossing = [f"{m} -> {t}" for m in apps for t in GRAPH[m] if t in apps]
    assert not crossing, "a command-line app imports another: " + ", ".join(crossing)


def test_no_file_is_over_the_limit():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_pure_layers_never_import_torch():
    names = sorted(m for m in MODULES if m.split(".")[1:2] and m.split(".")[1] in PURE)
    code = "import sys\n" + "".join(f"import {m}\n" for m in names)
    code += "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing {', '.join(PURE)} loads {out.strip()}"


def test_readme_module_map_names_every_module_and_no_function_passes_45_lines():
    import re

    text = (ROOT / "README.md").read_text()
    table = {}
    for layer, modules in re.findall(r"^\| `?([a-z]+/|CLIs)`? \| (.+?) \|", text, flags=re.M):
        table[layer.rstrip("/")] = set(re.findall(r"`([a-z_]+)`", modules))
    package = ROOT / "sirt"
    tree = {d.name: {f.stem for f in d.glob("*.py") if f.stem != "__init__"} for d in package.iterdir()
            if d.is_dir() and (d / "__init__.py").exists()}
    tree["CLIs"] = {f.stem for f in package.glob("*.py") if f.stem != "__init__"}
    assert table == tree
    long = [(f.name, n.name) for f in package.rglob("*.py") for n in ast.walk(ast.parse(f.read_text()))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.end_lineno - n.lineno + 1 > 45]
    assert long == []
