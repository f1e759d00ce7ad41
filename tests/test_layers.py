"""The package's layers: each module imports only its own layer or the layers below it.

_version, errors, classes, metrics, accuracy, runtime, design, progress, data -> io, synth ->
windows, sampling -> model -> engine -> inference -> products, quicklook -> workflows -> cli.
Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    ("hsimap._version", "hsimap.errors", "hsimap.classes", "hsimap.metrics", "hsimap.accuracy",
     "hsimap.runtime", "hsimap.design", "hsimap.progress", "hsimap.data"),
    ("hsimap.io", "hsimap.synth"),
    ("hsimap.windows", "hsimap.sampling"),
    ("hsimap.model",),
    ("hsimap.engine",),
    ("hsimap.inference",),
    ("hsimap.products", "hsimap.quicklook"),
    ("hsimap.workflows",),
    ("hsimap.cli",),
]


def layer(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def modules() -> dict[str, Path]:
    found = {}
    for base, package in ((ROOT / "hsimap", "hsimap"), (ROOT / "cli", "hsimap.cli")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("hsimap.")}


def test_every_module_has_a_layer():
    unplaced = [m for m in modules() if m != "hsimap" and m != "hsimap.__main__"
                and layer(m) is None]
    assert not unplaced


def test_no_module_imports_a_layer_above_it():
    found = modules()
    upward = []
    for name, path in found.items():
        own = layer(name)
        if own is None:
            continue  # hsimap/__init__ and __main__ are entry points
        for target in imports(path):
            t = layer(target)
            if t is not None and t > own and (target in found or target.rsplit(".", 1)[0]
                                              in found):
                upward.append(f"{name} -> {target}")
    assert not upward


def test_no_import_cycles():
    found = modules()
    graph = {n: {t if t in found else t.rsplit(".", 1)[0] for t in imports(p)} & set(found)
             for n, p in found.items()}
    seen, stack = set(), []

    def visit(n: str) -> None:
        if n in stack:
            raise AssertionError("cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
        if n in seen:
            return
        stack.append(n)
        for m in graph[n] - {n}:
            if not (n.startswith(m + ".") or m == "hsimap"):  # a package importing its parts
                visit(m)
        stack.pop()
        seen.add(n)

    for n in graph:
        visit(n)


def test_the_layout_doc_puts_each_module_in_the_layer_the_code_keeps():
    """docs/layout.md's table is a claim, checked: the row a module is named in is the layer
    this test enforces for it (rows in LAYERS' order), not only a list of names."""
    import re

    rows = [line for line in (ROOT / "docs" / "layout.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith(("| layer", "| ---"))]
    assert len(rows) == len(LAYERS)
    known = modules()
    wrong = []
    for i, row in enumerate(rows):
        cell = row.split("|")[2]
        for token in re.findall(r"`([a-z_/]+)`", cell):
            name = token.strip("/").replace("/", ".")
            candidates = [f"hsimap.{name}", f"hsimap.workflows.{name}"]
            module = next((c for c in candidates if c in known), None)
            assert module is not None, f"layout.md names {token}, which is no module"
            if layer(module) != i:
                wrong.append((token, layer(module), i))
    assert not wrong
