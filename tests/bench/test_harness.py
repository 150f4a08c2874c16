"""The benchmark harness still runs end to end (not how fast anything is: speed is measured by
``python -m bench``, never asserted in tests; see docs/performance.md).

One round of the small shapes (``--quick``) against both real servers, with every peer: each
run must complete and pass the harness's own verification (every object present with its
size; for our attach also marker gone, metadata written, no temp files), and the report must
carry the ratios to s5cmd. A harness that silently stopped measuring would fail here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.components import unavailable

REPO = Path(__file__).resolve().parents[2]
PEERS = ("s5cmd", "rclone", "curl")


def _peer_missing() -> str | None:
    venv_bin = Path(sys.executable).parent
    for name in PEERS:
        if not (venv_bin / name).exists() and shutil.which(name) is None:
            return name
    return None


def _rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for by_method in results["runs"].values():
        for runs in by_method.values():
            rows.extend(runs)
    for rounds in results["resume"].values():
        rows.extend(rounds)
    return rows


@pytest.mark.integration
def test_quick_bench_runs_every_method_on_both_servers_and_reports_ratios(tmp_path: Path) -> None:
    missing = _peer_missing()
    if missing:
        unavailable(f"benchmark peer {missing}", FileNotFoundError("pip install -e '.[bench]'"))
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    env = {**os.environ, "BENCH_HEAVY_LOCK": str(tmp_path / "lock")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--rounds", "1", "--cross-rounds", "1",
         "--shapes", "D1,D2,D5,D6", "--cross-shapes", "D2", "--state-dir", str(tmp_path / "state"),
         "--json", str(out), "--markdown", str(md)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results["runs"]) == {"seaweedfs/D1", "seaweedfs/D2", "seaweedfs/D6", "rclone/D2"}
    methods = set(results["runs"]["seaweedfs/D1"])
    assert {"ours", "s5cmd", "rclone", "curl1", "curl16"} <= methods, methods
    assert set(results["runs"]["seaweedfs/D6"]) == {"ours", "s5cmd", "rclone"}
    rows = _rows(results)
    failed = [r for r in rows if not r.get("ok")]
    assert not failed, failed
    assert results["resume"]["seaweedfs/D5"], "the resume shape produced no round"
    report = md.read_text()
    assert "x s5cmd" in report and "ours (engine: attach start → Active)" in report, report[:2000]
