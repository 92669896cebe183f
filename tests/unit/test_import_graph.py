"""No import cycle anywhere in server/modelrepo.

A cycle makes a module's behaviour depend on which side was imported first, and every later move
of code has to dodge it. The graph is read from the source with ``ast`` (every ``import`` in a
module, function-level ones included: a lazy import is still a dependency; only blocks under
``if TYPE_CHECKING:`` are left out) and checked with the stdlib's ``graphlib``, whose CycleError
names the cycle.
"""

import ast
import graphlib
from pathlib import Path

import modelrepo
import pytest

ROOT = Path(modelrepo.__file__).parent
PACKAGE = "modelrepo"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py")) if "migrations" not in p.parts}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                # `from pkg import sub` imports the submodule when there is one.
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in MODULES else module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = {m for m in _imports(tree, name, path.name == "__init__.py") if m != name}
    return graph


def test_every_import_resolves_to_a_module():
    unknown = {(m, dep) for m, deps in import_graph().items() for dep in deps if dep not in MODULES}
    assert not unknown, f"imports of modules that do not exist: {sorted(unknown)}"


def test_no_import_cycle():
    try:
        order = list(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as exc:
        pytest.fail("import cycle: " + " -> ".join(exc.args[1]))
    assert set(order) >= set(MODULES)


def test_the_checker_sees_a_cycle():
    """The check above must be able to fail: a graph with a cycle is refused."""
    graph = import_graph()
    graph["modelrepo.errors"] = graph["modelrepo.errors"] | {"modelrepo.app"}
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(graph).static_order())


def test_parser_reads_lazy_and_relative_imports():
    source = ("def f():\n    from modelrepo.cli import main\n"
              "from . import errors\n"
              "if TYPE_CHECKING:\n    import modelrepo.app\n")
    assert _imports(ast.parse(source), "modelrepo.web.api", False) == {"modelrepo.cli.main", "modelrepo.web"}
