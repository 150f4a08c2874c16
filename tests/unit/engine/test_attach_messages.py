"""What attach says to a person (in-process, ``file://`` remote, no server):

- ``NoRemoteTimelines`` names the place it looked in and what to do about it (check the tenant
  id, the bucket and the prefix), like the README's table of Broken reasons;
- a retry of an attach that failed before any timeline was set up is not labelled
  "(resuming)"; an attach interrupted after it created timeline directories still is.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pageserver_operator import testdata
from pageserver_operator.engine import crashsafe, manager, paths
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import ids
from pageserver_operator.remote import factory as remote_factory
from pageserver_operator.remote import url as remote_url

TID = ids.TenantId.parse("0123456789abcdef0123456789abcdef")


def _attach(workdir: Path, remote: Path, tid: ids.TenantId) -> tuple[list[str], EngineError | None]:
    """Attach with a fresh manager (as a restarted process would): the AttachStarted messages and
    the error it ended with, if any."""
    m = manager.TenantManager(workdir, remote_factory.open_remote(remote_url.parse_remote_url(f"file://{remote}")))
    error: EngineError | None = None
    try:
        t = m.get(tid)
        try:
            asyncio.run(t.attach())
        except EngineError as e:
            error = e
        return [h.message for h in t.history if h.reason == "AttachStarted"], error
    finally:
        m.close()


def test_no_remote_timelines_says_what_to_check_and_a_retry_is_not_resuming(tmp_path: Path) -> None:
    remote, workdir = tmp_path / "remote", tmp_path / "workdir"
    remote.mkdir()
    workdir.mkdir()
    for attempt in (1, 2):
        started, error = _attach(workdir, remote, TID)
        assert error is not None and error.reason == "NoRemoteTimelines", (attempt, error)
        assert f"file://{remote}" in error.message
        assert "check the tenant id, the bucket and the prefix" in error.message
        assert paths.TenantPaths(workdir, TID).marker.exists()  # a restart retries ...
        assert started, "no AttachStarted transition recorded"
        assert all("resuming" not in s for s in started), f"attempt {attempt} resumed nothing: {started}"


def test_an_interrupted_attach_is_resumed_and_says_so(tmp_path: Path) -> None:
    remote, workdir = tmp_path / "remote", tmp_path / "workdir"
    remote.mkdir()
    workdir.mkdir()
    storage = remote_factory.open_remote(remote_url.parse_remote_url(f"file://{remote}"))
    gen = testdata.make_remote_tenant(storage, testdata.TenantShape(timelines=2, layers=2, layer_size=1000, seed=7))
    started, error = _attach(workdir, remote, gen.tenant_id)
    assert error is None and all("resuming" not in s for s in started), (started, error)
    # as if the process had died before the attach removed its marker
    crashsafe.create_marker(paths.TenantPaths(workdir, gen.tenant_id).marker)
    started, error = _attach(workdir, remote, gen.tenant_id)
    assert error is None, error
    assert any(s.endswith("(resuming)") for s in started), started
