"""The shared remote storage contract (tests/remote_contract.py) against the local backend and moto.

Each backend runs twice: with keys at the top of the store and under a prefix, so the key
mapping (``PREFIX/KEY``, never a leading slash) is checked on both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import remote_contract
from pageserver_operator.remote import local_fs, retry, url
from pageserver_operator.remote.s3 import storage as s3_storage
from remote_contract import Harness

from .conftest import FAKE_SECRET_KEY, REGION


def _local(tmp_path: Path, prefix: str) -> Harness:
    store = tmp_path / "store"
    storage = local_fs.LocalFsStorage(
        store / prefix if prefix else store, concurrency=4, retrier=retry.Retrier()
    )

    def raw_keys() -> set[str]:
        if not store.exists():
            return set()
        return {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}

    return Harness(storage, raw_keys, prefix + "/" if prefix else "")


def _moto(bucket: str, prefix: str) -> Harness:
    storage = s3_storage.S3Storage(
        url.RemoteConfig(kind="s3", bucket=bucket, prefix=prefix, region=REGION, concurrency=4),
        direct=False,  # moto in-process: only botocore's requests reach it
    )

    def raw_keys() -> set[str]:
        pages = (
            remote_contract.botocore_client(storage).get_paginator("list_objects_v2").paginate(Bucket=bucket)
        )
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}

    return Harness(
        storage,
        raw_keys,
        prefix + "/" if prefix else "",
        secrets=[FAKE_SECRET_KEY],
        overwrite_while_reading_ok=False,
    )


@pytest.fixture(params=["local", "local-prefixed", "moto", "moto-prefixed"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    prefix = "pageserver/v1" if request.param.endswith("-prefixed") else ""
    if request.param.startswith("local"):
        h = _local(tmp_path, prefix)
    else:
        h = _moto(request.getfixturevalue("moto_bucket"), prefix)
    try:
        yield h
    finally:
        h.storage.close()


@pytest.mark.parametrize("check", remote_contract.CHECKS, ids=remote_contract.check_id)
def test_contract(harness: Harness, check: remote_contract.Check, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    os.makedirs(scratch, exist_ok=True)
    check(harness, scratch)
