"""SIGKILL of the operator in the middle of an attach, then a new operator process: the tenant
resumes from its ``attaching`` marker and becomes Active with exactly the remote tree, and the
new process downloads only what was not complete on the volume at the kill (its
``pageserver_operator_layer_downloads_total`` proves there is no duplicate work beyond the files
that were in flight). A restart after the attach completed loads the tenant from the volume
(Loading -> Active) and downloads nothing.
"""

from __future__ import annotations

import time

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from helpers import tree
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids

pytestmark = pytest.mark.e2e

LAYERS = 60
LAYER_SIZE = 4 << 20
CONCURRENCY = 2  # request slots: each has a GET in flight and at most one file awaiting its fsync
KILL_AFTER = 8  # complete layers on the volume before the kill


def volume_state(tp: paths.TenantPaths, sizes: dict[str, int]) -> tuple[set[str], set[str]]:
    """(layers complete on the volume with the index's size, partial ``.temp_download`` files)."""
    complete: set[str] = set()
    partial: set[str] = set()
    if not tp.timelines_dir.is_dir():
        return complete, partial
    for tdir in tp.timelines_dir.iterdir():
        for f in tdir.iterdir():
            if f.name.endswith(paths.TEMP_DOWNLOAD_SUFFIX):
                partial.add(f.name)
            elif f.name in sizes and f.stat().st_size == sizes[f.name]:
                complete.add(f.name)
    return complete, partial


def test_sigkill_mid_attach_resumes_without_duplicate_downloads(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    tid = new_tenant_id()
    args = ["--concurrency", str(CONCURRENCY)]
    first = operator.start(extra_args=args, wait_live=False)
    remote.seed(testdata.TenantShape(timelines=1, sizes=[LAYER_SIZE] * LAYERS, seed=3), tid)
    expected = remote.capture(tid)
    sizes = {name: size for rt in expected.timelines.values() for name, size in rt.sizes.items()}
    assert len(sizes) == LAYERS
    tp = paths.TenantPaths(first.workdir, ids.TenantId.parse(tid))
    first.wait_live()

    k.apply(helpers.tenant_manifest("big", tid))

    def mid_attach() -> bool:
        complete, _ = volume_state(tp, sizes)
        return len(complete) >= KILL_AFTER

    helpers.wait_for(mid_attach, 60, f"{KILL_AFTER} complete layers on the volume", interval=0.01,
                     describe=lambda: helpers.summary(k.tenant_or_none("big")))  # fmt: skip
    first.kill()

    # What the killed process left: the marker, no metadata, some complete layers, maybe a few
    # temp files: per request slot, one download in flight and one file waiting for its fsync.
    complete_at_kill, partial_at_kill = volume_state(tp, sizes)
    assert tp.marker.exists(), "the attaching marker must survive the kill"
    metadata_files = list(tp.timelines_dir.glob(f"*/{paths.METADATA_FILE}"))
    assert len(complete_at_kill) < LAYERS, "the attach finished before the kill: make it bigger/slower"
    assert not metadata_files, "metadata is written last, after every layer"
    assert len(partial_at_kill) <= 2 * CONCURRENCY
    # (no status yet if it was killed within the status interval: a short Attaching is not written)
    killed_status = {"phase": "Attaching", "hasInProgressDownloads": True, **(k.tenant("big").get("status") or {})}
    assert killed_status["phase"] == "Attaching"
    assert killed_status["hasInProgressDownloads"] is True

    started = time.monotonic()
    second = operator.start(extra_args=args)
    k.run("wait", "--for=condition=Ready", "tenant/big", "--timeout=90s")
    resumed_in = time.monotonic() - started

    tree.assert_matches_remote(second.workdir, expected)
    st = k.tenant("big")["status"]
    assert st["phase"] == "Active"
    assert st["progress"]["layersDone"] == st["progress"]["layersTotal"] == LAYERS
    attaching = [h for h in st["history"] if h["phase"] == "Attaching"]
    assert attaching and "(resuming)" in attaching[-1]["message"], st["history"]

    downloads = second.metric("pageserver_operator_layer_downloads_total", tenant_id=tid)
    not_complete = LAYERS - len(complete_at_kill)
    with capsys.disabled():
        print(
            f"\n[resume] {LAYERS} x {helpers.fmt_bytes(LAYER_SIZE)} layers: {len(complete_at_kill)} complete and "
            f"{len(partial_at_kill)} partial at the SIGKILL; the restarted operator downloaded "
            f"{downloads:.0f} (<= {not_complete} not complete) and was Ready after {resumed_in:.1f} s"
        )
    assert downloads is not None
    assert downloads <= not_complete, "layers complete at the kill were downloaded again"
    assert downloads == not_complete, "every layer not complete at the kill must be fetched once"


def test_restart_of_an_active_tenant_loads_it_without_downloading(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory
) -> None:
    tid = new_tenant_id()
    first = operator.start(wait_live=False)
    remote.seed(testdata.TenantShape(timelines=2, layers=3, layer_size=64 << 10, seed=6), tid)
    expected = remote.capture(tid)
    first.wait_live()
    k.apply(helpers.tenant_manifest("steady", tid))
    k.run("wait", "--for=condition=Ready", "tenant/steady", "--timeout=60s")
    first.kill()

    second = operator.start()

    before = k.tenant("steady")

    def loaded() -> bool:
        return second.metric("pageserver_operator_tenants", phase="Active") == 1

    # The restarted operator loads the tenant (its metrics say Active); the status, which had
    # nothing new to say, is not written (a reload shorter than the status interval is no
    # transition: no Ready flap, no history entry).
    helpers.wait_for(loaded, 30, "the restarted operator to load the tenant")
    obj = k.tenant("steady")
    assert helpers.condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    assert obj["status"]["history"] == before["status"]["history"]
    assert "(resuming)" not in str(obj["status"]["history"])
    tree.assert_matches_remote(second.workdir, expected)
    assert not second.metric("pageserver_operator_layer_downloads_total", tenant_id=tid)
