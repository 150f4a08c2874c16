"""Construction of the botocore S3 client and of the direct path for one backend.

Invariants:

- botocore's own retries are off (one attempt per request): `retry.Retrier` is the only retry
  layer. The pool (``pool_size``) is larger than the concurrency, with TCP keep-alive.
- With an ``endpoint`` (S3-compatible server) addressing is path-style, and checksums are only
  sent or checked when the operation requires them.
- One botocore data loader per process (the service model is parsed once); credentials stay per
  session, from the standard AWS chain only.
- The direct path (`direct`) is built only where it cannot change behaviour: an endpoint, usable
  credentials, no proxy.
"""

from __future__ import annotations

import threading
import typing
from typing import TYPE_CHECKING, Any

import botocore.httpsession
import botocore.loaders
import botocore.session
import botocore.utils
from botocore.config import Config as BotoConfig

from pageserver_operator.remote.s3 import direct as s3_direct

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Connections beyond the concurrency limit, so a request never waits for the pool.
POOL_HEADROOM = 4


def create(
    *,
    endpoint: str | None,
    region: str,
    pool_size: int,
    connect_timeout: float,
    read_timeout: float,
) -> tuple[S3Client, Any, str | None]:
    """A botocore S3 client with our pool, timeouts, and botocore's retries off (we retry
    ourselves), plus the session's credentials (botocore's provider chain, refreshed
    there; None when there are none) and its ``ca_bundle`` setting (``AWS_CA_BUNDLE``)."""
    options: dict[str, Any] = {
        "region_name": region,
        "max_pool_connections": pool_size,
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "tcp_keepalive": True,
    }
    if endpoint is not None:
        options["s3"] = {"addressing_style": "path"}
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    with _LOADER_LOCK:
        botocore_session = botocore.session.Session()
        botocore_session.register_component("data_loader", _shared_loader())
        # botocore's client, not boto3's: boto3 adds only resources and s3transfer helpers,
        # none of which is used here, and importing it costs a CLI run ~0.1 s of start-up.
        client = typing.cast(
            "S3Client",
            botocore_session.create_client("s3", endpoint_url=endpoint, config=BotoConfig(**options)),
        )
    ca_bundle = botocore_session.get_config_variable("ca_bundle")
    return client, botocore_session.get_credentials(), ca_bundle


def make_direct(
    credentials: Any,
    ca_bundle: str | None,
    endpoint: str,
    bucket: str,
    region: str,
    *,
    connect_timeout: float,
    read_timeout: float,
    pool_size: int,
) -> s3_direct.DirectS3 | None:
    """The direct transfer path for this endpoint, or None where it would change behaviour:
    no credentials (botocore raises the error that says what to set), a proxy applies."""
    if credentials is None or botocore.utils.get_environ_proxies(endpoint):
        return None
    verify: bool | str = True
    if endpoint.startswith("https:"):
        # botocore's own trust store: AWS_CA_BUNDLE, else certifi's bundle
        verify = str(ca_bundle) if ca_bundle else str(botocore.httpsession.get_cert_path(True))
    try:
        return s3_direct.DirectS3(
            endpoint,
            bucket,
            region,
            credentials,
            verify=verify,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            pool_size=pool_size,
        )
    except ValueError:
        return None


_LOADER_LOCK = threading.Lock()
_LOADER: botocore.loaders.Loader | None = None


def _shared_loader() -> botocore.loaders.Loader:
    """One botocore data loader per process: the S3 service model is parsed once, not per client
    (a client is then created in ~15 ms instead of ~70 ms). Credentials stay per session."""
    global _LOADER
    if _LOADER is None:
        _LOADER = botocore.loaders.create_loader()
    return _LOADER

