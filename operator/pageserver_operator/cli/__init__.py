"""``pageserver-operator``: the engine without Kubernetes, the operator, and the dev environment.

Contract: README.md, "Without Kubernetes: the CLI". Exit status 0 when the tenant ended Active (or the command succeeded),
1 when it ended Broken or the command failed (one line on stderr a person can act on), 2 for
invalid usage or settings. Every flag has an environment variable; a flag wins over it.

This module is the command line only (the parser and the dispatch); the commands are in
`commands`, imported once the arguments are parsed. Start-up time is part of the contract
(issue 19: at most 0.2 s): ``--help`` and ``--version`` import nothing but argparse, and a
command imports what it uses (``python -m bench.startup`` measures it; docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from pageserver_operator import ENV_PREFIX, __version__

if TYPE_CHECKING:
    from pageserver_operator.formats.generation import Generation

#: `engine.manager.DEFAULT_RETRY_TIMEOUT`, for the help text without importing the engine
#: (tests/unit/cli checks that the two agree).
DEFAULT_RETRY_TIMEOUT = 120.0


def _env(name: str) -> str | None:
    return os.environ.get(ENV_PREFIX + name)


def _add_storage_flags(p: argparse.ArgumentParser, remote: bool = True) -> None:
    p.add_argument(
        "--workdir", default=_env("WORKDIR"),
        help="pageserver working directory (env PAGESERVER_OPERATOR_WORKDIR)",
    )
    if remote:
        p.add_argument(
            "--remote", default=_env("REMOTE"),
            help="file:///abs/path or s3://BUCKET[/PREFIX]?endpoint=URL&region=R (env PAGESERVER_OPERATOR_REMOTE)",
        )
        p.add_argument(
            "--concurrency", type=int, default=_env("CONCURRENCY"),
            help="remote requests in flight (env PAGESERVER_OPERATOR_CONCURRENCY, default 8)",
        )


def _add_retry(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--retry-timeout", type=float, default=_env("RETRY_TIMEOUT"), metavar="SECONDS",
        help="ride out transient failures (remote storage unreachable, timeouts) for this long, "
        "saying 'retrying' on stderr; a permanent error ends the command at once "
        f"(env PAGESERVER_OPERATOR_RETRY_TIMEOUT, default {DEFAULT_RETRY_TIMEOUT:.0f}; 0: give up at once)",
    )


def _add_generation(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--generation", type=_generation, default=_env("GENERATION"), metavar="N",
        help="the generation of this attachment, issued by the caller (DESIGN: a u32, higher than "
        "every earlier attachment's); remote objects are written as <name>-{N:08x} and the highest "
        "index of generation <= N is read. Without it the keys are the seed's, unsuffixed "
        "(env PAGESERVER_OPERATOR_GENERATION)",
    )


def _generation(text: str) -> Generation:
    from pageserver_operator.formats import errors as format_errors
    from pageserver_operator.formats.generation import Generation

    try:
        value = int(text, 10)
        return Generation(value)
    except (ValueError, format_errors.FormatError):
        raise argparse.ArgumentTypeError(f"invalid generation {text!r}: expected an integer in [0, 4294967295]") from None


def _add_tenant(p: argparse.ArgumentParser, optional: bool = False) -> None:
    p.add_argument("tenant_id", metavar="TENANT_ID", nargs="?" if optional else None, help="32 lowercase hex")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pageserver-operator",
        description="Attach pageserver tenants from S3-compatible storage onto a volume and keep them in sync.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-format", choices=["text", "json"], default=_env("LOG_FORMAT") or "text")
    parser.add_argument("--log-level", default=_env("LOG_LEVEL") or "WARNING")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("attach", help="attach a tenant, or resume an interrupted attach; waits for Active")
    _add_storage_flags(p)
    _add_retry(p)
    _add_generation(p)
    _add_tenant(p)
    p = sub.add_parser("load", help="load tenants from disk and reconcile with remote storage")
    _add_storage_flags(p)
    _add_retry(p)
    _add_generation(p)
    _add_tenant(p, optional=True)
    p = sub.add_parser("sync", help="upload local-only layers, then the index; waits for completion")
    _add_storage_flags(p)
    _add_retry(p)
    _add_generation(p)
    _add_tenant(p)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the uploads")
    p = sub.add_parser("detach", help="drain uploads, then remove the local tenant")
    _add_storage_flags(p)
    _add_retry(p)
    _add_generation(p)
    _add_tenant(p)
    p.add_argument(
        "--keep-local", action="store_true",
        help="if local data cannot be uploaded, keep it as tenants/<id>.kept.<N> instead of failing",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the uploads")
    p = sub.add_parser("status", help="phase, timelines and LSNs of a tenant on the volume")
    _add_storage_flags(p, remote=False)
    p.add_argument(
        "--remote", default=_env("REMOTE"),
        help="also read the remote index: remote_consistent_lsn, upload lag (env PAGESERVER_OPERATOR_REMOTE)",
    )
    _add_tenant(p)
    p.add_argument("--json", action="store_true", help="the resource's status fields as JSON")

    p = sub.add_parser("run", help="run the operator")
    _add_storage_flags(p)
    p.add_argument(
        "--namespace", action="append", dest="namespaces", default=None,
        help="namespace to watch (repeatable; env PAGESERVER_OPERATOR_NAMESPACES, comma-separated; default all)",
    )
    p.add_argument(
        "--sync-period", type=float, default=None,
        help="seconds between syncs of an Active tenant (env PAGESERVER_OPERATOR_SYNC_PERIOD, default 60)",
    )
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG, else in-cluster)")
    p.add_argument(
        "--pageserver", default=None, metavar="NAME",
        help="this pageserver manager's name (env PAGESERVER_OPERATOR_PAGESERVER; default the pod name, else the host name)",
    )
    p.add_argument(
        "--failover-seconds", type=float, default=None, metavar="N",
        help="a pageserver whose heartbeat is older than this loses its tenants (env "
        "PAGESERVER_OPERATOR_FAILOVER_SECONDS, default 30)",
    )
    p.add_argument(
        "--capacity", type=int, default=None, metavar="N",
        help="tenants this pageserver is sized for, in the load score (env PAGESERVER_OPERATOR_CAPACITY, default 1000)",
    )
    p.add_argument(
        "--max-concurrent-attaches", type=int, default=None, metavar="N",
        help="tenants brought up (attached, resumed or loaded) at once; the others wait their turn (env "
        "PAGESERVER_OPERATOR_MAX_CONCURRENT_ATTACHES, default 32)",
    )
    p.add_argument(
        "--drain-concurrency", type=int, default=None, metavar="N",
        help="migrations away from a Draining pageserver at once (env PAGESERVER_OPERATOR_DRAIN_CONCURRENCY, default 4)",
    )
    p.add_argument(
        "--lease-namespace", default=None, metavar="NS",
        help="namespace of the heartbeat and placement Leases (env PAGESERVER_OPERATOR_LEASE_NAMESPACE; default "
        "the pod's namespace, else default)",
    )
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (default 9090, 0 = off)")
    p.add_argument(
        "--per-tenant-metrics", action=argparse.BooleanOptionalAction, default=None,
        help="per-tenant metric series (env PAGESERVER_OPERATOR_PER_TENANT_METRICS, default true; "
        "--no-per-tenant-metrics for large fleets)",
    )
    p.add_argument("--liveness-port", type=int, default=None, help="liveness port (default 8080, 0 = off)")

    p = sub.add_parser("dev", help="local control plane + object store + sample tenant + operator")
    p.add_argument("--state-dir", default=None, help="where state and the env file go (default ~/.cache/...)")
    p.add_argument("--exit-when-ready", action="store_true", help="stop everything once the sample is Active")
    p.add_argument(
        "--pageservers", type=int, default=1, metavar="N",
        help="pageserver managers to start, each with its own volume, in one placement group (default 1)",
    )

    p = sub.add_parser("testdata", help="generate test data in the exact formats")
    tsub = p.add_subparsers(dest="testdata_command", required=True, metavar="WHAT")
    t = tsub.add_parser("make-tenant", help="write a realistic tenant to remote storage; prints its id")
    t.add_argument("--remote", default=_env("REMOTE"), help="remote storage URL")
    t.add_argument("--tenant-id", default=None)
    t.add_argument("--timelines", type=int, default=2)
    t.add_argument("--layers", type=int, default=4, help="layers per timeline")
    t.add_argument("--layer-size", default="64KiB")
    t.add_argument("--sizes", default=None, help="root timeline layer sizes, e.g. 200x1MiB,8x64MiB")
    t.add_argument("--index-version", type=int, choices=[0, 1], default=1)
    t.add_argument("--seed", type=int, default=0)
    t = tsub.add_parser("flush-layer", help="write a new local layer + metadata, as a pageserver flush does")
    _add_storage_flags(t, remote=False)
    t.add_argument("tenant_id")
    t.add_argument("timeline_id")
    t.add_argument("--size", default="64KiB")
    return parser


def _exit(code: int, fast: bool) -> NoReturn:
    """Exit with ``code``. ``fast``: skip the interpreter's teardown (freeing every module and
    object of botocore & co. costs a short command ~0.15 s) once the output is flushed. Safe
    because a command returns only after its work is durable and its thread pools are joined."""
    if fast:
        import logging  # imported already by then: logs.setup

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


#: The commands that run the engine once (they resume the collector in `commands.started`).
ENGINE_COMMANDS = ("attach", "load", "sync", "detach")


def main(argv: Sequence[str] | None = None) -> NoReturn:
    # The fast exit only for a process of its own running a short command (the console script),
    # never for a caller of main() in Python nor for the long-running ``run``/``dev``.
    args = build_parser().parse_args(argv)  # --help and --version end here, before any import below
    fast = argv is None and args.command not in ("run", "dev")
    if fast and args.command in ENGINE_COMMANDS:
        # Start-up: the imports below and the command's own allocate only objects that live as
        # long as the process, so the collector's passes over them find nothing; it resumes once
        # the command is set up (`commands.started`) or at the latest when main returns.
        gc.disable()
    import asyncio

    from pageserver_operator import logs
    from pageserver_operator.cli import commands
    from pageserver_operator.engine.errors import EngineError
    from pageserver_operator.remote import errors as remote_errors

    logs.setup(args.log_format, "INFO" if args.command in ("run", "dev") else args.log_level.upper())
    try:
        result = commands.COMMANDS[args.command](args)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except commands.CommandError as e:
        print(f"pageserver-operator {args.command}: {e}", file=sys.stderr)
        _exit(e.code, fast)
    except EngineError as e:
        print(f"pageserver-operator {args.command}: {e.reason}: {e.message}", file=sys.stderr)
        _exit(commands.EXIT_FAILED, fast)
    except (remote_errors.RemoteError, ValueError, OSError) as e:
        print(f"pageserver-operator {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        _exit(commands.EXIT_FAILED, fast)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        gc.enable()
    _exit(0, fast)
