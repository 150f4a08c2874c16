"""`placement.liveness`: heartbeats judged by the observer's own clock."""

from __future__ import annotations

from pageserver_operator.placement.liveness import Liveness


def test_offline_only_after_the_observer_watched_failover_seconds_without_a_change() -> None:
    lv = Liveness(10.0)
    lv.observe(100.0, {"a": "v1", "b": "v1"})
    assert not lv.offline("a", 109.9)
    lv.observe(105.0, {"a": "v2", "b": "v1"})  # a renewed, b did not
    assert lv.offline("b", 110.0) and not lv.offline("a", 110.0)
    assert lv.silent_for("a", 110.0) == 5.0


def test_a_new_observer_never_acts_on_time_before_it_looked() -> None:
    lv = Liveness(10.0)
    assert not lv.offline("a", 1e9)  # never observed anything
    lv.observe(500.0, {"b": "v7"})
    # a has no heartbeat at all: offline only failover_seconds after the observer started
    assert not lv.offline("a", 509.0) and lv.offline("a", 510.0)


def test_forget_starts_over_after_a_freeze_or_a_lost_leadership() -> None:
    lv = Liveness(10.0)
    lv.observe(0.0, {"a": "v1"})
    assert lv.offline("a", 50.0)
    lv.forget()
    lv.observe(50.0, {"a": "v1"})  # the same version: seen again, from now
    assert not lv.offline("a", 55.0) and lv.offline("a", 60.0)
