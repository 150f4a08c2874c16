"""``pageserver-operator run``: settings -> a running kopf operator with metrics and liveness."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

import kopf
import prometheus_client
from kopf._core.engines import peering  # Identity is not re-exported by kopf

from pageserver_operator import logs
from pageserver_operator import settings as settings_mod
from pageserver_operator.engine import manager
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import ids
from pageserver_operator.k8s import handlers, kube, membership, ownership, placement, relocation
from pageserver_operator.remote import factory as remote_factory

log = logging.getLogger(__name__)


class _QuietEventHandler(logging.Filter):
    """kopf logs every successful run of a handler at INFO: the watch-event handler runs for every
    event of every Tenant on every manager (600,000 lines at 10,000 tenants x 10 managers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or "Handler 'tenant_event' succeeded" not in record.getMessage()


def run(s: settings_mod.OperatorSettings) -> None:
    logs.setup(s.log_format, s.log_level)
    logging.getLogger("kopf.objects").addFilter(_QuietEventHandler())
    logs.set_process_context(pageserver=s.pageserver)
    try:
        api = kube.load_config(str(s.kubeconfig) if s.kubeconfig else None)
        kube.check_cluster(api)
    except kube.ClusterUnreachable as e:
        print(f"pageserver-operator run: {e}", file=sys.stderr)
        sys.exit(1)
    if s.kubeconfig:
        os.environ["KUBECONFIG"] = str(s.kubeconfig)
    storage = remote_factory.open_remote(s.remote_config())
    m = manager.TenantManager(s.workdir, storage)
    scan = m.scan_volume()
    if scan.unknown:
        log.warning("entries in %s that are not tenants (left alone): %s", m.tenants_root, ", ".join(scan.unknown))
    k = kube.Kube(api)
    handlers.REGISTRY = ownership.Registry(manager=m, kube=k, settings=s)
    handlers.RELOCATOR = relocation.Relocator(k, handlers.REGISTRY, s.pageserver, secondary_period=s.sync_period)
    # the leader's writes on their own pool (as many threads as writes in flight), never behind
    # the tenants' status writes
    handlers.PLACEMENT = placement.PlacementController(
        kube.Kube(api, workers=placement.WRITE_CONCURRENCY), s.pageserver, s.lease_namespace, s.failover_seconds,
        s.capacity, s.drain_concurrency,
    )
    if s.metrics_port:
        prometheus_client.start_http_server(s.metrics_port)
    log.info(
        "starting: workdir %s, remote %s, namespaces %s, %d tenant directories on the volume",
        s.workdir, storage.describe(), ",".join(s.namespaces) or "(all)", len(scan.tenants),
    )
    asyncio.run(_operate(s, scan.tenants, k))
    m.close()


def _dump_tasks() -> None:
    """SIGUSR1: log the stack of every asyncio task (where is it waiting?)."""
    import io

    for task in asyncio.all_tasks():
        buf = io.StringIO()
        task.print_stack(file=buf)
        log.warning("task %s:\n%s", task.get_name(), buf.getvalue())


def _load(reg: ownership.Registry) -> membership.Load:
    """What this pageserver holds: the tenants it drives and their bytes on the volume."""
    owned = [reg.controllers[key].tenant for key in reg.owners.values() if key in reg.controllers]
    return membership.Load(len(owned), sum(tl.resident_bytes for t in owned for tl in t.timelines.values()))


async def _operate(s: settings_mod.OperatorSettings, on_volume: list[ids.TenantId], k: kube.Kube) -> None:
    import signal

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    reg = handlers.REGISTRY
    assert reg is not None and handlers.PLACEMENT is not None
    # heartbeats on a client and a pool of their own: queued behind a burst of status writes
    # they were late by 30 s and more, and the leader failed healthy pageservers over
    beat = kube.Kube(kube.load_config(str(s.kubeconfig) if s.kubeconfig else None), workers=2)
    member = membership.Membership(
        beat, s.pageserver, s.lease_namespace, s.failover_seconds, s.capacity, s.workdir, lambda: _load(reg)
    )
    try:
        await member.start()
    except RuntimeError as e:
        print(f"pageserver-operator run: registering pageserver {s.pageserver}: {e}", file=sys.stderr)
        sys.exit(1)
    handlers.PLACEMENT.start()
    liveness = f"http://0.0.0.0:{s.liveness_port}/healthz" if s.liveness_port else None
    reporter = asyncio.get_running_loop().create_task(_report_unmanaged(on_volume))
    try:
        await kopf.operator(
            # not kopf's default (it looks up the user name of the UID, which has none in the image)
            identity=peering.Identity(os.environ.get("HOSTNAME") or "pageserver-operator"),
            clusterwide=not s.namespaces,
            namespaces=s.namespaces,
            liveness_endpoint=liveness,
        )
    finally:
        reporter.cancel()
        await handlers.PLACEMENT.stop()
        await member.stop()


async def _report_unmanaged(on_volume: list[ids.TenantId], delay: float = 30.0) -> None:
    """Tenant directories that no Tenant resource names are left alone and reported: the gauge
    is computed at every scrape (from the directories on the volume now); the warning is logged
    once, ``delay`` seconds after start."""
    reg = handlers.REGISTRY
    if reg is None:
        return
    root = reg.manager.tenants_root

    def count() -> float:
        return float(len(reg.unmanaged(_tenant_dirs(root))))

    UNMANAGED.set_function(count)
    await asyncio.sleep(delay)
    unmanaged = reg.unmanaged(_tenant_dirs(root))
    if unmanaged:
        log.warning("tenant directories on the volume that no Tenant resource names (left alone): %s",
                    ", ".join(unmanaged))


def _tenant_dirs(root: Path) -> list[ids.TenantId]:
    """The tenant directories on the volume (read only; `TenantManager.scan_volume` also cleans)."""
    out: list[ids.TenantId] = []
    try:
        names = os.listdir(root)
    except OSError:
        return out
    for name in names:
        with contextlib.suppress(format_errors.FormatError):
            out.append(ids.TenantId.parse(name))
    return out


UNMANAGED = prometheus_client.Gauge(
    "pageserver_operator_unmanaged_tenant_dirs", "Tenant directories on the volume that no Tenant resource names"
)
