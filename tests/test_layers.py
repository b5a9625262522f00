"""The house: no import circle inside kf_model (function-local imports included) and no import back up the
layers data -> models -> teachers -> bank -> training / evaluation / serving / experiments -> ui.

Read from the source with ast (nothing is imported); ``if TYPE_CHECKING:`` imports are type hints only.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kf_model"

# Rank of each top-level room of kf_model: a module may import its own room and any lower rank, never higher.
LAYERS: list[set[str]] = [
    {"errors", "limits", "utils", "devices", "hub_files"},  # foundations: no kf imports but each other
    {"data", "metrics"},
    {"models", "losses"},
    {"teachers", "export"},
    {"bank"},
    {"training", "evaluation", "serving"},
    {"experiments"},
    {"ui", "bench", "recipes", "space"},
]
RANK = {room: rank for rank, rooms in enumerate(LAYERS) for room in rooms}
TOP = len(LAYERS)  # the package's own __init__ (re-exports) and __main__ sit above everything


def module_files() -> dict[str, Path]:
    """``kf_model.x.y`` -> its file (a package's name -> its __init__.py)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    return {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
            and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}


def imported_modules(name: str, path: Path, known: set[str]) -> dict[str, int]:
    """The kf_model modules ``name`` imports anywhere in its file -> the first line that does."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    skipped = _type_checking_nodes(tree)
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name and not name.startswith(target + "."):
                found.setdefault(target, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    modules = module_files()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return TOP
    return RANK[parts[1]]


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{module} (line {line}) imports {target}" for module, targets in sorted(graph.items())
            for target, line in sorted(targets.items()) if rank(target) > rank(module)]


def test_every_room_has_a_layer():
    rooms = {name.split(".")[1] for name in module_files() if "." in name} - {"__main__"}
    assert rooms <= set(RANK), f"rooms without a layer in LAYERS: {sorted(rooms - set(RANK))}"


def test_no_import_circle_inside_kf_model():
    assert circles(import_graph()) == []


def test_no_import_back_up_the_layers():
    assert upward_imports(import_graph()) == []


def test_the_checks_see_circles_and_upward_imports():
    graph = {"kf_model.data.a": {"kf_model.models.b": 3}, "kf_model.models.b": {"kf_model.data.a": 5}}
    assert circles(graph) == [["kf_model.data.a", "kf_model.models.b"]]
    assert upward_imports(graph) == ["kf_model.data.a (line 3) imports kf_model.models.b"]
