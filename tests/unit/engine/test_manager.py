"""`engine.manager` helpers the CLI builds on: `unless_uploads_refused` ends a sync, a drain or a
detach at once when remote storage refuses an upload for good (AccessDenied, NoSuchBucket),
instead of waiting for the command's timeout while the upload queue retries on its capped
schedule (issue 14, defects 11 and 13: "a permanent error still ends at once"). In process over
`FakeStorage` (failures injected per operation)."""

from __future__ import annotations

import pytest

from helpers.engine_env import EngineEnv, Writer, make_tenant, run
from helpers.fake_storage import FakeStorage
from pageserver_operator.engine import manager
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.remote import errors as remote_errors


@pytest.fixture
def env(fake: EngineEnv) -> EngineEnv:
    return fake


def test_a_sync_whose_upload_is_refused_ends_at_once_with_the_reason(env: EngineEnv) -> None:
    assert isinstance(env.storage, FakeStorage)
    gen = make_tenant(env.storage, seed=3, timelines=1)
    t = env.tenant(gen.tenant_id)
    run(t.attach)
    name = Writer(env.workdir, gen.tenant_id).flush(gen.timelines[0])
    denied = "upload rejected: AccessDenied (HTTP 403): Access Denied"
    env.storage.fail("upload", str(name), *(remote_errors.PermanentRemoteError(denied) for _ in range(50_000)))

    with pytest.raises(EngineError) as caught:
        # the queue alone would retry for ever; the bound is only there to fail the test
        run(lambda: manager.unless_uploads_refused(t, t.sync(timeout=600)), timeout=20)
    assert not caught.value.transient
    assert caught.value.reason == "RemoteStorageRejected", caught.value
    assert "AccessDenied" in caught.value.message and str(name) in caught.value.message
    assert not t.listeners or all(listener.__name__ != "check" for listener in t.listeners)


def test_a_sync_with_a_transient_upload_failure_completes(env: EngineEnv) -> None:
    assert isinstance(env.storage, FakeStorage)
    gen = make_tenant(env.storage, seed=4, timelines=1)
    t = env.tenant(gen.tenant_id)
    run(t.attach)
    name = Writer(env.workdir, gen.tenant_id).flush(gen.timelines[0])
    env.storage.fail("upload", str(name), remote_errors.TransientRemoteError("connection reset"))
    run(lambda: manager.unless_uploads_refused(t, t.sync(timeout=60)), timeout=20)
    assert t.snapshot().synced
