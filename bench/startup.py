"""CLI start-up (issue 19, item 3): how long from ``exec`` until a command is doing its work.

``python -m bench.startup [--runs N]`` measures, holding the machine-wide heavy lock, with the
installed ``pageserver-operator`` entry point:

- ``python -c pass``: the interpreter alone (the floor);
- ``--version`` and ``status`` of a tenant that is not on the volume (no remote storage used);
- ``attach``: from ``exec`` until its first remote request reaches a TCP listener of ours on
  127.0.0.1 (the S3 endpoint of the command line). The listener records the moment it accepts
  the connection and the process is then killed: everything before that moment is start-up
  (imports, settings, the S3 client), everything after it is the attach itself.

Then one ``-X importtime`` run of the attach lists the imports that cost the most (cumulative
microseconds, self-reported by the interpreter, so inflated by its own bookkeeping).
Nothing is asserted: the figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bench import measure

TENANT = "0123456789abcdef0123456789abcdef"


def _cli() -> str:
    found = shutil.which("pageserver-operator", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("pageserver-operator is not installed beside this interpreter")
    return found


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAGESERVER_OPERATOR_", "AWS_"))}
    env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret", AWS_EC2_METADATA_DISABLED="true")
    return env


def time_exit(argv: Sequence[str]) -> float:
    """Seconds from exec until ``argv`` exits (its exit status is not looked at)."""
    t0 = time.monotonic()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), check=False)
    return time.monotonic() - t0


def time_first_request(cli: str, workdir: Path, timeout: float = 30.0) -> float:
    """Seconds from exec of ``attach`` until its first connection to the S3 endpoint."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        accepted: list[float] = []

        def accept() -> None:
            conn, _ = server.accept()
            accepted.append(time.monotonic())
            conn.close()

        server.settimeout(timeout)
        t = threading.Thread(target=accept, daemon=True)
        t.start()
        remote = f"s3://bench-startup/p?endpoint=http://127.0.0.1:{port}&region=us-east-1"
        argv = [cli, "attach", "--workdir", str(workdir), "--remote", remote, "--retry-timeout", "0", TENANT]
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        try:
            t.join(timeout)
        finally:
            proc.kill()
            proc.wait()
        if not accepted:
            raise SystemExit(f"attach made no request within {timeout} s")
        return accepted[0] - t0


def import_costs(cli: str, workdir: Path, top: int = 12) -> list[tuple[int, str]]:
    """The ``top`` largest cumulative import times (µs) of an ``attach`` (``-X importtime``)."""
    remote = "s3://bench-startup/p?endpoint=http://127.0.0.1:9&region=us-east-1"
    argv = [sys.executable, "-X", "importtime", cli, "attach", "--workdir", str(workdir), "--remote", remote,
            "--retry-timeout", "0", TENANT]
    out = subprocess.run(argv, capture_output=True, text=True, env=_env(), check=False, timeout=60).stderr
    costs: list[tuple[int, str]] = []
    for line in out.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = (p.strip() for p in line.split(":", 1)[1].split("|"))
            if cumulative.isdigit() and not name.startswith(" "):
                costs.append((int(cumulative), name))
    return sorted(costs, reverse=True)[:top]


def _summary(xs: Sequence[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ms [{min(xs) * 1000:.0f}-{max(xs) * 1000:.0f}]"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="runs of each command (medians printed)")
    args = ap.parse_args(argv)
    cli = _cli()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp, measure.heavy_lock() as waited:
        workdir = Path(tmp)
        print(f"heavy lock after {waited:.1f} s; {args.runs} runs each; {cli}")
        cases = {
            "python -c pass": lambda: time_exit([sys.executable, "-c", "pass"]),
            "--version": lambda: time_exit([cli, "--version"]),
            "status (no remote)": lambda: time_exit([cli, "status", "--workdir", str(workdir), TENANT]),
            "attach: exec -> first S3 request": lambda: time_first_request(cli, workdir),
        }
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):  # interleaved, so a slow moment of the machine hits every case
            for name, fn in cases.items():
                results[name].append(fn())
        for name, xs in results.items():
            print(f"  {name:36} {_summary(xs)}")
        print("largest imports of an attach (-X importtime, cumulative):")
        for us, name in import_costs(cli, workdir):
            print(f"  {us / 1000:7.1f} ms  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
