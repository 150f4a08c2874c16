"""``pageserver-operator``: the engine without Kubernetes, the operator, and the dev environment.

Contract: README.md, "Without Kubernetes: the CLI". Exit status 0 when the tenant ended Active (or the command succeeded),
1 when it ended Broken or the command failed (one line on stderr a person can act on), 2 for
invalid usage or settings. Every flag has an environment variable; a flag wins over it.

``attach``, ``load``, ``sync`` and ``detach`` ride out transient failures (remote storage
unreachable, timeouts) for ``--retry-timeout`` seconds (`manager.retry_transient`, the engine's
backoff), printing "retrying in ..." on stderr each time; a permanent error ends them at once,
also one that only the upload queue sees (uploads refused: `manager.unless_uploads_refused`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import prometheus_client
import pydantic

from pageserver_operator import __version__, logs, settings
from pageserver_operator.engine import manager
from pageserver_operator.engine import metrics as engine_metrics
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import ids
from pageserver_operator.formats.generation import Generation
from pageserver_operator.remote import errors as remote_errors
from pageserver_operator.remote import factory as remote_factory
from pageserver_operator.remote import url as remote_url

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _env(name: str) -> str | None:
    return os.environ.get(settings.ENV_PREFIX + name)


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
        f"(env PAGESERVER_OPERATOR_RETRY_TIMEOUT, default {manager.DEFAULT_RETRY_TIMEOUT:.0f}; 0: give up at once)",
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


def _engine_settings(args: argparse.Namespace) -> settings.EngineSettings:
    given = {k: v for k, v in {"workdir": args.workdir, "remote": args.remote, "concurrency": args.concurrency}.items() if v is not None}
    try:
        return settings.EngineSettings(**given)
    except pydantic.ValidationError as e:
        raise CommandError(_one_line_validation(e), EXIT_USAGE) from e


def _one_line_validation(e: pydantic.ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "settings"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)


def _tenant_id(text: str) -> ids.TenantId:
    try:
        return ids.TenantId.parse(text)
    except format_errors.FormatError as e:
        raise CommandError(str(e), EXIT_USAGE) from e


def _manager(s: settings.EngineSettings, args: argparse.Namespace) -> manager.TenantManager:
    try:
        storage = remote_factory.open_remote(s.remote_config())
    except ValueError as e:
        raise CommandError(str(e), EXIT_USAGE) from e
    # argparse converts the environment variable's text too (a string default goes through `type`)
    return manager.TenantManager(s.workdir, storage, generation=args.generation or Generation.none())


async def _retrying(args: argparse.Namespace, m: manager.TenantManager, op: Callable[[], Awaitable[T]]) -> T:
    """``op``, run again after transient failures for up to ``--retry-timeout`` seconds."""
    timeout = manager.DEFAULT_RETRY_TIMEOUT if args.retry_timeout is None else args.retry_timeout
    if timeout < 0:
        raise CommandError(f"--retry-timeout must be >= 0, got {timeout}", EXIT_USAGE)

    def say(e: EngineError, delay: float) -> None:
        print(f"pageserver-operator {args.command}: retrying in {delay:.1f} s: {e.reason}: {e.message}", file=sys.stderr, flush=True)

    return await manager.retry_transient(op, timeout, say, m.backoff)


async def _drain(m: manager.TenantManager, tid: ids.TenantId, timeout: float = 600.0) -> None:
    """Until the uploads are done and the generation is validated (deletions executed)."""
    t = m.get(tid)
    await asyncio.wait_for(manager.unless_uploads_refused(t, t.settle()), timeout)


def _report(m: manager.TenantManager, tid: ids.TenantId) -> None:
    snap = m.get(tid).snapshot()
    print(f"tenant {tid}: {snap.state} ({snap.message})")
    for tl in snap.timelines:
        print(
            f"  timeline {tl.timeline_id}: disk_consistent_lsn {tl.disk_consistent_lsn} "
            f"remote_consistent_lsn {tl.remote_consistent_lsn} layers {tl.layers} bytes {tl.resident_bytes}"
        )


async def _cmd_attach(args: argparse.Namespace) -> None:
    m = _manager(_engine_settings(args), args)
    tid = _tenant_id(args.tenant_id)
    try:

        async def attach() -> None:
            await m.get(tid).attach()
            await _drain(m, tid)

        await _retrying(args, m, attach)
        _report(m, tid)
    finally:
        m.close()


async def _cmd_load(args: argparse.Namespace) -> None:
    m = _manager(_engine_settings(args), args)
    try:
        tids = [_tenant_id(args.tenant_id)] if args.tenant_id else m.scan_volume().tenants
        failures = []
        for tid in tids:

            async def load(tid: ids.TenantId = tid) -> None:
                await m.get(tid).load()
                await _drain(m, tid)

            try:
                await _retrying(args, m, load)
            except EngineError as e:
                failures.append(e)
            _report(m, tid)
        if failures:
            raise failures[0]
    finally:
        m.close()


async def _cmd_sync(args: argparse.Namespace) -> None:
    m = _manager(_engine_settings(args), args)
    tid = _tenant_id(args.tenant_id)
    try:
        t = m.get(tid)
        if t.local_state() != "present":
            raise CommandError(f"tenant {tid} is not attached in {m.tenants_root} (run attach first)")
        await _retrying(args, m, t.load)
        await _retrying(args, m, lambda: manager.unless_uploads_refused(t, t.sync(timeout=args.timeout)))
        _report(m, tid)
    finally:
        m.close()


async def _cmd_detach(args: argparse.Namespace) -> None:
    m = _manager(_engine_settings(args), args)
    tid = _tenant_id(args.tenant_id)
    try:
        t = m.get(tid)

        def detach() -> Awaitable[None]:
            done = t.detach(timeout=args.timeout, keep_local=args.keep_local)
            # --keep-local: refused uploads end in the directory kept aside (after --timeout),
            # not in a failure that keeps it in place
            return done if args.keep_local else manager.unless_uploads_refused(t, done)

        await _retrying(args, m, detach)
        print(f"tenant {tid}: detached")
    finally:
        m.close()


def _cmd_status(args: argparse.Namespace) -> None:
    from pageserver_operator.api import v1alpha1  # imported where needed: CLI start-up time
    from pageserver_operator.engine import inspect

    workdir = Path(args.workdir or "/data").absolute()
    tid = _tenant_id(args.tenant_id)
    storage = None
    if args.remote:
        try:
            storage = remote_factory.open_remote(remote_url.parse_remote_url(args.remote))
        except ValueError as e:
            raise CommandError(str(e), EXIT_USAGE) from e
    try:
        snap = inspect.inspect_tenant(workdir, tid, storage)
    except remote_errors.RemoteError as e:
        if storage is None:
            raise
        # The volume is still worth showing (e.g. the dev environment is down).
        print(f"(remote storage not readable, showing the volume only: {e.reason}: {e})", file=sys.stderr)
        storage = None
        snap = inspect.inspect_tenant(workdir, tid, None)
    status = v1alpha1.status_from_snapshot(snap)
    if args.json:
        print(json.dumps(status.model_dump(by_alias=True, exclude_none=True), indent=2))
    else:
        print(f"tenant {tid}: {status.phase} ({status.message})")
        if storage is None and status.timelines:
            print("  (remote storage not read: give --remote or PAGESERVER_OPERATOR_REMOTE for remote_consistent_lsn)")
        for tl in status.timelines or []:
            remote_lsn = tl.remote_consistent_lsn or ("not-read" if storage is None else "-")
            print(
                f"  timeline {tl.timeline_id}: ancestor {tl.ancestor_timeline_id or '-'} "
                f"disk_consistent_lsn {tl.disk_consistent_lsn} remote_consistent_lsn "
                f"{remote_lsn} layers {tl.layers} bytes {tl.resident_bytes}"
            )
    if status.phase == "Broken":
        raise CommandError(f"{status.reason}: {status.message}")


def _cmd_testdata(args: argparse.Namespace) -> None:
    from pageserver_operator import testdata

    if args.testdata_command == "make-tenant":
        if not args.remote:
            raise CommandError("--remote is required", EXIT_USAGE)
        storage = remote_factory.open_remote(remote_url.parse_remote_url(args.remote))
        shape = testdata.TenantShape(
            timelines=args.timelines, layers=args.layers, layer_size=testdata.parse_size(args.layer_size),
            sizes=testdata.parse_sizes(args.sizes) if args.sizes else None,
            index_version=args.index_version, seed=args.seed,
        )
        tid = _tenant_id(args.tenant_id) if args.tenant_id else None
        try:
            gen = testdata.make_remote_tenant(storage, shape, tid)
        finally:
            storage.close()
        print(gen.tenant_id)
    else:
        workdir = Path(args.workdir or "/data").absolute()
        name = testdata.flush_local_layer(
            workdir, _tenant_id(args.tenant_id), ids.TimelineId.parse(args.timeline_id),
            testdata.parse_size(args.size),
        )
        print(name)


def _cmd_run(args: argparse.Namespace) -> None:
    from pageserver_operator.k8s import runner

    given: dict[str, Any] = {
        "workdir": args.workdir, "remote": args.remote, "concurrency": args.concurrency,
        "namespaces": args.namespaces, "sync_period": args.sync_period, "kubeconfig": args.kubeconfig,
        "metrics_port": args.metrics_port, "liveness_port": args.liveness_port,
        "log_format": args.log_format, "pageserver": args.pageserver,
        "failover_seconds": args.failover_seconds, "capacity": args.capacity, "lease_namespace": args.lease_namespace,
        "per_tenant_metrics": args.per_tenant_metrics,
        "drain_concurrency": args.drain_concurrency,
    }
    try:
        s = settings.OperatorSettings(**{k: v for k, v in given.items() if v is not None})
    except pydantic.ValidationError as e:
        raise CommandError(_one_line_validation(e), EXIT_USAGE) from e
    engine_metrics.set_per_tenant(s.per_tenant_metrics)
    # No `<counter>_created` samples: they doubled the series of every counter (Prometheus stores
    # them as series of their own) and nothing reads them.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    runner.run(s)


def _cmd_dev(args: argparse.Namespace) -> None:
    from pageserver_operator import dev

    dev.run(
        Path(args.state_dir) if args.state_dir else None, exit_when_ready=args.exit_when_ready,
        pageservers=args.pageservers,
    )


def _exit(code: int, fast: bool) -> NoReturn:
    """Exit with ``code``. ``fast``: skip the interpreter's teardown (freeing every module and
    object of botocore & co. costs a short command ~0.15 s) once the output is flushed. Safe
    because a command returns only after its work is durable and its thread pools are joined."""
    if fast:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    # The fast exit only for a process of its own running a short command (the console script),
    # never for a caller of main() in Python nor for the long-running ``run``/``dev``.
    args = build_parser().parse_args(argv)
    fast = argv is None and args.command not in ("run", "dev")
    logs.setup(args.log_format, "INFO" if args.command in ("run", "dev") else args.log_level.upper())
    commands: dict[str, Any] = {
        "attach": _cmd_attach, "load": _cmd_load, "sync": _cmd_sync, "detach": _cmd_detach,
        "status": _cmd_status, "testdata": _cmd_testdata, "run": _cmd_run, "dev": _cmd_dev,
    }
    try:
        result = commands[args.command](args)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except CommandError as e:
        print(f"pageserver-operator {args.command}: {e}", file=sys.stderr)
        _exit(e.code, fast)
    except EngineError as e:
        print(f"pageserver-operator {args.command}: {e.reason}: {e.message}", file=sys.stderr)
        _exit(EXIT_FAILED, fast)
    except (remote_errors.RemoteError, ValueError, OSError) as e:
        print(f"pageserver-operator {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        _exit(EXIT_FAILED, fast)
    except KeyboardInterrupt:
        sys.exit(130)
    _exit(0, fast)


if __name__ == "__main__":
    main()
