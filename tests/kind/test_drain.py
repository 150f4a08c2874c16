"""Draining a pageserver on a real multi-node cluster (DESIGN §8.3/§8.4, issue 18 "Show"): the
three-pageserver release of multi.py (after test_failover.py), one pageserver made to hold
COUNT (default 100) small tenants, then ``spec.scheduling: Draining``: every tenant migrates
away (Warming -> SourceStale -> Cutover -> SourceDetach) at most ``drainConcurrency`` at once.

How one pageserver comes to hold them: the two others are set ``Paused`` (no new tenants; the
tenants they hold stay), the Tenants are created and all placed on the third; then the two are
set ``Active`` again and the third ``Draining``. (Pinning them would not do: a drain does not
move pinned tenants.)

Everything is followed by two ``kubectl get --watch`` streams (the namespace's Tenants, the
group's Pageservers), not by polling: every status change of every Tenant is seen, so the
number of migrations in flight from the drained pageserver (``status.placement.migration.from``)
is counted at each change the API server recorded, and its maximum is exact.

Asserted: the drained pageserver empties (no tenant attached, no migration from it, no copy on
its volume); no remote layer is deleted; every tenant it held is Active on another pageserver under a newer generation,
its files there byte-identical to its newest remote index; no tenant was ever Broken; 1 <= the
most migrations in flight seen <= DRAIN_CONCURRENCY, and so for ``status.drain.inFlight``;
``status.drain`` ends at remaining 0, inFlight 0, moved == COUNT. Printed (the suite's report):
time to empty, tenants/s, the most migrations in flight seen against the setting, the
migrations' durations and cutover windows.

While it runs, ``kubectl get tenants -o wide``, ``kubectl describe tenant`` of a tenant in
Warming and of one in Cutover, ``kubectl get pageservers`` and the Pageserver's ``status.drain``
are captured into build/kind-e2e-drain/ (the source of docs/status.md's migration section).
Setting the pageserver back to ``Active`` clears ``status.drain``.

KIND_E2E_DRAIN_TENANTS sets COUNT; KIND_E2E_SEED the seed (tenant ids and contents; printed).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from kind import kube
from kind.conftest import REPORT, compare_trees, local_trees
from kind.multi import DRAIN_CONCURRENCY, LEASE_NAMESPACE_LABEL, NAMESPACE, Group, phase, placement

pytestmark = pytest.mark.kind

COUNT = int(os.environ.get("KIND_E2E_DRAIN_TENANTS") or 100)
# Small: the drain's pace is what is measured, not download bandwidth (1 timeline, 2 layers).
SHAPE = ["--timelines", "1", "--layers", "2", "--layer-size", "32KiB"]
SEED = int(os.environ.get("KIND_E2E_SEED") or random.SystemRandom().randrange(1 << 31))
PREFIX = "drain-"
CAPTURE = kube.REPO / "build" / "kind-e2e-drain"


@dataclass
class DrainSeen:
    """What the Tenant watch showed of the drain of ``drained`` (updated in the watch thread)."""

    drained: str
    in_flight: dict[str, float] = field(default_factory=dict)  # tenant -> when its migration was first seen
    most: int = 0
    durations: list[float] = field(default_factory=list)  # migration first seen -> cleared (s)
    phases: Counter[str] = field(default_factory=Counter)  # (tenant, phase) transitions seen, by phase
    last_phase: dict[str, str] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # tenant -> reason, ever seen Broken
    last_cleared: float = 0.0  # when the watch last saw a migration from `drained` end

    def on_event(self, _type: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if phase(obj) == "Broken":
            self.broken.setdefault(name, str((obj.get("status") or {}).get("reason")))
        m = placement(obj).get("migration") or {}
        now = time.monotonic()
        if m.get("from") == self.drained:
            self.in_flight.setdefault(name, now)
            if self.last_phase.get(name) != m.get("phase"):
                self.last_phase[name] = str(m.get("phase"))
                self.phases[str(m.get("phase"))] += 1
            self.most = max(self.most, len(self.in_flight))
        elif name in self.in_flight:
            self.durations.append(now - self.in_flight.pop(name))
            self.last_cleared = now
            self.last_phase.pop(name, None)


def _set_scheduling(group: Group, name: str, scheduling: str) -> None:
    group.k.kubectl("patch", "pageserver", name, "--type", "merge", "-p", json.dumps({"spec": {"scheduling": scheduling}}))


def _drain_status(ps: dict[str, Any] | None) -> dict[str, Any]:
    return dict(((ps or {}).get("status") or {}).get("drain") or {})


def _capture(group: Group, file: str, *args: str) -> str:
    """``kubectl ARGS`` as a person would type it (the namespace flag left out), into CAPTURE."""
    out = group.k.kubectl(*args).stdout
    shown = " ".join(a for a in args if a not in ("-n", NAMESPACE))
    text = f"$ kubectl {shown}\n{out}"
    CAPTURE.mkdir(parents=True, exist_ok=True)
    (CAPTURE / file).write_text(text)
    return text


def _capture_migration(group: Group, tenants: kube.Watch, drained: str, wanted: str, attempts: int = 5) -> bool:
    """``kubectl describe`` of a tenant whose migration from ``drained`` is in phase ``wanted``
    (and ``get tenants -o wide`` right before), retried when the migration moved on meanwhile.
    Returns whether a capture showed the phase."""

    def probe(objs: dict[str, dict[str, Any]]) -> str | None:
        migrations = {n: placement(o).get("migration") or {} for n, o in objs.items()}
        found = sorted(n for n, m in migrations.items() if m.get("from") == drained and m.get("phase") == wanted)
        if found:
            return found[0]
        over = not any(m.get("from") == drained for m in migrations.values()) and not any(
            placement(o).get("attached") == drained for o in objs.values()
        )
        return "" if over else None  # "": the drain is over, nothing left to capture

    for _ in range(attempts):
        try:
            name = tenants.wait(f"a migration from {drained} in {wanted}", probe, timeout=60)
        except TimeoutError:
            return False
        if not name:
            return False
        key = wanted.lower()
        _capture(group, f"get-tenants-{key}.txt", "get", "tenants", "-n", NAMESPACE, "-o", "wide")
        text = _capture(group, f"describe-{key}.txt", "describe", "tenant", name, "-n", NAMESPACE)
        if _describe_phase(text) == wanted:
            return True
    return False


def _describe_phase(text: str) -> str | None:
    """The migration's phase in ``kubectl describe tenant`` output (the line after ``Migration:``)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Migration:":
            for following in lines[i + 1 : i + 12]:
                key, _, value = following.strip().partition(":")
                if key == "Phase":
                    return value.strip()
    return None


def test_a_drain_moves_every_tenant_away_at_most_drain_concurrency_at_once(group: Group) -> None:
    k, cluster = group.k, group.cluster
    test_started = time.monotonic()
    kube.log(f"drain test: {COUNT} tenants, drainConcurrency {DRAIN_CONCURRENCY}, seed {SEED} (KIND_E2E_SEED repeats it)")
    pods = sorted(group.pods())
    leader = kube.wait_for("a placement leader", group.leader, timeout=60)
    # The drained pageserver: one that does not lead placement (its own drain does not stop the
    # leader; a non-leader keeps the figure about the drain, not about the leader's load).
    drained = next(p for p in pods if p != leader)
    others = [p for p in pods if p != drained]
    selector = f"{LEASE_NAMESPACE_LABEL}={NAMESPACE}"
    seen = DrainSeen(drained)
    drain_in_flight: list[int] = []

    def on_pageserver(_type: str, obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] == drained and "inFlight" in _drain_status(obj):
            drain_in_flight.append(int(_drain_status(obj)["inFlight"]))

    with (
        kube.Watch(k, "tenants.pageserver.dev", "-n", NAMESPACE, on_event=seen.on_event) as tenants,
        kube.Watch(k, "pageservers.pageserver.dev", "-l", selector, on_event=on_pageserver) as pageservers,
    ):
        pageservers.wait(
            "the three Pageservers Active, scheduling Active",
            lambda objs: all(
                (objs.get(p, {}).get("status") or {}).get("state") == "Active"
                and (objs.get(p, {}).get("spec") or {}).get("scheduling", "Active") == "Active"
                for p in pods
            ),
            timeout=120,
        )
        tenants.wait(
            "no migration in flight (the failover test's tenants settled)",
            lambda objs: all(not placement(o).get("migration") and phase(o) == "Active" for o in objs.values()),
            timeout=120,
        )

        # -- COUNT tenants, all on `drained`: the two others Paused meanwhile -----------------------
        for p in others:
            _set_scheduling(group, p, "Paused")
        rng = random.Random(SEED)
        tids = {f"{PREFIX}{i:03d}": f"{rng.getrandbits(128):032x}" for i in range(COUNT)}
        started = time.monotonic()
        cluster.make_tenants([(tid, [*SHAPE, "--seed", str(SEED + i)]) for i, tid in enumerate(tids.values())])
        seeded_s = time.monotonic() - started
        started = time.monotonic()
        docs = [
            {
                "apiVersion": "pageserver.dev/v1alpha1",
                "kind": "Tenant",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"tenantId": tid},
            }
            for name, tid in tids.items()
        ]
        k.apply(yaml.safe_dump_all(docs))
        tenants.wait(
            f"{COUNT} tenants Active on {drained}",
            lambda objs: all(
                n in objs and phase(objs[n]) == "Active" and placement(objs[n]).get("attached") == drained for n in tids
            ),
            timeout=600,
        )
        attached_s = time.monotonic() - started
        kube.log(f"{COUNT} tenants seeded in {seeded_s:.1f} s, Active on {drained} {attached_s:.1f} s after the apply")
        for p in others:
            _set_scheduling(group, p, "Active")
        pageservers.wait(
            f"{others} scheduling Active",
            lambda objs: all((objs[p].get("spec") or {}).get("scheduling") == "Active" for p in others),
            timeout=30,
        )
        before = {n: placement(o) for n, o in tenants.snapshot().items()}
        moving = sorted(n for n, pl in before.items() if pl.get("attached") == drained)
        assert set(tids) <= set(moving), "a tenant of the drain is not on the drained pageserver"
        count = len(moving)  # COUNT, plus the failover test's tenants it held

        tids_moving = {n: tenants.snapshot()[n]["spec"]["tenantId"] for n in moving}
        objects_before = cluster.remote_objects(sorted(tids_moving.values()))

        # -- the drain ------------------------------------------------------------------------------
        kube.log(f"draining {drained} ({count} tenants; placement leader {leader}; drainConcurrency {DRAIN_CONCURRENCY})")
        drain_started = time.monotonic()
        _set_scheduling(group, drained, "Draining")
        captured = {"Warming": _capture_migration(group, tenants, drained, "Warming")}
        _capture(group, "get-pageservers.txt", "get", "pageservers", "-l", selector, "-o", "wide")
        _capture(group, "drain-status.txt", "get", "pageserver", drained, "-o", "jsonpath={.status.drain}")
        captured["Cutover"] = _capture_migration(group, tenants, drained, "Cutover")

        def empty(objs: dict[str, dict[str, Any]]) -> bool:
            return all(
                placement(o).get("attached") != drained
                and (placement(o).get("migration") or {}).get("from") != drained
                and (n not in moving or phase(o) == "Active")
                for n, o in objs.items()
            )

        tenants.wait(f"{drained} empty", empty, timeout=900)
        # when the watch thread saw the last migration end (the captures above may delay this
        # thread's own look): a migration ends once its target is Active
        drain_s = seen.last_cleared - drain_started

        def drain_done(objs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
            d = _drain_status(objs.get(drained))
            return d if d.get("remaining") == 0 and d.get("inFlight") == 0 else None

        status = pageservers.wait(f"{drained} status.drain: remaining 0, inFlight 0", drain_done, timeout=60)
        state = (pageservers.snapshot()[drained].get("status") or {}).get("state")
        _capture(group, "drain-status-done.txt", "get", "pageserver", drained, "-o", "jsonpath={.status.drain}")
        after = tenants.snapshot()
        most, phases, durations, broken = seen.most, dict(seen.phases), list(seen.durations), dict(seen.broken)

        # back to Active: the drain status goes
        _set_scheduling(group, drained, "Active")
        pageservers.wait(
            f"{drained} status.drain cleared", lambda objs: not _drain_status(objs.get(drained)), timeout=60
        )

    kube.log(
        f"drain of {drained}: {count} tenants moved in {drain_s:.1f} s ({count / drain_s:.2f} tenants/s); "
        f"at most {most} migrations in flight seen (drainConcurrency {DRAIN_CONCURRENCY}); "
        f"status.drain at the end {status}; captures {captured} in {CAPTURE}"
    )
    assert not broken, f"tenants went Broken during the drain: {broken}"
    assert 1 <= most <= DRAIN_CONCURRENCY, f"{most} migrations in flight at once, drainConcurrency {DRAIN_CONCURRENCY}"
    assert drain_in_flight and max(drain_in_flight) <= DRAIN_CONCURRENCY, drain_in_flight
    assert status.get("moved") == count and status.get("etaSeconds") == 0, status
    assert state == "Draining", state
    assert len(durations) == count, f"{len(durations)} migrations seen to end, {count} tenants moved"

    # -- every moved tenant: Active elsewhere, generation newer, files identical to the index ----
    windows = []
    where: dict[str, list[str]] = {p: [] for p in pods}
    for name in moving:
        pl = placement(after[name])
        assert phase(after[name]) == "Active", (name, after[name].get("status"))
        assert pl.get("attached") in others, (name, pl)
        assert (pl.get("generation") or 0) > (before[name].get("generation") or 0), (name, before[name], pl)
        last = pl.get("lastMigration") or {}
        assert (last.get("from"), last.get("to"), last.get("phase")) == (drained, pl["attached"], "Done"), (name, last)
        if last.get("windowSeconds") is not None:
            windows.append(float(last["windowSeconds"]))
        where[pl["attached"]].append(name)
    all_tids = tids_moving
    objects_after = cluster.remote_objects(sorted(all_tids.values()))
    lost = {key for key in set(objects_before) - set(objects_after) if "index_part.json" not in key}
    assert not lost, f"remote layers deleted during the drain: {sorted(lost)[:5]}"
    left = group.tenant_dirs(drained) & set(all_tids.values())
    assert not left, f"copies left on the drained pageserver's volume: {sorted(left)[:5]}"
    remote = cluster.remote_trees(sorted(all_tids.values()))
    compared = 0
    for p in others:
        held = group.tenant_dirs(p)
        local = local_trees(k, p, [all_tids[n] for n in where[p]], namespace=NAMESPACE)
        for name in where[p]:
            tid = all_tids[name]
            assert tid in held, (name, p)
            compared += compare_trees(local[tid], remote[tid])
    for p in others:  # a moved tenant is on exactly one pageserver
        extra = group.tenant_dirs(p) & {all_tids[n] for q in others if q != p for n in where[q]}
        assert not extra, (p, sorted(extra)[:5])

    REPORT["drain: tenants moved off one pageserver"] = f"{count} ({drained}; leader {leader}; seed {SEED})"
    REPORT["drain: seed tenants in S3 (s)"] = round(seeded_s, 1)
    REPORT["drain: apply -> all Active on one pageserver (s)"] = round(attached_s, 1)
    REPORT["drain: Draining -> empty (s)"] = round(drain_s, 1)
    REPORT["drain: tenants/s"] = round(count / drain_s, 2)
    REPORT["drain: most migrations in flight seen / drainConcurrency"] = f"{most} / {DRAIN_CONCURRENCY}"
    REPORT["drain: most status.drain.inFlight"] = max(drain_in_flight)
    REPORT["drain: migration first seen -> cleared (s, median / max)"] = (
        f"{statistics.median(durations):.1f} / {max(durations):.1f}"
    )
    if windows:
        REPORT["drain: cutover window (s, median / max)"] = f"{statistics.median(windows):.2f} / {max(windows):.2f}"
    REPORT["drain: placement after"] = {p: len(v) for p, v in where.items()}
    REPORT["drain: migration phases seen"] = phases
    REPORT["drain: bytes compared"] = compared
    REPORT["drain: final status.drain"] = json.dumps(status)
    REPORT["drain: the whole test (s)"] = round(time.monotonic() - test_started, 1)
