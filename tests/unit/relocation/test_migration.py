"""`relocation.migration`: each participant's step in each phase, and the leader's repairs."""

from __future__ import annotations

from pageserver_operator.relocation import migration
from pageserver_operator.relocation.migration import Migration, Repair, Step


def _m(phase: str) -> Migration:
    return Migration("ps-a", "ps-b", phase)


def test_the_steps_of_source_and_target_in_each_phase() -> None:
    table = {
        # phase: (target's step while attached to the source, source's step, target's step once attached)
        migration.WARMING: (Step.WARM, Step.NONE, Step.WARM),
        migration.SOURCE_STALE: (Step.NONE, Step.FLUSH, Step.NONE),
        migration.CUTOVER: (Step.CUT_OVER, Step.HOLD, Step.FINISH_ATTACH),
        migration.SOURCE_DETACH: (Step.NONE, Step.NONE, Step.NONE),
    }
    for phase, (target, source, target_attached) in table.items():
        m = _m(phase)
        assert migration.step(m, "ps-b", "ps-a") is target, phase
        assert migration.step(m, "ps-a", "ps-a") is source, phase
        assert migration.step(m, "ps-b", "ps-b") is target_attached, phase
        assert migration.step(m, "ps-c", "ps-a") is Step.NONE, phase
    # the source, once the target is attached: it lets its copy go and clears the migration
    assert migration.step(_m(migration.SOURCE_DETACH), "ps-a", "ps-b") is Step.CLEAR
    assert migration.step(None, "ps-a", "ps-a") is Step.NONE


def test_the_target_keeps_its_copy_until_the_migration_is_done() -> None:
    for phase in (migration.WARMING, migration.SOURCE_STALE, migration.CUTOVER):
        assert migration.keeps_local_copy(_m(phase), "ps-b")
        assert not migration.keeps_local_copy(_m(phase), "ps-a")
    assert not migration.keeps_local_copy(_m(migration.SOURCE_DETACH), "ps-b")
    assert not migration.keeps_local_copy(None, "ps-b")


def test_a_migration_is_read_from_the_status_and_an_unknown_phase_is_none() -> None:
    st = {"attached": "ps-a", "migration": {"from": "ps-a", "to": "ps-b", "phase": "Warming", "reason": "pin"}}
    assert migration.of(st) == Migration("ps-a", "ps-b", "Warming", None, "pin", None)
    assert migration.of({"migration": {"from": "ps-a", "to": "ps-b", "phase": "Later"}}) is None
    assert migration.of({"migration": None}) is None and migration.of(None) is None


def test_the_leader_repairs_what_a_dead_participant_cannot_finish() -> None:
    both = {"ps-a": True, "ps-b": True}
    for phase in migration.PHASES:
        assert migration.repair(_m(phase), "ps-a", both) is None, phase
    # a dead target before the cutover: aborted (the source keeps the tenant)
    r = migration.repair(_m(migration.WARMING), "ps-a", {"ps-a": True, "ps-b": False})
    assert r is not None and r.clear and r.attached is None
    # a dead source before the cutover: fail over to the warm target at once
    r = migration.repair(_m(migration.SOURCE_STALE), "ps-a", {"ps-a": False, "ps-b": True})
    assert r == Repair(clear=True, attached="ps-b", why=r.why)
    # cutover: a dead target not yet attached -> abort; attached -> the ordinary failover
    assert migration.repair(_m(migration.CUTOVER), "ps-a", {"ps-a": True, "ps-b": False}) is not None
    r = migration.repair(_m(migration.CUTOVER), "ps-b", {"ps-a": True, "ps-b": False})
    assert r is not None and r.clear and r.attached is None
    # source gone after the cutover: the migration is done
    r = migration.repair(_m(migration.SOURCE_DETACH), "ps-b", {"ps-a": False, "ps-b": True})
    assert r is not None and r.clear


def test_a_migration_is_cancelled_when_what_started_it_is_gone() -> None:
    both = {"ps-a": True, "ps-b": True}
    pin = Migration("ps-a", "ps-b", migration.WARMING, reason="pin")
    assert migration.repair(pin, "ps-a", both, pin="ps-b") is None
    r = migration.repair(pin, "ps-a", both, pin="ps-a")  # pinned back
    assert r is not None and r.clear and r.attached is None
    assert migration.repair(pin, "ps-a", both, pin=None) is not None  # pin removed
    # past the cutover it completes whatever the pin says now
    assert migration.repair(Migration("ps-a", "ps-b", migration.CUTOVER, reason="pin"), "ps-b", both, pin="ps-a") is None
    drain = Migration("ps-a", "ps-b", migration.WARMING, reason="drain")
    assert migration.repair(drain, "ps-a", both, source_draining=True) is None
    assert migration.repair(drain, "ps-a", both, source_draining=False) is not None
    # a drain migration past warming finishes even if the drain stopped
    assert migration.repair(Migration("ps-a", "ps-b", migration.SOURCE_STALE, reason="drain"), "ps-a", both,
                            source_draining=False) is None
