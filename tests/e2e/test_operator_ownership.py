"""Who owns a tenant id, end to end (issue 22, defects 1 and 3), against the real API server:

1. two Tenants naming one tenant id: the oldest owns it, also after an operator restart that
   lists the copy first ("copy" < "owner"); the copy shows its own status (Broken
   ``TenantIdInUse``, Ready False: ``kubectl wait`` on it does not succeed) and never writes its
   config into the tenant; deleting the copy while the operator is down never detaches the
   owner's tenant; a waiting copy takes over when the owner is deleted;
2. a Tenant whose finalizer is removed by hand vanishes without the delete handler (here while
   the operator is down; the in-process case, DELETED seen by a running operator, is
   tests/unit/k8s/test_handlers.py): its data stays on the volume and a new Tenant naming the
   id owns it and loads that data (not ``TenantIdInUse``).
"""

from __future__ import annotations

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids

pytestmark = pytest.mark.e2e

SHAPE = testdata.TenantShape(timelines=1, layers=2, layer_size=16 << 10, seed=17)


def refused(k: helpers.Kubectl, name: str) -> dict[str, object]:
    def check() -> dict[str, object] | None:
        obj = k.tenant_or_none(name)
        st = (obj or {}).get("status") or {}
        return st if st.get("reason") == "TenantIdInUse" else None

    st: dict[str, object] = helpers.wait_for(check, 30, f"{name} to be refused (TenantIdInUse)",
                                             describe=lambda: helpers.summary(k.tenant_or_none(name)))  # fmt: skip
    return st


def test_the_oldest_tenant_owns_its_id_across_restarts_and_a_copy_never_acts(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory
) -> None:
    tid = new_tenant_id()
    op = operator.start(wait_live=False)
    remote.seed(SHAPE, tid)
    tp = paths.TenantPaths(op.workdir, ids.TenantId.parse(tid))
    op.wait_live()
    k.apply(helpers.tenant_manifest("owner", tid, {"gcPeriod": "1 h"}))
    k.run("wait", "--for=condition=Ready", "tenant/owner", "--timeout=60s")
    k.apply(helpers.tenant_manifest("copy", tid, {"gcPeriod": "9 h"}))
    st = refused(k, "copy")
    ready = helpers.condition(k.tenant("copy"), "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "TenantIdInUse"), ready
    assert st["phase"] == "Broken" and "owner" in str(st["message"])
    assert "timelines" not in st and "progress" not in st, st
    assert [h["phase"] for h in st["history"]] == ["Broken"], st["history"]  # type: ignore[index]

    # A restart lists "copy" before "owner": the owner still owns; the copy writes nothing.
    op.kill()
    op = operator.start()
    k.run("wait", "--for=condition=Ready", "tenant/owner", "--timeout=60s")
    refused(k, "copy")
    assert 'gc_period = "1 h"' in tp.config.read_text(), tp.config.read_text()
    result = k.run("wait", "--for=condition=Ready", "tenant/copy", "--timeout=2s", check=False)
    assert result.returncode != 0, "kubectl wait succeeded on a duplicate"

    # The copy deleted while the operator is down: after the restart its delete handler runs
    # (maybe before the owner's first event) and must not detach the owner's tenant.
    op.kill()
    k.run("delete", "tenant/copy", "--wait=false")
    op = operator.start()
    helpers.wait_gone(k, "copy", timeout=60)
    assert tp.tenant_dir.is_dir() and not tp.marker.exists()
    assert helpers.phase(k.tenant("owner")) == "Active"

    # A waiting copy takes over once the owner is deleted (detached), without any retry.
    k.apply(helpers.tenant_manifest("heir", tid, {"gcPeriod": "2 h"}))
    refused(k, "heir")
    k.run("delete", "tenant/owner", "--timeout=60s")
    k.run("wait", "--for=condition=Ready", "tenant/heir", "--timeout=60s")
    assert 'gc_period = "2 h"' in tp.config.read_text()
    heir = k.tenant("heir")["status"]
    assert heir["phase"] == "Active" and heir["timelineCount"] == 1


def test_a_tenant_gone_without_the_delete_handler_releases_its_id(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory
) -> None:
    tid = new_tenant_id()
    op = operator.start(wait_live=False)
    remote.seed(SHAPE, tid)
    tp = paths.TenantPaths(op.workdir, ids.TenantId.parse(tid))
    op.wait_live()
    k.apply(helpers.tenant_manifest("vanish", tid))
    k.run("wait", "--for=condition=Ready", "tenant/vanish", "--timeout=60s")

    # (with the operator running, kopf puts a removed finalizer back at once)
    op.kill()
    k.run("delete", "tenant/vanish", "--wait=false")
    k.run("patch", "tenant/vanish", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    helpers.wait_gone(k, "vanish")
    op = operator.start()

    k.apply(helpers.tenant_manifest("again", tid))
    k.run("wait", "--for=condition=Ready", "tenant/again", "--timeout=60s")
    st = k.tenant("again")["status"]
    assert st["reason"] != "TenantIdInUse" and st["phase"] == "Active"
    assert tp.tenant_dir.is_dir(), "the data of a Tenant gone without its delete handler stays"
    assert [h["phase"] for h in st["history"]][-2:] == ["Loading", "Active"], "the data was not reused"
    assert op.running()
