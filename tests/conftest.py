"""Session fixtures for the real components: a control plane and an S3 server.

The logic lives in :mod:`pageserver_operator.devenv`; this file only scopes it. Under
``CI=true`` a component that cannot be built or started FAILS the tests that need it
(with the reason); elsewhere those tests are skipped with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.components import unavailable
from pageserver_operator.devenv import binaries, controlplane, objectstore, processes


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    """etcd + kube-apiserver for the whole session (admin kubeconfig in ``.kubeconfig``)."""
    try:
        plane = controlplane.ControlPlane.start(tmp_path_factory.mktemp("controlplane"))
    except (binaries.BuildError, processes.StartError) as error:
        unavailable("control plane", error)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[objectstore.ObjectStore]:
    """SeaweedFS ``weed mini`` serving S3 on 127.0.0.1 for the whole session."""
    try:
        store = objectstore.ObjectStore.start(tmp_path_factory.mktemp("objectstore"))
    except processes.StartError as error:
        unavailable("S3 server", error)
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def s3_bucket(s3_server: objectstore.ObjectStore) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket on ``s3_server``, deleted afterwards (SeaweedFS has
    few volume slots: buckets left behind would make later writes fail)."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_server.create_bucket(name)
    yield name
    try:
        s3_server.delete_bucket(name)
    except Exception as error:  # cleanup must not turn a passed test into an error
        print(f"warning: could not delete bucket {name}: {error}")


@pytest.fixture(scope="session")
def kubectl() -> Path:
    """A ``kubectl`` (cached build, else PATH, else built now); required under CI."""
    try:
        return binaries.find_kubectl()
    except binaries.BuildError as error:
        unavailable("kubectl", error)
