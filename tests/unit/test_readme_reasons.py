"""The README's table of Broken reasons names every reason the code can end a tenant Broken with.

The reasons are read from the source (AST, no import): the first argument of every
``EngineError(...)`` (or subclass ``super().__init__(...)``) call in ``engine/`` that is not
``transient=True``, the ``reason`` of every non-transient error class in ``remote/errors.py``, and
``TenantIdInUse`` (set by the controller). A reason added to the code without a README row fails.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "pageserver_operator"
NOT_BROKEN = {"Active", "AttachStarted", "LoadStarted", "AttachIncomplete", "DetachStarted", "TenantNotActive", "TenantNotFound"}
"""Reasons that never make a tenant Broken: status.reason while working, and the refusals of CLI
commands (`sync` of a tenant that is not Active, `status` of one not on the volume)."""


def _is_transient(call: ast.Call) -> bool:
    return any(k.arg == "transient" and isinstance(k.value, ast.Constant) and k.value.value for k in call.keywords)


def _callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def broken_reasons() -> set[str]:
    reasons = {"TenantIdInUse"}
    for path in sorted((PACKAGE / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            value = node.args[0].value
            if not isinstance(value, str) or not re.fullmatch(r"[A-Z][A-Za-z]+", value):
                continue
            if _callee(node) in ("EngineError", "__init__") and not _is_transient(node):
                reasons.add(value)
    tree = ast.parse((PACKAGE / "remote" / "errors.py").read_text())
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        if "Transient" in cls.name:
            continue
        for stmt in cls.body:
            if (
                isinstance(stmt, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "reason" for t in stmt.targets)
                and isinstance(stmt.value, ast.Constant)
            ):
                reasons.add(str(stmt.value.value))
    return reasons - NOT_BROKEN


def readme_table_reasons() -> set[str]:
    text = (REPO / "README.md").read_text()
    start = text.index("| Broken reason |")
    table = text[start : text.index("\n\n", start)]
    return {name for line in table.splitlines()[2:] for name in re.findall(r"`([A-Z][A-Za-z]+)`", line.split("|")[1])}


def test_every_broken_reason_has_a_readme_row() -> None:
    code = broken_reasons()
    assert "Stale" in code and "NoRemoteTimelines" in code, code  # the parser finds them
    missing = sorted(code - readme_table_reasons())
    assert not missing, f"Broken reasons without a row in the README's table: {missing}"
