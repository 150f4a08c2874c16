"""Faults of the environment around the operator (a subprocess against the real control plane
and the real S3 server, through the fault proxy):

- the API server is stopped in the middle of an attach and started again: the attach goes on,
  the operator survives, the status catches up (Active), and new Tenants are still seen;
- the S3 server goes away in the middle of an attach (connections refused and reset) and comes
  back: the Tenant stays Attaching with a "retrying" message (never Broken), then Active;
- the volume is full (a size-limited tmpfs as the working directory): Broken with reason
  DiskFull and a message that says so; once there is room (remount bigger) the retry
  annotation brings it to Active with the exact tree (the CLI: exit 1 with DiskFull, then 0);
- a Tenant deleted while still Attaching is detached: directory gone, nothing left behind,
  remote untouched, and the same tenant attaches again cleanly.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from helpers import cli, tree
from pageserver_operator import testdata
from pageserver_operator.devenv import controlplane
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids
from reliability import common, faultproxy
from reliability.figures import record

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

#: Slow enough through a proxy that delays every request (about 4 s): time to act mid-attach.
SLOW = testdata.TenantShape(timelines=2, layers=10, layer_size=32 << 10, sizes=[64 << 10] * 40, seed=31)
SLOW_ARGS = ["--concurrency", "2"]


def slow_down(proxy: faultproxy.FaultProxy) -> None:
    proxy.weights = {"latency": 1.0}
    proxy.latency = (0.1, 0.2)
    proxy.set_rate(1.0)


def layers_on(tp: paths.TenantPaths) -> int:
    if not tp.timelines_dir.is_dir():
        return 0
    return sum(
        1
        for d in tp.timelines_dir.iterdir()
        for f in d.iterdir()
        if f.name[0] in "0123456789ABCDEF" and "." not in f.name
    )


def test_api_server_restart_mid_attach(
    tmp_path: Path,
    k: helpers.Kubectl,
    remote: Remote,
    operator: OperatorFactory,
    proxy: faultproxy.FaultProxy,
    proxied_url: str,
    control_plane: controlplane.ControlPlane,
) -> None:
    tid = new_tenant_id()
    remote.seed(SLOW, tid)
    expected = remote.capture(tid)
    slow_down(proxy)
    op = operator.start(remote_url=proxied_url, extra_args=SLOW_ARGS)
    tp = paths.TenantPaths(op.workdir, ids.TenantId.parse(tid))
    k.apply(helpers.tenant_manifest("through-restart", tid))
    helpers.wait_for(lambda: layers_on(tp) >= 5, 60, "the attach to be under way")
    t0 = time.monotonic()
    control_plane.stop_apiserver()
    try:
        time.sleep(4)
        during = layers_on(tp)
    finally:
        control_plane.start_apiserver()
    down = time.monotonic() - t0
    assert op.running(), "the operator died while the API server was down"
    k.run("wait", "--for=condition=Ready", "tenant/through-restart", "--timeout=120s")
    tree.assert_matches_remote(op.workdir, expected)
    st = k.tenant("through-restart")["status"]
    assert st["phase"] == "Active" and st["hasInProgressDownloads"] is False
    assert st["progress"]["layersDone"] == st["progress"]["layersTotal"], st["progress"]
    # the watch came back: a Tenant created after the restart is attached too
    other = new_tenant_id()
    remote.seed(testdata.TenantShape(timelines=1, layers=2, layer_size=4096, seed=2), other)
    proxy.set_rate(0)
    k.apply(helpers.tenant_manifest("after-restart", other))
    helpers.wait_phase(k, "after-restart", "Active", timeout=120)
    assert op.running()
    record(
        f"environment: API server down {down:.1f}s mid-attach ({during} layers on the volume meanwhile): Active, exact tree"
    )


def test_s3_down_mid_attach_then_back(
    tmp_path: Path,
    k: helpers.Kubectl,
    remote: Remote,
    operator: OperatorFactory,
    proxy: faultproxy.FaultProxy,
    proxied_url: str,
) -> None:
    tid = new_tenant_id()
    remote.seed(SLOW, tid)
    expected = remote.capture(tid)
    slow_down(proxy)
    op = operator.start(remote_url=proxied_url, extra_args=SLOW_ARGS)
    tp = paths.TenantPaths(op.workdir, ids.TenantId.parse(tid))
    k.apply(helpers.tenant_manifest("s3-outage", tid))
    helpers.wait_for(lambda: layers_on(tp) >= 5, 60, "the attach to be under way")
    proxy.down()
    t0 = time.monotonic()

    def retrying() -> dict[str, object] | None:
        obj = k.tenant("s3-outage")
        return obj if "retrying" in str((obj.get("status") or {}).get("message")) else None

    obj = helpers.wait_for(
        retrying, 90, "'retrying' in status.message", describe=lambda: helpers.summary(k.tenant("s3-outage"))
    )
    st = obj["status"]
    assert isinstance(st, dict)
    assert st["phase"] == "Attaching", helpers.summary(obj)
    assert "remote storage unavailable" in st["message"], st["message"]
    time.sleep(2)
    assert helpers.phase(k.tenant("s3-outage")) == "Attaching"
    proxy.up()
    down = time.monotonic() - t0
    k.run("wait", "--for=condition=Ready", "tenant/s3-outage", "--timeout=120s")
    tree.assert_matches_remote(op.workdir, expected)
    phases = [h["phase"] for h in k.tenant("s3-outage")["status"]["history"]]
    assert "Broken" not in phases, phases
    assert not [e for e in k.events("s3-outage") if e.get("type") == "Warning"]
    record(
        f"environment: S3 unreachable {down:.1f}s mid-attach: Attaching + 'retrying' shown, then Active, exact tree"
    )


# ---- disk full ------------------------------------------------------------------------------------


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs (root only; mount must work in this environment)."""
    volume = tmp_path / "volume"
    volume.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(volume)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here (needed for the disk-full test): {r.stderr.strip()}")
    try:
        yield volume
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False)


def grow(volume: Path, size: str = "64m") -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(volume)], check=True)


BIG = testdata.TenantShape(
    timelines=2, layers=4, layer_size=256 << 10, sizes=[512 << 10] * 20, seed=41
)  # ~12 MiB


def test_disk_full_cli(tmp_path: Path, remote: Remote, small_volume: Path) -> None:
    tid = new_tenant_id()
    remote.seed(BIG, tid)
    args = ["attach", "--workdir", str(small_volume), "--remote", remote.url, tid]
    r = common.run_cli(args)
    assert r.returncode == 1, cli.describe(r)
    last = r.stderr.strip().splitlines()[-1]
    assert "DiskFull: " in last and "no space left" in last, last
    grow(small_volume)
    r = common.run_cli(args)
    assert r.returncode == 0, cli.describe(r)
    tree.assert_matches_remote(small_volume, remote.capture(tid))


def test_disk_full_operator_broken_then_recovers(
    tmp_path: Path, k: helpers.Kubectl, remote: Remote, operator: OperatorFactory, small_volume: Path
) -> None:
    assert operator.workdir == small_volume
    tid = new_tenant_id()
    remote.seed(BIG, tid)
    expected = remote.capture(tid)
    op = operator.start()
    k.apply(helpers.tenant_manifest("full", tid))
    obj = helpers.wait_phase(k, "full", "Broken", timeout=120)
    st = obj["status"]
    assert st["reason"] == "DiskFull", helpers.summary(obj)
    assert "no space left" in st["message"], st["message"]
    assert st.get("attempts", 0) >= 1 and st.get("nextRetryTime"), st
    helpers.wait_event(k, "full", "DiskFull")
    grow(small_volume)
    k.run("annotate", "--overwrite", "tenant/full", "pageserver.dev/retry=after-remount")
    k.run("wait", "--for=condition=Ready", "tenant/full", "--timeout=120s")
    helpers.assert_tenant_matches(op.workdir, expected, tmp_path)
    record(
        "environment: disk full (6 MiB tmpfs, 12 MiB tenant): Broken DiskFull 'no space left'; remount + retry annotation: Active, exact tree"
    )


def test_tenant_deleted_while_attaching(
    tmp_path: Path,
    k: helpers.Kubectl,
    remote: Remote,
    operator: OperatorFactory,
    proxy: faultproxy.FaultProxy,
    proxied_url: str,
) -> None:
    tid = new_tenant_id()
    remote.seed(SLOW, tid)
    expected = remote.capture(tid)
    objects = remote.objects()
    slow_down(proxy)
    op = operator.start(remote_url=proxied_url, extra_args=SLOW_ARGS)
    tp = paths.TenantPaths(op.workdir, ids.TenantId.parse(tid))
    k.apply(helpers.tenant_manifest("short-lived", tid))
    helpers.wait_for(lambda: layers_on(tp) >= 3, 60, "the attach to be under way")
    # (Attaching is written once it lasted the status interval)
    helpers.wait_phase(k, "short-lived", "Attaching", timeout=10)
    k.run("delete", "tenant", "short-lived", "--wait=false")
    helpers.wait_gone(k, "short-lived", timeout=120)
    assert not tp.tenant_dir.exists()
    assert [p.name for p in tp.tenants_root.iterdir()] == [], "leftovers of the interrupted attach"
    assert remote.objects() == objects, "detach of an interrupted attach changed remote storage"
    time.sleep(1)
    assert not tp.tenant_dir.exists(), "a download still running wrote into the detached tenant"
    proxy.set_rate(0)
    k.apply(helpers.tenant_manifest("short-lived", tid))
    k.run("wait", "--for=condition=Ready", "tenant/short-lived", "--timeout=120s")
    tree.assert_matches_remote(op.workdir, expected)
    record(
        "environment: Tenant deleted while Attaching: detached, nothing left, remote untouched; re-attach exact"
    )


def test_s3_down_during_detach_keeps_everything_until_it_is_back(
    tmp_path: Path,
    k: helpers.Kubectl,
    remote: Remote,
    operator: OperatorFactory,
    proxy: faultproxy.FaultProxy,
    proxied_url: str,
) -> None:
    """A Tenant deleted while S3 is unreachable and a flushed layer is not uploaded yet: the
    directory and the resource stay (Stopping, the reason shown), nothing is lost; once S3 is
    back the layer is uploaded and indexed, then the directory goes."""
    tid = new_tenant_id()
    gen = remote.seed(testdata.TenantShape(timelines=1, layers=3, layer_size=8_000, seed=8), tid)
    storage = remote.open()
    op = operator.start(remote_url=proxied_url, sync_period=3600)  # no periodic sync: detach must upload
    tp = paths.TenantPaths(op.workdir, gen.tenant_id)
    k.apply(helpers.tenant_manifest("leaving", tid))
    helpers.wait_phase(k, "leaving", "Active", timeout=120)
    layer = str(testdata.flush_local_layer(op.workdir, gen.tenant_id, gen.timelines[0], 6_000, seed=4))
    proxy.down()
    k.run("delete", "tenant", "leaving", "--wait=false")
    time.sleep(12)  # longer than one call's retry budget
    obj = k.tenant_or_none("leaving")
    assert obj is not None, "the Tenant was released while its layer could not be uploaded"
    assert helpers.phase(obj) == "Stopping", helpers.summary(obj)
    assert tp.tenant_dir.is_dir() and (tp.timeline_dir(gen.timelines[0]) / layer).is_file()
    proxy.up()
    helpers.wait_gone(k, "leaving", timeout=120)
    assert not tp.tenant_dir.exists()
    idx = common.remote_indexes(storage, gen.tenant_id)[str(gen.timelines[0])]
    assert layer in {str(n) for n in idx.layers}, "the layer flushed before the delete was lost"
    record(
        "environment: S3 unreachable during detach: Tenant kept (Stopping) with its data; S3 back: layer uploaded, then detached"
    )
