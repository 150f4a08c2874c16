"""Tests of `remote.factory`: a parsed config opens the right backend, and opening sends and creates
nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from pageserver_operator.remote import factory, local_fs, url
from pageserver_operator.remote.s3 import storage as s3_storage


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


def test_open_remote_builds_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = factory.open_remote(url.parse_remote_url(f"file://{tmp_path}/store", concurrency=5))
    assert isinstance(local, local_fs.LocalFsStorage)
    assert (local.root, local.concurrency) == (tmp_path / "store", 5)
    assert not (tmp_path / "store").exists(), "opening must not create anything"

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOPENREMOTE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "open-remote-secret")
    remote = factory.open_remote(
        url.parse_remote_url("s3://bucket/pfx?endpoint=http://127.0.0.1:1&region=r1", 3)
    )
    try:
        assert isinstance(remote, s3_storage.S3Storage)
        assert (remote.bucket, remote.prefix, remote.concurrency) == ("bucket", "pfx", 3)
        assert "open-remote-secret" not in remote.describe()
        assert "AKIAOPENREMOTE" not in remote.describe()
    finally:
        remote.close()
