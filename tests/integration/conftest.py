"""Fixtures of the engine integration tests: one remote storage backend per parametrization.

`backend` runs each test twice: against ``file://`` under ``tmp_path``, and against the real S3
server (SeaweedFS, session fixture ``s3_server``) through ``s3://BUCKET/PREFIX?endpoint=..&region=..``
with the credentials in the standard AWS environment variables (set with monkeypatch, so CLI
subprocesses inherit them). The S3 tests are skipped (failed under CI) when the server cannot be
started, like every other test that needs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.backends import S3_PREFIX, Backend
from pageserver_operator.devenv import objectstore


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var in [v for v in os.environ if v.startswith("PAGESERVER_OPERATOR_")]:
        monkeypatch.delenv(var)  # only the flags the tests give count
    if request.param == "file":
        root = tmp_path / "remote"
        b = Backend("file", f"file://{root}", tmp_path, workdir, remote_root=root)
    else:
        server: objectstore.ObjectStore = request.getfixturevalue("s3_server")
        bucket: str = request.getfixturevalue("s3_bucket")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
        b = Backend(
            "s3",
            f"s3://{bucket}/{S3_PREFIX}?endpoint={server.endpoint}&region={server.region}",
            tmp_path,
            workdir,
            bucket=bucket,
            server=server,
        )
    try:
        yield b
    finally:
        b.close()
