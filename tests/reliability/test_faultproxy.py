"""The fault proxy does what it claims: each fault kind reaches the S3 backend as the failure it
imitates (classified transient by `remote.s3.errors`), a request that is not faulted is relayed
unchanged (keep-alive, big bodies, HEAD-less GETs, 404s), `down`/`up` refuse and accept
connections on the same port, and the counters count."""

from __future__ import annotations

import os
import time

import pytest

from e2e.conftest import Remote
from pageserver_operator.remote import errors, retry, url
from pageserver_operator.remote.s3 import storage as s3_storage
from reliability import faultproxy

pytestmark = pytest.mark.integration


def client(remote: Remote, proxy: faultproxy.FaultProxy) -> s3_storage.S3Storage:
    """One attempt per call (no retries), short timeouts: every fault shows."""
    return s3_storage.S3Storage(
        url.RemoteConfig(kind="s3", bucket=remote.bucket, endpoint=proxy.endpoint, region=remote.server.region),
        retrier=retry.Retrier(retry.RetryPolicy(max_attempts=1)), read_timeout=5, connect_timeout=2,
    )  # fmt: skip


def test_unfaulted_requests_are_relayed_unchanged(remote: Remote, proxy: faultproxy.FaultProxy) -> None:
    c = client(remote, proxy)
    big = os.urandom(3 << 20)
    c.put_bytes("a/big", big)
    assert c.get_bytes("a/big") == big
    c.put_bytes("a/small", b"x")
    assert c.list_objects("a/") == {"a/big": len(big), "a/small": 1}
    with pytest.raises(errors.NotFound):
        c.get_bytes("a/missing")
    c.delete("a/small")
    stats = proxy.snapshot()
    assert stats.injected == 0 and stats.requests == 6
    assert stats.connections <= 2, "keep-alive lost"


@pytest.mark.parametrize("kind", faultproxy.FAULT_KINDS)
def test_each_fault_kind(remote: Remote, proxy: faultproxy.FaultProxy, kind: str) -> None:
    c = client(remote, proxy)
    data = os.urandom(200_000)
    c.put_bytes("k", data)
    proxy.add_rule(faultproxy.Rule(kind, method="GET", path="/k$", times=1))
    t0 = time.monotonic()
    if kind in ("latency", "stall"):
        assert c.get_bytes("k") == data
        assert time.monotonic() - t0 >= (proxy.latency[0] if kind == "latency" else proxy.stall)
    else:
        with pytest.raises(errors.TransientRemoteError) as caught:
            c.get_bytes("k")
        if kind == "error":
            assert any(
                code in str(caught.value) for code in ("SlowDown", "ServiceUnavailable", "InternalError")
            )
    assert c.get_bytes("k") == data, "the next request goes through"
    assert proxy.snapshot().faults == {kind: 1}


def test_reset_response_of_a_put_is_applied_but_unacknowledged(
    remote: Remote, proxy: faultproxy.FaultProxy
) -> None:
    c = client(remote, proxy)
    proxy.add_rule(faultproxy.Rule("reset_response", method="PUT", times=1))
    with pytest.raises(errors.TransientRemoteError):
        c.put_bytes("applied", b"yes")
    assert c.get_bytes("applied") == b"yes"


def test_down_refuses_and_up_accepts_on_the_same_port(remote: Remote, proxy: faultproxy.FaultProxy) -> None:
    c = client(remote, proxy)
    c.put_bytes("p", b"1")
    port = proxy.port
    proxy.down()
    with pytest.raises(errors.TransientRemoteError):
        c.get_bytes("p")
    proxy.up()
    assert proxy.port == port
    assert c.get_bytes("p") == b"1"


def test_rate_and_seed(remote: Remote, proxy: faultproxy.FaultProxy) -> None:
    c = client(remote, proxy)
    c.put_bytes("r", b"1")
    proxy.latency = (0.0, 0.01)
    proxy.stall = 0.01
    proxy.set_rate(0.5)
    ok = 0
    for _ in range(60):
        try:
            c.get_bytes("r")
            ok += 1
        except errors.TransientRemoteError:
            pass
    stats = proxy.snapshot()
    assert 15 <= stats.injected <= 45, stats.summary()
    assert ok >= 60 - stats.injected
