"""bench/plots.py draws the benchmark's results into PNG files (what is drawn is checked by
looking at docs/img/; here: the ratios are the report's, every file is a PNG of some size, and
the bench itself starts without matplotlib). Synthetic results, no timing."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import plots

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEED = 21


def _row(
    rnd: int, method: str, wall: float, *, ok: bool = True, engine: float | None = None
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "round": rnd,
        "method": method,
        "wall": wall,
        "sync": wall / 4,
        "ok": ok,
        "cpu": 1.0,
        "rss": 50.0,
        "server_cpu": 0.5,
        "requests": {"GET": 10},
    }
    if engine is not None:
        row["engine_wall"] = engine
    return row


def synthetic(rng: random.Random) -> dict[str, Any]:
    def walls(base: float) -> list[float]:
        return [base * rng.uniform(0.9, 1.1) for _ in range(3)]

    def shape(methods: dict[str, float]) -> dict[str, list[dict[str, Any]]]:
        return {
            m: [_row(i, m, w, engine=w * 0.7 if m == "ours" else None) for i, w in enumerate(walls(base))]
            for m, base in methods.items()
        }

    def cp_samples(n: int, seconds: float) -> list[list[float]]:
        return [[t, min(n, n * t / seconds), 100e6] for t in range(int(seconds) + 1)]

    return {
        "runs": {
            "seaweedfs/D1": shape({"ours": 1.2, "s5cmd": 1.0, "rclone": 1.5, "curl16": 0.8}),
            "seaweedfs/D2": shape({"ours": 2.0, "s5cmd": 1.6, "newmethod": 1.0}),
            "seaweedfs/D6": shape({"ours": 3.0, "s5cmd": 3.3, "rclone": 4.0}),
            "rclone/D3": shape({"ours": 1.0, "s5cmd": 1.1}),
        },
        "datasets": {"seaweedfs/D1": {"objects": 208, "layer_bytes": 712 << 20}},
        "resume": {},
        "meta": {
            "date": "2026-12-05 05:00:00 UTC",
            "git": "abc1234",
            "command": "python -m bench --synthetic",
        },
        "controlplane": {
            "tenants": 1000,
            "ready": 1000,
            "seconds_to_all_ready": 30.0,
            "samples": cp_samples(1000, 30),
            "restart": {"seconds_to_all_active": 12.5},
        },
    }


def placement(n: int, m: int, seconds: float) -> dict[str, Any]:
    samples = [
        [float(t), min(n, n * t / seconds), min(n, 1.2 * n * t / seconds)] for t in range(int(seconds) + 1)
    ]
    return {
        "meta": {"git": "def5678"},
        "runs": {},
        "placement": {
            "tenants": n,
            "managers": m,
            "complete": True,
            "seconds_to_all_active": seconds,
            "seconds_to_create": seconds / 2,
            "samples": samples,
        },
    }


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5000, (path, len(data))  # something was drawn, not an empty canvas
    assert len(data) < 300_000, (path, len(data))  # small enough for the docs


def test_ratios_are_the_reports_x_s5cmd_with_the_slowest_and_fastest_round() -> None:
    rows = {
        "s5cmd": [_row(0, "s5cmd", 1.0), _row(1, "s5cmd", 2.0), _row(2, "s5cmd", 4.0)],
        "ours": [
            _row(0, "ours", 1.0, engine=0.5),
            _row(1, "ours", 0.5, engine=0.25),
            _row(2, "ours", 0.1, ok=False),
        ],
    }
    got = {r.label: r for r in plots.ratios(rows, download=True)}
    # s5cmd's median rate is 1/2 per s: ours runs at 1/1 and 1/0.5 (the failed run left out)
    assert got["s5cmd"].median == 1.0 and got["s5cmd"].low == 0.5 and got["s5cmd"].high == 2.0
    assert got["ours"].median == 3.0 and got["ours"].low == 2.0 and got["ours"].high == 4.0
    assert got["ours"].runs == 2
    assert got["ours (engine)"].median == 6.0 and got["ours (engine)"].durable is None
    # durable: wall + sync (sync = wall / 4 here): the same ratios, since every run's sync scales alike
    assert got["ours"].durable == pytest.approx((3.0, 2.0, 4.0))
    assert plots.ratios({"ours": rows["ours"]}, download=True) == []  # no reference, no bars


def test_control_plane_curves_from_one_operator_and_a_placement_group() -> None:
    rng = random.Random(SEED)
    one, group = plots.curves(synthetic(rng)), plots.curves(placement(10000, 10, 700.0))
    assert [(c.tenants, c.managers, c.all_active, c.restart) for c in one] == [(1000, 1, 30.0, 12.5)]
    assert one[0].placed is None and one[0].active[-1] == 1000
    assert [(c.tenants, c.managers, c.all_active) for c in group] == [(10000, 10, 700.0)]
    assert group[0].placed is not None and group[0].commit == "def5678" and group[0].created == 350.0
    unfinished = synthetic(rng)
    unfinished["controlplane"]["restart"] = {"seconds_to_all_active": 900.0, "active": 999.0}
    got = plots.curves(unfinished)
    assert [(c.restart, c.restart_short) for c in got] == [(None, (900.0, 999.0))]  # marked apart
    bare = placement(200, 3, 12.0)["placement"]  # what python -m bench.placement writes
    assert [c.managers for c in plots.curves(bare)] == [3]


def test_write_draws_every_plot_as_a_png(tmp_path: Path) -> None:
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    stuck = {
        "meta": {"git": "0123abc"},
        "controlplane": {
            **synthetic(rng)["controlplane"],
            "tenants": 2000,
            "ready": 2000,
            "restart": {"seconds_to_all_active": 900.0, "active": 0.0},
        },
    }
    results = [synthetic(rng), placement(1000, 10, 75.0), placement(10000, 10, 760.0), stuck]
    written = plots.write(results, tmp_path)
    names = sorted(p.name for p in written)
    assert names == [
        "active-over-time.png",
        "ratios-rclone.png",
        "ratios-seaweedfs.png",
        "time-to-active.png",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    for p in written:
        assert_png(p)


def test_the_command_line_replots_a_json_file_and_the_bench_starts_without_matplotlib(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    src = tmp_path / "r.json"
    src.write_text(json.dumps(synthetic(rng)))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.plots", str(src), "--out", str(tmp_path / "img")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("ratios-seaweedfs.png", "ratios-rclone.png", "active-over-time.png", "time-to-active.png"):
        assert_png(tmp_path / "img" / name)
    check = "import sys, bench.run, bench.plots; assert 'matplotlib' not in sys.modules, 'imported eagerly'"
    proc = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
