"""The house: no import circle inside kf_model (function-local imports included) and no import back up the
layers data -> models -> teachers -> bank -> training / evaluation / serving / experiments -> ui.

Read from the source with ast (nothing is imported); ``if TYPE_CHECKING:`` imports are type hints only.
"""

from __future__ import annotations

import ast
import re
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


# --- re-exports: a package __init__ lists only names someone imports through the package ---------------------

PUBLIC_API = {"kf_model": {"FactorBank", "KFError"}}  # the library's front door, kept for users
READERS = ("kf_model", "tests", "train", "app.py", "README.md", "docs")


def is_all(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in stmt.targets)


def reexported_names(init: Path) -> list[str]:
    """Names an ``__init__.py`` imports from elsewhere and does not use in its own code."""
    tree = ast.parse(init.read_text())
    own_code = {node.id for stmt in tree.body if not isinstance(stmt, ast.Import | ast.ImportFrom) and not is_all(stmt)
                for node in ast.walk(stmt) if isinstance(node, ast.Name)}
    return [alias.asname or alias.name for stmt in tree.body
            if isinstance(stmt, ast.ImportFrom) and stmt.module != "__future__"
            for alias in stmt.names if (alias.asname or alias.name) not in own_code]


def reader_texts() -> dict[Path, str]:
    paths = [ROOT / "app.py", ROOT / "README.md"]
    for folder in ("kf_model", "tests", "train", "docs"):
        paths += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md")]
    return {path: path.read_text(errors="ignore") for path in paths if path.is_file()}


def package_aliases(package: str, text: str) -> set[str]:
    """Names a text gives the package by ``from parent import short`` or ``... import short as alias``."""
    parent, _, short = package.rpartition(".")
    if not parent:
        return set()
    aliases = set()
    for match in re.finditer(rf"from {re.escape(parent)} import (\([^)]*\)|[^\n]*)", text):
        for part in match.group(1).strip("()").split(","):
            words = part.split()
            if words and words[0] == short:
                aliases.add(words[-1])
    return aliases


def imported_through(package: str, name: str, texts: dict[Path, str], init: Path) -> bool:
    """``from package import name``, ``package.name``, or ``alias.name`` after ``from parent import short``."""
    direct = re.compile(rf"from {re.escape(package)} import (\([^)]*?\b{name}\b|[^\n]*\b{name}\b)"
                        rf"|\b{re.escape(package)}\.{name}\b")
    for path, text in texts.items():
        if path == init:
            continue
        if direct.search(text) or any(re.search(rf"\b{alias}\.{name}\b", text)
                                      for alias in package_aliases(package, text)):
            return True
    return False


def unused_reexports() -> list[str]:
    texts = reader_texts()
    unused = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        package = ".".join(init.parent.relative_to(ROOT).parts)
        unused += [f"{package}.{name}" for name in reexported_names(init)
                   if name not in PUBLIC_API.get(package, ()) and not imported_through(package, name, texts, init)]
    return unused


def test_package_inits_reexport_only_what_is_imported_through_them():
    assert unused_reexports() == []


def test_the_reexport_check_sees_unused_and_aliased_names(tmp_path):
    init = tmp_path / "__init__.py"
    init.write_text("from kf_model.x.a import used, unused, helper\n__all__ = ['used', 'unused']\nVALUE = helper()\n")
    assert reexported_names(init) == ["used", "unused"]  # helper is the __init__'s own code
    texts = {tmp_path / "user.py": "from kf_model import Thing, x as X\nX.used()\n"}
    assert imported_through("kf_model.x", "used", texts, init)
    assert not imported_through("kf_model.x", "unused", texts, init)
    assert imported_through("kf_model.x", "unused", {tmp_path / "b.py": "from kf_model.x import (\n  unused,\n)"}, init)
