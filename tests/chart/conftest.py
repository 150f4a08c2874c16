"""Fixtures of the chart tests: helm (built once by hack/helm.sh), kubectl against the real
control plane, and the chart's CRD installed there."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chart import support
from e2e import helpers
from pageserver_operator.devenv import controlplane


@pytest.fixture(scope="session")
def helm() -> support.Helm:
    """helm v3.19 from ``hack/helm.sh`` (``go install``, cached); required under CI."""
    try:
        result = subprocess.run(
            ["bash", str(support.HELM_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        support.unavailable("helm", error)
    if result.returncode != 0:
        support.unavailable(
            "helm", f"hack/helm.sh exited {result.returncode}: {result.stderr.strip()[-2000:]}"
        )
    return support.Helm(Path(result.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="session")
def kube(control_plane: controlplane.ControlPlane, kubectl: Path) -> helpers.Kubectl:
    """kubectl with the admin kubeconfig of the control plane."""
    return helpers.Kubectl(kubectl, control_plane.kubeconfig)


@pytest.fixture(scope="session")
def chart_crd(kube: helpers.Kubectl) -> None:
    """The chart's CRDs (its crds/: Tenant and Pageserver), applied and Established."""
    kube.run("apply", "-f", str(support.CHART_CRDS))
    support.wait_established(kube, names=support.CRD_NAMES)


@pytest.fixture
def namespace(kube: helpers.Kubectl) -> str:
    """A fresh namespace (never deleted: without a controller-manager it would stay Terminating)."""
    name = f"chart-{uuid.uuid4().hex[:10]}"
    kube.run("create", "namespace", name)
    return name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report on the item, so fixtures know at teardown whether it failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
