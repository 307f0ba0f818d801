"""The package's house rules, read from the source: fronts are kept, imports point one way."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "toolbox"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(*folders: str) -> dict[str, Path]:
    return {_module_name(p): p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))}


MODULES = _sources("toolbox")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every toolbox module `path` imports (function-level ones too), with the line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((node.lineno, sub if sub in MODULES else node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "toolbox"]


def test_nothing_outside_a_package_imports_its_private_modules():
    """Code outside `toolbox/<pkg>/` uses the names `<pkg>/__init__.py` hands on (tests may
    still reach inside, to patch a module's internals)."""
    offences = []
    for name, path in _sources("toolbox", "benchmarks").items():
        for line, target in _imports(path):
            parts = target.split(".")
            private = next((i for i, part in enumerate(parts) if part.startswith("_")), None)
            if private is None:
                continue
            owner = ".".join(parts[:private])
            if not (name == owner or name.startswith(owner + ".")):
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not offences, "\n".join(offences)


def test_package_fronts_only_hand_names_on():
    """An `__init__.py` holds a docstring, imports and `__all__`: logic lives in a module."""
    offences = []
    for path in PACKAGE.rglob("__init__.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            plain = isinstance(node, ast.Import | ast.ImportFrom) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
            names_all = isinstance(node, ast.Assign) and [
                getattr(t, "id", None) for t in node.targets] == ["__all__"]
            version = isinstance(node, ast.Assign) and [
                getattr(t, "id", None) for t in node.targets] == ["__version__"]
            if not (plain or names_all or version):
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offences, "logic in a package front:\n" + "\n".join(offences)


def test_no_import_circles_in_the_package():
    graph = {name: {t for _, t in _imports(path) if t in MODULES and t != name}
             for name, path in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                circles.append(sorted(members))

    for name in graph:
        if name not in index:
            visit(name)
    assert not circles, circles


# Each room of the package, from the top: a room imports only rooms below its own. A new room
# must be placed here (the test says so), so the order is decided once, on purpose.
LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(rooms.split()) for rooms in (
    "__main__",
    "cli",
    "tune benchmark",
    "export",
    "train log_images",
    "datasets",
    "segment",
    "inference augment",
    "csv_source",
    "sources preprocess",
    "models images",
    "runs",  # asks fileio whether a name can be a file
    "fileio devices progress tensorboard jsonable losses paths sharding interrupt",
    "errors",
))
MAX_LINES = 450


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_import_points_down_the_layers():
    """`cli` over the services, the services over the small shared modules: an arrow back up
    (a service importing the room that uses it) is how circles and slow start-ups begin."""
    rank = {room: depth for depth, rooms in enumerate(LAYERS) for room in rooms}
    unplaced = sorted({_room(m) for m in MODULES} - set(rank) - {""})
    assert not unplaced, f"rooms missing from LAYERS in {__file__}: {unplaced}"
    offences = set()
    for name, path in MODULES.items():
        for line, target in _imports(path):
            source, dest = _room(name), _room(target)
            if source and dest and source != dest and rank[dest] <= rank[source]:
                offences.add(f"{path.relative_to(ROOT)}:{line} ({source}) imports {target}"
                             f" ({dest}), which is not below it")
    assert not offences, "\n".join(sorted(offences))


def test_no_module_is_over_the_line_limit():
    """Small modules named for what they hold: past ~450 lines a module holds two things."""
    long = [f"{path.relative_to(ROOT)}: {count} lines"
            for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")])
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)
