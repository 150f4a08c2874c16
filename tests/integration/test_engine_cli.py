"""The CLI's contract (DESIGN §7, cli.py): exit status 0 on success, 1 when the tenant ended Broken
or the command failed, 2 for invalid usage or settings, each with one actionable line on stderr;
flags fall back to ``PAGESERVER_OPERATOR_*`` environment variables and win over them.
(file:// backend only: the backends are covered by the other test_engine_* modules.)
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from helpers import cli, tree
from pageserver_operator import testdata
from pageserver_operator.remote.local_fs import LocalFsStorage

pytestmark = pytest.mark.integration

TID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("PAGESERVER_OPERATOR_")]:
        monkeypatch.delenv(var)


def last_line(r: object) -> str:
    stderr: str = r.stderr  # type: ignore[attr-defined]
    lines = stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    assert "Traceback" not in stderr
    return lines[-1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["attach", "--workdir", "{w}", "--remote", "file://{r}", "not-a-tenant-id"], "not-a-tenant-id"),
        (["attach", "--workdir", "{w}", "--remote", "relative/path", TID], "remote"),
        (["attach", "--workdir", "{w}", "--remote", "s3://", TID], "remote"),
        (["attach", "--workdir", "{w}", TID], "remote"),
        (["attach", "--workdir", "{w}", "--remote", "file://{r}", "--concurrency", "0", TID], "concurrency"),
        (["status", "--workdir", "{w}", "XYZ"], "XYZ"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    w, r = tmp_path / "w", tmp_path / "r"
    result = cli.run([a.format(w=w, r=r) for a in args])
    assert result.returncode == cli.EXIT_USAGE, cli.describe(result)
    line = last_line(result)
    assert line.startswith(f"pageserver-operator {args[0]}: ")
    assert needle in line
    assert not w.exists(), "a usage error must not touch the volume"


def test_failures_exit_1(tmp_path: Path) -> None:
    w, r = tmp_path / "w", tmp_path / "r"
    r.mkdir()
    base = ["--workdir", str(w), "--remote", f"file://{r}"]

    res = cli.run(["status", "--workdir", str(w), TID])
    assert res.returncode == cli.EXIT_FAILED, cli.describe(res)
    assert "TenantNotFound" in last_line(res)

    res = cli.run(["sync", *base, TID])
    assert res.returncode == cli.EXIT_FAILED, cli.describe(res)
    assert f"tenant {TID} is not attached" in last_line(res)

    res = cli.run(["attach", *base, TID])
    assert res.returncode == cli.EXIT_FAILED, cli.describe(res)
    assert last_line(res).startswith(f"pageserver-operator attach: NoRemoteTimelines: tenant {TID}: ")


def test_environment_variables_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "remote"
    gen = testdata.make_remote_tenant(LocalFsStorage(root), testdata.TenantShape(timelines=2, layers=2, seed=3))
    w = tmp_path / "w"
    monkeypatch.setenv("PAGESERVER_OPERATOR_WORKDIR", str(w))
    monkeypatch.setenv("PAGESERVER_OPERATOR_REMOTE", f"file://{tmp_path / 'elsewhere'}")
    # the flag wins over the variable
    res = cli.run(["attach", "--remote", f"file://{root}", str(gen.tenant_id)])
    assert res.returncode == cli.EXIT_OK, cli.describe(res)
    tree.assert_matches_remote(w, tree.RemoteTenant.capture(LocalFsStorage(root), gen.tenant_id))
    assert not (tmp_path / "elsewhere").exists()
    # without the flag, the variable is used
    monkeypatch.setenv("PAGESERVER_OPERATOR_REMOTE", f"file://{root}")
    res = cli.run(["load", str(gen.tenant_id)])
    assert res.returncode == cli.EXIT_OK, cli.describe(res)
    res = cli.run(["detach", str(gen.tenant_id)])
    assert res.returncode == cli.EXIT_OK, cli.describe(res)
    assert list((w / "tenants").iterdir()) == []


def test_status_reads_the_remote_named_by_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`status` after sourcing the dev env file (PAGESERVER_OPERATOR_REMOTE set, no --remote) shows
    the remote consistent LSN of a synced timeline, not ``-``; without any remote it says so."""
    w, r = tmp_path / "w", tmp_path / "r"
    r.mkdir()
    gen = testdata.make_remote_tenant(
        LocalFsStorage(r),
        testdata.TenantShape(timelines=1, layers=2, layer_size=1000, seed=3),
    )
    res = cli.run(["attach", "--workdir", str(w), "--remote", f"file://{r}", str(gen.tenant_id)])
    assert res.returncode == cli.EXIT_OK, cli.describe(res)
    monkeypatch.delenv("PAGESERVER_OPERATOR_REMOTE", raising=False)
    res = cli.run(["status", "--workdir", str(w), str(gen.tenant_id)])
    assert res.returncode == cli.EXIT_OK, cli.describe(res)
    assert "remote_consistent_lsn not-read" in res.stdout and "PAGESERVER_OPERATOR_REMOTE" in res.stdout, res.stdout
    monkeypatch.setenv("PAGESERVER_OPERATOR_REMOTE", f"file://{r}")
    res = cli.run(["status", "--workdir", str(w), str(gen.tenant_id)])
    assert res.returncode == cli.EXIT_OK, cli.describe(res)
    lines = [line for line in res.stdout.splitlines() if line.startswith("  timeline ")]
    assert lines, res.stdout
    for line in lines:
        fields = line.split()
        disk = fields[fields.index("disk_consistent_lsn") + 1]
        assert fields[fields.index("remote_consistent_lsn") + 1] == disk, line


def test_status_shows_the_volume_when_the_remote_is_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With PAGESERVER_OPERATOR_REMOTE left over from a dev environment that is down, `status`
    still shows the volume (exit 0) and says the remote was not readable."""
    w, r = tmp_path / "w", tmp_path / "r"
    r.mkdir()
    gen = testdata.make_remote_tenant(LocalFsStorage(r), testdata.TenantShape(timelines=1, layers=1, layer_size=100, seed=4))
    res = cli.run(["attach", "--workdir", str(w), "--remote", f"file://{r}", str(gen.tenant_id)])
    assert res.returncode == cli.EXIT_OK, cli.describe(res)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PAGESERVER_OPERATOR_REMOTE", f"s3://gone?endpoint=http://127.0.0.1:{port}&region=us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    res = cli.run(["status", "--workdir", str(w), str(gen.tenant_id)])
    assert res.returncode == cli.EXIT_OK, cli.describe(res)
    assert "remote storage not readable" in res.stderr, cli.describe(res)
    assert f"tenant {gen.tenant_id}: Active" in res.stdout and "remote_consistent_lsn not-read" in res.stdout, res.stdout
