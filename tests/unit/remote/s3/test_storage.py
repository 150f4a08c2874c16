"""Tests of `remote.s3.storage` (and the client `remote.s3.client` builds) against moto, at unit
level: the client configuration (pool, no botocore retries, path style), one GET and no HEAD per
download, the concurrency limit, pagination, retries of injected connection errors, 5xx and
mid-stream resets, and how failures reach the caller."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import remote_contract
from pageserver_operator.remote import errors, retry, url
from pageserver_operator.remote.s3 import storage as s3_storage

from ..conftest import FAKE_SECRET_KEY, REGION, RecordingSleep

MiB = 1024 * 1024


@pytest.fixture
def storage(moto_bucket: str, fast_retrier: retry.Retrier) -> s3_storage.S3Storage:
    return s3_storage.S3Storage(
        url.RemoteConfig(kind="s3", bucket=moto_bucket, prefix="pfx", region=REGION, concurrency=3),
        retrier=fast_retrier,
        direct=False,  # moto in-process: only botocore's requests reach it
    )


@pytest.fixture
def faults(storage: s3_storage.S3Storage) -> remote_contract.BotocoreFaults:
    return remote_contract.BotocoreFaults(storage)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_client_configuration(aws_env: None) -> None:
    storage = s3_storage.S3Storage(
        url.parse_remote_url("s3://bucket/p/?endpoint=http://127.0.0.1:1&region=eu-west-1", concurrency=12)
    )
    config: Any = remote_contract.botocore_client(storage).meta.config
    assert config.max_pool_connections >= 12
    assert config.retries is not None and config.retries["total_max_attempts"] == 1
    assert config.s3 is not None and config.s3["addressing_style"] == "path"
    assert config.tcp_keepalive is True
    assert config.connect_timeout and config.read_timeout
    assert remote_contract.botocore_client(storage).meta.region_name == "eu-west-1"
    assert storage.prefix == "p"
    assert storage.describe() == "s3://bucket/p (endpoint http://127.0.0.1:1, region eu-west-1)"
    storage.close()


def test_download_is_one_get_and_never_a_head(
    storage: s3_storage.S3Storage, faults: remote_contract.BotocoreFaults
) -> None:
    storage.put_bytes("layer", b"x" * 100)
    faults.sent.clear()
    assert storage.download_to("layer", io.BytesIO(), 100) == 100
    assert storage.get_bytes("layer") == b"x" * 100
    assert faults.sent == ["GetObject", "GetObject"]


def test_content_length_mismatch_fails_before_reading_the_body(
    storage: s3_storage.S3Storage, faults: remote_contract.BotocoreFaults
) -> None:
    storage.put_bytes("layer", b"x" * 100)
    out = io.BytesIO()
    with pytest.raises(
        errors.PermanentRemoteError, match=r"s3://unit-bucket/pfx/layer: expected 99 bytes, got 100"
    ):
        storage.download_to("layer", out, 99)
    assert out.getvalue() == b""
    assert faults.count("GetObject") == 1


def test_requests_never_exceed_the_concurrency(
    storage: s3_storage.S3Storage, faults: remote_contract.BotocoreFaults
) -> None:
    for i in range(12):
        storage.put_bytes(f"obj{i}", b"o")
    faults.delay = 0.02
    threads = [threading.Thread(target=storage.get_bytes, args=(f"obj{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert faults.max_in_flight == 3


def test_listings_follow_continuation_tokens(moto_bucket: str, fast_retrier: retry.Retrier) -> None:
    storage = s3_storage.S3Storage(
        url.RemoteConfig(kind="s3", bucket=moto_bucket, region=REGION, concurrency=2),
        retrier=fast_retrier,
        list_page_size=3,
        direct=False,
    )
    faults = remote_contract.BotocoreFaults(storage)
    keys = {f"t/{d}/f{i}" for d in "abcdefg" for i in range(2)}
    for key in keys:
        storage.put_bytes(key, b"k")
    faults.sent.clear()
    assert set(storage.list_objects("t/")) == keys
    assert faults.count("ListObjectsV2") == 5  # 14 keys, 3 per page
    assert storage.list_dirs("t/") == list("abcdefg")
    faults.fail_with_connection_error("ListObjectsV2", 2)  # a failed page is retried, not the listing
    assert set(storage.list_objects("t/")) == keys


def test_connection_errors_are_retried(
    storage: s3_storage.S3Storage, faults: remote_contract.BotocoreFaults, sleeps: RecordingSleep
) -> None:
    storage.put_bytes("k", b"v")
    faults.fail_with_connection_error("GetObject", 3)
    before = _sample("pageserver_operator_remote_retries_total", op="get")
    assert storage.get_bytes("k") == b"v"
    assert len(sleeps.delays) == 3
    assert _sample("pageserver_operator_remote_retries_total", op="get") - before == 3


def test_retries_run_out_into_a_transient_error(
    storage: s3_storage.S3Storage, faults: remote_contract.BotocoreFaults, sleeps: RecordingSleep
) -> None:
    faults.fail_with_connection_error("PutObject", 100)
    with pytest.raises(errors.TransientRemoteError, match="8 attempts") as raised:
        storage.put_bytes("k", b"v")
    assert "s3://unit-bucket/pfx/k" in str(raised.value) and "EndpointConnectionError" in str(raised.value)
    assert faults.count("PutObject") == 8, "botocore must not retry on its own"
    assert len(sleeps.delays) == 7


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (503, "SlowDown"),
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
        (400, "RequestTimeout"),
        (429, "X"),
    ],
)
def test_server_side_transient_errors_are_retried(
    storage: s3_storage.S3Storage, faults: remote_contract.BotocoreFaults, status: int, code: str
) -> None:
    storage.put_bytes("k", b"v")
    faults.fail_with_status("GetObject", 2, status, code)
    assert storage.get_bytes("k") == b"v"
    assert faults.count("GetObject") == 3


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (403, "AccessDenied"),
        (403, "InvalidAccessKeyId"),
        (403, "SignatureDoesNotMatch"),
        (400, "InvalidArgument"),
        (404, "NoSuchBucket"),
    ],
)
def test_rejections_are_permanent_and_name_bucket_key_and_code(
    storage: s3_storage.S3Storage, faults: remote_contract.BotocoreFaults, status: int, code: str
) -> None:
    faults.fail_with_status("GetObject", 1, status, code)
    with pytest.raises(errors.PermanentRemoteError) as raised:
        storage.download_to("tenants/t/layer", io.BytesIO(), 1)
    message = str(raised.value)
    assert "s3://unit-bucket/pfx/tenants/t/layer" in message and code in message
    assert faults.count("GetObject") == 1


def test_missing_bucket_is_permanent(aws_env: None, moto_bucket: str) -> None:
    storage = s3_storage.S3Storage(
        url.RemoteConfig(kind="s3", bucket="no-such-bucket", region=REGION, concurrency=1), direct=False
    )
    for call in (
        lambda: storage.get_bytes("k"),
        lambda: storage.list_dirs(""),
        lambda: storage.put_bytes("k", b""),
    ):
        with pytest.raises(errors.PermanentRemoteError, match="bucket 'no-such-bucket' does not exist"):
            call()


def test_a_reset_mid_stream_restarts_the_download_cleanly(
    storage: s3_storage.S3Storage, faults: remote_contract.BotocoreFaults
) -> None:
    data = bytes(range(256)) * (10 * 1024)  # 2.5 MiB
    storage.put_bytes("layer", data)
    faults.break_body_after(times=2, good_bytes=MiB + 100)
    out = io.BytesIO()
    calls: list[int] = []

    assert storage.download_to("layer", out, len(data), calls.append) == len(data)

    assert out.getvalue() == data
    assert faults.count("GetObject") == 3
    assert sum(calls) == len(data), "bytes of abandoned attempts are taken back"
    assert [c for c in calls if c < 0] == [-(MiB + 100), -(MiB + 100)]


def test_errors_of_the_callers_out_file_are_not_remote_errors(
    storage: s3_storage.S3Storage, sleeps: RecordingSleep
) -> None:
    storage.put_bytes("layer", b"x" * 10)

    class FullDisk(io.BytesIO):
        def write(self, data: object) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError) as raised:
        storage.download_to("layer", FullDisk(), 10)
    assert not isinstance(raised.value, errors.RemoteError)
    assert sleeps.delays == []


def test_missing_credentials_are_permanent_and_say_what_to_set(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage = s3_storage.S3Storage(
        url.RemoteConfig(
            kind="s3", bucket="bucket", endpoint="http://127.0.0.1:9", region=REGION, concurrency=1
        )
    )
    with pytest.raises(errors.PermanentRemoteError, match="AWS_ACCESS_KEY_ID"):
        storage.get_bytes("k")


def test_upload_file_sends_exact_content_length(
    storage: s3_storage.S3Storage, faults: remote_contract.BotocoreFaults, tmp_path: Path
) -> None:
    source = tmp_path / "layer"
    source.write_bytes(b"y" * 5000)
    faults.fail_with_connection_error("PutObject", 1)  # the retry re-opens and re-sends the file
    storage.upload_file("layer", source, 5000)
    assert storage.list_objects("") == {"layer": 5000}
    assert storage.get_bytes("layer") == b"y" * 5000


def test_secrets_are_not_in_describe_or_messages(
    storage: s3_storage.S3Storage, faults: remote_contract.BotocoreFaults
) -> None:
    faults.fail_with_status("GetObject", 1, 403, "SignatureDoesNotMatch")
    with pytest.raises(errors.PermanentRemoteError) as raised:
        storage.get_bytes("k")
    assert FAKE_SECRET_KEY not in str(raised.value)
    assert FAKE_SECRET_KEY not in storage.describe()
