"""`k8s.kube` in process, with the `kubernetes` client's API calls replaced (the real API
server: tests/e2e): a status patch of a vanished resource is no failure, other failures say
what and why in one line; Events are best effort, named to sort in the order they happened,
and bounded; cluster checks fail with one line."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from pageserver_operator.api import v1alpha1
from pageserver_operator.k8s import kube

REF = {"metadata": {"name": "t" * 240, "namespace": "ns", "uid": "u-1"}}


def api() -> kubernetes.client.ApiClient:
    cfg = kubernetes.client.Configuration()
    cfg.host = "https://127.0.0.1:1"
    return kubernetes.client.ApiClient(cfg)


@pytest.fixture
def k() -> Any:
    client = kube.Kube(api(), workers=2)
    yield client
    client.close()


def failing(status: int) -> Any:
    def call(*args: Any, **kwargs: Any) -> None:
        raise ApiException(status=status, reason="Reason")

    return call


def test_a_status_patch_goes_to_the_status_subresource_and_a_vanished_resource_is_no_failure(
    k: kube.Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(k.custom, "patch_namespaced_custom_object_status", lambda *a, **kw: calls.append(a))
    asyncio.run(k.patch_status("ns", "t", {"status": {"phase": "Active"}}))
    assert calls == [(v1alpha1.GROUP, v1alpha1.VERSION, "ns", v1alpha1.PLURAL, "t", {"status": {"phase": "Active"}})]
    monkeypatch.setattr(k.custom, "patch_namespaced_custom_object_status", failing(404))
    asyncio.run(k.patch_status("ns", "t", {}))
    monkeypatch.setattr(k.custom, "patch_namespaced_custom_object_status", failing(422))
    with pytest.raises(RuntimeError, match="PATCH status of ns/t: 422 Reason"):
        asyncio.run(k.patch_status("ns", "t", {}))


def test_events_name_the_tenant_sort_by_time_and_are_best_effort(
    k: kube.Kube, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    posted: list[kubernetes.client.CoreV1Event] = []
    monkeypatch.setattr(k.core, "create_namespaced_event", lambda ns, body, **kw: posted.append(body))
    asyncio.run(k.event(REF, "Warning", "InvalidIndexPart", "x" * 2000))
    asyncio.run(k.event(REF, "Normal", "RetryScheduled", "again"))
    first, second = posted
    assert (first.type, first.reason, len(first.message)) == ("Warning", "InvalidIndexPart", 1024)
    assert first.involved_object.kind == v1alpha1.KIND and first.involved_object.uid == "u-1"
    assert first.metadata.name.startswith("t" * 230 + ".") and len(first.metadata.name) < 253
    assert first.metadata.name < second.metadata.name, "Events must sort in the order they were posted"
    monkeypatch.setattr(k.core, "create_namespaced_event", failing(500))
    with caplog.at_level(logging.WARNING, logger=kube.__name__):
        asyncio.run(k.event(REF, "Normal", "Detached", "gone"))
    assert "could not post event Detached" in caplog.text


@pytest.mark.parametrize(
    ("status", "says"),
    [(401, "rejected the credentials: 401 Reason"), (503, "cannot reach the API server at https://127.0.0.1:1: 503")],
)
def test_check_cluster_says_in_one_line_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, status: int, says: str
) -> None:
    monkeypatch.setattr(kubernetes.client.VersionApi, "get_code", failing(status))
    with pytest.raises(kube.ClusterUnreachable, match=re.escape(says)):
        kube.check_cluster(api())


def test_check_cluster_names_a_missing_crd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubernetes.client.VersionApi, "get_code", lambda *a, **kw: None)
    monkeypatch.setattr(kubernetes.client.CustomObjectsApi, "get_api_resources", failing(404))
    with pytest.raises(kube.ClusterUnreachable, match=re.escape("the CRD tenants.pageserver.dev is not installed")):
        kube.check_cluster(api())


def test_unloadable_credentials_are_one_line(tmp_path: Any) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("not: [a, kubeconfig")
    with pytest.raises(kube.ClusterUnreachable, match=re.escape(f"cannot load cluster credentials ({bad})")) as e:
        kube.load_config(str(bad))
    assert "\n" not in str(e.value)


def test_an_api_server_that_does_not_answer_is_unreachable_a_transient_runtime_error(
    k: kube.Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused connection (the API server restarting) is `kube.Unreachable`, which the
    controller, the placement loop and the issuer treat as transient: never a raw urllib3
    error (that made a validation during an API server restart Broken InternalError)."""
    import urllib3

    def refused(*args: Any, **kwargs: Any) -> None:
        raise urllib3.exceptions.MaxRetryError(None, "/x", reason=ConnectionRefusedError(111, "refused"))  # type: ignore[arg-type]

    monkeypatch.setattr(k.custom, "get_namespaced_custom_object", refused)
    monkeypatch.setattr(k.custom, "patch_namespaced_custom_object_status", refused)
    monkeypatch.setattr(k.coordination, "read_namespaced_lease", refused)
    with pytest.raises(kube.Unreachable, match="GET ns/t"):
        asyncio.run(k.get_tenant("ns", "t"))
    with pytest.raises(kube.Unreachable, match="PATCH status of ns/t"):
        asyncio.run(k.patch_status("ns", "t", {"status": {}}))
    with pytest.raises(kube.Unreachable, match="GET Lease"):
        asyncio.run(k.call("GET Lease ns/l", k.coordination.read_namespaced_lease, "l", "ns"))
    assert issubclass(kube.Unreachable, RuntimeError)
