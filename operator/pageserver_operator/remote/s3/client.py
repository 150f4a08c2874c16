"""Construction of the botocore S3 client and of the obstore data path (`s3.transfer`) for one backend.

Invariants:

- botocore's own retries are off (one attempt per request): `retry.Retrier` is the only retry
  layer. The pool (``pool_size``) is larger than the concurrency, with TCP keep-alive.
- With an ``endpoint`` (S3-compatible server) addressing is path-style, and checksums are only
  sent or checked when the operation requires them.
- One botocore data loader per process (the service model is parsed once); credentials stay per
  session, from the standard AWS chain only.
- The obstore path (`transfer`) is built where it applies: usable credentials and no proxy for
  the bucket's address; for an endpoint (path style) or AWS itself (virtual host).
- botocore is imported only to build its client or its credential chain: when the environment
  names the credentials (`environment_credentials`), the obstore path needs neither, and a CLI
  attach reaches its first request ~150 ms sooner (docs/performance.md, "CLI start-up").
"""

from __future__ import annotations

import os
import threading
import typing
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pageserver_operator.remote.s3 import transfer as s3_transfer

if TYPE_CHECKING:
    import botocore.loaders
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
    import botocore.session
    from botocore.config import Config as BotoConfig

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


def make_transfer(
    credentials: Any,
    ca_bundle: str | None,
    endpoint: str | None,
    bucket: str,
    region: str,
    *,
    connect_timeout: float,
    read_timeout: float,
    pool_size: int,
) -> s3_transfer.Transfer | None:
    """The obstore data path for layer GETs and PUTs (`s3.transfer`), or None where botocore must
    carry them: no credentials (botocore raises the error that says what to set), or a proxy
    applies to the bucket's address (only botocore follows the proxy settings)."""
    if credentials is None:
        return None
    address = endpoint if endpoint is not None else f"https://{bucket}.s3.{region}.amazonaws.com"
    if _proxied(address):
        return None
    return s3_transfer.Transfer(
        bucket,
        region,
        credentials,
        endpoint=endpoint,
        ca_bundle=str(ca_bundle) if ca_bundle else None,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        pool_size=pool_size,
    )


_LOADER_LOCK = threading.Lock()
_LOADER: botocore.loaders.Loader | None = None


def _shared_loader() -> botocore.loaders.Loader:
    """One botocore data loader per process: the S3 service model is parsed once, not per client
    (a client is then created in ~15 ms instead of ~70 ms). Credentials stay per session."""
    import botocore.loaders

    global _LOADER
    if _LOADER is None:
        _LOADER = botocore.loaders.create_loader()
    return _LOADER


def _proxied(address: str) -> bool:
    """Whether the proxy settings of the environment apply to ``address`` (what botocore's
    ``get_environ_proxies`` decides, from the same standard-library functions)."""
    try:
        if urllib.request.proxy_bypass(urllib.parse.urlparse(address).netloc):
            return False
    except (TypeError, OSError):
        pass
    return bool(urllib.request.getproxies())


@dataclass(frozen=True, repr=False)
class EnvironmentCredentials:
    """Credentials named by the environment, in the shape of botocore's (``access_key``,
    ``secret_key``, ``token``, `get_frozen_credentials`), so `transfer.Transfer` takes either.
    Never printed (no repr)."""

    access_key: str
    secret_key: str
    token: str | None

    def get_frozen_credentials(self) -> EnvironmentCredentials:
        return self


def environment_credentials() -> EnvironmentCredentials | None:
    """``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` (with ``AWS_SESSION_TOKEN``), when the
    environment alone decides what botocore's chain would return: its first provider is these
    variables, so they are the answer whenever both are set. None (botocore's chain decides)
    when one is missing, when they expire (``AWS_CREDENTIAL_EXPIRATION``: botocore refreshes
    them), or when an AWS config file exists (it may set ``ca_bundle``, which only botocore
    reads)."""
    env = os.environ
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret or env.get("AWS_CREDENTIAL_EXPIRATION"):
        return None
    config_file = env.get("AWS_CONFIG_FILE") or "~/.aws/config"
    if Path(config_file).expanduser().exists():
        return None
    token = env.get("AWS_SECURITY_TOKEN") or env.get("AWS_SESSION_TOKEN") or None  # botocore's order
    return EnvironmentCredentials(key, secret, token)
