"""The pure helpers of the control-plane benchmarks (bench/cluster.py, bench/placement.py):
what they compute from readings, without any process (the runs themselves are benchmarks,
not tests: docs/performance.md)."""

from __future__ import annotations

import pytest

from bench import cluster, placement

APISERVER_METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="pageserver.dev",resource="tenants",scope="namespace",subresource="",verb="POST",version="v1alpha1"} 200
apiserver_request_total{code="409",component="apiserver",dry_run="",group="pageserver.dev",resource="tenants",scope="namespace",subresource="",verb="POST",version="v1alpha1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="pageserver.dev",resource="tenants",scope="namespace",subresource="status",verb="PATCH",version="v1alpha1"} 41
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="namespace",subresource="",verb="PUT",version="v1"} 7
apiserver_request_duration_seconds_count{verb="GET"} 99
"""


def test_request_totals_are_summed_over_codes_by_verb_resource_and_subresource() -> None:
    got = cluster.parse_request_total(APISERVER_METRICS)
    assert got == {
        ("POST", "tenants", ""): 203.0,
        ("PATCH", "tenants", "status"): 41.0,
        ("PUT", "leases", ""): 7.0,
    }


def test_requests_delta_takes_out_the_harness_and_never_goes_negative() -> None:
    before = {("POST", "tenants", ""): 10.0, ("PUT", "leases", ""): 5.0}
    after = {("POST", "tenants", ""): 210.0, ("PUT", "leases", ""): 9.0, ("GET", "tenants", ""): 3.0}
    harness = {("POST", "tenants", ""): 200.0, ("LIST", "tenants", ""): 4.0}
    delta = cluster.requests_delta(before, after, harness)
    assert delta == {("PUT", "leases", ""): 4.0, ("GET", "tenants", ""): 3.0}
    assert cluster.by_label(delta) == {"GET tenants": 3.0, "PUT leases": 4.0}
    assert cluster.by_label({("PATCH", "tenants", "status"): 1.0}) == {"PATCH tenants status": 1.0}
    assert cluster.requests_delta(after, after) == {}


def test_a_sample_sums_the_series_whose_labels_match() -> None:
    text = """\
# HELP pageserver_operator_tenants Tenants known to this operator, by phase
# TYPE pageserver_operator_tenants gauge
pageserver_operator_tenants{phase="Active"} 7.0
pageserver_operator_tenants{phase="Attaching"} 2.0
pageserver_operator_tenants_created 1.7e+09
pageserver_operator_placements_total{kind="placed"} 40.0
pageserver_operator_placements_total{kind="failover"} 2.0
pageserver_operator_placement_leader 1.0
"""
    assert cluster.sample(text, "pageserver_operator_tenants", 'phase="Active"') == 7.0
    assert cluster.sample(text, "pageserver_operator_tenants") == 9.0
    assert cluster.sample(text, "pageserver_operator_placements_total") == 42.0
    assert cluster.sample(text, "pageserver_operator_placements_total", 'kind="failover"') == 2.0
    assert cluster.sample(text, "pageserver_operator_placement_leader") == 1.0
    assert cluster.sample(text, "absent") == 0.0
    assert cluster.sample("", "pageserver_operator_tenants") == 0.0


def test_tenant_bodies_are_named_in_order() -> None:
    body = cluster.tenant_body(12, "0" * 31 + "1")
    assert body["metadata"]["name"] == "t0012" and body["spec"] == {"tenantId": "0" * 31 + "1"}
    assert cluster.tenant_body(10000, "x")["metadata"]["name"] == "t10000"


def test_the_placement_rate_runs_from_the_first_placement_to_the_last() -> None:
    samples = [(1.0, 0.0), (2.0, 10.0), (3.0, 60.0), (4.0, 100.0), (5.0, 100.0)]
    assert placement.placement_rate(samples, 100) == {
        "first_placed_s": 2.0, "all_placed_s": 4.0, "placed": 100.0, "tenants_per_second": 50.0,
    }  # fmt: skip
    # not all placed yet (a timed-out run): the rate so far
    partial = placement.placement_rate(samples[:3], 100)
    assert partial["all_placed_s"] is None and partial["placed"] == 60.0
    assert partial["tenants_per_second"] == pytest.approx(60.0)
    assert placement.placement_rate([(1.0, 0.0)], 100)["tenants_per_second"] is None
    assert placement.placement_rate([], 100)["first_placed_s"] is None


def test_the_spread_counts_every_pageserver_and_the_unplaced() -> None:
    got = placement.spread(["ps-0", "ps-1", "ps-0", None, "ps-0"], ["ps-0", "ps-1", "ps-2"])
    assert got == {
        "per_pageserver": {"ps-0": 3, "ps-1": 1, "ps-2": 0},
        "min": 0,
        "max": 3,
        "median": 1,
        "unplaced": 1,
    }


def test_the_leaders_rss_is_told_apart_from_the_others() -> None:
    mib = 2**20
    got = placement.rss_summary({"ps-0": 100 * mib, "ps-1": 300 * mib, "ps-2": 200 * mib}, "ps-1")
    assert got == {"leader": "ps-1", "leader_mib": 300.0, "others_max_mib": 200.0, "others_median_mib": 150.0}
    assert placement.rss_summary({"ps-0": mib}, None)["leader_mib"] is None


def test_capacity_is_an_even_share() -> None:
    assert placement.capacity_for(10_000, 10) == 1000
    assert placement.capacity_for(1001, 10) == 101
    assert placement.capacity_for(0, 3) == 1


def test_per_second() -> None:
    assert placement.per_second({"PUT leases": 30.0}, 60.0) == {"PUT leases": 0.5}
    assert placement.per_second({"PUT leases": 30.0}, 0.0) == {}


def test_the_metrics_url_asks_only_for_the_named_metrics() -> None:
    assert cluster.metrics_url(9000) == "http://127.0.0.1:9000/metrics"
    assert (
        cluster.metrics_url(9000, ("a_total", "b")) == "http://127.0.0.1:9000/metrics?name[]=a_total&name[]=b"
    )
