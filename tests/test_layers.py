"""The packages stack one way: utils <- dataset <- modelling <- engine <- commands.

Every import of the project's own modules (module level or inside a function) is read from
the source; a test fails naming each arrow that runs up the layers, each import of a project
module inside a function, and each import cycle between modules.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"utils": 0, "dataset": 1, "modelling": 2, "engine": 3}
TOP = 4  # the commands, scripts/ and preprocess/
COMMANDS = ("training", "prediction", "extract_feature", "translate", "serve")
PROJECT = {*LAYERS, "preprocess", "scripts", *COMMANDS}


def _sources() -> list[Path]:
    files = [p for p in REPO.glob("*.py")]
    for folder in (*LAYERS, "preprocess", "scripts"):
        files += sorted((REPO / folder).rglob("*.py"))
    return files


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    return LAYERS.get(module.split(".")[0], TOP)


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) of every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return [(name, line, inner) for name, line, inner in found if name.split(".")[0] in PROJECT]


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO)}:{line}"


def test_the_sources_are_found():
    names = {_module_name(p) for p in _sources()}
    assert {"utils.config", "dataset.frames", "modelling.s3d_stream", "engine.trainer"} <= names


def test_no_import_runs_up_the_layers():
    upward = [
        f"{_where(path, line)} ({_module_name(path)}) imports {name}"
        for path in _sources()
        for name, line, _ in _imports(path)
        if _layer(name) > _layer(_module_name(path))
    ]
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_project_modules_are_imported_at_module_level():
    inner = [
        f"{_where(path, line)} imports {name} inside a function"
        for path in _sources()
        for name, line, in_function in _imports(path)
        if in_function
    ]
    assert not inner, "\n".join(inner)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in _sources()}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _, in_function in _imports(path):
            # `from package import module` names the package; count the module if it is one
            if target in modules and not in_function:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by depth-first search (each reported once, by its members)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles, seen = [], set()

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append([*cycle, target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_find_what_they_look_for(tmp_path: Path):
    """The helpers flag an upward arrow, a function-level import and a cycle when given one."""
    source = tmp_path / "m.py"
    source.write_text(
        "import os\nfrom engine.trainer import Trainer\n\ndef f():\n    import utils.config\n"
    )
    assert _imports(source) == [("engine.trainer", 2, False), ("utils.config", 5, True)]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _layer("engine.trainer") > _layer("modelling.s3d_stream") > _layer("utils.errors")


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_every_package_has_modules(package: str):
    assert any((REPO / package).glob("*.py")), package
