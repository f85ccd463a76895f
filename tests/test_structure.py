"""The package's shape: no import cycles between its parts, `options` a leaf, no module swapping another object's
class. Walks every import statement (top-level and inside functions: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "animator_cli"


def part(module: str) -> str | None:
    """The part of the package ``module`` belongs to: its first level under animator_cli (weights.tiny, the test
    models' writers, counts as its own part)."""
    names = module.split(".")
    if names[0] != "animator_cli" or len(names) < 2:
        return None
    return "weights.tiny" if names[1:3] == ["weights", "tiny"] else names[1]


def imports() -> dict[str, set[str]]:
    """part → the parts its modules import."""
    graph: dict[str, set[str]] = {}
    parts = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()} | {"weights.tiny"}
    for path in PACKAGE.rglob("*.py"):
        source = part(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if source is None or source == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module, *(f"{node.module}.{a.name}" for a in node.names)] \
                if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                target = part(name)
                if target in parts and target not in (source, "__init__"):
                    graph.setdefault(source, set()).add(target)
    return graph


def test_no_import_cycles_between_the_parts_of_the_package():
    graph = imports()
    assert {"options", "sampling", "hjb", "generate", "api"} <= set(graph)  # the walk sees the package
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_options_is_a_leaf():
    """Every stage may import `options`; it imports no stage (only errors, the device check and the draft preset)."""
    assert imports()["options"] <= {"errors", "device", "draft"}


def test_no_module_swaps_a_class():
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if any(isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "__class__"
                                                            for t in node.targets)
                        for node in ast.walk(ast.parse(path.read_text())))]
    assert offenders == []
