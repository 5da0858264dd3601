"""A signal's name is written only in its own module and the registry.

Everywhere else the code asks the registry (appliance.signals), so that adding
a signal is one module and one registry line. Exempt: the signal package
itself, the hashers (they implement the signals), the list-format parsers
(they map their own field names), the demo and the generated protobuf
modules. Docstrings are prose, not code, and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

from appliance.signals import SIGNALS

ROOT = Path(__file__).resolve().parents[1] / "appliance"
EXEMPT = ("signals/", "lists/formats/", "hashers/", "v1/", "demo.py")
NAMES = {n for s in SIGNALS.values() for n in (s.name, *s.aliases)}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _literals(path: Path) -> list[str]:
    """``file:line: 'literal'`` of each string constant naming a signal."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docs = _docstrings(tree)
    shown = path.relative_to(ROOT.parent) if path.is_relative_to(ROOT) else path.name
    return [f"{shown}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs and node.value.strip().lower() in NAMES]


def test_signal_names_are_literals_only_in_their_modules_and_the_registry() -> None:
    checked = [p for p in sorted(ROOT.rglob("*.py"))
               if not str(p.relative_to(ROOT)).startswith(EXEMPT)]
    assert len(checked) > 50  # the walk found the package
    found = [hit for path in checked for hit in _literals(path)]
    assert not found, "signal names written outside appliance/signals:\n" + "\n".join(found)


def test_the_check_sees_a_literal(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text('"""md5 in a docstring is prose."""\nWANT = ("md5", "SHA-1 ")\n')
    assert [h.split(": ", 1)[1] for h in _literals(path)] == ["'md5'", "'SHA-1 '"]
