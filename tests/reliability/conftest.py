"""Fixtures of the reliability suites (docs/reliability.md).

Reuses the operator end-to-end fixtures of ``tests/e2e/conftest.py`` (control plane, CRD,
namespace, kubectl, bucket, operator-as-subprocess) by importing them, and adds:

- `proxy`: a `faultproxy.FaultProxy` in front of the session's S3 server (no faults until a
  test sets a rate or a rule); `proxied_url` is the bucket's ``s3://`` URL through it;
- `figures`: a session-wide record of the suites' figures (kills survived / kills, faults
  injected, corpus results), printed in the terminal summary of every run.

Knobs (environment): ``RELIABILITY_FAULT_RATE`` (default 0.2), ``RELIABILITY_SEED`` (default
random, printed), ``RELIABILITY_CLI_KILLS`` / ``RELIABILITY_OPERATOR_KILLS`` (crash suite;
``python -m reliability.soak`` raises them to hundreds).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from e2e.conftest import (  # noqa: F401 -- fixtures and the report hook, re-exported for this directory
    Remote,
    crd_installed,
    k,
    kube,
    namespace,
    operator,
    pytest_runtest_makereport,
    remote,
)
from pageserver_operator.devenv import objectstore
from reliability import faultproxy
from reliability.figures import FIGURES


def fault_rate() -> float:
    return float(os.environ.get("RELIABILITY_FAULT_RATE", "0.2"))


def seed(name: str) -> int:
    """The suite's seed: RELIABILITY_SEED if set, else a random one (printed with the figures)."""
    value = os.environ.get("RELIABILITY_SEED")
    return int(value) if value else random.SystemRandom().randrange(1 << 31)


@pytest.fixture
def proxy(s3_server: objectstore.ObjectStore) -> Iterator[faultproxy.FaultProxy]:
    parts = urlsplit(s3_server.endpoint)
    assert parts.hostname is not None and parts.port is not None
    p = faultproxy.FaultProxy((parts.hostname, parts.port), seed=seed("proxy"), stall=0.7)
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def proxied_url(remote: Remote, proxy: faultproxy.FaultProxy) -> str:  # noqa: F811 -- the imported fixture
    return f"s3://{remote.bucket}?endpoint={proxy.endpoint}&region={remote.server.region}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
