"""The rules of the house, read from the source with ``ast``: no import cycles, no private names
across modules, subpackages only in ``core/``, and maintainer tools off the runtime path."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_microseg

PACKAGE_ROOT = Path(napari_microseg.__file__).parent
PACKAGE = "napari_microseg"
#: The only plain modules allowed directly in ``core/``, beside the stage subpackages.
CORE_SHARED_MODULES = {"__init__", "progress", "lazy"}
CORE_STAGES = {"io", "inference", "blocks", "postprocess", "training", "evaluation", "models"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def source_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def imported_modules(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """Every ``from X import a, b`` of this package in ``path``: (module, names, line).

    A name that is itself a module (``from . import labels``) counts as an import of that module.
    Imports inside functions and under ``TYPE_CHECKING`` count too: a cycle is a cycle.
    """
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE):
                    found.append((alias.name, [], node.lineno))
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if not target.startswith(PACKAGE):
            continue
        plain = []
        for alias in node.names:
            submodule = f"{target}.{alias.name}"
            if submodule in modules:
                found.append((submodule, [], node.lineno))
            else:
                plain.append(alias.name)
        if plain:
            found.append((target, plain, node.lineno))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _, _ in imported_modules(path, modules):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, f"modules that import each other: {cycles}"


def test_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_no_private_name_crosses_a_module_border():
    modules = source_modules()
    crossings = []
    for name, path in modules.items():
        for target, names, line in imported_modules(path, modules):
            if target == name:
                continue
            for imported in names:
                if imported.startswith("_") and not imported.startswith("__"):
                    crossings.append(f"{path.relative_to(PACKAGE_ROOT)}:{line} {target}.{imported}")
    assert not crossings, "private names imported from another module:\n" + "\n".join(crossings)


def test_core_holds_stage_subpackages_only():
    core = PACKAGE_ROOT / "core"
    modules = {path.stem for path in core.glob("*.py")}
    assert modules <= CORE_SHARED_MODULES, sorted(modules - CORE_SHARED_MODULES)
    stages = {path.parent.name for path in core.glob("*/__init__.py")}
    assert stages == CORE_STAGES


def test_every_stage_states_its_public_names():
    for stage in CORE_STAGES:
        init = PACKAGE_ROOT / "core" / stage / "__init__.py"
        tree = ast.parse(init.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{stage}/__init__.py has no docstring"
        exported = [
            node
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        ]
        assert exported, f"{stage}/__init__.py has no __all__"


def test_nothing_at_run_time_imports_the_maintainer_tools():
    modules = source_modules()
    runtime = {name: path for name, path in modules.items() if ".bundling" not in name}
    offenders = [
        f"{path.relative_to(PACKAGE_ROOT)}:{line}"
        for name, path in runtime.items()
        for target, _, line in imported_modules(path, modules)
        if target.startswith(f"{PACKAGE}.bundling")
    ]
    assert not offenders, offenders


def defined_names(path: Path) -> set[str]:
    """Names a module defines at its top level (functions, classes, assignments)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_names_are_imported_from_their_home():
    """One home for every name: no module is used as a relay for another module's names.

    A stage's ``__init__`` (whose names resolve lazily) is the one allowed front door.
    """
    modules = source_modules()
    relayed = []
    for path in modules.values():
        for target, names, line in imported_modules(path, modules):
            home = modules.get(target)
            if home is None or home.name == "__init__.py":
                continue
            missing = sorted(set(names) - defined_names(home) - {"*"})
            if missing:
                relayed.append(f"{path.relative_to(PACKAGE_ROOT)}:{line} {target}: {missing}")
    assert not relayed, "names imported through a module that does not define them:\n" + "\n".join(
        relayed
    )
