"""The package layout's rules, read from the import statements of every project module (nothing is imported)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = {".git", ".venv", "__pycache__", "carry", "data"}
INFERENCE = ("framepack_core", "comfy_adapter", "nodes")


def module_files() -> dict:
    """Dotted module name -> file, for every Python file of the project."""
    files = {}
    for file in ROOT.rglob("*.py"):
        parts = file.relative_to(ROOT).with_suffix("").parts
        if SKIPPED.intersection(parts):
            continue
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return files


def imported(module: str, file: Path, known: dict) -> set:
    """The project modules ``module`` imports (a ``from package import name`` counts ``package.name`` if it is one)."""
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known and name != module)
    return found


def import_graph() -> dict:
    files = module_files()
    return {module: imported(module, file, files) for module, file in files.items()}


def cycles(graph: dict) -> list:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_anywhere():
    graph = import_graph()
    assert "bench.report" in graph and "framepack_core.engine.generate" in graph  # the walk found the project
    assert cycles(graph) == []


def test_inference_code_never_imports_the_shapes_world():
    graph = import_graph()
    leaks = {m: sorted(d for d in deps if d.startswith("framepack_shapes"))
             for m, deps in graph.items() if m.startswith(INFERENCE)}
    assert {m: d for m, d in leaks.items() if d} == {}


def test_the_core_never_imports_comfyui_or_the_nodes():
    for module, file in module_files().items():
        if not module.startswith("framepack_core"):
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not any(n.split(".")[0] in ("comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes",
                                                "comfy_adapter") for n in names), (module, names)


def test_the_comfyui_glue_never_imports_node_classes():
    graph = import_graph()
    assert not any(d.startswith("nodes") for m, deps in graph.items() if m.startswith("comfy_adapter") for d in deps)
