"""The house rules of the code base (#24), checked on the source so that they hold as it grows:
the runtime knows no PPE, depends on no stage, imports form no cycle, modules and functions stay
short, and each rule that used to be written in several places has one owner."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from stages.config import REPO_ROOT

PACKAGES = ("pipeline", "stages")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules(package: str = "") -> Iterator[tuple[str, Path]]:
    """(dotted name, path) of every module of ``package`` (all of ours by default)."""
    for root in [package] if package else PACKAGES:
        for path in sorted((REPO_ROOT / root.replace(".", "/")).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imported(name: str, path: Path) -> set[str]:
    """Our modules ``path`` imports, at module level or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    ours = dict(modules())
    return {module for module in found if module in ours and module != name}


def test_the_runtime_holds_no_ppe_word() -> None:
    ppe = re.compile(r"no_vest|hardhat|[Vv]iolation|\.vest\b")
    found = [
        f"{path.relative_to(REPO_ROOT)}:{n}"
        for _, path in modules("pipeline")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if ppe.search(line)
    ]
    assert not found, f"pipeline/ is the runtime and knows no PPE: {found}"


def test_the_runtime_imports_no_stage() -> None:
    found = {
        name: sorted(m for m in imported(name, path) if m.startswith("stages")) for name, path in modules("pipeline")
    }
    assert not {name: uses for name, uses in found.items() if uses}


def test_no_import_cycle() -> None:
    graph = {name: imported(name, path) for name, path in modules()}
    for name in graph:  # a package's __init__ is imported with each of its modules: not a cycle of ours
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    cycles = [component for component in _strongly_connected(graph) if len(component) > 1]
    assert not cycles, f"modules that import each other: {cycles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in graph:
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
                components.append(sorted(component))
    return components


def test_modules_and_functions_stay_short() -> None:
    long_modules, long_functions = [], []
    for _, path in modules():
        text = path.read_text()
        where = path.relative_to(REPO_ROOT)
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{where}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    assert not long_modules, f"over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"over {MAX_FUNCTION_LINES} lines: {long_functions}"


RECORDING_PATHS = "|".join(
    [
        r'strftime\("%Y-%m-%d"\)\s*/',
        r'/ "(clips|events)"',
        r'"events\.sqlite3"',
        r'with_suffix\("\.jsonl"\)',
        r'"\*\.ts"',
    ]
)
URL_KINDS = "|".join([r'startswith\("/dev/video"\)', r"url\.isdigit\(\)", r'"rtsps?://",', r"SUFFIXES = frozenset"])


@pytest.mark.parametrize(
    ("rule", "owners", "pattern"),
    [
        # vestwatch detect writes NAME.jsonl beside its annotated copies: its own folder, not the recordings
        ("recording paths", ("stages/recording/paths.py", "stages/commands/detect_media.py"), RECORDING_PATHS),
        ("the URL-kind rule", ("stages/capture/sources/",), URL_KINDS),
    ],
)
def test_a_rule_has_one_owner(rule: str, owners: tuple[str, ...], pattern: str) -> None:
    written = sorted(
        where
        for _, path in modules()
        if re.search(pattern, path.read_text()) and not (where := str(path.relative_to(REPO_ROOT))).startswith(owners)
    )
    assert not written, f"{rule} written outside {owners}: {written}"
