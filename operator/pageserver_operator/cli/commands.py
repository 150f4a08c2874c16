"""The commands of ``pageserver-operator`` (the parser and the dispatch are in `cli`).

``attach``, ``load``, ``sync`` and ``detach`` ride out transient failures (remote storage
unreachable, timeouts) for ``--retry-timeout`` seconds (`manager.retry_transient`, the engine's
backoff), printing "retrying in ..." on stderr each time; a permanent error ends them at once,
also one that only the upload queue sees (uploads refused: `manager.unless_uploads_refused`).
Each command raises `CommandError` for a failure a person can act on; `cli.main` prints it as
one line and exits with its code. ``run``, ``dev``, ``status`` and ``testdata`` import their own
layers when called (start-up time).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import ids
from pageserver_operator.formats.generation import Generation
from pageserver_operator.remote import errors as remote_errors
from pageserver_operator.remote import factory as remote_factory
from pageserver_operator.remote import url as remote_url

if TYPE_CHECKING:  # imported by the commands that use them: `status` needs neither (start-up time)
    import pydantic

    from pageserver_operator import settings
    from pageserver_operator.engine import manager

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _engine_settings(args: argparse.Namespace) -> settings.EngineSettings:
    import pydantic

    from pageserver_operator import settings

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
    from pageserver_operator.engine import manager

    try:
        storage = remote_factory.open_remote(s.remote_config())
    except ValueError as e:
        raise CommandError(str(e), EXIT_USAGE) from e
    # argparse converts the environment variable's text too (a string default goes through `type`)
    m = manager.TenantManager(s.workdir, storage, generation=args.generation or Generation.none())
    started()
    return m


def started() -> None:
    """The command has imported and built what it needs: the garbage collector, paused by
    `cli.main` for the start-up, runs again (the command's work allocates and frees)."""
    gc.enable()


async def _retrying(args: argparse.Namespace, m: manager.TenantManager, op: Callable[[], Awaitable[T]]) -> T:
    """``op``, run again after transient failures for up to ``--retry-timeout`` seconds."""
    from pageserver_operator.engine import manager

    timeout = manager.DEFAULT_RETRY_TIMEOUT if args.retry_timeout is None else args.retry_timeout
    if timeout < 0:
        raise CommandError(f"--retry-timeout must be >= 0, got {timeout}", EXIT_USAGE)

    def say(e: EngineError, delay: float) -> None:
        print(f"pageserver-operator {args.command}: retrying in {delay:.1f} s: {e.reason}: {e.message}", file=sys.stderr, flush=True)

    return await manager.retry_transient(op, timeout, say, m.backoff)


async def _drain(m: manager.TenantManager, tid: ids.TenantId, timeout: float = 600.0) -> None:
    """Until the uploads are done and the generation is validated (deletions executed)."""
    from pageserver_operator.engine import manager

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
    from pageserver_operator.engine import manager

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
    from pageserver_operator.engine import manager

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
    import pydantic

    from pageserver_operator import settings
    from pageserver_operator.k8s import runner

    given: dict[str, Any] = {
        "workdir": args.workdir, "remote": args.remote, "concurrency": args.concurrency,
        "namespaces": args.namespaces, "sync_period": args.sync_period, "kubeconfig": args.kubeconfig,
        "metrics_port": args.metrics_port, "liveness_port": args.liveness_port,
        "log_format": args.log_format, "pageserver": args.pageserver,
        "failover_seconds": args.failover_seconds, "capacity": args.capacity, "lease_namespace": args.lease_namespace,
        "per_tenant_metrics": args.per_tenant_metrics,
        "drain_concurrency": args.drain_concurrency, "max_concurrent_attaches": args.max_concurrent_attaches,
    }
    try:
        s = settings.OperatorSettings(**{k: v for k, v in given.items() if v is not None})
    except pydantic.ValidationError as e:
        raise CommandError(_one_line_validation(e), EXIT_USAGE) from e
    import prometheus_client

    from pageserver_operator.engine import metrics as engine_metrics

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


COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "attach": _cmd_attach, "load": _cmd_load, "sync": _cmd_sync, "detach": _cmd_detach,
    "status": _cmd_status, "testdata": _cmd_testdata, "run": _cmd_run, "dev": _cmd_dev,
}
