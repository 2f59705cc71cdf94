"""The package's shape: layers whose imports only go down, no circles, no private reach-ins.

Layers, bottom to top: ``kernels`` (compiled code), ``core`` (the index in Python), ``io``
(files), the top-level integrations (``hnsw_numba/*.py``), ``cli``. A module may import
from its own layer and the layers below it. Imports inside ``if TYPE_CHECKING:`` blocks do
not run and are ignored; imports inside functions count like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import PKG

LAYERS = {"kernels": 0, "core": 1, "io": 2, "": 3, "cli": 4}
MAX_LINES = 450
#: Known exceptions being removed; an entry that no longer applies fails the test.
PENDING: set[str] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """Layer of ``hnsw_numba.<sub>...``: a subpackage's, else the top level's."""
    parts = module.split(".")
    if module == "hnsw_numba.__main__":
        return LAYERS["cli"]
    if len(parts) >= 2 and parts[1] in LAYERS and (PKG / parts[1]).is_dir():
        return LAYERS[parts[1]]
    return LAYERS[""]


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """``(imported module, names, line)`` of every import of an ``hnsw_numba`` module in ``source``."""
    tree = ast.parse(source)
    skip = _type_checking_lines(tree)
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            if target.startswith("hnsw_numba"):
                names = [a.name for a in node.names]
                # ``from . import x``: x is a submodule when it is one
                subs = [f"{target}.{n}" for n in names if (PKG.parent / (f"{target}.{n}".replace(".", "/"))).with_suffix(".py").exists()
                        or (PKG.parent / f"{target}.{n}".replace(".", "/")).is_dir()]
                for t in subs or [target]:
                    out.append((t, names, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("hnsw_numba"):
                    out.append((a.name, [], node.lineno))
    return out


def package_graph() -> dict[str, list[tuple[str, list[str], int]]]:
    graph = {}
    for path in sorted(PKG.rglob("*.py")):
        mod = module_name(path)
        graph[mod] = imports_of(path.read_text(), mod, path.name == "__init__.py")
    return graph


def layer_violations(graph: dict[str, list[tuple[str, list[str], int]]]) -> list[str]:
    """Imports that go up a layer."""
    bad = []
    for mod, imports in graph.items():
        for target, _, line in imports:
            if target != "hnsw_numba" and layer_of(target) > layer_of(mod):
                bad.append(f"{mod}:{line} imports {target} (a higher layer)")
            if target == "hnsw_numba" and layer_of(mod) < LAYERS[""]:
                bad.append(f"{mod}:{line} imports the package root from a lower layer")
    return bad


def cycles(graph: dict[str, list[tuple[str, list[str], int]]]) -> list[list[str]]:
    """Import circles between modules (package ``__init__`` re-exports excluded as targets)."""
    edges = {m: sorted({t for t, _, _ in imps if t in graph and t != m and not _is_package_init(t)}) for m, imps in graph.items()}
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in edges.get(m, []):
            if state.get(t) == 1:
                found.append(stack[stack.index(t):] + [t])
            elif not state.get(t):
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if not state.get(m):
            visit(m)
    return found


def _is_package_init(module: str) -> bool:
    return (PKG.parent / module.replace(".", "/") / "__init__.py").exists()


def private_imports(graph: dict[str, list[tuple[str, list[str], int]]]) -> list[str]:
    """``from other_module import _name`` anywhere in the package."""
    return [f"{mod} imports {n} from {target}"
            for mod, imports in graph.items() for target, names, line in imports
            for n in names if n.startswith("_") and not n.startswith("__") and target != mod]


def without_pending(found: list[str], prefix: str = "") -> list[str]:
    """``found`` minus the PENDING entries it holds; a PENDING entry of this kind not found is reported too."""
    pending = {p for p in PENDING if p.startswith(prefix)} if prefix else {p for p in PENDING if not p.startswith("size ")}
    return sorted(set(found) - pending) + [f"fixed, remove from PENDING: {p}" for p in sorted(pending - set(found))]


def private_assignments() -> list[str]:
    """``obj._name = ...`` where ``obj`` is not ``self`` / ``cls``: assigning another object's private field."""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                if isinstance(t, ast.Attribute) and t.attr.startswith("_") and not t.attr.startswith("__"):
                    if not (isinstance(t.value, ast.Name) and t.value.id in ("self", "cls")):
                        bad.append(f"{module_name(path)}:{node.lineno} assigns .{t.attr}")
    return bad


def test_imports_only_go_down() -> None:
    assert layer_violations(package_graph()) == []


def test_no_import_circle() -> None:
    assert cycles(package_graph()) == []


def test_no_private_names_across_modules() -> None:
    assert without_pending(private_imports(package_graph())) == []
    assert private_assignments() == []


def test_modules_are_small() -> None:
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    big = [f"size {m}" for m, n in sizes.items() if n > MAX_LINES]
    assert without_pending(big, "size ") == [], {m: n for m, n in sizes.items() if n > MAX_LINES}


@pytest.mark.parametrize(
    "module, source, problem",
    [
        ("hnsw_numba.kernels.search", "from ..core.index import Hnsw\n", "layer"),
        ("hnsw_numba.kernels.search", "def f():\n    from hnsw_numba.io import persist\n", "layer"),
        ("hnsw_numba.core.index", "from ..cli.main import main\n", "layer"),
        ("hnsw_numba.core.index", "from .graph import _upper_words_for\n", "private"),
    ],
)
def test_the_checks_catch_a_violation(module: str, source: str, problem: str) -> None:
    graph = package_graph()
    graph[module] = graph[module] + imports_of(source, module, False)
    if problem == "layer":
        assert layer_violations(graph)
    else:
        assert private_imports(graph)


def test_the_circle_check_catches_a_circle() -> None:
    graph = package_graph()
    graph["hnsw_numba.core.graph"] = graph["hnsw_numba.core.graph"] + imports_of("from .index import Hnsw\n", "hnsw_numba.core.graph", False)
    assert cycles(graph)


def test_lazy_root_names_match_the_type_checking_imports() -> None:
    """The package root imports its public names on first use: the table that does it names
    the same modules as the ``if TYPE_CHECKING:`` imports type checkers read, and every name
    of ``__all__`` resolves."""
    import hnsw_numba as hn

    tree = ast.parse((PKG / "__init__.py").read_text())
    typed = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for sub in node.body:
                assert isinstance(sub, ast.ImportFrom) and sub.level == 1, ast.dump(sub)
                typed.update({a.name: f".{sub.module}" for a in sub.names})
    assert typed == hn._LAZY
    assert all(getattr(hn, name) is not None for name in hn.__all__)
    assert sorted(set(hn.__all__) - set(dir(hn))) == []


def test_dir_of_the_package_lists_its_public_names_only() -> None:
    """``dir(hn)`` (tab completion) offers the public names and the loaded subpackages, not
    the helpers the package module imports for itself."""
    import hnsw_numba as hn
    import hnsw_numba.core  # noqa: F401 - a subpackage once imported is listed

    names = dir(hn)
    assert {"Index", "Hnsw", "Filter", "open", "__version__", "HnswError", "core"} <= set(names)
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib"} & set(names)
