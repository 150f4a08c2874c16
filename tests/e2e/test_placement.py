"""Many pageservers against the real API server and S3 server (DESIGN §8.3, issue 17): three
managers as processes, each with its own volume, sharing one placement group (their Leases in
the test's namespace).

- tenants spread over the three; a pin is honoured; a pin naming no pageserver says so;
- a manager SIGKILLed and not restarted: its tenants are Active elsewhere under generation+1
  (time from the kill measured), its Pageserver Offline;
- a manager frozen with SIGSTOP (a partition): failover, then SIGCONT: it finds its tenants
  placed elsewhere, removes its local copies and deletes nothing remote;
- the placement leader killed: another manager leads (time measured).

Failover is configured at FAILOVER seconds (the production default is 30): the figures are
printed as multiples of it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import helpers
from e2e.conftest import Remote, new_tenant_id
from e2e.group import DRAIN_CONCURRENCY, FAILOVER, MANAGERS, Group, running_group
from pageserver_operator import testdata
from pageserver_operator.devenv import controlplane

pytestmark = pytest.mark.e2e


@pytest.fixture
def group(
    request: pytest.FixtureRequest, tmp_path: Path, control_plane: controlplane.ControlPlane, namespace: str,
    crd_installed: None, remote: Remote,
) -> Iterator[Group]:
    yield from running_group(request, Group(tmp_path, control_plane, namespace, remote))


def _placement(obj: dict[str, Any] | None) -> dict[str, Any]:
    return dict(((obj or {}).get("status") or {}).get("placement") or {})


def _pageservers(k: helpers.Kubectl) -> dict[str, dict[str, Any]]:
    items = k.get_json("pageservers", "-l", f"pageserver.dev/lease-namespace={k.namespace}")["items"]
    return {i["metadata"]["name"]: i for i in items}


def _seed(remote: Remote, n: int, seed: int) -> list[str]:
    out = []
    for i in range(n):
        tid = new_tenant_id()
        remote.seed(testdata.TenantShape(timelines=1, layers=2, layer_size=6 << 10, seed=seed + i), tid)
        out.append(tid)
    return out


def _active_on(k: helpers.Kubectl, name: str, pageserver: str | None = None, after_generation: int = 0) -> dict[str, Any] | None:
    obj = k.tenant_or_none(name)
    p = _placement(obj)
    if helpers.phase(obj) != "Active" or (p.get("generation") or 0) <= after_generation:
        return None
    if pageserver is not None and p.get("attached") != pageserver:
        return None
    return obj


def _tenant_dirs(workdir: Path) -> set[str]:
    root = workdir / "tenants"
    return {n for n in os.listdir(root) if len(n) == 32} if root.is_dir() else set()


def _leader(k: helpers.Kubectl) -> str | None:
    r = k.run("get", "lease", "pageserver-operator-placement", "-o", "jsonpath={.spec.holderIdentity}", check=False)
    return r.stdout.strip() or None if r.returncode == 0 else None


def test_tenants_spread_and_a_pin_is_honoured(k: helpers.Kubectl, remote: Remote, group: Group) -> None:
    tids = _seed(remote, 7, 700)
    for i, tid in enumerate(tids[:6]):
        k.apply(helpers.tenant_manifest(f"t{i}", tid))
    pinned = helpers.tenant_manifest("pinned", tids[6])
    pinned["spec"]["placement"] = {"pageserver": "ps-2"}
    k.apply(pinned)
    nowhere = helpers.tenant_manifest("nowhere", new_tenant_id())
    nowhere["spec"]["placement"] = {"pageserver": "ps-nope"}
    k.apply(nowhere)
    for i in range(6):
        helpers.wait_phase(k, f"t{i}", "Active", timeout=60)
    obj = helpers.wait_for(lambda: _active_on(k, "pinned", "ps-2"), 60, "the pinned tenant Active on ps-2")
    assert _placement(obj)["generation"] == 1
    where = [_placement(k.tenant(f"t{i}"))["attached"] for i in range(6)] + ["ps-2"]
    counts = {n: where.count(n) for n in MANAGERS}
    print(f"placement: {counts}")
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    # every tenant's data is on the volume of the pageserver it is placed on, and only there
    for i, tid in enumerate(tids[:6]):
        holders = {n for n in MANAGERS if tid in _tenant_dirs(group.workdir(n))}
        assert holders == {where[i]}, (tid, holders, where[i])
    # a pin naming no pageserver says so, and nothing attaches it
    helpers.wait_for(lambda: _placement(k.tenant("nowhere")).get("reason") == "PageserverNotFound", 30, "PageserverNotFound")
    assert "ps-nope" in _placement(k.tenant("nowhere"))["message"]
    assert helpers.phase(k.tenant("nowhere")) is None
    # kubectl get pageservers: Active, with their tenants counted
    helpers.wait_for(
        lambda: {n: (p.get("status") or {}).get("tenants") for n, p in _pageservers(k).items()} == counts,
        30, "the Pageservers to count their tenants", describe=lambda: str(_pageservers(k)),
    )
    assert {(p.get("status") or {}).get("state") for p in _pageservers(k).values()} == {"Active"}
    table = k.run("get", "pageservers", "-l", f"pageserver.dev/lease-namespace={k.namespace}").stdout
    assert table.split("\n")[0].split() == ["NAME", "STATE", "SCHEDULING", "TENANTS", "BYTES", "AGE"], table
    wide = k.run("get", "tenants", "-o", "wide").stdout
    header = wide.split("\n")[0].split()
    assert "PAGESERVER" in header and "GENERATION" in header, wide


def test_a_killed_manager_fails_over_and_a_frozen_one_removes_its_stale_copies(
    k: helpers.Kubectl, remote: Remote, group: Group, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tids = _seed(remote, 6, 800)
    for i, tid in enumerate(tids):
        k.apply(helpers.tenant_manifest(f"f{i}", tid))
    for i in range(6):
        helpers.wait_phase(k, f"f{i}", "Active", timeout=60)
    leader = helpers.wait_for(lambda: _leader(k), 30, "a placement leader")
    placed = {f"f{i}": _placement(k.tenant(f"f{i}")) for i in range(6)}
    # the victims: two managers that do not lead (the leader's own death is the next test)
    victims = [n for n in MANAGERS if n != leader]
    killed, frozen = victims[0], victims[1]
    of = {n: [t for t, p in placed.items() if p["attached"] == n] for n in MANAGERS}
    assert of[killed] and of[frozen], of

    # -- SIGKILL, not restarted --------------------------------------------------------------------
    t0 = time.monotonic()
    group.procs[killed].kill()
    for name in of[killed]:
        helpers.wait_for(
            lambda name=name: _active_on(k, name, after_generation=placed[name]["generation"]),  # type: ignore[misc]
            FAILOVER * 10 + 30, f"{name} Active elsewhere after the kill", describe=lambda name=name: helpers.summary(k.tenant(name)),  # type: ignore[misc]
        )
    took = time.monotonic() - t0
    for name in of[killed]:
        p = _placement(k.tenant(name))
        assert p["attached"] != killed and p["generation"] == placed[name]["generation"] + 1, p
    print(f"failover after SIGKILL: {len(of[killed])} tenants Active elsewhere {took:.1f} s after the kill "
          f"({took / FAILOVER:.1f} x failoverSeconds {FAILOVER:g})")
    helpers.wait_for(lambda: (_pageservers(k)[killed].get("status") or {}).get("state") == "Offline", 30, f"{killed} Offline")

    # -- SIGSTOP (a partition), then SIGCONT -----------------------------------------------------
    proc = group.procs[frozen]
    deletions_before = proc.metric("pageserver_operator_deletions_total") or 0.0
    objects_before = set(remote.open().list_objects("tenants/"))
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        for name in of[frozen]:
            helpers.wait_for(
                lambda name=name: _active_on(k, name, after_generation=placed[name]["generation"]),  # type: ignore[misc]
                FAILOVER * 10 + 30, f"{name} Active elsewhere while {frozen} is frozen",
                describe=lambda name=name: helpers.summary(k.tenant(name)),  # type: ignore[misc]
            )
        took = time.monotonic() - t0
        print(f"failover after SIGSTOP: {len(of[frozen])} tenants Active elsewhere {took:.1f} s after the freeze")
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    frozen_tids = {k.tenant(n)["spec"]["tenantId"] for n in of[frozen]}
    helpers.wait_for(
        lambda: not (frozen_tids & _tenant_dirs(group.workdir(frozen))), 60,
        f"{frozen} to remove its stale copies", describe=lambda: str(_tenant_dirs(group.workdir(frozen))),
    )
    helpers.wait_for(lambda: (_pageservers(k)[frozen].get("status") or {}).get("state") == "Active", 30, f"{frozen} Active again")
    assert (proc.metric("pageserver_operator_deletions_total") or 0.0) == deletions_before, "the stale manager deleted"
    # nothing the stale manager could reach was deleted by it: every object present before the
    # freeze that the current owners still reference is there (the new owners delete only older
    # generations' indexes, after validating theirs)
    after = set(remote.open().list_objects("tenants/"))
    for name in of[frozen]:
        tid = k.tenant(name)["spec"]["tenantId"]
        expected = remote.capture(tid)
        owner = _placement(k.tenant(name))["attached"]
        helpers.assert_tenant_matches(group.workdir(owner), expected, tmp_path_factory.mktemp("scratch"))
    lost = {o for o in objects_before - after if "index_part.json" not in o}
    assert not lost, f"layers deleted: {sorted(lost)[:5]}"
    for name in [n for n in placed if n not in of[killed] and n not in of[frozen]]:
        assert _placement(k.tenant(name))["generation"] == placed[name]["generation"], "an unaffected tenant moved"


def test_the_placement_leader_killed_another_leads(k: helpers.Kubectl, remote: Remote, group: Group) -> None:
    tids = _seed(remote, 2, 900)
    k.apply(helpers.tenant_manifest("l0", tids[0]))
    helpers.wait_phase(k, "l0", "Active", timeout=60)
    leader = helpers.wait_for(lambda: _leader(k), 30, "a placement leader")
    t0 = time.monotonic()
    group.procs[leader].kill()
    new = helpers.wait_for(lambda: (lambda h: h if h and h != leader else None)(_leader(k)), FAILOVER * 10 + 30, "another leader")
    took = time.monotonic() - t0
    print(f"placement leader {leader} killed: {new} leads {took:.1f} s later ({took / FAILOVER:.1f} x failoverSeconds)")
    # the new leader places a new tenant, on a live pageserver
    k.apply(helpers.tenant_manifest("l1", tids[1]))
    obj = helpers.wait_for(lambda: _active_on(k, "l1"), 60, "l1 Active")
    assert _placement(obj)["attached"] != leader


# ---- live relocation (DESIGN §8.4, issue 18) -------------------------------------------------------


class PhaseWatch:
    """One Tenant's ``status.placement.migration.phase`` values, in order, from a watch of the
    Tenant (``kubectl get --watch``): every write of the object is an event, so a phase is seen
    however briefly it lasted (a poll missed a Warming of 12 small layers that took less than
    one poll). The watch is running once ``__enter__`` returns."""

    def __init__(self, k: helpers.Kubectl, name: str) -> None:
        import subprocess
        import threading

        argv = [str(k.binary), f"--kubeconfig={k.kubeconfig}", f"--namespace={k.namespace or 'default'}"]
        argv += ["get", helpers.RESOURCE, name, "--watch", "-o", 'jsonpath={.status.placement.migration.phase}{"\\n"}']
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            phase = line.strip()
            if phase and (not self.seen or self.seen[-1] != phase):
                self.seen.append(phase)

    def __enter__(self) -> PhaseWatch:
        assert self._proc.stdout is not None
        # the object as it was when the watch began: every later write is an event from here on
        first = self._proc.stdout.readline()
        if not first:
            raise AssertionError(f"kubectl get --watch ended at once: {self._proc.stderr.read() if self._proc.stderr else ''}")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        self._thread.join(5)


PHASES = ["Warming", "SourceStale", "Cutover", "SourceDetach"]


def test_a_pin_change_migrates_the_tenant_live_through_every_phase(
    k: helpers.Kubectl, remote: Remote, group: Group, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tid = new_tenant_id()
    remote.seed(testdata.TenantShape(timelines=2, layers=6, layer_size=64 << 10, seed=1818), tid)
    k.apply(helpers.tenant_manifest("mover", tid))
    obj = helpers.wait_phase(k, "mover", "Active", timeout=60)
    source = _placement(obj)["attached"]
    gen = _placement(obj)["generation"]
    target = next(n for n in MANAGERS if n != source)
    layers = sum(len(remote.newest_index(tid, tl).layers) for tl in remote.capture(tid).timelines)
    before = group.procs[target].metric("pageserver_operator_layer_downloads_total", tenant_id=tid) or 0.0
    with PhaseWatch(k, "mover") as watch:
        k.run("patch", "tenant", "mover", "--type", "merge", "-p", json.dumps({"spec": {"placement": {"pageserver": target}}}))

        def done() -> dict[str, Any] | None:
            o = k.tenant("mover")
            p = _placement(o)
            ok = p.get("attached") == target and not p.get("migration") and helpers.phase(o) == "Active"
            return o if ok and (p.get("lastMigration") or {}).get("phase") == "Done" else None

        obj = helpers.wait_for(done, 120, "the migration to finish", describe=lambda: helpers.summary(k.tenant("mover")) + str(_placement(k.tenant("mover"))))
    p = _placement(obj)
    print(f"migration {source} -> {target}: phases seen {watch.seen}; lastMigration {p['lastMigration']}")
    assert [ph for ph in PHASES if ph in watch.seen] == [ph for ph in watch.seen if ph in PHASES], watch.seen
    assert watch.seen and watch.seen[0] == "Warming", watch.seen
    assert p["generation"] == gen + 1, p
    assert p["lastMigration"]["from"] == source and p["lastMigration"]["to"] == target
    assert p["lastMigration"]["reason"] == "pin" and p["lastMigration"].get("windowSeconds") is not None
    # the source let its copy go; the target holds exactly the remote tenant, each layer downloaded once
    helpers.wait_for(lambda: tid not in _tenant_dirs(group.workdir(source)), 30, "the source's copy removed")
    helpers.assert_tenant_matches(group.workdir(target), remote.capture(tid), tmp_path_factory.mktemp("scratch"))
    downloaded = (group.procs[target].metric("pageserver_operator_layer_downloads_total", tenant_id=tid) or 0.0) - before
    assert downloaded == layers, f"the target downloaded {downloaded} layers for {layers} (warming + cutover)"


def test_a_drain_moves_every_unpinned_tenant_away_a_bounded_number_at_once(
    k: helpers.Kubectl, remote: Remote, group: Group
) -> None:
    n = 9
    tids = _seed(remote, n + 1, 1900)
    for i, tid in enumerate(tids[:n]):
        k.apply(helpers.tenant_manifest(f"d{i}", tid))
    for i in range(n):
        helpers.wait_phase(k, f"d{i}", "Active", timeout=60)
    where = {f"d{i}": _placement(k.tenant(f"d{i}"))["attached"] for i in range(n)}
    drained = max(MANAGERS, key=lambda n: list(where.values()).count(n))
    on_drained = [n for n, ps in where.items() if ps == drained]
    assert len(on_drained) > DRAIN_CONCURRENCY, where
    pinned = helpers.tenant_manifest("d-pinned", tids[n])
    pinned["spec"]["placement"] = {"pageserver": drained}
    k.apply(pinned)
    helpers.wait_for(lambda: _active_on(k, "d-pinned", drained), 60, "the pinned tenant Active")
    t0 = time.monotonic()
    k.run("patch", "pageserver", drained, "--type", "merge", "-p", json.dumps({"spec": {"scheduling": "Draining"}}))
    most = 0

    def empty() -> bool:
        nonlocal most
        moving = sum(1 for t in on_drained if (_placement(k.tenant(t)).get("migration") or {}).get("from") == drained)
        most = max(most, moving)
        return all(_placement(k.tenant(n)).get("attached") != drained and not _placement(k.tenant(n)).get("migration")
                   and helpers.phase(k.tenant(n)) == "Active" for n in on_drained)

    helpers.wait_for(empty, 180, f"{drained} drained")
    took = time.monotonic() - t0
    print(f"drain of {drained}: {len(on_drained)} tenants moved in {took:.1f} s, at most {most} migrations at once")
    assert 1 <= most <= DRAIN_CONCURRENCY, most
    assert _placement(k.tenant("d-pinned"))["attached"] == drained, "a pinned tenant was moved by the drain"
    drain = helpers.wait_for(
        lambda: (lambda d: d if d.get("remaining") == 0 and d.get("inFlight") == 0 else None)(
            (_pageservers(k)[drained].get("status") or {}).get("drain") or {}), 30, "status.drain: nothing left")
    assert drain.get("moved") == len(on_drained) and drain.get("etaSeconds") == 0, drain
    assert (_pageservers(k)[drained].get("status") or {}).get("state") == "Draining"
    # back to Active: no new migrations start, the drain status goes
    k.run("patch", "pageserver", drained, "--type", "merge", "-p", json.dumps({"spec": {"scheduling": "Active"}}))
    helpers.wait_for(lambda: not (_pageservers(k)[drained].get("status") or {}).get("drain"), 30, "the drain status cleared")


def test_a_warm_secondary_is_kept_and_takes_over_at_failover(k: helpers.Kubectl, remote: Remote, group: Group) -> None:
    tid = new_tenant_id()
    remote.seed(testdata.TenantShape(timelines=2, layers=5, layer_size=32 << 10, seed=2323), tid)
    manifest = helpers.tenant_manifest("warm", tid)
    manifest["spec"]["placement"] = {"secondaries": 1}
    k.apply(manifest)
    helpers.wait_phase(k, "warm", "Active", timeout=60)

    def warm() -> str | None:
        p = _placement(k.tenant("warm"))
        sec = p.get("secondaries") or []
        if len(sec) != 1 or sec[0] == p.get("attached"):
            return None
        # counted once renamed into place (a glob of the directory would also see ``.temp_download`` files)
        fetched = group.procs[sec[0]].metric("pageserver_operator_layer_downloads_total", tenant_id=tid) or 0.0
        return str(sec[0]) if fetched >= 10 else None

    secondary = helpers.wait_for(warm, 60, "a warm secondary", describe=lambda: str(_placement(k.tenant("warm"))))
    p = _placement(k.tenant("warm"))
    attached, gen = p["attached"], p["generation"]
    assert (group.workdir(secondary) / "tenants" / tid / "attaching").exists(), "a secondary is not attached"
    before = group.procs[secondary].metric("pageserver_operator_layer_downloads_total", tenant_id=tid) or 0.0
    group.procs[attached].kill()
    obj = helpers.wait_for(lambda: _active_on(k, "warm", secondary, after_generation=gen), FAILOVER * 10 + 30,
                           "failover to the warm secondary", describe=lambda: str(_placement(k.tenant("warm"))))
    fetched = (group.procs[secondary].metric("pageserver_operator_layer_downloads_total", tenant_id=tid) or 0.0) - before
    print(f"failover of a tenant with a warm secondary: attached on {secondary}, {fetched:.0f} layers fetched at the cutover")
    assert fetched == 0, "the warm secondary downloaded layers again at failover"
    # a new secondary is chosen among the live ones
    helpers.wait_for(lambda: (_placement(k.tenant("warm")).get("secondaries") or [None])[0] not in (None, attached, secondary),
                     30, "a new secondary", describe=lambda: str(_placement(k.tenant("warm"))))
    assert _placement(obj)["generation"] == gen + 1
