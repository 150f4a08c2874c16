"""Attach, load, sync and detach through the fault-injecting proxy (faultproxy.py).

Every S3 request of the engine (CLI) or of the operator goes through the proxy, which injects a
fault into a fraction ``RELIABILITY_FAULT_RATE`` (default 0.2) of them: 500/503/SlowDown
answers, connections reset before forwarding or after a random number of response bytes
(truncated bodies, PUTs applied but unacknowledged), latency, stalled responses. The runs must
end exactly as without faults: the volume equals the remote tree, every flushed layer is in the
remote index with the local metadata, nothing Broken. Transient faults are the backend's to
retry; none may reach the user.

Also: a PUT of the index that the server applied but whose answer was lost, as many times as the
backend retries, must not be mistaken for another writer (SplitBrainDetected) when the upload
queue tries again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from reliability import common, faultproxy
from reliability.conftest import fault_rate
from reliability.figures import record

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SHAPE = testdata.TenantShape(
    timelines=3,
    layers=5,
    layer_size=48 << 10,
    sizes=[1 << 20, 1 << 20, *([200_000] * 6), *([9_000] * 4)],
    seed=17,
)


def _cli(args: list[str], workdir: Path, url: str) -> None:
    r = common.run_cli([args[0], "--workdir", str(workdir), "--remote", url, *args[1:]], timeout=300)
    assert r.returncode == 0, f"`{args[0]}` failed under faults: exit {r.returncode}\n{r.stderr[-3000:]}"
    assert "Broken" not in r.stdout, r.stdout


def test_cli_attach_sync_load_detach_under_faults(
    tmp_path: Path, remote: Remote, proxy: faultproxy.FaultProxy, proxied_url: str
) -> None:
    rate = fault_rate()
    storage = remote.open()  # direct, not through the proxy
    tid_s = new_tenant_id()
    gen = remote.seed(SHAPE, tid_s)
    tid = gen.tenant_id
    root, child = str(gen.timelines[0]), str(gen.timelines[1])
    workdir = tmp_path / "volume"
    watch = common.IndexWatch()
    watch.check(storage, tid)
    proxy.set_rate(rate)

    _cli(["attach", tid_s], workdir, proxied_url)
    common.assert_converged(workdir, storage, tid, tmp_path, where="attach:")

    flushed = {
        root: {str(testdata.flush_local_layer(workdir, tid, gen.timelines[0], 150_000, seed=1))},
        child: {str(testdata.flush_local_layer(workdir, tid, gen.timelines[1], 70_000, seed=2))},
    }
    _cli(["sync", tid_s], workdir, proxied_url)
    watch.check(storage, tid, "sync:")
    common.assert_converged(workdir, storage, tid, tmp_path, flushed, "sync:")

    # damage the volume: three layers truncated, one more flushed -> load repairs/uploads (a layer
    # *gone* at load is the pageserver's removal: unlinked, not downloaded; test_generations*)
    tp = paths.TenantPaths(workdir, tid)
    layers = sorted(p for p in tp.timeline_dir(gen.timelines[0]).iterdir() if p.name[0] in "0123456789ABCDEF")
    for layer in layers[:3]:
        with open(layer, "r+b") as f:
            f.truncate(10)
    flushed[root].add(str(testdata.flush_local_layer(workdir, tid, gen.timelines[0], 30_000, seed=3)))
    _cli(["load", tid_s], workdir, proxied_url)
    watch.check(storage, tid, "load:")
    for old in tp.timeline_dir(gen.timelines[0]).glob("*.old"):
        old.unlink()  # the truncated copy, set aside by load
    common.assert_converged(workdir, storage, tid, tmp_path, flushed, "load:")

    flushed[child].add(str(testdata.flush_local_layer(workdir, tid, gen.timelines[1], 40_000, seed=4)))
    _cli(["detach", tid_s], workdir, proxied_url)
    assert not tp.tenant_dir.exists()
    watch.check(storage, tid, "detach:")

    # a fresh attach elsewhere gets everything back, still under faults
    other = tmp_path / "other"
    _cli(["attach", tid_s], other, proxied_url)
    common.assert_converged(other, storage, tid, tmp_path, flushed, "re-attach:")
    stats = proxy.snapshot()
    record(f"faults (CLI attach/sync/load/detach/attach, rate {rate}, seed {proxy.seed}): {stats.summary()}")
    if rate >= 0.1:
        assert stats.injected >= 10, stats.summary()


def test_index_put_applied_but_unacknowledged_is_not_split_brain(
    tmp_path: Path, remote: Remote, proxy: faultproxy.FaultProxy, proxied_url: str
) -> None:
    """Every attempt of one index PUT reaches the server, but every answer is lost (the
    connection resets after the request was applied) until the backend gives up; the upload
    queue then tries again and first re-reads the index for the split-brain guard. The index it
    finds is its own: that is no other writer, and the sync must succeed."""
    storage = remote.open()
    tid_s = new_tenant_id()
    gen = remote.seed(testdata.TenantShape(timelines=1, layers=2, layer_size=10_000, seed=3), tid_s)
    tid, tlid = gen.tenant_id, gen.timelines[0]
    workdir = tmp_path / "volume"
    _cli(["attach", tid_s], workdir, proxied_url)
    name = str(testdata.flush_local_layer(workdir, tid, tlid, 5_000, seed=9))
    # 8 = the backend's attempts per call (retry.RetryPolicy.max_attempts): all of them lost
    proxy.add_rule(faultproxy.Rule("reset_response", method="PUT", path=r"index_part\.json$", times=8))
    r = common.run_cli(["sync", "--workdir", str(workdir), "--remote", proxied_url, tid_s], timeout=120)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert proxy.snapshot().faults["reset_response"] == 8
    common.assert_converged(workdir, storage, tid, tmp_path, {str(tlid): {name}})


def test_operator_attach_sync_detach_under_faults(
    tmp_path: Path,
    k: helpers.Kubectl,
    remote: Remote,
    operator: OperatorFactory,
    proxy: faultproxy.FaultProxy,
    proxied_url: str,
) -> None:
    rate = fault_rate()
    storage = remote.open()
    tid_s = new_tenant_id()
    gen = remote.seed(SHAPE, tid_s)
    tid = gen.tenant_id
    proxy.set_rate(rate)
    op = operator.start(remote_url=proxied_url, sync_period=1.0)
    k.apply(helpers.tenant_manifest("faulty", tid_s))
    helpers.wait_phase(k, "faulty", "Active", timeout=180)
    common.assert_converged(op.workdir, storage, tid, tmp_path, where="operator attach:")

    flushed = {
        str(gen.timelines[2]): {
            str(testdata.flush_local_layer(op.workdir, tid, gen.timelines[2], 120_000, seed=5))
        }
    }

    def synced() -> bool:
        idx = common.remote_indexes(storage, tid)
        return flushed[str(gen.timelines[2])] <= {str(n) for n in idx[str(gen.timelines[2])].layers}

    def synced_all() -> bool:
        idx = common.remote_indexes(storage, tid)
        return all(names <= {str(n) for n in idx[tl].layers} for tl, names in flushed.items())

    helpers.wait_for(synced, 120, "the flushed layer to be indexed remotely")
    helpers.wait_for(lambda: (helpers.condition(k.tenant("faulty"), "Synced") or {}).get("status") == "True",
                     120, "condition Synced")  # fmt: skip
    assert "Broken" not in [h["phase"] for h in k.tenant("faulty")["status"].get("history", [])]
    common.assert_converged(op.workdir, storage, tid, tmp_path, flushed, "operator sync:")

    # reconcile (load) at the next start, under faults: a layer lost on the volume, one flushed
    op.kill()
    tp = paths.TenantPaths(op.workdir, tid)
    victim = sorted(p for p in tp.timeline_dir(gen.timelines[1]).iterdir() if p.name != "metadata")[0]
    os.truncate(victim, 5)  # damaged: set aside and downloaded again
    flushed[str(gen.timelines[1])] = {
        str(testdata.flush_local_layer(op.workdir, tid, gen.timelines[1], 33_000, seed=7))
    }
    op = operator.start(remote_url=proxied_url, sync_period=1.0)
    helpers.wait_for(lambda: helpers.phase(k.tenant("faulty")) == "Active" and synced_all(), 180,
                     "Active and synced after the restart")  # fmt: skip
    for old in tp.timeline_dir(gen.timelines[1]).glob("*.old"):
        old.unlink()  # the damaged copy, set aside by load
    common.assert_converged(op.workdir, storage, tid, tmp_path, flushed, "operator load:")

    flushed[str(gen.timelines[0])] = {
        str(testdata.flush_local_layer(op.workdir, tid, gen.timelines[0], 60_000, seed=6))
    }
    k.run("delete", "tenant", "faulty", "--wait=false")
    helpers.wait_gone(k, "faulty", timeout=180)
    assert not (op.workdir / "tenants" / tid_s).exists()
    assert not [e for e in k.events("faulty") if e.get("type") == "Warning"], (
        "a transient fault reached the user"
    )
    proxy.set_rate(0)
    shutil.rmtree(tmp_path / "again", ignore_errors=True)
    # the operator wrote under generations: an attach elsewhere takes a higher one
    _cli(["attach", "--generation", "100", tid_s], tmp_path / "again", remote.url)
    common.assert_converged(tmp_path / "again", storage, tid, tmp_path, flushed, "after detach:")
    stats = proxy.snapshot()
    record(f"faults (operator attach/sync/load/detach, rate {rate}, seed {proxy.seed}): {stats.summary()}")
