"""``pageserver-operator run`` refuses to start -- exit status non-zero and exactly one line on
stderr that says why -- when its settings are invalid or the cluster cannot be reached
(DESIGN §7): a kubeconfig pointing to a closed port, one that does not exist, a token the API
server rejects, no cluster at all (no kubeconfig, not in a pod), a relative ``--remote``, a
non-positive sync period. A person must be able to act on that line; no traceback, no log noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pageserver_operator.devenv import controlplane, processes

pytestmark = pytest.mark.e2e

EXIT_FAILED = 1
EXIT_USAGE = 2


def run_operator(
    args: list[str], tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PAGESERVER_OPERATOR_", "KUBECONFIG"))}
    base.pop("KUBERNETES_SERVICE_HOST", None)
    base.update(env or {})
    argv = [
        sys.executable, "-m", "pageserver_operator.cli", "run",
        "--workdir", str(tmp_path / "volume"), "--metrics-port", "0", "--liveness-port", "0", *args,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=base, check=False)


def one_line_reason(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    assert lines[0].startswith("pageserver-operator run: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig for ``server`` (TLS unverified: nothing answers there anyway)."""
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "nobody"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


def test_closed_port_fails_with_one_line(tmp_path: Path) -> None:
    port = processes.free_port()  # nothing listens there
    kc = kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{port}")

    result = run_operator(["--remote", f"file://{tmp_path}/remote", "--kubeconfig", str(kc)], tmp_path)

    assert result.returncode == EXIT_FAILED, result.stderr
    reason = one_line_reason(result)
    assert f"cannot reach the API server at https://127.0.0.1:{port}" in reason
    assert "Connection refused" in reason
    assert not (tmp_path / "volume" / "tenants").exists(), (
        "nothing may be written before the cluster is reached"
    )


def test_missing_kubeconfig_file_fails_with_one_line(tmp_path: Path) -> None:
    result = run_operator(
        ["--remote", f"file://{tmp_path}/remote"], tmp_path, env={"KUBECONFIG": str(tmp_path / "nope.yaml")}
    )

    assert result.returncode == EXIT_FAILED, result.stderr
    assert "cannot load cluster credentials" in one_line_reason(result)


def test_no_cluster_at_all_fails_with_one_line(tmp_path: Path) -> None:
    result = run_operator(["--remote", f"file://{tmp_path}/remote"], tmp_path)

    assert result.returncode == EXIT_FAILED, result.stderr
    assert "in-cluster" in one_line_reason(result)


def test_rejected_token_fails_with_one_line(tmp_path: Path, control_plane: controlplane.ControlPlane) -> None:
    kc = controlplane.write_kubeconfig(
        tmp_path / "kubeconfig",
        control_plane.server_url,
        control_plane.ca_file,
        "intruder",
        "not-a-valid-token",
    )

    result = run_operator(["--remote", f"file://{tmp_path}/remote", "--kubeconfig", str(kc)], tmp_path)

    assert result.returncode == EXIT_FAILED, result.stderr
    reason = one_line_reason(result)
    assert (
        f"the API server at {control_plane.server_url} rejected the credentials: 401 Unauthorized" in reason
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(
            ["--remote", "relative/path"], ["remote", "file:///absolute/path"], id="relative-remote"
        ),
        pytest.param(["--remote", "s3://"], ["remote"], id="s3-without-bucket"),
        pytest.param(
            ["--remote", "file:///r", "--sync-period", "0"],
            ["sync_period", "greater than 0"],
            id="sync-period-0",
        ),
        pytest.param(["--remote", "file:///r", "--concurrency", "0"], ["concurrency"], id="concurrency-0"),
    ],
)
def test_invalid_settings_fail_with_one_line(tmp_path: Path, args: list[str], words: list[str]) -> None:
    result = run_operator(args, tmp_path, env={"KUBECONFIG": str(tmp_path / "never-read")})

    assert result.returncode == EXIT_USAGE, result.stderr
    reason = one_line_reason(result)
    assert "invalid settings" in reason
    for word in words:
        assert word in reason
