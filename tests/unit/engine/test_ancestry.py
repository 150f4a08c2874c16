"""`engine.ancestry.ancestors_first`: timelines ordered parents before children (reference §6.2
step 4); a missing ancestor or a cycle is refused with a message naming the timelines."""

from __future__ import annotations

import random

import pytest

from pageserver_operator.engine import ancestry
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import ids


def tl(n: int) -> ids.TimelineId:
    return ids.TimelineId(bytes([n]) * 16)


def test_parents_come_before_children_whatever_the_input_order() -> None:
    # root(1) -> 2 -> 4, root(1) -> 3, root(5) alone, 6 child of 4
    parents = {tl(6): tl(4), tl(4): tl(2), tl(3): tl(1), tl(2): tl(1), tl(1): None, tl(5): None}
    for seed in range(5):
        items = list(parents.items())
        random.Random(seed).shuffle(items)
        order = ancestry.ancestors_first(dict(items), "tenant x")
        assert sorted(order) == sorted(parents)
        for child, parent in parents.items():
            if parent is not None:
                assert order.index(parent) < order.index(child)
    # deterministic: same input set, same output
    assert ancestry.ancestors_first(parents, "t") == ancestry.ancestors_first(dict(reversed(parents.items())), "t")


def test_empty_and_single() -> None:
    assert ancestry.ancestors_first({}, "t") == []
    assert ancestry.ancestors_first({tl(1): None}, "t") == [tl(1)]


def test_missing_ancestor_names_the_orphan_and_its_parent() -> None:
    with pytest.raises(EngineError) as e:
        ancestry.ancestors_first({tl(1): None, tl(2): tl(9), tl(3): tl(2)}, "tenant abc")
    assert e.value.reason == "MissingAncestor"
    assert not e.value.transient
    assert e.value.message == (
        f"tenant abc: some timelines are missing their ancestors: {tl(2)} (ancestor {tl(9)})"
    )


def test_cycle_is_refused() -> None:
    with pytest.raises(EngineError) as e:
        ancestry.ancestors_first({tl(1): None, tl(2): tl(3), tl(3): tl(2)}, "tenant abc")
    assert e.value.reason == "AncestorCycle"
    assert e.value.message == f"tenant abc: timelines form an ancestor cycle: {tl(2)}, {tl(3)}"


def test_own_ancestor_is_a_cycle() -> None:
    with pytest.raises(EngineError) as e:
        ancestry.ancestors_first({tl(4): tl(4)}, "t")
    assert e.value.reason == "AncestorCycle"
    assert str(tl(4)) in e.value.message
