"""Migrations killed at every phase (DESIGN §8.4, issue 18): three managers as processes; each
round pins the tenant to another pageserver and SIGKILLs one participant -- the source, the
target or the placement leader, chosen with a seed -- once the migration reaches a phase chosen
with the same seed, then restarts it at once on its volume. Checked from outside:

- the migration finishes: the tenant Active on the target under a higher generation, no
  migration left, ``lastMigration`` Done; exactly one volume holds the tenant (the target's),
  and its files are the remote index's, byte for byte;
- a watcher reads the newest remote index every 0.2 s all along: it never goes backwards and
  never names an object that does not exist (no deletion of what the newest index references).

Remote storage is behind the fault proxy with added latency (0.05-0.1 s per request) so that
warming lasts long enough to be killed in. Figure: "migrations survived / migrations", with the
phases the kills landed in. ``RELIABILITY_MIGRATIONS`` (default 4) sets the rounds;
``RELIABILITY_SEED`` replays one (printed). Soak: ``RELIABILITY_MIGRATIONS=40``.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e import helpers
from e2e.conftest import Remote, new_tenant_id
from e2e.group import MANAGERS, Group, running_group
from pageserver_operator import testdata
from pageserver_operator.devenv import controlplane
from pageserver_operator.formats import ids
from reliability import faultproxy
from reliability.conftest import seed as suite_seed
from reliability.figures import record
from reliability.test_generation_takeover import NewestIndexWatch

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROUNDS = int(os.environ.get("RELIABILITY_MIGRATIONS", "4"))
PHASES = ["Warming", "SourceStale", "Cutover", "SourceDetach"]
SHAPE = testdata.TenantShape(timelines=2, layers=12, layer_size=48 << 10, seed=77)


@pytest.fixture
def group(
    request: pytest.FixtureRequest, tmp_path: Path, control_plane: controlplane.ControlPlane, namespace: str,
    crd_installed: None, remote: Remote, proxy: faultproxy.FaultProxy, proxied_url: str,
) -> Iterator[Group]:
    proxy.weights = {"latency": 1.0}
    proxy.latency = (0.05, 0.1)
    proxy.set_rate(1.0)
    yield from running_group(request, Group(tmp_path, control_plane, namespace, remote, remote_url=proxied_url,
                                            extra_args=["--concurrency", "2"]))


def _placement(k: helpers.Kubectl) -> dict[str, Any]:
    return dict(((k.tenant("m").get("status") or {}).get("placement")) or {})


def _leader(k: helpers.Kubectl) -> str | None:
    r = k.run("get", "lease", "pageserver-operator-placement", "-o", "jsonpath={.spec.holderIdentity}", check=False)
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def test_migrations_survive_a_kill_of_any_participant_at_any_phase(
    k: helpers.Kubectl, remote: Remote, group: Group, tmp_path_factory: pytest.TempPathFactory
) -> None:
    seed = suite_seed("migrations")
    rng = random.Random(seed)
    print(f"migrations: RELIABILITY_SEED={seed} RELIABILITY_MIGRATIONS={ROUNDS}", flush=True)
    tid = new_tenant_id()
    remote.seed(SHAPE, tid)
    k.apply(helpers.tenant_manifest("m", tid))
    helpers.wait_phase(k, "m", "Active", timeout=120)
    survived = 0
    landed: Counter[str] = Counter()
    windows: list[float] = []
    with NewestIndexWatch(remote, ids.TenantId.parse(tid)) as watcher:
        for r in range(ROUNDS):
            p = _placement(k)
            source, gen = p["attached"], p["generation"]
            target = rng.choice([n for n in MANAGERS if n != source])
            role = rng.choice(["source", "target", "leader"])
            at = rng.choice(PHASES)
            k.run("patch", "tenant", "m", "--type", "merge", "-p", json.dumps({"spec": {"placement": {"pageserver": target}}}))
            # kill once the migration reached the chosen phase (or finished: then the kill lands after it)
            deadline = time.monotonic() + 120
            phase = None
            while time.monotonic() < deadline:
                p = _placement(k)
                phase = (p.get("migration") or {}).get("phase")
                done = not p.get("migration") and p.get("attached") == target
                if done or (phase in PHASES and PHASES.index(phase) >= PHASES.index(at)):
                    break
                time.sleep(0.02)
            victim = {"source": source, "target": target}.get(role) or _leader(k) or source
            landed[f"{role}@{phase or 'done'}"] += 1
            group.procs[victim].kill()
            group.start(victim)

            def finished(g: int = gen, target: str = target) -> dict[str, Any] | None:
                obj = k.tenant("m")
                pl = ((obj.get("status") or {}).get("placement")) or {}
                ok = (pl.get("attached") == target and not pl.get("migration") and helpers.phase(obj) == "Active"
                      and (pl.get("generation") or 0) > g and (pl.get("lastMigration") or {}).get("to") == target)
                return obj if ok else None

            obj = helpers.wait_for(
                finished, 180, f"round {r}: the migration {source} -> {target} to finish after killing the {role} ({victim}) at {phase}",
                describe=lambda: helpers.summary(k.tenant("m")) + " " + str(_placement(k)),
            )
            window = (obj["status"]["placement"].get("lastMigration") or {}).get("windowSeconds")
            if window is not None:
                windows.append(float(window))
            # exactly one volume holds the tenant: the target's
            helpers.wait_for(
                lambda target=target: [n for n in MANAGERS if (group.workdir(n) / "tenants" / tid).exists()] == [target],  # type: ignore[misc]
                60, f"round {r}: only {target} to hold the tenant",
                describe=lambda: str([n for n in MANAGERS if (group.workdir(n) / "tenants" / tid).exists()]),
            )
            assert watcher.error is None, f"round {r}: {watcher.error}"
            survived += 1
        helpers.assert_tenant_matches(group.workdir(target), remote.capture(tid), tmp_path_factory.mktemp("scratch"))
    assert watcher.error is None, watcher.error
    record(
        f"migrations (seed {seed}): {survived} survived / {ROUNDS} migrations with a participant killed "
        f"({dict(sorted(landed.items()))}); newest index polled {watcher.polls} times, never backwards, never "
        f"naming a missing object; cutover windows {sorted(windows)} s"
    )
