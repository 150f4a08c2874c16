"""Takeover through the real control plane (DESIGN §8.2, §8.3; issues 16, 17): the owner of a
tenant is frozen (SIGSTOP: a pod behind a partition) at a random point while its pageserver keeps
writing and compacting on its volume; a new manager on another volume joins the placement group,
leads it once the frozen one's leader lease lapses, finds the frozen one's heartbeat stopped
(``--failover-seconds``), places the tenant on itself and attaches it with a higher generation;
the frozen one is resumed. Every round checks, from outside:

- a watcher reads the newest remote index every 0.2 s: its ``disk_consistent_lsn`` never goes
  back, it never loses a layer that is not replaced, and every object it names exists (no stale
  deletion ever removes what the current generation references);
- the resumed manager finds the tenant placed elsewhere: it removes its local copy (a
  ``StaleCopyRemoved`` Warning Event) and never overwrites the new owner's status
  (``placement.attached``, ``phase`` Active);
- the new owner keeps working: a layer its pageserver flushes is indexed under its generation.

Figure: "takeovers survived / takeovers". ``RELIABILITY_TAKEOVERS`` (default 3) sets the rounds;
``RELIABILITY_SEED`` replays one (printed).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, OperatorProcess, Remote, new_tenant_id
from helpers import tree
from pageserver_operator import testdata
from pageserver_operator.devenv import controlplane
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids, layer_name
from reliability import common
from reliability.conftest import seed as suite_seed
from reliability.figures import record

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROUNDS = int(os.environ.get("RELIABILITY_TAKEOVERS", "3"))
#: --failover-seconds of the managers (the production default is 30)
FAILOVER = 2.0
MANAGER_ARGS = ["--failover-seconds", str(FAILOVER)]


class NewestIndexWatch:
    """Polls the newest remote index of every timeline in a thread; remembers the first problem."""

    def __init__(self, remote: Remote, tid: ids.TenantId) -> None:
        self.storage = remote.open()
        self.tid = tid
        self.watch = common.IndexWatch()
        self.error: str | None = None
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def check(self) -> None:
        indexes = self.watch.check(self.storage, self.tid, "newest index:")
        objects = self.storage.list_objects(paths.remote_timelines_prefix(self.tid))
        for name, idx in indexes.items():
            tlid = ids.TimelineId.parse(name)
            for layer, meta in idx.layers.items():
                key = paths.remote_layer_key(self.tid, tlid, layer, meta.generation)
                if key not in objects:
                    # listed after the index was read: a layer object can only be missing if deleted
                    raise AssertionError(f"{key} is named by the newest index but does not exist")

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.check()
                self.polls += 1
            except AssertionError as e:
                self.error = self.error or str(e)

    def __enter__(self) -> NewestIndexWatch:
        self.check()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _placement(k: helpers.Kubectl) -> dict[str, Any]:
    return dict(((k.tenant("t").get("status") or {}).get("placement")) or {})


def _layers(workdir: Path, tid: ids.TenantId, tlid: ids.TimelineId) -> list[layer_name.LayerName]:
    d = paths.TenantPaths(workdir, tid).timeline_dir(tlid)
    names = []
    for p in d.iterdir():
        try:
            names.append(layer_name.parse_layer_name(p.name))
        except Exception:
            continue
    return sorted(names, key=lambda n: n.sort_key())


def test_a_frozen_owner_is_taken_over_and_never_corrupts_the_tenant(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    k: helpers.Kubectl,
    namespace: str,
    remote: Remote,
    operator: OperatorFactory,
    control_plane: controlplane.ControlPlane,
) -> None:
    seed = suite_seed("takeover")
    rng = random.Random(seed)
    print(f"takeover: RELIABILITY_SEED={seed} RELIABILITY_TAKEOVERS={ROUNDS}", flush=True)
    tid_s = new_tenant_id()
    gen = remote.seed(testdata.TenantShape(timelines=2, layers=3, layer_size=20_000, seed=seed % 1000), tid_s)
    tid = gen.tenant_id
    factories: list[OperatorFactory] = []
    survived = 0
    leaked_by_stale = 0
    failed = True
    try:
        owner: OperatorProcess = operator.start(sync_period=0.5, extra_args=["--pageserver", "ps-0", *MANAGER_ARGS])
        k.apply(helpers.tenant_manifest("t", tid_s))
        helpers.wait_phase(k, "t", "Active", timeout=120)
        helpers.wait_for(lambda: _placement(k).get("generation") == 1, 30, "generation 1")
        with NewestIndexWatch(remote, tid) as watcher:
            for r in range(ROUNDS):
                frozen_gen = _placement(k)["generation"]
                # the owner's pageserver writes; the owner is frozen at a random point of its sync
                for _ in range(rng.randint(1, 3)):
                    tl = rng.choice(gen.timelines)
                    testdata.flush_local_layer(owner.workdir, tid, tl, rng.randint(3_000, 30_000), seed=rng.randrange(1 << 30))
                time.sleep(rng.uniform(0.0, 1.2))  # the freeze point, not a wait for anything
                os.killpg(owner.pid, signal.SIGSTOP)
                # behind the partition its pageserver goes on: flushes, and compacts a layer away
                tl = rng.choice(gen.timelines)
                testdata.flush_local_layer(owner.workdir, tid, tl, rng.randint(3_000, 30_000), seed=rng.randrange(1 << 30))
                if rng.random() < 0.7:
                    victim = _layers(owner.workdir, tid, tl)[0]
                    paths.TenantPaths(owner.workdir, tid).layer(tl, victim).unlink()
                # a new manager on another volume takes the tenant over
                nxt_factory = OperatorFactory(tmp_path / f"round-{r}", control_plane.kubeconfig, namespace, remote)
                factories.append(nxt_factory)
                nxt = nxt_factory.start(sync_period=0.5, extra_args=["--pageserver", f"ps-{r + 1}", *MANAGER_ARGS])
                helpers.wait_for(
                    lambda r=r, g=frozen_gen: _placement(k).get("attached") == f"ps-{r + 1}"  # type: ignore[misc]
                    and (_placement(k).get("generation") or 0) > g
                    and helpers.phase(k.tenant("t")) == "Active",
                    120, f"round {r}: ps-{r + 1} Active with a newer generation",
                    describe=lambda: helpers.summary(k.tenant("t")),
                )
                new_gen = _placement(k)["generation"]
                # taken over: its own index is the newest of every timeline (written at its attach)
                suffix = f"-{new_gen:08x}"
                helpers.wait_for(
                    lambda sfx=suffix: all(  # type: ignore[misc]
                        tree.newest_index_key(remote.open(), tid, tl).endswith(sfx) for tl in gen.timelines
                    ),
                    60, f"round {r}: the indexes of generation {new_gen}",
                )
                stale_events = sum(1 for e in k.events("t") if e.get("reason") == "StaleCopyRemoved")
                os.killpg(owner.pid, signal.SIGCONT)
                # the resumed one finds the tenant placed elsewhere and removes its stale copy
                tenant_dir = paths.TenantPaths(owner.workdir, tid).tenant_dir
                helpers.wait_for(
                    lambda n=stale_events, d=tenant_dir: not d.exists()  # type: ignore[misc]
                    and sum(1 for e in k.events("t") if e.get("reason") == "StaleCopyRemoved") > n,
                    60, f"round {r}: the resumed manager to remove its stale copy",
                )
                # the new owner keeps working
                tl = rng.choice(gen.timelines)
                flushed = str(testdata.flush_local_layer(nxt.workdir, tid, tl, 11_000, seed=rng.randrange(1 << 30)))

                def indexed(tl: ids.TimelineId = tl, name: str = flushed, g: int = new_gen) -> bool:
                    idx = tree.newest_index(remote.open(), tid, tl)
                    return any(str(n) == name and m.generation.value == g for n, m in idx.layers.items())

                helpers.wait_for(indexed, 60, f"round {r}: the new owner's layer indexed under generation {new_gen}")
                st = k.tenant("t")["status"]
                assert st["placement"]["attached"] == f"ps-{r + 1}" and st["phase"] == "Active", helpers.summary(k.tenant("t"))
                assert watcher.error is None, f"round {r}: {watcher.error}"
                owner.kill()  # the stale one is gone for good; the next round freezes the new owner
                owner = nxt
                survived += 1
            helpers.wait_for(lambda: watcher.polls > 5 or watcher.error is not None, 30, "a few more polls")
        assert watcher.error is None, watcher.error
        # the bucket: the newest indexes' objects, plus what the stale generations leaked
        storage = remote.open()
        named = set()
        for name, idx in common.remote_indexes(storage, tid).items():
            tlid = ids.TimelineId.parse(name)
            named.add(tree.newest_index_key(storage, tid, tlid))
            named |= {paths.remote_layer_key(tid, tlid, n, m.generation) for n, m in idx.layers.items()}
        leaked_by_stale = len(set(storage.list_objects(paths.remote_timelines_prefix(tid))) - named)
        failed = False
    finally:
        for f in factories:
            f.close(failed or bool(getattr(request.node, "rep_call", None) and request.node.rep_call.failed))
    record(
        f"takeover (seed {seed}): {survived} survived / {ROUNDS} takeovers; newest index polled {watcher.polls} "
        f"times, never backwards, never naming a missing object; {leaked_by_stale} objects left by stale "
        "generations (their uploads after the takeover, and indexes superseded before validation)"
    )
    assert survived == ROUNDS
