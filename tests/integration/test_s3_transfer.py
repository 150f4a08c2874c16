"""The S3 backend's obstore data path (`remote.s3.transfer`) against the real S3 server: layer
GETs and PUTs go through it and move the same bytes botocore reads back; its failures are mapped
at once into the same errors as botocore's, with one request per attempt (counted by the fault
proxy in front of the server: a refused PUT is sent once, a 500 as often as the retry policy
allows, never once more through botocore); large objects are fetched as parallel ranges."""

from __future__ import annotations

import io
import os
import typing
from pathlib import Path
from urllib.parse import urlsplit

import obstore.exceptions
import pytest

from pageserver_operator.devenv import objectstore
from pageserver_operator.engine import download
from pageserver_operator.remote import errors, retry, url
from pageserver_operator.remote.s3 import ranged as s3_ranged
from pageserver_operator.remote.s3 import storage as s3_storage
from pageserver_operator.remote.s3 import transfer as s3_transfer
from reliability import faultproxy

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def s3_creds(s3_server: objectstore.ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")


@pytest.fixture
def storage(
    s3_server: objectstore.ObjectStore, s3_bucket: str, s3_creds: None, monkeypatch: pytest.MonkeyPatch
) -> s3_storage.S3Storage:
    return _storage(s3_bucket, s3_server.endpoint, s3_server.region, 4, retry.Retrier(sleep=lambda _: None))


def _storage(bucket: str, endpoint: str, region: str, concurrency: int, retrier: retry.Retrier) -> s3_storage.S3Storage:
    st = s3_storage.S3Storage(
        url.RemoteConfig(
            kind="s3", bucket=bucket, prefix="pfx", endpoint=endpoint, region=region, concurrency=concurrency
        ),
        retrier=retrier,
    )
    assert st._direct is not None
    return st


def _no_botocore_transfers(storage: s3_storage.S3Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: object) -> None:
        raise AssertionError(f"a layer transfer went through botocore: {sorted(kwargs)}")

    monkeypatch.setattr(storage._client, "get_object", refuse)
    monkeypatch.setattr(storage._client, "put_object", refuse)


def test_download_and_upload_go_through_obstore_and_move_the_same_bytes(
    storage: s3_storage.S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    assert storage._direct is not None
    direct = storage._direct
    real_get, real_put = direct.get, direct.put_file
    monkeypatch.setattr(direct, "get", lambda key: (calls.append("get"), real_get(key))[1])
    monkeypatch.setattr(direct, "put_file", lambda *a: (calls.append("put"), real_put(*a))[1])
    for size in (0, 1, 16 * 1024, 3 * MiB + 17):
        data = os.urandom(size)
        src = tmp_path / f"src-{size}"
        src.write_bytes(data)
        storage.upload_file(f"layers/{size}", src, size)
        out = io.BytesIO()
        progress: list[int] = []
        assert storage.download_to(f"layers/{size}", out, size, progress.append) == size
        assert out.getvalue() == data and sum(progress) == size
        assert storage.get_bytes(f"layers/{size}") == data  # botocore reads what we wrote
    assert calls == ["put", "get"] * 4


def test_errors_are_mapped_without_botocore(
    storage: s3_storage.S3Storage, s3_server: objectstore.ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.put_bytes("layer", b"abc")
    _no_botocore_transfers(storage, monkeypatch)
    with pytest.raises(errors.NotFound):
        storage.download_to("missing", io.BytesIO(), None)
    with pytest.raises(errors.PermanentRemoteError, match="size mismatch"):
        storage.download_to("layer", io.BytesIO(), 4)
    other = s3_storage.S3Storage(
        url.RemoteConfig(
            kind="s3",
            bucket="no-such-bucket-direct",
            endpoint=s3_server.endpoint,
            region=s3_server.region,
            concurrency=1,
        )
    )
    assert other._direct is not None
    _no_botocore_transfers(other, monkeypatch)
    with pytest.raises(errors.PermanentRemoteError, match="does not exist"):
        other.download_to("k", io.BytesIO(), None)
    other.close()


def test_wrong_credentials_are_permanent_in_one_request(
    s3_server: objectstore.ObjectStore, s3_bucket: str, s3_creds: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    st = s3_storage.S3Storage(
        url.RemoteConfig(
            kind="s3", bucket=s3_bucket, endpoint=s3_server.endpoint, region=s3_server.region, concurrency=1
        )
    )
    assert st._direct is not None
    _no_botocore_transfers(st, monkeypatch)
    with pytest.raises(
        errors.PermanentRemoteError, match=r"SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"
    ) as raised:
        st.download_to("k", io.BytesIO(), None)
    assert "not-the-secret" not in str(raised.value)
    st.close()


@pytest.fixture
def proxy(s3_server: objectstore.ObjectStore) -> typing.Iterator[faultproxy.FaultProxy]:
    parts = urlsplit(s3_server.endpoint)
    assert parts.hostname is not None and parts.port is not None
    p = faultproxy.FaultProxy((parts.hostname, parts.port), seed=19).start()
    try:
        yield p
    finally:
        p.stop()


def _proxied(
    s3_server: objectstore.ObjectStore, s3_bucket: str, proxy: faultproxy.FaultProxy
) -> s3_storage.S3Storage:
    return _storage(
        s3_bucket, proxy.endpoint, s3_server.region, 2,
        retry.Retrier(retry.RetryPolicy(max_attempts=3), sleep=lambda _: None),
    )  # fmt: skip


def test_each_attempt_is_one_request_and_the_retry_budget_holds(
    s3_server: objectstore.ObjectStore,
    s3_bucket: str,
    s3_creds: None,
    proxy: faultproxy.FaultProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    st = _proxied(s3_server, s3_bucket, proxy)
    _no_botocore_transfers(st, monkeypatch)
    src = tmp_path / "layer"
    src.write_bytes(os.urandom(100_000))
    try:
        # a 500 on every GET: exactly max_attempts GETs, then a transient error
        proxy.add_rule(faultproxy.Rule("error", method="GET", path=r"/pfx/a$", times=100))
        before = proxy.snapshot().by_method["GET"]
        with pytest.raises(errors.TransientRemoteError, match="still failing after 3 attempts"):
            st.download_to("a", io.BytesIO(), None)
        assert proxy.snapshot().by_method["GET"] - before == 3
        # a refused PUT is permanent: its body is sent once, never again through botocore
        proxy.add_rule(faultproxy.Rule("denied", method="PUT", path=r"/pfx/b$", times=100))
        before = proxy.snapshot().by_method["PUT"]
        with pytest.raises(errors.PermanentRemoteError, match="AccessDenied"):
            st.upload_file("b", src, 100_000)
        assert proxy.snapshot().by_method["PUT"] - before == 1
        # a connection reset before the answer: transient, retried, then the bytes arrive
        proxy.add_rule(faultproxy.Rule("reset_request", method="PUT", path=r"/pfx/c$", times=1))
        before = proxy.snapshot().by_method["PUT"]
        st.upload_file("c", src, 100_000)
        assert proxy.snapshot().by_method["PUT"] - before == 2
        proxy.add_rule(faultproxy.Rule("reset_response", method="GET", path=r"/pfx/c$", times=1))
        out = io.BytesIO()
        assert st.download_to("c", out, 100_000) == 100_000 and out.getvalue() == src.read_bytes()
    finally:
        st.close()


# ---- ranged GETs of large objects ---------------------------------------------------------------

PART = 256 * 1024


@pytest.fixture
def ranged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large objects are anything from 1 MiB here, parts of 256 KiB (same code, small data)."""
    monkeypatch.setattr(s3_ranged, "RANGED_MIN", MiB)
    monkeypatch.setattr(s3_ranged, "RANGE_PART", PART)


def _temp_writer(path: Path) -> tuple[download._FdWriter, int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    return download._FdWriter(fd), fd


def _download_and_compare(storage: s3_storage.S3Storage, path: Path, data: bytes) -> None:
    """Download ``big`` into ``path`` through the engine's writer: the same bytes, and the
    progress reported sums to the size (a retried part takes its bytes back)."""
    out, fd = _temp_writer(path)
    progress: list[int] = []
    try:
        assert storage.download_to(
            "big", typing.cast(typing.BinaryIO, out), len(data), progress.append
        ) == len(data)
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    assert sum(progress) == len(data)


def _counting_range_gets(
    storage: s3_storage.S3Storage, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[int, int]]:
    assert storage._direct is not None
    direct = storage._direct
    real = direct.get_range
    calls: list[tuple[int, int]] = []

    def counted(key: str, start: int, length: int) -> s3_transfer.TransferStream:
        calls.append((start, length))
        return real(key, start, length)

    monkeypatch.setattr(direct, "get_range", counted)
    return calls


def test_large_objects_are_fetched_as_parallel_ranges_written_at_their_offsets(
    storage: s3_storage.S3Storage, ranged: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 4 * PART + 12345  # a short last part
    data = os.urandom(size)
    storage.put_bytes("big", data)
    calls = _counting_range_gets(storage, monkeypatch)
    _download_and_compare(storage, tmp_path / "big", data)
    assert sorted(calls) == [(i * PART, min(PART, size - i * PART)) for i in range(5)]
    # Below the threshold, or into a file object that cannot write at an offset: one whole GET.
    small = io.BytesIO()
    assert storage.download_to("big", small, size) == size and small.getvalue() == data
    assert len(calls) == 5


def test_a_ranged_download_checks_the_object_size_of_every_part(
    storage: s3_storage.S3Storage, ranged: None, tmp_path: Path
) -> None:
    size = 3 * PART
    storage.put_bytes("big", os.urandom(size))
    out, fd = _temp_writer(tmp_path / "big")
    try:
        # The index says one byte less (or more, or absurdly more) than the object has: refused,
        # not truncated, and nothing sized by the claim (parts are planned as slots free up).
        for expected in (size - 1, size + 1, 2**63):
            with pytest.raises(
                errors.PermanentRemoteError, match=f"size mismatch.*expected {expected} bytes, got {size}"
            ):
                storage.download_to("big", typing.cast(typing.BinaryIO, out), expected)
        with pytest.raises(errors.NotFound):
            storage.download_to("missing", typing.cast(typing.BinaryIO, out), size)
    finally:
        os.close(fd)


def test_a_failed_part_is_retried_alone(
    storage: s3_storage.S3Storage, ranged: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 4 * PART
    data = os.urandom(size)
    storage.put_bytes("big", data)
    assert storage._direct is not None
    direct = storage._direct
    real = direct.get_range
    calls: list[int] = []
    failures = [1]

    def flaky(key: str, start: int, length: int) -> s3_transfer.TransferStream:
        calls.append(start)
        if start == 2 * PART and failures:
            failures.pop()
            raise obstore.exceptions.GenericError("Generic S3 error: HTTP error: injected")
        return real(key, start, length)

    monkeypatch.setattr(direct, "get_range", flaky)
    _download_and_compare(storage, tmp_path / "big", data)
    assert sorted(calls) == [0, PART, 2 * PART, 2 * PART, 3 * PART]


def test_a_part_that_keeps_failing_fails_the_download_and_stops_the_others(
    storage: s3_storage.S3Storage, ranged: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 8 * PART
    storage.put_bytes("big", os.urandom(size))
    assert storage._direct is not None
    direct = storage._direct

    def broken(key: str, start: int, length: int) -> s3_transfer.TransferStream:
        raise obstore.exceptions.GenericError("Generic S3 error: HTTP error: injected")

    monkeypatch.setattr(direct, "get_range", broken)
    out, fd = _temp_writer(tmp_path / "big")
    try:
        with pytest.raises(errors.TransientRemoteError, match="still failing"):
            storage.download_to("big", typing.cast(typing.BinaryIO, out), size)
    finally:
        os.close(fd)
