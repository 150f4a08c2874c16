"""`engine.tenant.Tenant` in process (a ``file://`` remote under the test's directory): the
state machine as callers see it: transitions, history, listeners, the typed snapshot, the
state gauge, and what an operation refuses. The operations' own rules are tested by concern in
test_tenant_detach.py, test_tenant_index.py, test_tenant_reload.py, test_tenant_unreliable.py
and test_tenant_writer.py."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from helpers.engine_env import EngineEnv, make_tenant, run
from pageserver_operator.engine import snapshot
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.engine.snapshot import TenantState
from pageserver_operator.engine.tenant import Tenant


def gauge(state: TenantState) -> float:
    return REGISTRY.get_sample_value("pageserver_operator_tenants", {"phase": state.value}) or 0.0


def test_attach_then_detach_as_listeners_and_the_history_see_it(local: EngineEnv) -> None:
    gen = make_tenant(local.storage, seed=3)
    t = local.tenant(gen.tenant_id)
    seen: list[tuple[TenantState | None, str]] = []
    t.listeners.append(lambda tt: seen.append((tt.state, tt.reason)))
    assert t.local_state() == "absent" and t.snapshot().state is None
    active_before = gauge(TenantState.ACTIVE)
    run(t.attach)
    assert t.local_state() == "present"
    assert (t.state, t.reason) == (TenantState.ACTIVE, "Active")
    assert [h.phase for h in t.history] == [TenantState.ATTACHING, TenantState.ACTIVE]
    assert seen[0][0] is TenantState.ATTACHING and seen[-1] == (TenantState.ACTIVE, "Active")
    assert gauge(TenantState.ACTIVE) == active_before + 1
    snap = t.snapshot()
    assert snap.state is TenantState.ACTIVE and snap.history == t.history and snap.history is not t.history
    assert len(snap.timelines) == len(gen.timelines)

    run(lambda: t.detach(timeout=30))
    assert t.state is None and t.local_state() == "absent"
    assert t.history[-1].phase is None and t.history[-1].reason == "Detached"
    assert gauge(TenantState.ACTIVE) == active_before


def test_sync_refuses_a_tenant_that_is_not_active(local: EngineEnv) -> None:
    t = local.tenant(make_tenant(local.storage, seed=4).tenant_id)
    with pytest.raises(EngineError) as e:
        run(lambda: t.sync(timeout=5))
    assert e.value.reason == "TenantNotActive"
    assert t.state is None and t.history == []


def test_the_history_keeps_the_last_transitions_and_a_note_is_no_transition(local: EngineEnv) -> None:
    gen = make_tenant(local.storage, seed=5)
    t: Tenant = local.tenant(gen.tenant_id)
    notified: list[str] = []
    t.listeners.append(lambda tt: notified.append(tt.message))
    run(t.attach)
    for n in range(snapshot.HISTORY_LIMIT + 2):
        t.mark_broken(EngineError("InvalidIndexPart", f"failure {n}"))
    assert len(t.history) == snapshot.HISTORY_LIMIT
    assert t.history[-1].message == f"failure {snapshot.HISTORY_LIMIT + 1}"
    t.mark_broken(EngineError("InvalidIndexPart", f"failure {snapshot.HISTORY_LIMIT + 1}"))  # the same: nothing
    count = len(notified)
    t.note("retrying after error: x")
    assert (t.state, t.message) == (TenantState.BROKEN, "retrying after error: x")
    assert len(notified) == count + 1
    assert t.history[-1].message == f"failure {snapshot.HISTORY_LIMIT + 1}"
