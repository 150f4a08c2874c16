"""`kubectl apply` of a Tenant whose data is in S3 attaches it: the operator (a separate process)
downloads the exact remote tree onto its volume and reports it in the resource's status.

Also: the status fields the operator writes survive the API server's pruning (the CRD's
structural schema declares every one of them), the printer columns and the short name work for
kubectl users, and Events tell the story.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from helpers import tree
from pageserver_operator import testdata
from pageserver_operator.api import v1alpha1
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids

pytestmark = pytest.mark.e2e

CONFIG = {"checkpointDistance": 268435456, "gcPeriod": "100 s", "pitrInterval": "7 days"}


def table(text: str) -> list[dict[str, str]]:
    """kubectl's column output as rows of {HEADER: cell} (columns are separated by 2+ spaces)."""
    import re

    lines = [line for line in text.splitlines() if line.strip()]
    headers = re.split(r"\s{2,}", lines[0].strip())
    starts = [lines[0].index(h) for h in headers]
    rows = []
    for line in lines[1:]:
        cells = [line[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(headers, cells, strict=True)))
    return rows


def test_apply_attaches_the_remote_tree_and_reports_it(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory
) -> None:
    tid = new_tenant_id()
    shape = testdata.TenantShape(timelines=3, layers=4, layer_size=96 << 10, seed=11)
    generated = remote.seed(shape, tid)
    expected = remote.capture(tid)
    assert len(expected.timelines) == 3
    op = operator.start()

    k.apply(helpers.tenant_manifest("orders", tid, CONFIG))
    k.run("wait", "--for=condition=Ready", "tenant/orders", "--timeout=60s")

    # The volume holds exactly the remote tree: same timelines and layer names, byte-identical,
    # metadata == the index's metadata_bytes, no marker, no temp files; plus the tenant config.
    tree.assert_matches_remote(op.workdir, expected, allow_config=True)
    tp = paths.TenantPaths(op.workdir, ids.TenantId.parse(tid))
    config_text = tp.config.read_text()
    assert "checkpoint_distance = 268435456" in config_text
    assert 'pitr_interval = "7 days"' in config_text
    assert [p.name for p in (op.workdir / paths.TENANTS_DIR).iterdir()] == [tid]

    obj = k.tenant("orders")
    st = obj["status"]
    assert st["phase"] == "Active"
    assert st["hasInProgressDownloads"] is False
    assert st["observedGeneration"] == obj["metadata"]["generation"]
    ready = helpers.condition(obj, "Ready")
    assert ready is not None and ready["status"] == "True", st["conditions"]
    assert ready["observedGeneration"] == obj["metadata"]["generation"]
    assert st["timelineCount"] == 3

    layers_total = expected.layer_count
    bytes_total = generated.layer_bytes
    assert st["progress"]["layersTotal"] == st["progress"]["layersDone"] == layers_total
    assert st["progress"]["bytesTotal"] == st["progress"]["bytesDone"] == bytes_total
    assert st["progress"]["percent"] == 100

    by_id = {t["timelineId"]: t for t in st["timelines"]}
    assert set(by_id) == set(expected.timelines)
    for tlid, rt in expected.timelines.items():
        t = by_id[tlid]
        meta = rt.index.metadata
        assert t.get("ancestorTimelineId") == (
            str(meta.ancestor_timeline) if meta.ancestor_timeline else None
        )
        assert t["ancestorLsn"] == str(meta.ancestor_lsn)
        assert t["diskConsistentLsn"] == str(rt.index.disk_consistent_lsn)
        assert t["remoteConsistentLsn"] == str(rt.index.disk_consistent_lsn)
        assert t["latestGcCutoffLsn"] == str(meta.latest_gc_cutoff_lsn)
        assert t["pgVersion"] == meta.pg_version
        assert t["layers"] == len(rt.layers)
        assert t["residentBytes"] == sum(rt.sizes.values())
        assert t["uploadLagBytes"] == 0
        assert t["awaitsDownload"] is False
        assert t["state"] == "Active"
    roots = [t for t in st["timelines"] if not t.get("ancestorTimelineId")]
    assert len(roots) == 1, "one root timeline, two branches of it"

    # Printer columns, through the short name; progress and reason in -o wide.
    rows = table(k.run("get", "pst").stdout)
    assert rows == [
        {"NAME": "orders", "TENANT ID": tid, "PHASE": "Active", "TIMELINES": "3", "AGE": rows[0]["AGE"]}
    ]
    wide = table(k.run("get", "tenants", "-o", "wide").stdout)
    assert wide[0]["PROGRESS"] == "100" and wide[0]["PHASE"] == "Active"
    assert {"ETA", "REASON"} <= set(wide[0])

    # No Event repeats what the status says (AttachStarted, Active): Events are for what needs
    # attention, and cost an API request per tenant.
    assert k.events("orders") == []

    # A clean attach downloads every layer exactly once.
    assert op.metric("pageserver_operator_layer_downloads_total", tenant_id=tid) == layers_total


# Every field the operator writes (status.py / v1alpha1.status_from_snapshot), by path.
STATUS_FIELDS = [
    "phase", "reason", "message", "hasInProgressDownloads", "observedGeneration", "conditions",
    "progress", "timelines", "timelineCount", "history", "attempts",
]  # fmt: skip
PROGRESS_FIELDS = [
    "layersTotal",
    "layersDone",
    "bytesTotal",
    "bytesDone",
    "startedAt",
    "etaSeconds",
    "percent",
]
CONDITION_FIELDS = ["type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"]
HISTORY_FIELDS = ["time", "phase", "reason", "message"]


def _aliases(model: type[v1alpha1.Model]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_status_fields_survive_pruning(k: helpers.Kubectl, remote: Remote, operator: OperatorFactory) -> None:
    tid = new_tenant_id()
    remote.seed(testdata.TenantShape(timelines=2, layers=3, layer_size=32 << 10, seed=5), tid)
    operator.start()
    k.apply(helpers.tenant_manifest("pruned", tid))
    helpers.wait_phase(k, "pruned", "Active")
    # The Synced condition follows once the status writer saw the (empty) upload queues.
    helpers.wait_for(
        lambda: (c := helpers.condition(k.tenant("pruned"), "Synced")) and c["status"] == "True",
        30,
        "the Synced condition",
    )

    st: dict[str, Any] = k.tenant("pruned")["status"]

    missing = [f for f in STATUS_FIELDS if f not in st]
    missing += [f"progress.{f}" for f in PROGRESS_FIELDS if f not in st["progress"]]
    for c in st["conditions"]:
        missing += [f"conditions[{c.get('type')}].{f}" for f in CONDITION_FIELDS if f not in c]
    assert {c["type"] for c in st["conditions"]} == {"Ready", "Synced"}
    for h in st["history"]:
        missing += [f"history[].{f}" for f in HISTORY_FIELDS if f not in h]
    # Every field of TimelineStatus appears (ancestorTimelineId only on the branch).
    seen = set().union(*(set(t) for t in st["timelines"]))
    missing += [f"timelines[].{f}" for f in sorted(_aliases(v1alpha1.TimelineStatus) - seen)]
    for t in st["timelines"]:
        required = _aliases(v1alpha1.TimelineStatus) - {"ancestorTimelineId"}
        missing += [f"timelines[{t['timelineId']}].{f}" for f in sorted(required - set(t))]
    assert not missing, f"status fields pruned by the API server (or never written): {missing}"
    assert any("ancestorTimelineId" in t for t in st["timelines"])

    # Values are kept with their types (a schema type mismatch would be rejected or coerced).
    assert st["phase"] == "Active" and st["reason"] == "Active" and st["message"]
    assert isinstance(st["progress"]["startedAt"], str) and st["progress"]["startedAt"].endswith("Z")
    assert st["progress"]["etaSeconds"] == 0
    assert st["attempts"] == 0
    assert [h["phase"] for h in st["history"]][-2:] == ["Attaching", "Active"]
    # Nothing is stored that the models do not declare.
    assert set(st) <= _aliases(v1alpha1.TenantStatus)
