"""`settings`: the operator's settings from the environment (``PAGESERVER_OPERATOR_<FIELD>``),
flags winning over variables, and what is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from pageserver_operator import settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(settings.ENV_PREFIX):
            monkeypatch.delenv(name)


def test_defaults_and_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PAGESERVER_OPERATOR_REMOTE", f"file://{tmp_path}")
    s = settings.OperatorSettings()
    assert (s.workdir, s.concurrency, s.sync_period, s.namespaces) == (Path("/data"), 8, 60.0, [])
    assert (s.status_interval, s.retry_initial, s.retry_max) == (1.0, 30.0, 3600.0)
    assert (s.log_format, s.log_level, s.metrics_port, s.liveness_port) == ("text", "INFO", 9090, 8080)
    monkeypatch.setenv("PAGESERVER_OPERATOR_NAMESPACES", " a, b ,,c ")
    monkeypatch.setenv("PAGESERVER_OPERATOR_CONCURRENCY", "3")
    monkeypatch.setenv("PAGESERVER_OPERATOR_WORKDIR", "relative/volume")
    s = settings.OperatorSettings()
    assert s.namespaces == ["a", "b", "c"]
    assert s.workdir == Path("relative/volume").absolute()
    config = s.remote_config()
    assert (config.kind, config.concurrency) == ("local", 3)


def test_a_flag_wins_over_its_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PAGESERVER_OPERATOR_REMOTE", "file:///from/env")
    monkeypatch.setenv("PAGESERVER_OPERATOR_SYNC_PERIOD", "5")
    s = settings.OperatorSettings(remote=f"file://{tmp_path}", sync_period=7)  # type: ignore[call-arg]
    assert (s.remote, s.sync_period) == (f"file://{tmp_path}", 7.0)


@pytest.mark.parametrize(
    "field, value",
    [("remote", "ftp://nowhere"), ("remote", "s3://"), ("concurrency", "0"), ("concurrency", "257"),
     ("sync_period", "0"), ("log_level", "TRACE"), ("metrics_port", "65536"), ("retry_max", "-1"),
     ("failover_seconds", "0"), ("capacity", "0"), ("lease_namespace", "Not_A_Namespace"), ("pageserver", "UPPER")],
)  # fmt: skip
def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, field: str, value: str) -> None:
    monkeypatch.setenv("PAGESERVER_OPERATOR_REMOTE", f"file://{tmp_path}")
    monkeypatch.setenv(f"PAGESERVER_OPERATOR_{field.upper()}", value)
    with pytest.raises(pydantic.ValidationError):
        settings.OperatorSettings()


def test_the_placement_settings_and_their_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PAGESERVER_OPERATOR_REMOTE", f"file://{tmp_path}")
    monkeypatch.setattr(settings, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")
    s = settings.OperatorSettings()
    assert (s.failover_seconds, s.capacity, s.lease_namespace) == (30.0, 1000, "default")
    ns_file = tmp_path / "namespace"
    ns_file.write_text("pageservers\n")
    monkeypatch.setattr(settings, "SERVICE_ACCOUNT_NAMESPACE", ns_file)
    assert settings.OperatorSettings().lease_namespace == "pageservers"  # the pod's own namespace
    monkeypatch.setenv("PAGESERVER_OPERATOR_FAILOVER_SECONDS", "12.5")
    monkeypatch.setenv("PAGESERVER_OPERATOR_CAPACITY", "40")
    monkeypatch.setenv("PAGESERVER_OPERATOR_LEASE_NAMESPACE", "ops")
    s = settings.OperatorSettings()
    assert (s.failover_seconds, s.capacity, s.lease_namespace) == (12.5, 40, "ops")


def test_the_remote_is_required() -> None:
    with pytest.raises(pydantic.ValidationError, match="remote"):
        settings.EngineSettings()  # type: ignore[call-arg]


def test_every_field_is_described() -> None:
    for name, field in settings.OperatorSettings.model_fields.items():
        assert field.description, name
