"""The package's layout is its architecture: folders name the concerns, imports run downhill only (no circles,
the paper's maths imports no I/O), and modules and functions stay small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pagdemo"
# Lowest first. A module may import its own layer only inside its own subpackage (or among the plain top-level
# modules of that layer).
LAYERS = [
    (
        "pagdemo.paper",
        "pagdemo.methods",
        "pagdemo.threat",
        "pagdemo.models",
        "pagdemo.attacks",
        "pagdemo.options",
        "pagdemo.zoo",
    ),  # the shared vocabulary (options: how a config field shows on the command line)
    ("pagdemo.pag", "pagdemo.records"),  # the paper's maths; what is written down
    ("pagdemo.data",),
    ("pagdemo.eval", "pagdemo.viz", "pagdemo.toy"),
    ("pagdemo.train", "pagdemo.bench"),
    ("pagdemo.app",),
    ("pagdemo.api",),  # the public Python API (`pagdemo.load`, `PGD`, `input_gradients`, `PAGLoss`)
    ("pagdemo", "pagdemo.commands", "pagdemo.cli"),  # pagdemo: the package re-exports the API
]
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PACKAGE_LINES = 330, 60, 8000  # counted on `ruff format`'s code


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name; `__main__` files are entry points above every layer."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] != "__main__":
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that a file imports anywhere (module level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found


def _layer(module: str) -> tuple[int, str]:
    """(layer, the subpackage or module that places it); a module LAYERS does not name has none."""
    found = [
        (i, prefix)
        for i, group in enumerate(LAYERS)
        for prefix in group
        if module == prefix or (prefix != "pagdemo" and module.startswith(prefix + "."))
    ]
    assert found, f"{module} has no layer: add it, or its subpackage, to LAYERS"
    return max(found, key=lambda t: len(t[1]))


def _plain(home: str) -> bool:
    """A top-level module of its own (pagdemo/<name>.py), not a subpackage."""
    return home.count(".") == 1 and (PACKAGE / f"{home.split('.')[1]}.py").is_file()


def test_every_module_has_a_layer_and_imports_run_downhill():
    modules = _modules()
    for name in modules:
        _layer(name)
    upward = []
    for name, path in modules.items():
        layer, home = _layer(name)
        for target in _imports(path, modules):
            t_layer, t_home = _layer(target)
            top_level = _plain(home) and _plain(
                t_home
            )  # the vocabulary, the CLI: plain modules, not subpackages
            if t_layer > layer or (
                t_layer == layer and t_home != home and not top_level and t_home != "pagdemo"
            ):
                upward.append(f"{name} (layer {layer}) imports {target} (layer {t_layer})")
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    graph = {
        n: {t for t in targets if not n.startswith(t + ".") and t != "pagdemo"}
        for n, targets in graph.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, "import circle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt])
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_the_maths_imports_no_io():
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("pagdemo.pag"):
            outside = {t for t in _imports(path, modules) if not t.startswith("pagdemo.pag")} - {
                "pagdemo.models"
            }
            assert not outside, f"{name} imports {outside}"
            tree = ast.parse(path.read_text())
            imported = {
                a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
            }
            imported |= {
                n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
            }
            assert imported <= {
                "torch",
                "copy",
                "contextlib",
                "functools",
                "typing",
                "collections",
                "dataclasses",
                "__future__",
                "pagdemo",
            }, (name, imported)


def test_modules_and_functions_stay_small():
    too_long = []
    for name, path in _modules().items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)


def test_the_package_stays_small():
    total = sum(len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py"))
    assert total <= MAX_PACKAGE_LINES, f"pagdemo/ is {total} lines, over {MAX_PACKAGE_LINES}"
