"""In-process stand-ins for the k8s layer's unit tests: a Kube that applies status merge patches
to objects in memory and records Events, and an engine tenant whose bring-up, sync and detach
the test scripts (the real `engine.tenant.Tenant` state machine, history and listeners, with
the I/O replaced)."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pageserver_operator import settings as settings_mod
from pageserver_operator.engine import snapshot as engine_snapshot
from pageserver_operator.engine import tenant
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import ids
from pageserver_operator.formats.generation import Generation
from pageserver_operator.k8s import kube as kube_mod
from pageserver_operator.k8s import ownership

NS = "ns"
_uids = itertools.count(1)


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch, in place."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


#: this manager's name in the unit tests (where `body` places its Tenants by default)
PAGESERVER = "ps-test"


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.patches: list[tuple[tuple[str, str], dict[str, Any]]] = []
        self.events: list[tuple[str, str, str, str]] = []  # (name, type, reason, message)
        self.pageservers: dict[str, dict[str, Any]] = {}

    def add(self, body: dict[str, Any]) -> None:
        m = body["metadata"]
        self.objects[(m["namespace"], m["name"])] = body

    # -- the generic calls (`kube.Kube.call`): Pageservers ----------------------------------------

    @property
    def custom(self) -> FakeKube:
        return self

    def get_cluster_custom_object(self, group: str, version: str, plural: str, name: str) -> dict[str, Any] | None:
        got = self.pageservers.get(name)
        return copy.deepcopy(got) if got is not None else None

    async def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return fn(*args, **kwargs)

    def add_pageserver(self, name: str, state: str = "Active") -> None:
        self.pageservers[name] = {"metadata": {"name": name}, "spec": {"scheduling": "Active"}, "status": {"state": state}}

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """As the API server: ``metadata.resourceVersion`` in a patch is a precondition, and a
        status whose ``placement.generation`` would go down is refused (the CRD's rule)."""
        await asyncio.sleep(0)
        obj = self.objects.setdefault((namespace, name), {"metadata": {"name": name, "namespace": namespace}})
        meta = obj["metadata"]
        expected = (patch.get("metadata") or {}).get("resourceVersion")
        if expected is not None and expected != str(meta.get("resourceVersion", "1")):
            raise kube_mod.Conflict(f"{namespace}/{name} changed")
        stored = ((obj.get("status") or {}).get("placement") or {}).get("generation")
        given = ((patch["status"] or {}).get("placement") or {}).get("generation")
        if stored is not None and given is not None and given < stored:
            raise kube_mod.StaleStatusWrite("placement.generation may not decrease")
        self.patches.append(((namespace, name), copy.deepcopy(patch)))
        obj.setdefault("status", {})
        merge(obj["status"], patch["status"])
        meta["resourceVersion"] = str(int(meta.get("resourceVersion", "1")) + 1)

    async def get_tenant(self, namespace: str, name: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        obj = self.objects.get((namespace, name))
        if obj is None:
            return None
        obj["metadata"].setdefault("resourceVersion", "1")
        return copy.deepcopy(obj)

    async def event(self, ref: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((ref["metadata"]["name"], type_, reason, message))

    def status(self, name: str) -> dict[str, Any]:
        st: dict[str, Any] = self.objects[(NS, name)].get("status") or {}
        return st

    def patches_of(self, name: str) -> list[dict[str, Any]]:
        """The status writes of ``name`` (the generation bumps not included: `bumps_of`)."""
        return [p["status"] for (_, n), p in self.patches if n == name and "metadata" not in p]

    def bumps_of(self, name: str) -> list[int]:
        """The generations issued to ``name`` (compare-and-swap writes of status.placement)."""
        return [p["status"]["placement"]["generation"] for (_, n), p in self.patches if n == name and "metadata" in p]


Script = Callable[["StandIn", Any], Awaitable[None]]


class StandIn(tenant.Tenant):
    """The engine's Tenant with scripted I/O: ``on_start``/``on_sync``/``on_detach`` replace
    attach/load, sync and detach; the calls are recorded."""

    def __init__(self, tid: ids.TenantId, workdir: Path) -> None:
        super().__init__(workdir, tid, None)  # type: ignore[arg-type]
        self.calls: list[tuple[str, Any]] = []
        self.on_start: Script = StandIn.become_active
        self.on_sync: Script = StandIn.nothing
        self.on_detach: Script = StandIn.nothing
        #: when set, `apply_config` waits for it (after recording the call)
        self.apply_gate: asyncio.Event | None = None
        #: what `upload_error` answers (the engine's: a timeline whose uploads keep failing)
        self.scripted_upload_error: tuple[str, str] | None = None
        #: the newest index generation "in remote storage" (the floor of a bump)
        self.remote_newest: Generation | None = None
        self.attachment.newest_remote_generation = self.scripted_newest  # type: ignore[method-assign]

    @property
    def upload_error(self) -> tuple[str, str] | None:
        return self.scripted_upload_error

    async def scripted_newest(self) -> Generation | None:
        return self.remote_newest

    async def become_active(self, config: Any) -> None:
        self.progress.start(0, 0)
        self._set_state(engine_snapshot.TenantState.ATTACHING, "AttachStarted", "attaching")
        await asyncio.sleep(0)
        self._set_state(engine_snapshot.TenantState.ACTIVE, "Active", "1 timeline active")

    async def nothing(self, config: Any) -> None:
        await asyncio.sleep(0)

    async def start(self, config: Any = None) -> None:
        self.calls.append(("start", config))
        try:
            await self.attachment.ensure_generation()  # as attach and load do first
            await self.on_start(self, config)
        except EngineError as e:
            if e.transient:
                self._set_state(
                    self.state or engine_snapshot.TenantState.ATTACHING, e.reason, f"retrying after error: {e.message}"
                )
            else:
                self._set_state(engine_snapshot.TenantState.BROKEN, e.reason, e.message)
            raise

    async def sync(self, timeout: float | None = None) -> None:
        self.calls.append(("sync", None))
        await self.on_sync(self, None)

    async def settle(self) -> None:
        self.calls.append(("settle", None))

    async def apply_config(self, config: Any) -> None:
        self.calls.append(("apply_config", config))
        if self.apply_gate is not None:
            await self.apply_gate.wait()

    async def detach(self, timeout: float | None = None, keep_local: bool = False) -> None:
        self.calls.append(("detach", None))
        self._set_state(engine_snapshot.TenantState.STOPPING, "DetachStarted", "uploading local-only layers")
        await self.on_detach(self, None)

    def stop(self) -> None:
        self.calls.append(("stop", None))

    async def discard(self, why: str) -> None:
        self.calls.append(("discard", why))
        self.state = None

    def count(self, what: str) -> int:
        return sum(1 for c in self.calls if c[0] == what)


class StandInManager:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.tenants: dict[ids.TenantId, StandIn] = {}
        self.made: list[StandIn] = []

    @property
    def tenants_root(self) -> Path:
        return self.workdir / "tenants"

    def get(self, tid: ids.TenantId) -> StandIn:
        t = self.tenants.get(tid)
        if t is None:
            t = self.tenants[tid] = StandIn(tid, self.workdir)
            self.made.append(t)
        return t

    def forget(self, tid: ids.TenantId) -> None:
        self.tenants.pop(tid, None)


def body(
    name: str,
    tid: str,
    *,
    generation: int = 1,
    config: dict[str, Any] | None = None,
    created: str = "2026-12-01T00:00:00Z",
    uid: str | None = None,
    finalizer: bool = True,
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
    attached: str | None = None,
) -> dict[str, Any]:
    """A Tenant as the API server holds it; placed on this manager (`PAGESERVER`) unless
    ``attached`` (or ``status``) says otherwise."""
    meta: dict[str, Any] = {
        "name": name, "namespace": NS, "uid": uid or f"uid-{next(_uids):04d}", "generation": generation,
        "creationTimestamp": created, "annotations": dict(annotations or {}),
        "finalizers": ["pageserver.dev/finalizer"] if finalizer else [],
    }  # fmt: skip
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    spec: dict[str, Any] = {"tenantId": tid}
    if config is not None:
        spec["config"] = config
    out: dict[str, Any] = {
        "apiVersion": "pageserver.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": meta,
        "spec": spec,
    }
    st = copy.deepcopy(status) if status is not None else {}
    st.setdefault("placement", {}).setdefault("attached", attached or PAGESERVER)
    out["status"] = st
    return out


def settings(**overrides: Any) -> settings_mod.OperatorSettings:
    values: dict[str, Any] = {
        "sync_period": 3600.0, "status_interval": 0.05, "retry_initial": 3600.0, "retry_max": 3600.0,
        "pageserver": PAGESERVER, "failover_seconds": 30.0,
    }  # fmt: skip
    values.update(overrides)
    return settings_mod.OperatorSettings.model_construct(**values)


async def until(check: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    """Poll ``check`` (every event-loop turn and 5 ms) until truthy; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


def registry(tmp_path: Path, kube: FakeKube, **overrides: Any) -> ownership.Registry:
    return ownership.Registry(
        manager=StandInManager(tmp_path),  # type: ignore[arg-type]
        kube=kube,  # type: ignore[arg-type]
        settings=settings(**overrides),
    )


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


TID = "0123456789abcdef0123456789abcdef"
