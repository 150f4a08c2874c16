"""`k8s.membership`: what a manager reports about itself, with the Kubernetes calls stood in."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pageserver_operator.k8s import membership


class FakeKube:
    def __init__(self, pod: dict[str, Any] | None) -> None:
        self.pod = pod
        self.reports: list[dict[str, Any]] = []
        self.core = self
        self.custom = self

    def read_namespaced_pod(self, name: str, namespace: str) -> dict[str, Any] | None:
        return self.pod

    def patch_cluster_custom_object_status(self, g: str, v: str, p: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.reports.append(patch["status"])
        return {"metadata": {"name": name}, "spec": {"scheduling": "Active"}, "status": patch["status"]}

    async def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


def _member(k: FakeKube, tmp_path: Path) -> membership.Membership:
    return membership.Membership(k, "ps-0", "ns", 30.0, 100, tmp_path, lambda: membership.Load(3, 4096))  # type: ignore[arg-type]


def test_the_drain_annotation_on_its_pod_reports_draining(tmp_path: Path) -> None:
    k = FakeKube({"metadata": {"annotations": {"pageserver.dev/drain": "true"}}})
    asyncio.run(_member(k, tmp_path)._report())
    st = k.reports[-1]
    assert st["state"] == "Draining" and st["drainRequested"] is True
    assert (st["tenants"], st["bytes"], st["capacity"], st["leaseNamespace"]) == (3, 4096, 100, "ns")
    assert st["diskTotalBytes"] > 0 and "lastHeartbeat" in st


def test_without_a_pod_or_the_annotation_it_is_active(tmp_path: Path) -> None:
    for pod in (None, {"metadata": {"annotations": {"pageserver.dev/drain": "no"}}}):
        k = FakeKube(pod)
        asyncio.run(_member(k, tmp_path)._report())
        assert k.reports[-1]["state"] == "Active" and k.reports[-1]["drainRequested"] is False


def test_the_heartbeat_period_is_a_quarter_of_the_failover_at_most_ten_seconds() -> None:
    assert membership.heartbeat_period(30.0) == 7.5
    assert membership.heartbeat_period(120.0) == 10.0
    assert membership.heartbeat_period(0.4) == 0.2
