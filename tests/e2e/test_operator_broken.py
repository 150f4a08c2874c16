"""A corrupt remote index makes that Tenant Broken -- with a reason and a message naming the
problem, a Warning Event, Ready=False and an automatic retry scheduled -- while another Tenant of
the same operator becomes Active as if nothing happened. A layer name with a path traversal in
an index is rejected before any file is touched: nothing is written outside
``<workdir>/tenants/<tid>``. Once the index is repaired, the retry annotation brings the Broken
tenant up at once; a Broken tenant can be deleted. Also Broken, without harm to anyone else: a
tenant id with nothing in remote storage, and a second resource naming a managed tenant id.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids

pytestmark = pytest.mark.e2e

SHAPE = testdata.TenantShape(timelines=2, layers=3, layer_size=32 << 10, seed=9)
# From <workdir>/tenants/<tid>/timelines/<tlid>/, five levels up is the test's tmp_path.
ESCAPE = "../../../../../pwned"


def test_corrupt_index_breaks_only_that_tenant(
    k: helpers.Kubectl,
    remote: Remote,
    operator: OperatorFactory,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    good, garbled, escape = new_tenant_id(), new_tenant_id(), new_tenant_id()
    op = operator.start(wait_live=False)
    for tid in (good, garbled, escape):
        remote.seed(SHAPE, tid)
    expected_good = remote.capture(good)

    # garbled: one timeline's index is cut off in the middle (not valid JSON)
    garbled_tl = sorted(remote.capture(garbled).timelines)[-1]
    garbled_key = paths.remote_index_key(ids.TenantId.parse(garbled), ids.TimelineId.parse(garbled_tl))
    garbled_original = remote.get(garbled_key)
    remote.put(garbled_key, garbled_original[:57])
    # escape: one timeline's index names a "layer" that climbs out of the timeline directory
    escape_tl = sorted(remote.capture(escape).timelines)[0]
    escape_key = paths.remote_index_key(ids.TenantId.parse(escape), ids.TimelineId.parse(escape_tl))
    doc = json.loads(remote.get(escape_key))
    doc["timeline_layers"].append(ESCAPE)
    doc["layer_metadata"][ESCAPE] = {"file_size": 4096}
    remote.put(escape_key, json.dumps(doc).encode())

    op.wait_live()
    k.apply(
        helpers.tenant_manifest("garbled", garbled),
        helpers.tenant_manifest("escape", escape),
        helpers.tenant_manifest("good", good),
    )

    cases = {
        "garbled": (garbled, garbled_key, ["not valid JSON"]),
        "escape": (escape, escape_key, ["invalid layer file name", ESCAPE]),
    }
    for name, (tid, key, words) in cases.items():
        obj = helpers.wait_phase(k, name, "Broken")
        st = obj["status"]
        assert st["reason"] == "InvalidIndexPart", helpers.summary(obj)
        for word in [key, *words]:
            assert word in st["message"], f"{name}: {word!r} not in the message {st['message']!r}"
        ready = helpers.condition(obj, "Ready")
        assert ready is not None and ready["status"] == "False" and ready["reason"] == "InvalidIndexPart"
        assert st["hasInProgressDownloads"] is False
        assert st["history"][-1]["phase"] == "Broken"
        event = helpers.wait_event(k, name, "InvalidIndexPart")
        assert event["type"] == "Warning"
        assert key in event["message"]
        retry = helpers.wait_event(k, name, "RetryScheduled")
        assert retry["type"] == "Normal"
        st = k.tenant(name)["status"]
        assert st["attempts"] == 1 and st["nextRetryTime"].endswith("Z")

        # Rejected before any file of a timeline was touched.
        tp = paths.TenantPaths(op.workdir, ids.TenantId.parse(tid))
        assert list(tp.timelines_dir.iterdir()) == [], f"{name}: timeline data written from a corrupt index"

    # The healthy tenant of the same operator is unaffected.
    k.run("wait", "--for=condition=Ready", "tenant/good", "--timeout=60s")
    helpers.assert_tenant_matches(op.workdir, expected_good, tmp_path_factory.mktemp("scratch"))
    assert op.running()
    metrics = op.metrics()
    assert helpers.metric_value(metrics, "pageserver_operator_tenants", phase="Broken") == 2
    assert helpers.metric_value(metrics, "pageserver_operator_tenants", phase="Active") == 1

    # Nothing outside <workdir>/tenants/<tid>: the volume holds the three tenant directories and
    # nothing else; the test directory holds only the volume and the operator's log.
    assert not any(p.name == "pwned" for p in tmp_path.rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["operator-1.log", "volume"]
    assert sorted(p.name for p in op.workdir.iterdir()) == [paths.TENANTS_DIR]
    assert sorted(p.name for p in (op.workdir / paths.TENANTS_DIR).iterdir()) == sorted(
        [good, garbled, escape]
    )

    # Repairing the index and asking for a retry (the annotation) brings the tenant up at once,
    # without waiting for the automatic retry's backoff.
    remote.put(garbled_key, garbled_original)
    k.run("annotate", "tenant/garbled", "--overwrite", "pageserver.dev/retry=1")
    k.run("wait", "--for=condition=Ready", "tenant/garbled", "--timeout=30s")
    helpers.assert_tenant_matches(op.workdir, remote.capture(garbled), tmp_path_factory.mktemp("scratch"))

    # A Broken tenant can be deleted: its incomplete attach is removed, the finalizer released.
    k.run("delete", "tenant/escape", "--timeout=60s")
    assert not (op.workdir / paths.TENANTS_DIR / escape).exists()
    assert sorted(p.name for p in (op.workdir / paths.TENANTS_DIR).iterdir()) == sorted([good, garbled])
    assert helpers.phase(k.tenant("good")) == "Active"


def test_unknown_tenant_and_duplicate_tenant_id(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A tenant id with nothing in remote storage is Broken (NoRemoteTimelines); a second Tenant
    resource naming a tenant id already managed on this volume is Broken (TenantIdInUse) and
    never touches the data -- deleting it leaves the owner's tenant in place and Active."""
    owned, unknown = new_tenant_id(), new_tenant_id()
    op = operator.start(wait_live=False)
    remote.seed(SHAPE, owned)
    expected = remote.capture(owned)
    op.wait_live()
    k.apply(helpers.tenant_manifest("owner", owned), helpers.tenant_manifest("nowhere", unknown))
    k.run("wait", "--for=condition=Ready", "tenant/owner", "--timeout=60s")
    k.apply(helpers.tenant_manifest("copycat", owned))

    nowhere = helpers.wait_phase(k, "nowhere", "Broken")["status"]
    assert nowhere["reason"] == "NoRemoteTimelines"
    assert f"tenants/{unknown}/timelines/" in nowhere["message"]
    copycat = helpers.wait_phase(k, "copycat", "Broken")["status"]
    assert copycat["reason"] == "TenantIdInUse"
    assert owned in copycat["message"]
    assert helpers.wait_event(k, "copycat", "TenantIdInUse")["type"] == "Warning"

    k.run("delete", "tenant/copycat", "--timeout=60s")
    assert helpers.phase(k.tenant("owner")) == "Active"
    helpers.assert_tenant_matches(op.workdir, expected, tmp_path_factory.mktemp("scratch"))
