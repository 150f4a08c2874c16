"""Start and stop the local dev environment by hand: control plane + object store.

Usage::

    python -m pageserver_operator.devenv up [--state-dir DIR] [--no-s3]
    python -m pageserver_operator.devenv binaries

``up`` writes ``DIR/env`` (lines to ``source``: ``KUBECONFIG=...``, ``AWS_ENDPOINT_URL=...``,
credentials, region), prints them, and stays in the foreground until Ctrl-C or SIGTERM,
then stops everything. The logic lives in :func:`start_environment` so that
``pageserver-operator dev`` can reuse it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from pageserver_operator.devenv import binaries, gobuild, processes
from pageserver_operator.devenv.environment import Environment, default_state_dir, start_environment


def _wait_for_signal(environment: Environment) -> None:
    """Block until SIGINT/SIGTERM, or until a component dies (then say which)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop.wait(1.0):
        if not environment.control_plane.running():
            raise processes.StartError(
                "the control plane exited; see its logs under " + str(environment.state_dir)
            )
        if environment.object_store is not None and not environment.object_store.running():
            raise processes.StartError(
                "the object store exited; see its log under " + str(environment.state_dir)
            )


def _up(state_dir: Path, with_object_store: bool) -> int:
    started = time.monotonic()
    environment = start_environment(state_dir, with_object_store)
    try:
        print(f"# environment up in {time.monotonic() - started:.1f} s; source {state_dir.resolve() / 'env'}")
        for line in environment.env_lines():
            print(line)
        print("# Ctrl-C or SIGTERM stops it", flush=True)
        _wait_for_signal(environment)
    finally:
        environment.stop()
        print("# environment stopped", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command entry; returns the exit status (1 with a one-line reason on failure)."""
    parser = argparse.ArgumentParser(
        prog="python -m pageserver_operator.devenv",
        description="Start and stop the local dev environment by hand.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the environment and stay in the foreground")
    up.add_argument("--state-dir", type=Path, default=default_state_dir(), help="default: %(default)s")
    up.add_argument("--no-s3", action="store_true", help="do not start the object store")
    build = commands.add_parser("binaries", help="build or find etcd, kube-apiserver (and kubectl)")
    build.add_argument("--kubectl", choices=("auto", "always", "never"), default="auto")
    build.add_argument("--check", action="store_true", help="only say what is missing (exit 1); never builds")
    args = parser.parse_args(argv)
    try:
        if args.command == "binaries":
            return binaries.main(["--kubectl", args.kubectl, *(["--check"] if args.check else [])])
        return _up(args.state_dir, not args.no_s3)
    except (processes.StartError, gobuild.BuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
