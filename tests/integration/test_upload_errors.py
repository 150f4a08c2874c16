"""A refused upload against the real S3 server is shown, counted and retried (issue 14, defect 11).

A tenant is attached from SeaweedFS, a layer is flushed, then every PUT is refused with
AccessDenied by the fault proxy in front of the server (SeaweedFS itself re-creates a deleted
bucket on PUT, so deleting it no longer refuses uploads now that no GET precedes them). Before the fix the upload queue retried
it for ever and nothing said why (``Synced=False``, reason ``UploadsPending``). Checked: the
engine snapshot carries the reason (``RemoteStorageRejected``) and a message naming the
timeline, the layer and the missing bucket; the ``Synced`` condition shows them; the failures
count in ``pageserver_operator_upload_errors_total``; the queue keeps retrying (on the capped
permanent schedule) and the tenant stays Active.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pageserver_operator import testdata
from pageserver_operator.devenv import objectstore
from pageserver_operator.engine import metrics, remote_io, tenant
from pageserver_operator.engine.upload_queue import Backoff
from pageserver_operator.k8s import status
from pageserver_operator.remote import factory, url
from reliability import faultproxy

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_url(s3_server: objectstore.ObjectStore, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    yield f"s3://{s3_bucket}/pfx?endpoint={s3_server.endpoint}&region={s3_server.region}"


def test_an_upload_refused_by_the_server_is_shown_counted_and_retried(
    s3_url: str, s3_server: objectstore.ObjectStore, s3_bucket: str, tmp_path: Path
) -> None:
    parts = urlsplit(s3_server.endpoint)
    assert parts.hostname is not None and parts.port is not None
    proxy = faultproxy.FaultProxy((parts.hostname, parts.port), seed=1).start()
    proxied = s3_url.replace(s3_server.endpoint, proxy.endpoint)
    storage = factory.open_remote(url.parse_remote_url(proxied))
    io = remote_io.RemoteIO(storage, workers=4)
    gen = testdata.make_remote_tenant(storage, testdata.TenantShape(timelines=1, layers=2, layer_size=2000, seed=11))
    tid, tl = gen.tenant_id, gen.timelines[0]
    workdir = tmp_path / "volume"
    counter = metrics.UPLOAD_ERRORS.labels(str(tid), "RemoteStorageRejected")

    async def scenario() -> None:
        t = tenant.Tenant(workdir, tid, io, backoff=Backoff(base=0.05, factor=2.0, cap=0.2, permanent_cap=0.4))
        await t.attach()
        testdata.flush_local_layer(workdir, tid, tl, 700, seed=5)
        proxy.add_rule(faultproxy.Rule("denied", method="PUT", times=1 << 30))  # from now on: AccessDenied
        shown = asyncio.Event()
        t.listeners.append(lambda tt: shown.set() if tt.snapshot().upload_error else None)
        sync = asyncio.ensure_future(t.sync(timeout=120))
        try:
            await asyncio.wait_for(shown.wait(), 60)
            snap = t.snapshot()
            assert snap.state == "Active"
            assert snap.upload_error is not None
            assert t.upload_error == snap.upload_error  # the cheap form, for the controller's Event
            reason, message = snap.upload_error
            assert reason == "RemoteStorageRejected"
            assert str(tl) in message and "AccessDenied" in message, message
            cond = next(c for c in status.synced_condition([], snap, 1) if c["type"] == "Synced")
            assert (cond["status"], cond["reason"], cond["message"]) == ("False", reason, message)
            first = counter._value.get()
            assert first >= 1
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while counter._value.get() < first + 2:  # still retried (the permanent schedule)
                assert loop.time() < deadline, "the refused upload is not retried"
                assert not sync.done(), "the sync gave up on a refused upload"
                await asyncio.sleep(0.05)
        finally:
            t.stop()
            sync.cancel()
            await asyncio.gather(sync, return_exceptions=True)

    try:
        asyncio.run(scenario())
    finally:
        io.close()
        storage.close()
        proxy.stop()
