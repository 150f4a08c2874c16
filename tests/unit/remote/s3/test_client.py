"""remote.s3.client: when the obstore path may start without botocore, and the proxy rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from pageserver_operator.remote.s3 import client


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_CREDENTIAL_EXPIRATION",
        "AWS_CONFIG_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_both_keys_in_the_environment_are_the_credentials(env: pytest.MonkeyPatch) -> None:
    env.setenv("AWS_ACCESS_KEY_ID", "id")
    env.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    creds = client.environment_credentials()
    assert creds is not None
    frozen = creds.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == ("id", "secret", None)
    assert "secret" not in repr(creds) and "secret" not in str(creds)
    env.setenv("AWS_SESSION_TOKEN", "session")
    assert client.environment_credentials().token == "session"  # type: ignore[union-attr]
    env.setenv("AWS_SECURITY_TOKEN", "security")  # botocore reads this one first
    assert client.environment_credentials().token == "security"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "setting",
    [
        {"AWS_ACCESS_KEY_ID": "id"},
        {"AWS_SECRET_ACCESS_KEY": "secret"},
        {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z"},
    ],
    ids=["no secret", "no key id", "expiring"],
)
def test_botocore_decides_when_the_environment_alone_does_not(env: pytest.MonkeyPatch, setting: dict[str, str]) -> None:
    for name, value in setting.items():
        env.setenv(name, value)
    assert client.environment_credentials() is None


def test_an_aws_config_file_leaves_it_to_botocore(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("AWS_ACCESS_KEY_ID", "id")
    env.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text("[default]\nca_bundle = /etc/ssl/ours.pem\n")
    assert client.environment_credentials() is None
    (tmp_path / ".aws" / "config").unlink()
    assert client.environment_credentials() is not None
    env.setenv("AWS_CONFIG_FILE", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").write_text("")
    assert client.environment_credentials() is None


def test_the_proxy_rule_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert not client._proxied("http://127.0.0.1:8333")
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    assert client._proxied("https://bucket.s3.eu-west-1.amazonaws.com")
    monkeypatch.setenv("no_proxy", "amazonaws.com")
    assert not client._proxied("https://bucket.s3.eu-west-1.amazonaws.com")
