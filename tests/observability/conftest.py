"""Fixtures of the observability tests: promtool and prometheus (Debian's `prometheus` package,
extracted and cached by hack/prometheus.sh, which hack/install.sh runs), helm (tests/chart) and the
e2e fixtures (a real control plane, S3 bucket and operator process: tests/e2e).

Every test here is marked ``prometheus`` (tests/conftest.py: the full tier; ``--fast`` deselects
it). Under ``CI=true`` a missing promtool/prometheus fails the tests, never skips them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from chart.conftest import helm as helm  # re-exported fixtures
from e2e.conftest import crd_installed as crd_installed
from e2e.conftest import k as k
from e2e.conftest import kube as kube
from e2e.conftest import namespace as namespace
from e2e.conftest import operator as operator
from e2e.conftest import remote as remote
from helpers.components import unavailable

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_SCRIPT = REPO / "hack" / "prometheus.sh"


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    """The directory with ``prometheus`` and ``promtool`` (hack/prometheus.sh, cached)."""
    try:
        result = subprocess.run(
            ["bash", str(PROMETHEUS_SCRIPT)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        unavailable("prometheus/promtool", error)
    if result.returncode != 0:
        unavailable(
            "prometheus/promtool", f"hack/prometheus.sh exited {result.returncode}: {result.stderr.strip()[-2000:]}"
        )
    return Path(result.stdout.strip().splitlines()[-1])
