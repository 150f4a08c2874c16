"""Typed values inside, text at the edge (issue 15 item 5): in engine/ and k8s/ a phase is a
`TenantState` (a timeline's a `TimelineState`), never compared as text; only api/ turns states
into phase names and back (`v1alpha1.phase_name`, `v1alpha1.parse_phase`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pageserver_operator

PACKAGE = Path(pageserver_operator.__file__).parent
PHASE_NAMES = {"Loading", "Attaching", "Active", "Broken", "Stopping", "Suspended", "Detached"}


def _phase_literals(node: ast.expr) -> list[str]:
    """Phase names written as literals in one side of a comparison (alone or in a collection)."""
    items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
    return [i.value for i in items if isinstance(i, ast.Constant) and i.value in PHASE_NAMES]


def test_no_phase_is_compared_as_text_in_the_engine_or_the_k8s_layer() -> None:
    found = []
    for package in ("engine", "k8s"):
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Compare):
                    for side in (node.left, *node.comparators):
                        found += [f"{path.relative_to(PACKAGE)}:{node.lineno}: {t!r}" for t in _phase_literals(side)]
    assert not found, "phases compared as text (compare TenantState values): " + ", ".join(found)


def test_the_check_sees_a_comparison_with_a_phase_name() -> None:
    tree = ast.parse('x == "Active" or y in ("Loading", "Attaching") or z != 3')
    compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    literals = [t for c in compares for side in (c.left, *c.comparators) for t in _phase_literals(side)]
    assert literals == ["Active", "Loading", "Attaching"]
