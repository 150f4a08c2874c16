"""Fixtures of the image tests: the operator image built by ``hack/image/build.sh``.

The tests need a Docker engine. Without one they are skipped, except under ``CI=true``, where a
missing or broken engine fails them (``hack/image/build.sh`` installs Debian's docker.io and starts
dockerd itself, so on a machine of the project's kind it is never missing). A dockerd that this
session started is stopped again at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from chart import support

IMAGE = os.environ.get("PAGESERVER_OPERATOR_TEST_IMAGE", "pageserver-operator:dev")
BUILD_SCRIPT = support.REPO / "hack" / "image" / "build.sh"
DOCKERD_SCRIPT = support.REPO / "hack" / "image" / "dockerd.sh"
BUILD_TIMEOUT = 1800


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker: needs a Docker engine (the image tests)")


@dataclass(frozen=True)
class BuiltImage:
    name: str
    build_output: str
    build_seconds: float

    @property
    def size_bytes(self) -> int:
        out = docker("image", "inspect", "--format", "{{.Size}}", self.name).stdout
        return int(out.strip())


def docker(*args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"`docker {' '.join(args)}` exited {result.returncode}:\n{result.stderr}{result.stdout}"
        )
    return result


@pytest.fixture(scope="session")
def image() -> Iterator[BuiltImage]:
    """The operator image, built (or found up to date) by hack/image/build.sh."""
    if not support.in_ci() and not (shutil.which("docker") or shutil.which("dockerd")):
        pytest.skip("no Docker engine on this machine (hack/image/dockerd.sh installs and starts one)")
    started = time.monotonic()
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT), IMAGE],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        support.unavailable("docker image", error)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        support.unavailable(
            "docker image", f"hack/image/build.sh exited {result.returncode}:\n{output[-4000:]}"
        )
    built = BuiltImage(IMAGE, output, time.monotonic() - started)
    try:
        yield built
    finally:
        if "dockerd: started" in result.stdout:
            subprocess.run(
                ["bash", str(DOCKERD_SCRIPT), "stop"], capture_output=True, timeout=120, check=False
            )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report on the item, so fixtures know at teardown whether it failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
