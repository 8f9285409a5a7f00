"""The project's modules import each other without cycles, lazy (function-level) imports included: a cycle hidden in a
function still ties two modules together and breaks as soon as one import moves to the top."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("modeling_eomt", "image_processing", "training", "benchmarks")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(name: str, source: str, is_package: bool, modules: set[str]) -> set[str]:
    """The project modules that module `name` (its `source`; a package's `__init__` if `is_package`) imports anywhere."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from base import x`: the submodule `base.x`, or a name defined in `base`
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    return {
        name: imported_modules(name, path.read_text(), path.name == "__init__.py", set(paths))
        for name, path in paths.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_cycles_are_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_and_lazy_imports_are_edges():
    modules = {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c", "other"}
    assert imported_modules("pkg.a", "from . import b\nfrom .sub.c import y\nimport torch\n", False, modules) == {
        "pkg.b", "pkg.sub.c"
    }
    assert imported_modules("pkg.sub", "from . import c\nfrom ..a import name\nfrom .. import b\n", True, modules) == {
        "pkg.sub.c", "pkg.a", "pkg.b"
    }
    lazy = "def f():\n    from pkg.sub import c\n    import other\n"
    assert imported_modules("pkg.a", lazy, False, modules) == {"pkg.sub.c", "other"}
    graph = import_graph()
    assert "modeling_eomt.checkpoints.renaming" in graph["modeling_eomt.checkpoints.backbones"]
    assert "modeling_eomt.configuration_eomt" in graph["modeling_eomt.checkpoints.backbones"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles among the project's modules: {[sorted(cycle) for cycle in found]}"


def test_checkpoint_formats_do_not_import_the_model():
    """The checkpoint package works on state and config dicts; the model module imports it, never the reverse."""
    graph = import_graph()
    for name, imported in graph.items():
        if name.startswith("modeling_eomt.checkpoints"):
            assert not imported & {"modeling_eomt", "modeling_eomt.modeling_eomt"}, name
