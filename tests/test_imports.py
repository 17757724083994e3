"""The import graph: no circle in the package, the recipes or the tools, no
arrow from the package to ``recipes`` or ``tools``, nor from ``recipes`` to
``tools``.

Every import statement counts, function-local ones included (read from each
module's syntax tree, nothing is imported): a circle hidden in a function is
still a circle.

Authors
 * latent-rq developers 2026
"""

import ast
import os

import pytest

from test_packaging import parse_source

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOTS = ("latent_rq_brain", "recipes", "tools")


def module_files():
    """``{dotted module name: path}`` of every Python file under :data:`ROOTS`."""
    found = {}
    for root in ROOTS:
        for folder, dirs, files in os.walk(os.path.join(REPO, root)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, name), REPO)[:-3]
                    parts = rel.split(os.sep)
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    found[".".join(parts)] = os.path.join(folder, name)
    return found


def imported_names(path, module, is_package):
    """Dotted names an import statement of ``path`` may load (every level,
    relative imports resolved; ``from a import b`` gives ``a`` and ``a.b``)."""
    with open(path, encoding="utf-8") as f:
        tree = parse_source(f.read(), path)
    package = module if is_package else module.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def import_graph():
    """``{module: set of modules of ROOTS it imports}`` (a package's
    ``__init__`` is not counted as imported by its sub-modules' importers:
    ours hold no imports)."""
    files = module_files()
    graph = {}
    for module, path in files.items():
        is_package = path.endswith("__init__.py")
        targets = set()
        for name in imported_names(path, module, is_package):
            if name in files and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def find_cycles(graph):
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_walker_sees_function_local_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.b import x\n")
    (pkg / "b.py").write_text("from . import a\n")
    assert set(imported_names(str(pkg / "a.py"), "pkg.a", False)) == {"pkg.b", "pkg.b.x"}
    assert set(imported_names(str(pkg / "b.py"), "pkg.b", False)) == {"pkg", "pkg.a"}
    assert find_cycles({"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}) == [["pkg.a", "pkg.b"]]


def test_the_walker_resolves_imports_across_sub_packages(tmp_path):
    for sub in ("pkg", "pkg/one", "pkg/two"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "__init__.py").write_text("")
    (tmp_path / "pkg/one/a.py").write_text("from ..two import b\nfrom .c import y\n")
    (tmp_path / "pkg/two/b.py").write_text("from pkg.one.a import z\nimport pkg.two\n")
    assert set(imported_names(str(tmp_path / "pkg/one/a.py"), "pkg.one.a", False)) == {
        "pkg.two", "pkg.two.b", "pkg.one.c", "pkg.one.c.y"}
    assert set(imported_names(str(tmp_path / "pkg/two/b.py"), "pkg.two.b", False)) == {
        "pkg.one.a", "pkg.one.a.z", "pkg.two"}
    assert set(imported_names(str(tmp_path / "pkg/one/__init__.py"), "pkg.one", True)) == set()


def test_the_graph_holds_every_module():
    graph = import_graph()
    assert {"latent_rq_brain.training.checkpoints", "latent_rq_brain.sharing.s3prl_upstream.expert",
            "recipes.probes.train_probe", "tools.report"} <= set(graph)
    assert "latent_rq_brain.sharing.safe_load" in graph["latent_rq_brain.training.resume"]
    assert "latent_rq_brain.training.branching" in graph["latent_rq_brain.training.checkpoints"]


def test_the_package_is_in_sub_packages_and_imports_no_old_path():
    """Every module lives in a sub-package (only ``__init__`` at the top), and
    no module of ROOTS imports a path of the flat layout (an alias the walker
    would not see: :data:`latent_rq_brain.MOVED`)."""
    from latent_rq_brain import moved_name

    files = module_files()
    top = sorted(m for m in files if m.count(".") == 1 and m.startswith("latent_rq_brain."))
    assert top == ["latent_rq_brain.model", "latent_rq_brain.objectives", "latent_rq_brain.sharing",
                   "latent_rq_brain.targets", "latent_rq_brain.training"]
    old = sorted(f"{module} imports {name}" for module, path in files.items()
                 for name in imported_names(path, module, path.endswith("__init__.py"))
                 if moved_name(name) is not None)
    assert not old, old


@pytest.mark.parametrize("root", ["latent_rq_brain", "recipes", "tools"])
def test_no_import_circle(root):
    graph = import_graph()
    cycles = [c for c in find_cycles(graph) if any(m.split(".")[0] == root for m in c)]
    assert not cycles, f"import circles: {cycles}"


@pytest.mark.parametrize("root, forbidden", [
    ("latent_rq_brain", ("recipes", "tools")),  # the package is the floor
    ("recipes", ("tools",)),  # tools may use recipes, not the other way
])
def test_no_arrow_down_the_floors(root, forbidden):
    graph = import_graph()
    arrows = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items() if m.split(".")[0] == root
        for t in targets if t.split(".")[0] in forbidden
    )
    assert not arrows, arrows
