"""The CLI rides out a remote storage outage (issue 14, defect 13), against the real S3 server
behind the fault proxy (`reliability.faultproxy`).

- An S3 endpoint that refuses connections for longer than one request's retry budget (8
  attempts, about 9 s) in the middle of ``attach`` no longer ends it with exit 1: the command
  says "retrying" on stderr and ends Active with the exact tree once the endpoint is back.
- The same outage lasting longer than ``--retry-timeout`` ends the command with exit 1 and the
  transient reason (here 0 s, from ``PAGESERVER_OPERATOR_RETRY_TIMEOUT``).
- A permanent error (a corrupt index) still ends the command at once, without "retrying",
  whatever the retry timeout.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import cli, tree
from pageserver_operator import testdata
from pageserver_operator.devenv import objectstore
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids
from pageserver_operator.remote import factory, url
from reliability import faultproxy

pytestmark = pytest.mark.integration

#: Long enough through a proxy that delays every request to act mid-attach.
SHAPE = testdata.TenantShape(timelines=2, layers=6, layer_size=16 << 10, sizes=[32 << 10] * 30, seed=13)
OUTAGE = 12.0  # longer than one request's retry budget (about 9 s)


@pytest.fixture
def proxy(s3_server: objectstore.ObjectStore) -> Iterator[faultproxy.FaultProxy]:
    parts = urlsplit(s3_server.endpoint)
    assert parts.hostname is not None and parts.port is not None
    p = faultproxy.FaultProxy((parts.hostname, parts.port), seed=1)
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def env(s3_server: objectstore.ObjectStore, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for var in [v for v in os.environ if v.startswith(("PAGESERVER_OPERATOR_", "AWS_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    yield {"bucket": s3_bucket, "region": s3_server.region, "endpoint": s3_server.endpoint}


def s3_url(env: dict[str, str], endpoint: str) -> str:
    return f"s3://{env['bucket']}?endpoint={endpoint}&region={env['region']}"


def layers_on(tp: paths.TenantPaths) -> int:
    if not tp.timelines_dir.is_dir():
        return 0
    return sum(1 for d in tp.timelines_dir.iterdir() for f in d.iterdir() if f.name[0] in "0123456789ABCDEF" and "." not in f.name)


def wait_for(pred: object, timeout: float, what: str) -> None:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def seeded(env: dict[str, str]) -> tuple[ids.TenantId, tree.RemoteTenant]:
    storage = factory.open_remote(url.parse_remote_url(s3_url(env, env["endpoint"])))
    try:
        gen = testdata.make_remote_tenant(storage, SHAPE)
        return gen.tenant_id, tree.RemoteTenant.capture(storage, gen.tenant_id)
    finally:
        storage.close()


def attach_through_outage(
    tmp_path: Path, env: dict[str, str], proxy: faultproxy.FaultProxy, extra: list[str]
) -> tuple[subprocess.CompletedProcess[str], float, ids.TenantId, tree.RemoteTenant, Path]:
    tid, remote = seeded(env)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    proxy.weights = {"latency": 1.0}
    proxy.latency = (0.05, 0.1)
    proxy.set_rate(1.0)
    args = [
        "attach", "--workdir", str(workdir), "--remote", s3_url(env, proxy.endpoint), "--concurrency", "2",
        *extra, str(tid),
    ]
    p = subprocess.Popen([*cli.CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    tp = paths.TenantPaths(workdir, tid)
    try:
        wait_for(lambda: layers_on(tp) >= 3 or p.poll() is not None, 60, "the attach to be under way")
        assert p.poll() is None, "the attach ended before the outage"
        proxy.down()
        t0 = time.monotonic()
        time.sleep(OUTAGE)  # the outage itself: its length is what is tested
        proxy.up()
        proxy.set_rate(0)
        down = time.monotonic() - t0
        out, err = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), down, tid, remote, workdir


def test_attach_rides_out_an_outage_longer_than_the_retry_budget(
    tmp_path: Path, env: dict[str, str], proxy: faultproxy.FaultProxy
) -> None:
    r, down, _, remote, workdir = attach_through_outage(tmp_path, env, proxy, [])  # the default timeout
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    assert "retrying in" in r.stderr, cli.describe(r)
    tree.assert_matches_remote(workdir, remote)
    print(f"outage {down:.1f} s mid-attach: exit 0, {r.stderr.count('retrying in')} retries said on stderr")


def test_attach_gives_up_after_the_retry_timeout(
    tmp_path: Path, env: dict[str, str], proxy: faultproxy.FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAGESERVER_OPERATOR_RETRY_TIMEOUT", "0")  # the variable, as documented
    r, _, _, _, _ = attach_through_outage(tmp_path, env, proxy, [])
    assert r.returncode == cli.EXIT_FAILED, cli.describe(r)
    assert "retrying in" not in r.stderr
    assert "RemoteStorageUnavailable" in r.stderr.strip().splitlines()[-1], cli.describe(r)


def test_a_permanent_error_ends_at_once(tmp_path: Path, env: dict[str, str]) -> None:
    tid, _ = seeded(env)
    storage = factory.open_remote(url.parse_remote_url(s3_url(env, env["endpoint"])))
    try:
        tlid = next(iter(ids.TimelineId.parse(n) for n in storage.list_dirs(paths.remote_timelines_prefix(tid))))
        storage.put_bytes(paths.remote_index_key(tid, tlid), b"{not json")
    finally:
        storage.close()
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    t0 = time.monotonic()
    r = cli.run(["attach", "--workdir", str(workdir), "--remote", s3_url(env, env["endpoint"]), "--retry-timeout", "300", str(tid)])
    took = time.monotonic() - t0
    assert r.returncode == cli.EXIT_FAILED, cli.describe(r)
    assert "InvalidIndexPart" in r.stderr and "retrying" not in r.stderr, cli.describe(r)
    assert took < 60, f"a permanent error took {took:.0f} s"
