"""The cluster-scoped ``Pageserver`` resource: registered and reported by its own manager.

- `register`: create ``Pageserver/<name>`` (spec.scheduling Active) labelled with the lease
  namespace (`v1alpha1.LEASE_NAMESPACE_LABEL`: the managers sharing it form one placement
  group), or adopt the existing one (a restart): the label is set again, the spec is the
  user's and is left alone.
- `report`: the manager's own status (state Active or Draining from its spec, tenants, bytes,
  the volume's use, the time of its heartbeat): one merge patch.
- `list_group`: every Pageserver of a lease namespace (one LIST), for the placement leader;
  `mark_offline`: the leader's patch of a pageserver whose heartbeat stopped.

Crash behaviour: every write is idempotent and whole; nothing is deleted (a Pageserver that
is gone for good is removed by a person: `kubectl delete pageserver NAME`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pageserver_operator.api import v1alpha1
from pageserver_operator.k8s import kube

log = logging.getLogger(__name__)

_G, _V, _P = v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PAGESERVER_PLURAL


@dataclass(frozen=True)
class Observed:
    """A Pageserver as the leader reads it."""

    name: str
    scheduling: str
    state: str | None
    capacity: int
    disk_fraction: float
    drain_annotation: bool = False


async def register(k: kube.Kube, name: str, lease_namespace: str) -> dict[str, Any]:
    c = k.custom
    labels = {v1alpha1.LEASE_NAMESPACE_LABEL: lease_namespace}
    body = {
        "apiVersion": f"{_G}/{_V}",
        "kind": v1alpha1.PAGESERVER_KIND,
        "metadata": {"name": name, "labels": labels},
        "spec": {"scheduling": "Active"},
    }
    try:
        got = await k.call(f"CREATE Pageserver {name}", c.create_cluster_custom_object, _G, _V, _P, body)
        log.info("registered Pageserver %s (lease namespace %s)", name, lease_namespace)
    except kube.Conflict:
        got = await k.call(
            f"PATCH Pageserver {name}", c.patch_cluster_custom_object, _G, _V, _P, name, {"metadata": {"labels": labels}}
        )
    return dict(got or {})


async def get(k: kube.Kube, name: str) -> dict[str, Any] | None:
    got = await k.call(f"GET Pageserver {name}", k.custom.get_cluster_custom_object, _G, _V, _P, name)
    return dict(got) if got is not None else None


def disk_usage(workdir: Path) -> tuple[int, int]:
    """(used, total) bytes of the volume's filesystem."""
    try:
        u = shutil.disk_usage(workdir)
    except OSError:
        return 0, 0
    return u.used, u.total


async def report(k: kube.Kube, name: str, status: v1alpha1.PageserverStatus) -> dict[str, Any] | None:
    """Write this manager's status; returns the Pageserver as stored (its spec is the user's).
    None: the resource is gone (deleted by a person): registered again at the next start."""
    patch = {"status": status.model_dump(by_alias=True, exclude_none=True)}
    got = await k.call(f"PATCH Pageserver {name} status", k.custom.patch_cluster_custom_object_status, _G, _V, _P, name, patch)
    return dict(got) if got is not None else None


async def list_group(k: kube.Kube, lease_namespace: str) -> list[Observed]:
    got = await k.call(
        "LIST Pageservers", k.custom.list_cluster_custom_object, _G, _V, _P,
        label_selector=f"{v1alpha1.LEASE_NAMESPACE_LABEL}={lease_namespace}",
    )
    out = []
    for item in (got or {}).get("items", []):
        spec, st = item.get("spec") or {}, item.get("status") or {}
        # disk use = the tenants' bytes on the volume over its size: the share placement moves. Not
        # the filesystem's used fraction: volumes sharing a filesystem (dev, tests) would all
        # report the same noisy value, and anything else on the volume is not placement's to move.
        total = int(st.get("diskTotalBytes") or 0)
        used = int(st.get("bytes") or 0)
        out.append(
            Observed(
                name=item["metadata"]["name"],
                # the pod annotation pageserver.dev/drain (reported by the manager) drains it too
                scheduling="Draining" if st.get("drainRequested") else str(spec.get("scheduling") or "Active"),
                state=st.get("state"),
                capacity=int(st.get("capacity") or 1000),
                disk_fraction=(used / total) if total else 0.0,
            )
        )
    return out


async def set_state(k: kube.Kube, name: str, state: str, message: str | None) -> None:
    await patch_status(k, name, {"state": state, "message": message})


async def patch_status(k: kube.Kube, name: str, status: dict[str, Any]) -> None:
    """A merge patch of a Pageserver's status (the leader's fields: state Offline, drain)."""
    patch = {"status": status}
    await k.call(f"PATCH Pageserver {name} status", k.custom.patch_cluster_custom_object_status, _G, _V, _P, name, patch)


