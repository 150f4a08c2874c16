"""`devenv.gobuild`: a long Go step prints heartbeat lines with its package count and records
its duration for the next estimate (a stand-in `go`; no real build)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pageserver_operator.devenv import components, fetch, gobuild


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(components.CACHE_ENV, str(root))
    return root


def test_a_long_go_step_prints_heartbeats_with_its_package_count(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in `go` names two packages on stderr, then blocks until the test saw a heartbeat."""
    release = tmp_path / "release"
    go = tmp_path / "go"
    go.write_text(f"#!/bin/sh\necho pkg/a >&2\necho pkg/b >&2\nwhile [ ! -e {release} ]; do sleep 0.01; done\necho done\n")
    go.chmod(0o755)
    monkeypatch.setattr(fetch, "HEARTBEAT_SECONDS", 0.05)
    seen = threading.Event()
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if "2/4 done" in line:
            seen.set()

    monkeypatch.setattr(gobuild, "_log", log)
    result: list[str] = []
    worker = threading.Thread(
        target=lambda: result.append(gobuild._run_go(go, ["build"], tmp_path, step="x go build", packages=4))
    )
    worker.start()
    try:
        assert seen.wait(30), f"no heartbeat with the package count: {lines}"
    finally:
        release.touch()
        worker.join(30)
    assert result == ["done\n"]
    assert any(line.startswith("x go build: running for ") for line in lines), lines
    assert gobuild._expected_seconds("x go build") is not None  # recorded for the next estimate
