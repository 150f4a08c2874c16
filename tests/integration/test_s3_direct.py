"""The S3 backend's direct transfer path (`remote.s3.direct`) against the real S3 server: it is
used when nothing intercepts the client's requests, moves the same bytes as botocore, keeps the
same errors (answers other than 200 are redone through botocore), and gives way to botocore as
soon as something hooks into the client (moto, stubbers, the fault injection of these tests)."""

from __future__ import annotations

import io
import os
import typing
from pathlib import Path

import pytest

from pageserver_operator.devenv import objectstore
from pageserver_operator.engine import download
from pageserver_operator.remote import errors, retry, url
from pageserver_operator.remote.s3 import direct as s3_direct
from pageserver_operator.remote.s3 import ranged as s3_ranged
from pageserver_operator.remote.s3 import storage as s3_storage

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
    st = s3_storage.S3Storage(
        url.RemoteConfig(
            kind="s3",
            bucket=s3_bucket,
            prefix="pfx",
            endpoint=s3_server.endpoint,
            region=s3_server.region,
            concurrency=4,
        ),
        retrier=retry.Retrier(sleep=lambda _: None),
    )
    assert st._direct is not None
    return st


def test_download_and_upload_go_direct_and_move_the_same_bytes(
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


def test_errors_are_botocores(storage: s3_storage.S3Storage, s3_server: objectstore.ObjectStore) -> None:
    with pytest.raises(errors.NotFound):
        storage.download_to("missing", io.BytesIO(), None)
    storage.put_bytes("layer", b"abc")
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
    with pytest.raises(errors.PermanentRemoteError, match="does not exist"):
        other.download_to("k", io.BytesIO(), None)
    other.close()


def test_wrong_credentials_fall_back_to_botocores_error(
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
    with pytest.raises(errors.PermanentRemoteError) as raised:
        st.download_to("k", io.BytesIO(), None)
    assert "not-the-secret" not in str(raised.value)
    st.close()


def test_direct_is_off_without_endpoint_or_with_a_proxy(
    s3_server: objectstore.ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    assert s3_storage.S3Storage(url.RemoteConfig(kind="s3", bucket="bkt", region="us-east-1"))._direct is None
    assert (
        s3_storage.S3Storage(
            url.RemoteConfig(kind="s3", bucket="bkt", endpoint=s3_server.endpoint, region="us-east-1"),
            direct=False,
        )._direct
        is None
    )
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert (
        s3_storage.S3Storage(
            url.RemoteConfig(kind="s3", bucket="bkt", endpoint="http://10.9.8.7:8333", region="us-east-1")
        )._direct
        is None
    )


def test_a_dropped_connection_is_transient_and_retried(
    storage: s3_storage.S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.put_bytes("layer", b"y" * 1000)
    assert storage._direct is not None
    direct = storage._direct
    real_get = direct.get
    failures = [1]

    def flaky(key: str) -> s3_direct.GetStream:
        if failures:
            failures.pop()
            raise s3_direct.DirectError("injected")
        return real_get(key)

    monkeypatch.setattr(direct, "get", flaky)
    assert storage.download_to("layer", io.BytesIO(), 1000) == 1000


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


def _counting_range_gets(storage: s3_storage.S3Storage, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    assert storage._direct is not None
    direct = storage._direct
    real = direct.get_range
    calls: list[tuple[int, int]] = []

    def counted(key: str, start: int, length: int) -> s3_direct.GetStream:
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

    def flaky(key: str, start: int, length: int) -> s3_direct.GetStream:
        calls.append(start)
        if start == 2 * PART and failures:
            failures.pop()
            raise s3_direct.DirectError("injected")
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

    def broken(key: str, start: int, length: int) -> s3_direct.GetStream:
        raise s3_direct.DirectError("injected")

    monkeypatch.setattr(direct, "get_range", broken)
    out, fd = _temp_writer(tmp_path / "big")
    try:
        with pytest.raises(errors.TransientRemoteError, match="still failing"):
            storage.download_to("big", typing.cast(typing.BinaryIO, out), size)
    finally:
        os.close(fd)
