"""The house rules, read from the source: the import graph of `seg_video` (imports inside functions included, those
under `if TYPE_CHECKING:` left out) has no circle and no chain longer than eight modules, each wing imports only what
it may, and only the CLI prints, exits or reads `sys.argv`."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"seg_video": ROOT / "pipeline", "seg_video.engines": ROOT / "engines", "seg_video.configs": ROOT / "configs"}
"""Each import name and the folder it is built from (pyproject.toml's package-dir)."""
LONGEST_CHAIN = 8

MAY_IMPORT = {
    "seg_video.core": ("seg_video.core",),
    "seg_video.stages": ("seg_video.core", "seg_video.stages"),
    "seg_video.io": ("seg_video.core", "seg_video.io"),
    "seg_video.engines": ("seg_video.core.types", "seg_video.core.errors", "seg_video.core.settings",
                          "seg_video.engines"),
    "seg_video.jobs": ("seg_video.core", "seg_video.stages", "seg_video.io", "seg_video.engines", "seg_video.jobs"),
    "seg_video.live": ("seg_video.core", "seg_video.stages", "seg_video.io", "seg_video.engines", "seg_video.jobs",
                       "seg_video.live"),
    "seg_video.batch": ("seg_video.core", "seg_video.io", "seg_video.engines", "seg_video.jobs", "seg_video.batch"),
}
"""What each wing may import of the project (a module, or a package and everything in it); the CLI, the API and
the package's face may import anything."""
SPEAKS = ("print", "input", "exit", "quit")
"""Builtins that talk to the terminal or end the process: the CLI's alone."""


def modules() -> dict[str, Path]:
    """Every module of the package by its import name."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (i for child in node.orelse for i in _imports(ast.Module(body=[child], type_ignores=[])))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


@cache
def graph() -> dict[str, set[str]]:
    """Module → the project's modules it imports."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{name}: relative import"
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.split(".")[0] == "seg_video"}
            elif node.module is not None and node.module.split(".")[0] == "seg_video":
                for alias in node.names:
                    inner = f"{node.module}.{alias.name}"
                    targets.add(inner if inner in known else node.module)
        unknown = targets - set(known)
        assert not unknown, f"{name} imports {unknown}, which do not exist"
        edges[name] = targets - {name}
    return edges


def chains_and_circles() -> tuple[dict[str, list[str]], list[list[str]]]:
    """For each module, the longest chain of imports starting at it; and every circle found."""
    longest: dict[str, list[str]] = {}
    circles: list[list[str]] = []
    on_path: list[str] = []

    def visit(name: str) -> list[str]:
        if name in on_path:
            circles.append([*on_path[on_path.index(name):], name])
            return [name]
        if name not in longest:
            on_path.append(name)
            tails = [visit(target) for target in sorted(graph()[name])]
            on_path.pop()
            longest[name] = [name, *max(tails, key=len, default=[])]
        return longest[name]

    for module in sorted(graph()):
        visit(module)
    return longest, circles


def test_the_import_graph_has_no_circles() -> None:
    _, circles = chains_and_circles()
    assert not circles, "\n".join(" → ".join(circle) for circle in circles)


def test_no_import_chain_is_longer_than_eight_modules() -> None:
    longest, _ = chains_and_circles()
    chain = max(longest.values(), key=len)
    assert len(chain) <= LONGEST_CHAIN, " → ".join(chain)
    assert len(chain) >= 4  # the graph was read: the CLI reaches down through jobs to the core


@pytest.mark.parametrize("wing", sorted(MAY_IMPORT))
def test_each_wing_imports_only_what_it_may(wing: str) -> None:
    allowed = MAY_IMPORT[wing]
    wrong = {f"{name} → {target}" for name, targets in graph().items() if name.startswith(wing + ".") or name == wing
             for target in targets if not any(target == a or target.startswith(a + ".") for a in allowed)}
    if wing == "seg_video.engines":  # the engines' own wing is the broad one above; the core's runner is not theirs
        wrong |= {f"{name} → {target}" for name, targets in graph().items() if name.startswith(wing)
                  for target in targets if target == "seg_video.core.runner"}
    assert not wrong, sorted(wrong)


def test_the_core_types_import_nothing_of_the_project() -> None:
    assert graph()["seg_video.core.types"] == set()
    assert graph()["seg_video.core.errors"] == set()


def test_nothing_in_the_package_imports_the_tools() -> None:
    tools = {path.stem for path in (ROOT / "tools").glob("*.py")} | {"tools"}
    for path in modules().values():
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not {name.split(".")[0] for name in names} & tools, path


def _speaks(path: Path) -> list[str]:
    """Where a module prints, exits or reads `sys.argv`/`sys.stdout`/`sys.stderr`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SPEAKS:
            found.append(f"{path.name}:{node.lineno} {node.func.id}()")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                (node.value.id == "sys" and node.attr in ("exit", "argv", "stdout", "stderr"))
                or (node.value.id == "os" and node.attr == "_exit")):
            found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_only_the_cli_prints_exits_or_reads_argv() -> None:
    speaking = {name: _speaks(path) for name, path in modules().items()}
    outside = {name: where for name, where in speaking.items()
               if where and not name.startswith("seg_video.cli") and name != "seg_video.__main__"}
    assert not outside
    assert speaking["seg_video.cli.main"] and speaking["seg_video.cli.report"]  # the scan sees what it looks for


def test_the_readme_layout_lists_every_module_and_nothing_else() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    tree = text.split("## Layout", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    listed: set[str] = set()
    folders: list[str] = []
    for line in tree.splitlines():
        name = line.split()[0]
        depth = (len(line) - len(line.lstrip())) // 2
        del folders[depth:]
        path = "".join(folders) + name
        if name.endswith("/"):
            folders.append(name)
            assert (ROOT / path).is_dir(), path
        else:
            listed.add(path)
    present = {path.relative_to(ROOT).as_posix() for folder in ("pipeline", "engines")
               for path in (ROOT / folder).rglob("*.py")
               if path.name != "__init__.py" and path.parent.name != "classical"}
    assert listed == present
