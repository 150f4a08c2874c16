"""The real S3 server (SeaweedFS) answers like S3 does for what the engine relies on:
put/get, large multipart objects, delimiter listings, NotFound, idempotent bucket creation."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import boto3.s3.transfer
import botocore.exceptions
import pytest

from pageserver_operator.devenv import objectstore

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def test_put_then_get_returns_the_same_bytes(s3_server: objectstore.ObjectStore, s3_bucket: str) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="tenants/a/hello.txt", Body=b"hello, pageserver")

    got = client.get_object(Bucket=s3_bucket, Key="tenants/a/hello.txt")

    assert got["Body"].read() == b"hello, pageserver"
    assert got["ContentLength"] == len(b"hello, pageserver")


def test_multi_mib_object_round_trips_through_multipart_upload(
    s3_server: objectstore.ObjectStore, s3_bucket: str
) -> None:
    client = s3_server.client()
    payload = os.urandom(13 * MiB + 12345)  # several parts, and not a multiple of the part size
    config = boto3.s3.transfer.TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    client.upload_fileobj(io.BytesIO(payload), s3_bucket, "big/layer", Config=config)

    head = client.head_object(Bucket=s3_bucket, Key="big/layer")
    assert head["ContentLength"] == len(payload)
    assert "-" in head["ETag"], "expected a multipart ETag: the upload should have used several parts"
    body = client.get_object(Bucket=s3_bucket, Key="big/layer")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(payload).hexdigest()
    ranged = client.get_object(Bucket=s3_bucket, Key="big/layer", Range=f"bytes={6 * MiB}-{6 * MiB + 99}")
    assert ranged["Body"].read() == payload[6 * MiB : 6 * MiB + 100]


def test_listing_with_delimiter_groups_common_prefixes(
    s3_server: objectstore.ObjectStore, s3_bucket: str
) -> None:
    client = s3_server.client()
    keys = [
        "tenants/t1/timelines/a/index_part.json",
        "tenants/t1/timelines/b/index_part.json",
        "tenants/t1/timelines/b/layer",
        "tenants/t1/config",
        "tenants/t2/timelines/c/index_part.json",
    ]
    for key in keys:
        client.put_object(Bucket=s3_bucket, Key=key, Body=key.encode())

    timelines = client.list_objects_v2(Bucket=s3_bucket, Prefix="tenants/t1/timelines/", Delimiter="/")
    tenant = client.list_objects_v2(Bucket=s3_bucket, Prefix="tenants/t1/", Delimiter="/")
    everything = client.list_objects_v2(Bucket=s3_bucket)

    assert [p["Prefix"] for p in timelines.get("CommonPrefixes", [])] == [
        "tenants/t1/timelines/a/",
        "tenants/t1/timelines/b/",
    ]
    assert "Contents" not in timelines
    assert [o["Key"] for o in tenant.get("Contents", [])] == ["tenants/t1/config"]
    assert sorted(o["Key"] for o in everything.get("Contents", [])) == sorted(keys)


def test_missing_key_is_not_found(s3_server: objectstore.ObjectStore, s3_bucket: str) -> None:
    client = s3_server.client()

    with pytest.raises(client.exceptions.NoSuchKey):
        client.get_object(Bucket=s3_bucket, Key="does/not/exist")
    with pytest.raises(botocore.exceptions.ClientError) as head_error:
        client.head_object(Bucket=s3_bucket, Key="does/not/exist")
    assert head_error.value.response["Error"]["Code"] in ("404", "NotFound")


def test_create_bucket_is_idempotent(s3_server: objectstore.ObjectStore, s3_bucket: str) -> None:
    s3_server.create_bucket(s3_bucket)

    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert names.count(s3_bucket) == 1


def test_wrong_credentials_are_refused(s3_server: objectstore.ObjectStore, s3_bucket: str) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="not-the-secret",
        region_name=s3_server.region,
    )

    with pytest.raises(botocore.exceptions.ClientError) as error:
        client.list_objects_v2(Bucket=s3_bucket)
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_restart_in_the_same_state_dir_reuses_the_endpoint(tmp_path: Path) -> None:
    """The dev environment's env file stays valid across restarts: same S3 endpoint."""
    first = objectstore.ObjectStore.start(tmp_path / "store")
    try:
        endpoint = first.endpoint
        first.create_bucket("kept")
    finally:
        first.stop()
    second = objectstore.ObjectStore.start(tmp_path / "store")
    try:
        assert second.endpoint == endpoint
        assert "kept" in [b["Name"] for b in second.client().list_buckets()["Buckets"]]
    finally:
        second.stop()
