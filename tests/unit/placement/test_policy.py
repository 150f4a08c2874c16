"""`placement.policy`: where each tenant goes (DESIGN §8.3)."""

from __future__ import annotations

import random

from pageserver_operator.placement.policy import Decision, Pageserver, Placer, TenantPlacement


def _t(name: str, tid: str | None = None, pin: str | None = None, attached: str | None = None, deleting: bool = False) -> TenantPlacement:
    return TenantPlacement(("ns", name), tid or name.ljust(32, "0"), pin, attached, deleting)


def _ps(*names: str, offline: tuple[str, ...] = (), **kw: object) -> list[Pageserver]:
    return [Pageserver(n, n not in offline, **kw) for n in names]  # type: ignore[arg-type]


def _never(_: str) -> bool:
    return False


def test_new_tenants_spread_evenly_counting_the_decisions_of_the_pass() -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    n = rng.randint(10, 200)
    placer = Placer(_ps("a", "b", "c"), [], _never)
    for i in range(n):
        t = _t(f"t{i}")
        d = placer.decide(t)
        assert d.attach_to is not None
        placer.commit(t, d.attach_to)
    counts = placer.counts
    assert max(counts.values()) - min(counts.values()) <= 1, (seed, counts)


def test_the_load_is_the_larger_of_disk_use_and_tenants_over_capacity() -> None:
    # a has few tenants but a full disk; b is at half its capacity
    pss = [Pageserver("a", True, capacity=100, disk_fraction=0.9), Pageserver("b", True, capacity=10, disk_fraction=0.1)]
    existing = [_t(f"x{i}", attached="b") for i in range(5)] + [_t("y", attached="a")]
    placer = Placer(pss, existing, _never)
    assert placer.load("a") == 0.9 and placer.load("b") == 0.5
    assert placer.decide(_t("new")).attach_to == "b"


def test_a_placed_tenant_stays_while_its_pageserver_is_alive() -> None:
    placer = Placer(_ps("a", "b"), [_t("t", attached="a")], _never)
    assert placer.decide(_t("t", attached="a")) == Decision()


def test_an_offline_pageservers_tenants_fail_over_to_the_least_loaded_live_one() -> None:
    existing = [_t("t1", attached="a"), _t("t2", attached="b"), _t("t3", attached="b")]
    placer = Placer(_ps("a", "b", "c", offline=("a",)), existing, _never)
    d = placer.decide(existing[0])
    assert d == Decision(attach_to="c", failover=True)


def test_draining_and_paused_pageservers_take_no_new_tenants() -> None:
    pss = [Pageserver("a", True, "Draining"), Pageserver("b", True, "Paused"), Pageserver("c", True)]
    placer = Placer(pss, [_t(f"x{i}", attached="c") for i in range(50)], _never)
    assert placer.decide(_t("new")).attach_to == "c"
    none = Placer(pss[:2], [], _never)
    d = none.decide(_t("new"))
    assert d.attach_to is None and d.reason == "NoPageserverAvailable"


def test_a_pin_is_honoured_and_a_pin_to_nothing_is_said() -> None:
    placer = Placer(_ps("a", "b"), [], _never)
    assert placer.decide(_t("p", pin="b")).attach_to == "b"
    d = placer.decide(_t("q", pin="zz"))
    assert d.attach_to is None and d.reason == "PageserverNotFound" and "zz" in (d.message or "")
    d = placer.decide(_t("r", pin="zz", attached="a"))
    assert d.attach_to is None and d.reason == "PageserverNotFound" and "stays on a" in (d.message or "")
    # pinned to an offline pageserver: not moved elsewhere, and said
    off = Placer(_ps("a", "b", offline=("b",)), [], _never)
    d = off.decide(_t("s", pin="b"))
    assert d.attach_to is None and d.reason == "PageserverOffline"
    # a pin to another live pageserver moves it
    assert placer.decide(_t("m", pin="b", attached="a")) == Decision(migrate_to="b")  # live: warmed first


def test_a_tenant_being_deleted_never_moves() -> None:
    placer = Placer(_ps("a", "b", offline=("a",)), [], _never)
    assert placer.decide(_t("d", attached="a", deleting=True)) == Decision()
    assert placer.decide(_t("e", deleting=True)) == Decision()


def test_resources_naming_one_tenant_id_go_to_the_same_pageserver() -> None:
    tid = "ab" * 16
    placer = Placer(_ps("a", "b"), [_t("first", tid=tid, attached="b")] + [_t(f"x{i}", attached="b") for i in range(9)], _never)
    assert placer.decide(_t("second", tid=tid)).attach_to == "b"


def test_an_attached_name_without_a_pageserver_resource_fails_over_only_once_timed_out() -> None:
    alive = Placer(_ps("b"), [], lambda n: False)
    assert alive.decide(_t("t", attached="gone")) == Decision()
    dead = Placer(_ps("b"), [], lambda n: n == "gone")
    assert dead.decide(_t("t", attached="gone")) == Decision(attach_to="b", failover=True)


def test_secondaries_are_kept_on_live_pageservers_other_than_the_attached_one() -> None:
    placer = Placer(_ps("a", "b", "c", offline=("c",)), [_t("x", attached="b")], _never)
    t = TenantPlacement(("ns", "s"), "s" * 32, None, "a", want_secondaries=1)
    assert placer.secondaries(t) == ("b",)  # c is offline
    settled = TenantPlacement(("ns", "s"), "s" * 32, None, "a", want_secondaries=1, secondaries=("b",))
    assert placer.secondaries(settled) is None, "nothing to change"
    # its secondary died: replaced; fewer wanted: dropped
    off = Placer(_ps("a", "b", "c", offline=("b",)), [], _never)
    assert off.secondaries(settled) == ("c",)
    assert placer.secondaries(TenantPlacement(("ns", "s"), "s" * 32, None, "a", secondaries=("b",))) == ()


def test_failover_prefers_a_live_warm_secondary() -> None:
    existing = [_t(f"x{i}", attached="c") for i in range(3)]  # c is the busiest, but it is warm
    placer = Placer(_ps("a", "b", "c", offline=("a",)), existing, _never)
    t = TenantPlacement(("ns", "s"), "s" * 32, None, "a", want_secondaries=1, secondaries=("c",))
    assert placer.decide(t) == Decision(attach_to="c", failover=True)
