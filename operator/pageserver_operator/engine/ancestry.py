"""Ordering timelines so that every ancestor comes before its children (docs/architecture.md, "engine/", Timeline setup).

A timeline whose ancestor is not in the set, or a cycle (including a timeline that is its own
ancestor), is refused with a message naming the timelines involved: such data can never load.
"""

from __future__ import annotations

from collections.abc import Mapping

from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import ids


def ancestors_first(
    parents: Mapping[ids.TimelineId, ids.TimelineId | None], where: str
) -> list[ids.TimelineId]:
    missing = sorted(
        f"{child} (ancestor {parent})"
        for child, parent in parents.items()
        if parent is not None and parent not in parents
    )
    if missing:
        raise EngineError(
            "MissingAncestor", f"{where}: some timelines are missing their ancestors: {', '.join(missing)}"
        )
    order: list[ids.TimelineId] = []
    placed: set[ids.TimelineId] = set()
    remaining = dict(parents)
    while remaining:
        ready = sorted(c for c, p in remaining.items() if p is None or p in placed)
        if not ready:
            cycle = ", ".join(str(c) for c in sorted(remaining))
            raise EngineError("AncestorCycle", f"{where}: timelines form an ancestor cycle: {cycle}")
        for c in ready:
            order.append(c)
            placed.add(c)
            del remaining[c]
    return order
