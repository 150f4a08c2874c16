"""Generations against the real API server and S3 server (DESIGN §8.2, issue 16): every start of
the operator issues a new generation (20 restarts, 20 distinct generations, each compare-and-
swapped into ``status.placement``); the CRD's rule refuses a status write that would lower the
generation (the fencing of a stale manager's status); a restart after the pageserver compacted
layers away downloads none of them, and once synced the bucket holds exactly the newest index's
objects."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from helpers import tree
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids, layer_name

pytestmark = pytest.mark.e2e

RESTARTS = 20


def _placement(k: helpers.Kubectl, name: str) -> dict[str, object]:
    return dict(((k.tenant(name).get("status") or {}).get("placement")) or {})


def test_every_start_issues_a_new_generation(k: helpers.Kubectl, remote: Remote, operator: OperatorFactory) -> None:
    tid = new_tenant_id()
    tlid = remote.seed(testdata.TenantShape(timelines=1, layers=2, layer_size=8 << 10, seed=61), tid).timelines[0]
    k.apply(helpers.tenant_manifest("gens", tid))
    seen = []
    for n in range(1, RESTARTS + 1):
        op = operator.start(sync_period=3600, extra_args=["--pageserver", "ps-0"])

        def issued(n: int = n) -> dict[str, Any] | None:
            obj = k.tenant("gens")
            placement = (obj.get("status") or {}).get("placement") or {}
            return obj if placement.get("generation") == n and helpers.phase(obj) == "Active" else None

        obj = helpers.wait_for(issued, 60, f"generation {n}, Active", describe=lambda: helpers.summary(k.tenant_or_none("gens")))
        assert obj["status"]["placement"]["attached"] == "ps-0"
        seen.append(obj["status"]["placement"]["generation"])
        suffix = f"-{n:08x}"  # the start wrote its generation's index (before the kill: not a race)
        helpers.wait_for(lambda sfx=suffix: remote.newest_index_key(tid, tlid).endswith(sfx), 30, f"the index of generation {n}")  # type: ignore[misc]
        op.kill()
    assert seen == list(range(1, RESTARTS + 1)), seen
    # every generation wrote its own index at its start; the older ones were deleted once
    # the newer one's was validated: the newest is RESTARTS'
    storage = remote.open()
    made = storage.list_objects(paths.remote_timelines_prefix(ids.TenantId.parse(tid)))
    indexes = sorted(key.rsplit("/", 1)[1] for key in made if paths.INDEX_PART_FILE in key)
    assert indexes[-1] == f"index_part.json-{RESTARTS:08x}", indexes


def test_the_api_server_refuses_a_status_write_that_lowers_the_generation(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory
) -> None:
    tid = new_tenant_id()
    remote.seed(testdata.TenantShape(timelines=1, layers=2, layer_size=8 << 10, seed=62), tid)
    op = operator.start(sync_period=3600)
    k.apply(helpers.tenant_manifest("fenced", tid))
    helpers.wait_for(lambda: _placement(k, "fenced").get("generation") == 1, 60, "generation 1")
    helpers.wait_phase(k, "fenced", "Active")
    op.kill()
    op = operator.start(sync_period=3600)
    helpers.wait_for(lambda: _placement(k, "fenced").get("generation") == 2, 60, "generation 2")
    stale = json.dumps({"status": {"placement": {"generation": 1}, "phase": "Broken"}})
    res = k.run("patch", "tenant/fenced", "--subresource=status", "--type=merge", "-p", stale, check=False)
    assert isinstance(res, subprocess.CompletedProcess)
    assert res.returncode != 0 and "may not decrease" in (res.stderr + res.stdout), res
    assert helpers.phase(k.tenant("fenced")) == "Active" and _placement(k, "fenced")["generation"] == 2


def test_a_restart_after_compaction_downloads_none_of_the_removed_layers(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory
) -> None:
    tid_s = new_tenant_id()
    gen = remote.seed(testdata.TenantShape(timelines=1, layers=4, layer_size=16 << 10, seed=63), tid_s)
    tid, tlid = gen.tenant_id, gen.timelines[0]
    op = operator.start(sync_period=0.5)
    k.apply(helpers.tenant_manifest("compacted", tid_s))
    helpers.wait_phase(k, "compacted", "Active")
    op.kill()
    # while the operator is down the pageserver compacts: a new layer, then two old ones go
    tp = paths.TenantPaths(op.workdir, tid)
    new = testdata.flush_local_layer(op.workdir, tid, tlid, 20 << 10, seed=5)
    old = sorted(
        (layer_name.parse_layer_name(p.name) for p in tp.timeline_dir(tlid).iterdir() if p.name != paths.METADATA_FILE),
        key=lambda n: n.sort_key(),
    )[:2]
    assert new not in old
    for n in old:
        tp.layer(tlid, n).unlink()
    op = operator.start(sync_period=0.5)
    helpers.wait_for(lambda: _placement(k, "compacted").get("generation") == 2, 60, "generation 2")
    storage = remote.open()

    def settled() -> bool:
        idx = tree.newest_index(storage, tid, tlid)
        return new in idx.layers and not set(old) & set(idx.layers)

    helpers.wait_for(settled, 60, "the newest index without the compacted layers")
    assert op.metric("pageserver_operator_layer_downloads_total", tenant_id=tid_s) in (None, 0.0)
    for n in old:
        assert not tp.layer(tlid, n).exists(), f"{n} was downloaded again"

    def exactly_the_newest() -> bool:
        idx = tree.newest_index(storage, tid, tlid)
        named = {tree.newest_index_key(storage, tid, tlid)} | {
            paths.remote_layer_key(tid, tlid, n, m.generation) for n, m in idx.layers.items()
        }
        return set(storage.list_objects(paths.remote_timelines_prefix(tid))) == named

    helpers.wait_for(exactly_the_newest, 60, "the bucket to hold exactly the newest index's objects",
                     describe=lambda: str(sorted(storage.list_objects(paths.remote_timelines_prefix(tid)))))  # fmt: skip
