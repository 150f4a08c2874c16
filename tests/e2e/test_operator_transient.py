"""Remote storage that cannot be reached is a transient failure: the Tenant is retried with
backoff and the error is shown in ``status.message`` -- it is not Broken -- and it becomes Active
on its own once the storage answers again.

The operator reaches the S3 server through a TCP forwarder of the test that refuses connections
at first (as a server that is down does), then forwards them.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from helpers import tree
from pageserver_operator import testdata
from pageserver_operator.devenv import processes

pytestmark = pytest.mark.e2e


@pytest.fixture
def forwarder(remote: Remote) -> Iterator[helpers.TcpForwarder]:
    port = urlsplit(remote.server.endpoint).port
    assert port is not None
    fwd = helpers.TcpForwarder(processes.free_port(), ("127.0.0.1", port))
    try:
        yield fwd
    finally:
        fwd.close()


def test_unreachable_remote_is_retried_and_shown_not_broken(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory, forwarder: helpers.TcpForwarder
) -> None:
    tid = new_tenant_id()
    url = f"s3://{remote.bucket}?endpoint=http://127.0.0.1:{forwarder.port}&region={remote.server.region}"
    op = operator.start(remote_url=url, wait_live=False)
    remote.seed(testdata.TenantShape(timelines=2, layers=2, layer_size=32 << 10, seed=2), tid)
    expected = remote.capture(tid)
    op.wait_live()
    k.apply(helpers.tenant_manifest("patient", tid))

    def retrying() -> dict[str, object] | None:
        obj = k.tenant("patient")
        return obj if "retrying after error" in str((obj.get("status") or {}).get("message")) else None

    obj = helpers.wait_for(retrying, 60, "the retry to show in status.message",
                           describe=lambda: helpers.summary(k.tenant("patient")))  # fmt: skip
    st = obj["status"]
    assert isinstance(st, dict)
    assert st["phase"] == "Attaching", helpers.summary(k.tenant("patient"))
    assert "remote storage unavailable" in st["message"]
    assert f"127.0.0.1:{forwarder.port}" in st["message"]
    ready = helpers.condition(k.tenant("patient"), "Ready")
    assert ready is not None and ready["status"] == "False"
    assert not any(e.get("type") == "Warning" for e in k.events("patient")), "a transient error is no failure"

    forwarder.open()
    k.run("wait", "--for=condition=Ready", "tenant/patient", "--timeout=90s")
    tree.assert_matches_remote(op.workdir, expected)
    assert "Broken" not in [h["phase"] for h in k.tenant("patient")["status"]["history"]]
