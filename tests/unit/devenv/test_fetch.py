"""`devenv.fetch`: the heartbeat lines of long steps (downloads and extraction are exercised
through `binaries.ensure` in test_binaries.py)."""

from __future__ import annotations

from pageserver_operator.devenv import fetch


def test_heartbeat_lines_carry_an_estimate() -> None:
    now = [100.0]
    lines: list[str] = []
    beat = fetch.Heartbeat("kube-apiserver go build", 400.0, log=lines.append, clock=lambda: now[0])
    now[0] += 30
    beat.beat()
    assert lines[-1] == "kube-apiserver go build: running for 30 s, about 6 min 10 s left"
    counted = fetch.Heartbeat("b", None, lambda: (500, 1000), log=lines.append, clock=lambda: now[0])
    now[0] += 60
    counted.beat()
    assert lines[-1] == "b: running for 1 min 0 s, 500/1000 done, about 1 min 0 s left"
    now[0] += 1000
    beat.beat()
    assert "longer than the 6 min 40 s expected" in lines[-1]
