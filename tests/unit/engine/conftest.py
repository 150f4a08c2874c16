"""Fixtures of the in-process engine tests: a volume and a remote for one test.

- ``fake``: `helpers.fake_storage.FakeStorage` (operations held in flight, failures injected);
  anything still held is released at the end so no worker thread outlives the test.
- ``local``: ``file://`` storage (`LocalFsStorage`) under the test's temporary directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.engine_env import EngineEnv
from helpers.fake_storage import FakeStorage
from pageserver_operator.engine import remote_io
from pageserver_operator.remote import base
from pageserver_operator.remote.local_fs import LocalFsStorage


def _env(tmp_path: Path, storage: base.RemoteStorage) -> EngineEnv:
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    return EngineEnv(workdir, storage, remote_io.RemoteIO(storage, workers=4))


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[EngineEnv]:
    storage = FakeStorage()
    e = _env(tmp_path, storage)
    try:
        yield e
    finally:
        storage.release_all()
        e.close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[EngineEnv]:
    e = _env(tmp_path, LocalFsStorage(tmp_path / "remote"))
    try:
        yield e
    finally:
        e.close()
