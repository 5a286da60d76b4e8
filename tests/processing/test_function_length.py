"""No function in processing/ runs past MAX_LINES lines unless a `# long:`
comment inside it says why (read with ast: decorators excluded, docstring and
comments included; nested functions are measured on their own)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 120
JUSTIFIED = re.compile(r"#\s*long:\s*\S")


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function of SOURCE longer than
    MAX_LINES without a `# long: reason` comment in its own lines."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assert node.end_lineno is not None
        n = node.end_lineno - node.lineno + 1
        if n > max_lines and not any(JUSTIFIED.search(ln) for ln in lines[node.lineno - 1 : node.end_lineno]):
            found.append((node.name, node.lineno, n))
    return found


def test_the_check_sees_long_functions() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(6))
    assert long_functions(f"def f():\n{body}", max_lines=5) == [("f", 1, 7)]
    assert long_functions(f"def f():\n    # long: one table, read top to bottom\n{body}", max_lines=5) == []
    assert long_functions(f"def f():\n    # long:\n{body}", max_lines=5) == [("f", 1, 8)]  # a reason is required
    nested = f"def outer():\n    def inner():\n    {body.replace(chr(10), chr(10) + '    ')}\n    return inner\n"
    assert [name for name, _, _ in long_functions(nested, max_lines=5)] == ["outer", "inner"]
    assert long_functions(f"def f():\n{body}", max_lines=7) == []


def test_no_unexplained_long_function_in_processing() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name} ({n} lines)"
        for path in sorted((ROOT / "processing").rglob("*.py"))
        for name, line, n in long_functions(path.read_text())
    ]
    assert not offenders, f"split these or say why with a '# long: ...' comment (> {MAX_LINES} lines):\n" + "\n".join(
        offenders
    )
