"""processing/ keeps its layers: every module's imports (lazy ones inside
functions included) read with ast, checked against the layer table of
processing/__init__.py: no upward import, no import cycle between modules or
between packages, and package __init__ files that import nothing heavy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESSING = ROOT / "processing"

#: Package -> layer. A package may import its own layer and lower ones.
LAYERS: dict[str, int] = {
    "io": 0,
    "device": 1,
    "stack": 2,
    "upscale": 2,
    "stitch": 2,
    "tiles": 2,
    "capture": 3,
    "synth": 3,
    "bench": 4,
    "commands": 4,
}
#: Modules directly in processing/: the package marker and the CLI entry point.
TOP = {"processing": -1, "processing.__main__": 5}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PROCESSING.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The processing modules NAME imports (a package's __init__ for `from pkg import x`
    only when x is not itself a module)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                found.add(sub if sub in modules else mod)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else module


def layer_of(module: str) -> int:
    pkg = package_of(module)
    return LAYERS[pkg] if pkg in LAYERS else TOP[module]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of EDGES as a path [a, b, ..., a], or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(edges):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(edges[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(edges.get(nxt, ()))))
    return None


def test_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": set(), "a": {"a"}}) == ["a", "a"]


def test_import_parser_resolves_relative_and_lazy_imports() -> None:
    g = graph()
    assert "processing.stack.fuse" in g["processing.stack.pipeline"]  # from .fuse import ...
    assert "processing.io.errors" in g["processing.stack.pipeline"]  # from ..io.errors import ...
    assert "processing.upscale.upscale" in g["processing.stack.pipeline"]  # lazy, inside a function
    assert "processing.stack.gpu" in g["processing.stack.fuse_gpu"]  # from . import gpu


def test_every_module_has_a_layer() -> None:
    missing = [m for m in graph() if package_of(m) not in LAYERS and m not in TOP]
    assert not missing, f"modules outside the layer table (add their package to LAYERS): {missing}"


def test_no_upward_imports() -> None:
    upward = [
        f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
        for m, deps in graph().items()
        for d in sorted(deps)
        if layer_of(d) > layer_of(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_module_import_cycles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_no_package_import_cycles() -> None:
    edges: dict[str, set[str]] = {}
    for m, deps in graph().items():
        edges.setdefault(package_of(m), set()).update(package_of(d) for d in deps if package_of(d) != package_of(m))
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize("pkg", sorted(LAYERS))
def test_package_docstring_says_what_it_may_import(pkg: str) -> None:
    doc = ast.get_docstring(ast.parse((PROCESSING / pkg / "__init__.py").read_text())) or ""
    assert "May import" in doc, f"processing/{pkg}/__init__.py: docstring must say what the package may import"


def test_packages_import_light() -> None:
    """Importing every package (not its modules) pulls in no heavy library."""
    code = (
        "import sys\n"
        f"for p in {sorted(LAYERS)!r}: __import__('processing.' + p)\n"
        "print(' '.join(m for m in ('tensorflow', 'keras', 'cv2', 'cupy', 'pyvips', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
