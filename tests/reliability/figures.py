"""Figures of the reliability suites, collected during a run and printed at its end (conftest)."""

from __future__ import annotations

FIGURES: list[str] = []


def record(line: str) -> None:
    """Keep ``line`` for the terminal summary (and print it now, for ``-s`` runs and the soak)."""
    FIGURES.append(line)
    print(line, flush=True)
