"""The long crash soak, run by hand (not part of the default test run):

    python -m tests.reliability.soak                # 200 CLI kills + 100 operator kills
    python -m tests.reliability.soak --cli 500 --operator 0 --seed 7
    python -m tests.reliability.soak --fault-rate 0.1   # also the fault suites, at that rate
    python -m tests.reliability.soak --cli 0 --operator 0 --writer 400   # the writer simulation only
    python -m tests.reliability.soak --cli 0 --operator 0 --takeovers 30 # frozen owners taken over

It runs the crash suite (tests/reliability/test_crash.py) with the kill counts raised, without
the per-test timeout, with output shown, and prints ``kills survived / kills`` at the end (a
failed check stops the soak at once, with the seed to replay it). Heavy: it takes the shared
lock ~/.cache/pageserver-operator/heavy.lock while it runs.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = Path.home() / ".cache" / "pageserver-operator" / "heavy.lock"


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--cli", type=int, default=200, help="kills of the CLI (default 200)")
    p.add_argument("--operator", type=int, default=100, help="kills of the operator (default 100)")
    p.add_argument("--seed", type=int, default=None, help="RELIABILITY_SEED (default: random, printed)")
    p.add_argument("--fault-rate", type=float, default=None, help="also run the fault suites at this rate")
    p.add_argument(
        "--writer", type=int, default=0,
        help="also run the writer simulation (test_writer_protocol.py) with this many steps per profile",
    )
    p.add_argument(
        "--writer-remote", default="file,s3,s3-slow", help="its profiles (WRITER_SIM_REMOTE; default all three)"
    )
    p.add_argument(
        "--takeovers", type=int, default=0,
        help="also run the generation takeover suite (test_generation_takeover.py) with this many rounds",
    )
    p.add_argument("--no-lock", action="store_true", help=f"do not take {LOCK}")
    args = p.parse_args()
    env = dict(os.environ)
    env["RELIABILITY_CLI_KILLS"] = str(args.cli)
    env["RELIABILITY_OPERATOR_KILLS"] = str(args.operator)
    if args.seed is not None:
        env["RELIABILITY_SEED"] = str(args.seed)
        env["WRITER_SIM_SEED"] = str(args.seed)
    selected = []
    if args.cli:
        selected.append("cli")
    if args.operator:
        selected.append("operator")
    targets = ["tests/reliability/test_crash.py"] if args.cli or args.operator else []
    if args.writer:
        env["WRITER_SIM_STEPS"] = str(args.writer)
        env["WRITER_SIM_REMOTE"] = args.writer_remote
        targets.append("tests/reliability/test_writer_protocol.py")
        selected.append("writer_protocol")
    if args.takeovers:
        env["RELIABILITY_TAKEOVERS"] = str(args.takeovers)
        targets.append("tests/reliability/test_generation_takeover.py")
        selected.append("frozen_owner")
    if args.fault_rate is not None:
        env["RELIABILITY_FAULT_RATE"] = str(args.fault_rate)
        targets.append("tests/reliability/test_faults.py")
    argv = [
        str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable,
        "-m", "pytest", "-p", "no:cacheprovider", "-x", "-q", "-s", "--timeout=0", *targets,
    ]  # fmt: skip
    if selected and args.fault_rate is None:
        argv += ["-k", " or ".join(selected)]
    lock = None
    if not args.no_lock:
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        lock = open(LOCK, "w")  # noqa: SIM115 -- held for the whole run
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        return subprocess.call(argv, cwd=REPO, env=env)
    finally:
        if lock is not None:
            lock.close()


if __name__ == "__main__":
    sys.exit(main())
