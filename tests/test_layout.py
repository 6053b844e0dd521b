"""The package's shape: no import circle between its modules (lazy imports inside functions included), imports
that flow one way between the subpackages, and no file over 600 lines in lipsync/."""

import ast
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "lipsync"
MAX_LINES = 600

# what each part of the package may import from the others (the base modules errors, console, hub and
# checkpoints may be imported by all); the subpackages' __init__ docstrings say the same in words
BASE = {"lipsync.errors", "lipsync.console", "lipsync.hub", "lipsync.checkpoints"}
NEVER = {
    "lipsync.model": ("lipsync.media", "lipsync.scoring", "lipsync.training", "lipsync.app", "lipsync.engine",
                      "lipsync.job"),
    "lipsync.media": ("lipsync.model", "lipsync.scoring", "lipsync.training", "lipsync.app", "lipsync.engine",
                      "lipsync.job"),
    "lipsync.scoring": ("lipsync.training", "lipsync.app", "lipsync.engine", "lipsync.job"),
    "lipsync.training": ("lipsync.app", "lipsync.engine"),
    "lipsync.job": ("lipsync.training", "lipsync.app", "lipsync.engine"),  # presets are plain data
    "lipsync.engine": ("lipsync.training", "lipsync.app"),
}
for _base in BASE:
    NEVER[_base] = ("lipsync.model", "lipsync.media", "lipsync.scoring", "lipsync.training", "lipsync.app",
                    "lipsync.engine", "lipsync.job")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict:
    """Module name -> file, for every module of the package."""
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str, known: dict) -> str:
    """The module a dotted import name lands in: itself, or the closest enclosing module (``pkg.attr``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict:
    """Module -> {(imported module, line)}, over every import statement anywhere in the file (functions too),
    plus the lazy names of ``lipsync/__init__.py`` (``import_module`` by string)."""
    known = modules()
    graph = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            for target in targets:
                if target.split(".")[0] == "lipsync":
                    found = resolve(target, known)
                    if found and found != name:
                        graph[name].add((found, node.lineno))
    init = PACKAGE / "__init__.py"
    for node in ast.walk(ast.parse(init.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_LAZY" for t in node.targets):
            for target in ast.literal_eval(node.value).values():
                graph["lipsync"].add((resolve(f"lipsync.{target}", known), node.lineno))
    return graph


def find_cycle(graph: dict):
    """One import circle as a list of modules (first == last), or None."""
    edges = {name: sorted({target for target, _ in targets}) for name, targets in graph.items()}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    targets = {name: {t for t, _ in edges} for name, edges in graph.items()}
    assert "lipsync.model.loading" in targets["lipsync"]  # by string, in __init__'s _LAZY
    assert "lipsync.model.original" in targets["lipsync.model.unet"]  # inside from_original_checkpoint
    assert "lipsync.media.detectors" in targets["lipsync.app.layout"]  # `from lipsync.media.detectors import`
    assert "lipsync.app.launch" in targets["lipsync.app.__main__"]
    assert find_cycle({"a": {("b", 1)}, "b": {("c", 1)}, "c": {("a", 1)}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {("b", 1)}, "b": set()}) is None


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("part", sorted(NEVER))
def test_imports_flow_one_way(part):
    bad = []
    for name, edges in import_graph().items():
        if name == part or name.startswith(part + "."):
            for target, line in sorted(edges):
                if any(target == other or target.startswith(other + ".") for other in NEVER[part]):
                    bad.append(f"{name} (line {line}) imports {target}")
    assert not bad, f"{part} may not import {', '.join(NEVER[part])}: " + "; ".join(bad)


def test_no_file_over_600_lines():
    long = {p.relative_to(REPO).as_posix(): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern (at most {MAX_LINES} lines each): {long}"


def test_nothing_but_the_package_is_installed():
    """setup.py lists lipsync and its subpackages only: no generic top-level module such as app or studio."""
    text = (REPO / "setup.py").read_text() + (REPO / "pyproject.toml").read_text()
    assert "py-modules" not in text and '"studio"' not in text
    assert not (REPO / "studio").exists()


def test_every_module_path_and_command_in_readme_exists():
    """README's `python -m lipsync.X` commands and `lipsync.a.b` names point at modules (or their attributes)."""
    import importlib
    import importlib.util
    import re

    text = (REPO / "README.md").read_text()
    missing = []
    for name in sorted(set(re.findall(r"\blipsync(?:\.[A-Za-z_]\w*)+", text))):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(name)
            break
    commands = set(re.findall(r"-m (lipsync(?:\.\w+)*)", text))
    missing += [f"python -m {c}" for c in sorted(commands) if importlib.util.find_spec(c) is None
                or (c != "lipsync" and c != "lipsync.app" and "def main" not in Path(importlib.util.find_spec(c).origin).read_text())]
    assert not missing, f"README names what does not exist: {missing}"
