"""``pageserver-operator dev``, the README's first command, end to end: its own control plane,
object store and sample tenant, here with ``--pageservers 2`` (two managers, one placement
group): the sample ends Active on one of them, both are registered Pageservers, and the env
file names the volume the sample is attached on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_dev_with_two_pageservers_attaches_the_sample_on_one_of_them(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    result = subprocess.run(
        [sys.executable, "-m", "pageserver_operator.cli", "dev", "--state-dir", str(state), "--pageservers", "2",
         "--exit-when-ready"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "tenant/sample: Active" in out and "[dev] ready in" in out, out[-2000:]
    # what it left: both volumes; the sample on the one it was placed on, and the env file names it
    env = dict(line.split("=", 1) for line in (state / "env").read_text().splitlines() if "=" in line and not line.startswith("PATH"))
    workdir = Path(env["PAGESERVER_OPERATOR_WORKDIR"])
    assert workdir.parent == state / "volumes" and workdir.name in ("dev-0", "dev-1"), workdir
    assert (workdir / "tenants" / "5ca1ab1e000000000000000000000001" / "timelines").is_dir()
    other = state / "volumes" / ("dev-1" if workdir.name == "dev-0" else "dev-0")
    assert not (other / "tenants" / "5ca1ab1e000000000000000000000001").exists()
    assert f"the sample is attached on {workdir.name}" in out
    # both managers registered their Pageserver in one placement group, and one of them led it
    logs = {n: (state / f"operator-{n}.log").read_text() for n in ("dev-0", "dev-1")}
    for n, text in logs.items():
        assert f"registered Pageserver {n} (lease namespace default)" in text, text[-2000:]
    assert sum("leading placement" in text for text in logs.values()) >= 1
