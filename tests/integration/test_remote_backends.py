"""The remote storage contract (tests/remote_contract.py) against the real S3 server (SeaweedFS),
plus what only a real server shows: the backend's retries under injected faults, rejected
credentials, paginated listings, parallel downloads within the concurrency limit, and the
``--remote`` URL path end to end (`parse_remote_url` → `open_remote`)."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import remote_contract
from pageserver_operator.devenv import objectstore
from pageserver_operator.remote import base, errors, factory, retry, unreliable, url
from pageserver_operator.remote.s3 import storage as s3_storage
from pageserver_operator.remote.s3 import transfer as s3_transfer
from remote_contract import Harness

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def s3_env(s3_server: objectstore.ObjectStore, monkeypatch: pytest.MonkeyPatch) -> objectstore.ObjectStore:
    """Credentials from the standard AWS variables, as in production; nothing else leaks in."""
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_server


def _storage(
    server: objectstore.ObjectStore, bucket: str, prefix: str = "", **kwargs: object
) -> s3_storage.S3Storage:
    kwargs.setdefault("retrier", retry.Retrier(sleep=lambda _: None))
    config = url.RemoteConfig(
        kind="s3", bucket=bucket, prefix=prefix, endpoint=server.endpoint, region=server.region, concurrency=8
    )
    return s3_storage.S3Storage(config, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(params=["no-prefix", "prefixed"])
def harness(
    request: pytest.FixtureRequest, s3_env: objectstore.ObjectStore, s3_bucket: str
) -> Iterator[Harness]:
    prefix = "pageserver/v1" if request.param == "prefixed" else ""
    storage = _storage(s3_env, s3_bucket, prefix)
    raw_client = s3_env.client()

    def raw_keys() -> set[str]:
        pages = raw_client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}

    try:
        yield Harness(storage, raw_keys, prefix + "/" if prefix else "", secrets=[s3_env.secret_key])
    finally:
        storage.close()


@pytest.mark.parametrize("check", remote_contract.CHECKS, ids=remote_contract.check_id)
def test_contract(harness: Harness, check: remote_contract.Check, tmp_path: Path) -> None:
    check(harness, tmp_path)


def test_url_to_backend_end_to_end(s3_env: objectstore.ObjectStore, s3_bucket: str) -> None:
    config = url.parse_remote_url(
        f"s3://{s3_bucket}/pfx?endpoint={s3_env.endpoint}&region={s3_env.region}", 4
    )
    storage = factory.open_remote(config)
    try:
        storage.put_bytes("tenants/t/timelines/tl/index_part.json", b"{}")
        assert storage.list_dirs("tenants/t/timelines/") == ["tl"]
        keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
        assert keys == ["pfx/tenants/t/timelines/tl/index_part.json"]
    finally:
        storage.close()


def test_endpoint_from_the_environment(
    s3_env: objectstore.ObjectStore, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    storage = factory.open_remote(url.parse_remote_url(f"s3://{s3_bucket}"))
    try:
        storage.put_bytes("k", b"v")
        assert storage.get_bytes("k") == b"v"
    finally:
        storage.close()


def test_wrong_secret_is_permanent_and_not_retried(
    s3_env: objectstore.ObjectStore, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    storage = _storage(s3_env, s3_bucket, direct=False)
    faults = remote_contract.BotocoreFaults(storage)
    with pytest.raises(errors.PermanentRemoteError) as raised:
        storage.get_bytes("k")
    message = str(raised.value)
    assert f"s3://{s3_bucket}/k" in message
    assert "not-the-secret" not in message
    assert faults.count("GetObject") == 1


def test_missing_bucket_is_permanent(s3_env: objectstore.ObjectStore) -> None:
    storage = _storage(s3_env, "bucket-that-was-never-created")
    with pytest.raises(errors.PermanentRemoteError, match="NoSuchBucket"):
        storage.list_dirs("")


def test_injected_faults_are_retried_by_the_backend(s3_env: objectstore.ObjectStore, s3_bucket: str) -> None:
    storage = _storage(s3_env, s3_bucket, "faults", direct=False)
    faults = remote_contract.BotocoreFaults(storage)
    data = os.urandom(3 * MiB + 1)
    faults.fail_with_connection_error("PutObject", 2)
    storage.put_bytes("layer", data)
    faults.fail_with_status("GetObject", 2, 503, "SlowDown")
    faults.break_body_after(times=1, good_bytes=MiB + 1)
    out = io.BytesIO()
    progress: list[int] = []
    assert storage.download_to("layer", out, len(data), progress.append) == len(data)
    assert out.getvalue() == data
    assert sum(progress) == len(data)
    assert faults.count("PutObject") == 3 and faults.count("GetObject") == 4


def test_paginated_listings(s3_env: objectstore.ObjectStore, s3_bucket: str) -> None:
    """botocore's pages (ours to follow): 4 keys per page."""
    storage = _storage(s3_env, s3_bucket, "pages", list_page_size=4, direct=False)
    keys = {f"t/{d:02d}/f{i}" for d in range(9) for i in range(2)}
    for key in keys:
        storage.put_bytes(key, b"k")
    assert set(storage.list_objects("t/")) == keys
    assert storage.list_dirs("t/") == [f"{d:02d}" for d in range(9)]


def _lists_recorded() -> float:
    """Successful listings recorded in the operation metrics so far."""
    labels = {"op": "list", "outcome": "success"}
    return REGISTRY.get_sample_value("pageserver_operator_remote_operation_seconds_count", labels) or 0.0


def test_string_prefix_listings_on_the_obstore_path_across_chunks(
    s3_env: objectstore.ObjectStore, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """obstore lists directories from a start key on; a plain string prefix is the contiguous run
    of keys that start with it, found across chunks (3 objects per chunk here)."""
    monkeypatch.setattr(s3_transfer, "LIST_CHUNK", 3)
    storage = _storage(s3_env, s3_bucket, "chunks")
    assert storage._direct is not None
    keys = [
        "t/a/00__x", "t/a/01__x", "t/a/index_part.jso", "t/a/index_part.json", "t/a/index_part.json-00000001",
        "t/a/index_part.json-00000002", "t/a/index_part.json-0000000a", "t/a/index_part.jsonz",
        "t/a/index_part.jsp", "t/a/z/deeper", "t/ab/index_part.json-00000009", "t/b/x",
    ]
    for key in keys:
        storage.put_bytes(key, key.encode())
    expected = {k: len(k) for k in keys if k.startswith("t/a/index_part.json")}
    before = _lists_recorded()
    assert storage.list_objects("t/a/index_part.json") == expected
    assert _lists_recorded() == before + 1  # one listing is recorded once
    assert storage.list_objects("t/a") == {k: len(k) for k in keys if k.startswith("t/a")}
    assert storage.list_objects("t/a/") == {k: len(k) for k in keys if k.startswith("t/a/")}
    assert storage.list_objects("t/a/z") == {"t/a/z/deeper": len("t/a/z/deeper")}
    assert storage.list_objects("t/c") == {}
    assert storage.list_dirs("t/") == ["a", "ab", "b"]
    assert storage.list_dirs("t/a/") == ["z"]


def test_parallel_downloads_stay_within_the_limit(
    s3_env: objectstore.ObjectStore, s3_bucket: str, tmp_path: Path
) -> None:
    storage = _storage(s3_env, s3_bucket, direct=False)
    faults = remote_contract.BotocoreFaults(storage)
    blobs = {f"layer-{i:02d}": os.urandom(256 * 1024 + i) for i in range(24)}
    for key, data in blobs.items():
        storage.put_bytes(key, data)
    faults.delay = 0.01
    errors_seen: list[BaseException] = []

    def fetch(keys: list[str]) -> None:
        try:
            for key in keys:
                with open(tmp_path / key, "wb") as out:
                    storage.download_to(key, out, len(blobs[key]))
        except BaseException as exc:
            errors_seen.append(exc)

    names = sorted(blobs)
    threads = [threading.Thread(target=fetch, args=(names[i::16],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors_seen
    assert faults.max_in_flight <= storage.concurrency
    for key, data in blobs.items():
        assert (tmp_path / key).read_bytes() == data


def test_unreliable_wrapper_over_the_real_server(s3_env: objectstore.ObjectStore, s3_bucket: str) -> None:
    inner: base.RemoteStorage = _storage(s3_env, s3_bucket)
    flaky = unreliable.UnreliableStorage(inner, fail_first=1, ops={"download"})
    inner.put_bytes("layer", b"abc")
    with pytest.raises(errors.TransientRemoteError, match="injected"):
        flaky.download_to("layer", io.BytesIO(), 3)
    out = io.BytesIO()
    assert flaky.download_to("layer", out, 3) == 3 and out.getvalue() == b"abc"
