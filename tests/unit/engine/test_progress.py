"""`engine.progress`: counters shared by download threads and the status writer, and the ETA
from the rate over the recent window (not from the start)."""

from __future__ import annotations

import threading

import pytest

from pageserver_operator.engine import progress


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def test_nothing_planned_has_no_eta_and_a_finished_transfer_an_eta_of_zero(clock: list[float]) -> None:
    p = progress.Progress()
    assert p.snapshot() == progress.ProgressSnapshot(0, 0, 0, 0, None, None)
    p.start(2, 100)
    assert p.snapshot().eta_seconds is None  # no bytes moved yet: no rate
    p.add_bytes(100)
    p.add_layer()
    p.add_layer()
    snap = p.snapshot()
    assert (snap.layers_done, snap.bytes_done, snap.eta_seconds) == (2, 100, 0)
    assert snap.started_at is not None


def test_the_eta_follows_the_recent_rate_not_the_start(clock: list[float]) -> None:
    p = progress.Progress()
    p.start(1, 10_000)
    clock[0] += 100  # a slow start: 10 bytes in 100 s
    p.add_bytes(10)
    assert p.snapshot().eta_seconds == 99_900
    for _ in range(3):  # then 100 bytes a second, sampled every 6 s
        clock[0] += 6
        p.add_bytes(600)
        eta = p.snapshot().eta_seconds
    # the window (10 s) keeps the samples of the last 6 s: 100 B/s, 8,190 bytes left
    assert eta == 82


def test_a_layer_of_unknown_size_adds_its_bytes_to_the_total_and_restart_resets(clock: list[float]) -> None:
    p = progress.Progress()
    p.start(1, 0)
    p.unknown_size_done(50)
    p.add_bytes(50)
    assert (p.snapshot().bytes_total, p.snapshot().bytes_done) == (50, 50)
    p.start(3, 300, layers_done=1, bytes_done=100)  # a resumed attach starts from what is there
    snap = p.snapshot()
    assert (snap.layers_total, snap.layers_done, snap.bytes_total, snap.bytes_done) == (3, 1, 300, 100)


def test_counters_stay_consistent_under_concurrent_writers() -> None:
    p = progress.Progress()
    p.start(400, 400 * 1000)

    def worker() -> None:
        for _ in range(100):
            p.add_bytes(1000)
            p.add_layer()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = p.snapshot()
    assert (snap.layers_done, snap.bytes_done, snap.eta_seconds) == (400, 400_000, 0)
