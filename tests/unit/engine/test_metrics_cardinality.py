"""Per-tenant series are bounded and can be turned off (README, Metrics; bench/cardinality.py
measures the same at 1,000 tenants): with per-tenant metrics on, every attached and synced tenant
adds the same few series (linear in the tenants, none left after detach); off, a tenant adds none.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import typing
from pathlib import Path

import prometheus_client
import pytest

from pageserver_operator import cli, settings
from pageserver_operator.engine import metrics

# bench/ is not importable from the tests (tests/bench shadows it): load the module by its path.
_PATH = Path(__file__).resolve().parents[3] / "bench" / "cardinality.py"
_spec = importlib.util.spec_from_file_location("bench_cardinality", _PATH)
assert _spec is not None and _spec.loader is not None
cardinality = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cardinality  # dataclasses look their module up
_spec.loader.exec_module(cardinality)


def test_series_per_tenant_are_a_constant_few_and_none_is_left_after_detach() -> None:
    small, large = cardinality.measure(3, per_tenant=True), cardinality.measure(9, per_tenant=True)
    print(f"on: {small}\non: {large}")
    assert small.per_tenant_series == large.per_tenant_series, "linear in the number of tenants"
    # Per tenant: downloads, download bytes, uploads, upload lag, and the upload queue gauge of
    # the timeline that uploaded (layer upload, index upload); the other timeline uploaded nothing.
    assert large.by_family == {
        "pageserver_operator_layer_download_bytes": 9,
        "pageserver_operator_layer_downloads": 9,
        "pageserver_operator_layer_uploads": 9,
        "pageserver_operator_upload_lag_bytes": 9,
        "pageserver_operator_upload_queue_unfinished_tasks": 18,
    }
    assert small.tenant_series_after_detach == large.tenant_series_after_detach == 0


def test_per_tenant_metrics_off_adds_no_series_per_tenant() -> None:
    small, large = cardinality.measure(3, per_tenant=False), cardinality.measure(9, per_tenant=False)
    print(f"off: {small}\noff: {large}")
    assert small.tenant_series == large.tenant_series == 0
    assert small.other_series == large.other_series, "the per-manager series do not grow with the tenants"
    assert metrics.per_tenant(), "measure restores the setting"


def test_tenant_label_follows_the_setting() -> None:
    try:
        metrics.set_per_tenant(False)
        assert metrics.tenant_label("ab" * 16) == "" and metrics.timeline_label("cd" * 16) == ""
    finally:
        metrics.set_per_tenant(True)
    assert metrics.tenant_label("ab" * 16) == "ab" * 16


def test_the_setting_from_the_environment_and_the_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(settings.ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PAGESERVER_OPERATOR_REMOTE", f"file://{tmp_path}")
    assert settings.OperatorSettings().per_tenant_metrics is True
    monkeypatch.setenv("PAGESERVER_OPERATOR_PER_TENANT_METRICS", "false")  # what the chart's perTenant sets
    assert settings.OperatorSettings().per_tenant_metrics is False
    args = cli.build_parser().parse_args(["run", "--per-tenant-metrics"])
    assert args.per_tenant_metrics is True
    assert cli.build_parser().parse_args(["run", "--no-per-tenant-metrics"]).per_tenant_metrics is False
    assert cli.build_parser().parse_args(["run"]).per_tenant_metrics is None  # the variable decides


def test_counters_of_closed_label_sets_exist_from_zero() -> None:
    """A counter series born at its first increment hides that increment from rate()/increase()
    (the dashboard test showed 0 retries/s after a retry): these exist before anything happens."""
    from pageserver_operator.remote import metrics as remote_metrics

    text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    for op in typing.get_args(remote_metrics.Op):
        assert f'pageserver_operator_remote_retries_total{{op="{op}"}}' in text, op
    for direction in typing.get_args(remote_metrics.Direction):
        assert f'pageserver_operator_remote_bytes_total{{direction="{direction}"}}' in text, direction
