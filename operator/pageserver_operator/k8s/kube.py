"""The operator's own calls to the API server: status patches and Events.

kopf owns watching and finalizers; everything the operator writes besides that goes through
here, on a small dedicated thread pool (the `kubernetes` client blocks), so that a slow API
server never takes the workers that move tenant data.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from pageserver_operator.api import v1alpha1

log = logging.getLogger(__name__)


class ClusterUnreachable(RuntimeError):
    pass


class Conflict(RuntimeError):
    """A write's ``resourceVersion`` precondition failed: the object changed since it was read."""


class Unreachable(RuntimeError):
    """The API server did not answer (connection refused or reset, timeout): transient."""


class StaleStatusWrite(RuntimeError):
    """The API server refused a status write whose ``placement.generation`` is below the stored
    one (the CRD's rule `crd.GENERATION_NEVER_DECREASES`): the writer's generation is stale."""


#: What the API server's refusal of a stale status write contains (the rule's message).
_STALE_MARK = "placement.generation may not decrease"


def load_config(kubeconfig: str | None) -> kubernetes.client.ApiClient:
    """KUBECONFIG (or the given file), else the in-cluster service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    try:
        if path:
            cfg = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            cfg = kubernetes.client.Configuration()
            kubernetes.config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except Exception as e:
        raise ClusterUnreachable(f"cannot load cluster credentials ({path or 'in-cluster'}): {_one_line(e)}") from e
    cfg.retries = 3
    return kubernetes.client.ApiClient(cfg)


def _one_line_body(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or "{}").get("message", ""))[:300]
    except Exception:
        return " ".join(str(e.body).split())[:300]


def _one_line(e: BaseException) -> str:
    """An error as one line (``str(ApiException)`` spans its headers and body)."""
    if isinstance(e, ApiException):
        return f"{e.status} {e.reason}"
    return " ".join(str(e).split())


@contextlib.contextmanager
def _quiet_retries() -> Iterator[None]:
    """urllib3 logs a warning per retry; they would bury the one-line reason on stderr."""
    logger = logging.getLogger("urllib3.connectionpool")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_cluster(api: kubernetes.client.ApiClient) -> None:
    """Fail fast with one line when the API server or the CRD is missing."""
    host = api.configuration.host
    try:
        with _quiet_retries():
            kubernetes.client.VersionApi(api).get_code(_request_timeout=10)
    except ApiException as e:
        if e.status in (401, 403):
            raise ClusterUnreachable(f"the API server at {host} rejected the credentials: {_one_line(e)}") from e
        raise ClusterUnreachable(f"cannot reach the API server at {host}: {_one_line(e)}") from e
    except Exception as e:
        raise ClusterUnreachable(f"cannot reach the API server at {host}: {_one_line(e)}") from e
    try:
        served = kubernetes.client.CustomObjectsApi(api).get_api_resources(
            v1alpha1.GROUP, v1alpha1.VERSION, _request_timeout=10
        )
    except ApiException as e:
        if e.status == 404:
            raise ClusterUnreachable(
                f"the CRD {v1alpha1.PLURAL}.{v1alpha1.GROUP} is not installed (kubectl apply -f crds/)"
            ) from e
        raise ClusterUnreachable(f"cannot read {v1alpha1.GROUP}/{v1alpha1.VERSION}: {e.status} {e.reason}") from e
    names = {r.name for r in (getattr(served, "resources", None) or [])}
    for plural in (v1alpha1.PLURAL, v1alpha1.PAGESERVER_PLURAL):
        if names and plural not in names:
            raise ClusterUnreachable(f"the CRD {plural}.{v1alpha1.GROUP} is not installed (kubectl apply -f crds/)")


class Kube:
    def __init__(self, api: kubernetes.client.ApiClient, workers: int = 4) -> None:
        self.api = api
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.coordination = kubernetes.client.CoordinationV1Api(api)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A merge patch of the status subresource. With ``metadata.resourceVersion`` in
        ``patch`` it is a compare-and-swap: `Conflict` when the object changed since then."""
        try:
            await self._run(
                self.custom.patch_namespaced_custom_object_status,
                v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, name, patch,
                _request_timeout=30,
            )
        except ApiException as e:
            if e.status == 404:
                return  # the resource is gone
            if e.status == 409:
                raise Conflict(f"PATCH status of {namespace}/{name}: the object changed meanwhile") from e
            if e.status == 422 and _STALE_MARK in str(e.body):
                raise StaleStatusWrite(f"PATCH status of {namespace}/{name}: {_STALE_MARK}") from e
            raise RuntimeError(f"PATCH status of {namespace}/{name}: {e.status} {e.reason}: {e.body}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise Unreachable(f"PATCH status of {namespace}/{name}: {_one_line(e)}") from e

    async def get_tenant(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Tenant as the API server holds it now (an uncached read: a quorum read from
        etcd, never kopf's watch cache); None when it does not exist."""
        try:
            obj: dict[str, Any] = await self._run(
                self.custom.get_namespaced_custom_object,
                v1alpha1.GROUP, v1alpha1.VERSION, namespace, v1alpha1.PLURAL, name,
                _request_timeout=30,
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise RuntimeError(f"GET {namespace}/{name}: {e.status} {e.reason}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise Unreachable(f"GET {namespace}/{name}: {_one_line(e)}") from e
        return obj

    async def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)`` of the `kubernetes` client on the pool, its JSON body parsed (None for 404).
        409 is `Conflict`; any other refusal a RuntimeError naming ``what``."""
        try:
            resp = await self._run(fn, *args, _preload_content=False, _request_timeout=30, **kwargs)
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status == 409:
                raise Conflict(f"{what}: {e.reason}") from e
            raise RuntimeError(f"{what}: {e.status} {e.reason}: {_one_line_body(e)}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise Unreachable(f"{what}: {_one_line(e)}") from e
        data = resp.data
        return json.loads(data) if data else {}

    async def event(self, ref: dict[str, Any], type_: str, reason: str, message: str) -> None:
        now = datetime.now(UTC)
        meta = ref["metadata"]
        body = kubernetes.client.CoreV1Event(
            # "<name>.<hex nanoseconds>" like client-go's recorder: Events list in the order they
            # happened, so `kubectl describe` (whole-second timestamps) shows them in that order
            metadata=kubernetes.client.V1ObjectMeta(
                name=f"{meta['name'][:230]}.{time.time_ns():x}", namespace=meta["namespace"]
            ),
            involved_object=kubernetes.client.V1ObjectReference(
                api_version=f"{v1alpha1.GROUP}/{v1alpha1.VERSION}",
                kind=v1alpha1.KIND,
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta.get("uid"),
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=kubernetes.client.V1EventSource(component="pageserver-operator"),
            reporting_component="pageserver-operator",
            reporting_instance=os.environ.get("HOSTNAME", "pageserver-operator"),
        )
        try:
            await self._run(self.core.create_namespaced_event, meta["namespace"], body, _request_timeout=30)
        except Exception as e:  # events are best effort
            log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], e)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api.close()  # type: ignore[no-untyped-call]
