"""Session fixtures for the real components: a control plane and an S3 server; and the tiers.

The logic lives in :mod:`pageserver_operator.devenv`; this file only scopes it. Under
``CI=true`` a component that cannot be built or started FAILS the tests that need it
(with the reason); elsewhere those tests are skipped with the reason.

Tiers. A plain run (``hack/test.sh``, CI) selects nothing away: every collected test runs.
``--fast`` (``hack/test.sh --fast``) runs only the unit and in-process tests: it deselects every
test marked ``integration``, ``e2e``, ``docker``, ``kind`` or ``prometheus``. Markers are not only what a module
declares: a test that uses the S3 server or the control plane (directly or through any fixture,
or as the ``s3`` case of the ``backend`` fixture) is marked here at collection, so a test cannot
land in the fast tier by forgetting its marker; and under ``--fast`` starting a control plane or
an S3 server fails the test with that explanation instead of making the tier slow.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from helpers.components import unavailable
from pageserver_operator.devenv import binaries, controlplane, gobuild, objectstore, processes

INTEGRATION_FIXTURES = frozenset({"s3_server", "s3_bucket"})
"""Fixtures that mean "needs the real S3 server"."""
E2E_FIXTURES = frozenset({"control_plane", "kubectl", "helm"})
"""Fixtures that mean "needs the real control plane" (or a tool built for it)."""
PROMETHEUS_FIXTURES = frozenset({"prometheus_bin"})
"""Fixtures that mean "needs promtool/prometheus" (hack/prometheus.sh)."""
SLOW_MARKERS = ("integration", "e2e", "docker", "kind", "prometheus")
"""What ``--fast`` deselects."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="the fast tier: unit and in-process tests only (deselects " + ", ".join(SLOW_MARKERS) + ")",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("fast"):

        def refuse(component: str) -> Any:
            def start(*args: object, **kwargs: object) -> NoReturn:
                pytest.fail(
                    f"the fast tier (--fast) must not start {component}: this test needs it, so mark "
                    "it (pytest.mark.integration for the S3 server, pytest.mark.e2e for the control plane)",
                    pytrace=False,
                )

            return start

        # Patched in this process only: the fast tier's.
        controlplane.ControlPlane.start = classmethod(refuse("the control plane"))  # type: ignore[assignment,method-assign]
        objectstore.ObjectStore.start = classmethod(refuse("the S3 server"))  # type: ignore[assignment,method-assign]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        if names & INTEGRATION_FIXTURES or params.get("backend") == "s3":
            item.add_marker(pytest.mark.integration)
        if names & E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)
        if names & PROMETHEUS_FIXTURES:
            item.add_marker(pytest.mark.prometheus)
    if not config.getoption("fast"):
        return
    kept = [item for item in items if not any(item.get_closest_marker(m) for m in SLOW_MARKERS)]
    dropped = [item for item in items if item not in kept]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    """etcd + kube-apiserver for the whole session (admin kubeconfig in ``.kubeconfig``)."""
    try:
        plane = controlplane.ControlPlane.start(tmp_path_factory.mktemp("controlplane"))
    except (gobuild.BuildError, processes.StartError) as error:
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
    except gobuild.BuildError as error:
        unavailable("kubectl", error)
