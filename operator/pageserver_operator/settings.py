"""Operator settings: one pydantic model fed by environment variables, CLI flags and Helm values.

Every field has a description, an environment name (``PAGESERVER_OPERATOR_<FIELD>``) and a
default. A flag wins over its variable (the CLI passes only the flags that were given; the Helm
chart sets variables).

The variables are read by `_FromEnvironment.__init__` (each field's text, validated and converted
by pydantic like any input), not by pydantic-settings: importing that library cost the CLI 74 ms
of its 0.2 s start-up budget (docs/performance.md, "CLI start-up"), and a field's variable is
all we used of it. A list field (``namespaces``) is comma-separated in its variable.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pageserver_operator import ENV_PREFIX
from pageserver_operator.remote import url as remote_url

__all__ = ["ENV_PREFIX", "EngineSettings", "OperatorSettings"]


class _FromEnvironment(BaseModel):
    """A model whose missing fields are taken from ``PAGESERVER_OPERATOR_<FIELD>`` variables."""

    model_config = ConfigDict(extra="ignore")

    def __init__(self, **given: Any) -> None:
        from_env = {
            name: os.environ[ENV_PREFIX + name.upper()]
            for name in type(self).model_fields
            if name not in given and ENV_PREFIX + name.upper() in os.environ
        }
        super().__init__(**from_env, **given)


class EngineSettings(_FromEnvironment):
    """What the storage engine needs: the volume and the remote storage."""

    workdir: Path = Field(Path("/data"), description="The pageserver working directory (the volume)")
    remote: str = Field(
        ...,
        description="Remote storage: file:///absolute/path or "
        "s3://BUCKET[/PREFIX]?endpoint=http://HOST:PORT&region=REGION",
    )
    concurrency: int = Field(
        8, ge=1, le=256, description="Remote requests in flight at once (downloads and uploads share it)"
    )

    @field_validator("workdir")
    @classmethod
    def _absolute_workdir(cls, v: Path) -> Path:
        return v.absolute()

    @field_validator("remote")
    @classmethod
    def _valid_remote(cls, v: str) -> str:
        remote_url.parse_remote_url(v)
        return v

    def remote_config(self) -> remote_url.RemoteConfig:
        return remote_url.parse_remote_url(self.remote, concurrency=self.concurrency)


#: Where a pod finds its own namespace (the service account's projected files).
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _own_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


class OperatorSettings(EngineSettings):
    """Settings of ``pageserver-operator run``."""

    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch (comma-separated in the env); empty = all"
    )
    sync_period: float = Field(60.0, gt=0, description="Seconds between syncs of an Active tenant")
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig file; default: KUBECONFIG, else the in-cluster service account"
    )
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus metrics port (0 = off)")
    liveness_port: int = Field(8080, ge=0, le=65535, description="kopf liveness endpoint port (0 = off)")
    log_format: Literal["json", "text"] = Field("text", description="Log line format")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    status_interval: float = Field(
        1.0, gt=0, description="Minimum seconds between two progress updates of one Tenant's status"
    )
    retry_initial: float = Field(30.0, gt=0, description="First automatic retry of a Broken tenant (s)")
    retry_max: float = Field(3600.0, gt=0, description="Cap of the retry backoff of a Broken tenant (s)")
    pageserver: str = Field(
        default_factory=lambda: (os.environ.get("HOSTNAME") or socket.gethostname()).lower(),
        min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="This pageserver manager's name (status.placement.attached); default the pod name "
        "(HOSTNAME), else the host name",
    )

    failover_seconds: float = Field(
        30.0, gt=0, le=3600,
        description="A pageserver whose heartbeat Lease is not renewed for this long is Offline and loses its "
        "tenants to others (generation+1); also the placement leader's lease duration",
    )
    capacity: int = Field(
        1000, ge=1, description="Tenants this pageserver is sized for: the load score is the larger of the volume's "
        "used fraction and tenants / capacity",
    )
    per_tenant_metrics: bool = Field(
        True,
        description="Per-tenant metric series (a tenant_id label: the dashboard's drill-down); false for large "
        "fleets: one series per manager instead (README, Metrics)",
    )
    max_concurrent_attaches: int = Field(
        32, ge=1, le=100000,
        description="Tenants brought up (attached, resumed or loaded) at once by this manager; the others wait "
        "their turn, saying so in status.message. Bounds the peak memory when many Tenants arrive at once (or at "
        "a restart) at the price of the time until all are Active",
    )
    drain_concurrency: int = Field(
        4, ge=1, le=1000, description="Migrations away from a Draining pageserver in flight at once (placement leader)"
    )
    lease_namespace: str = Field(
        default_factory=lambda: _own_namespace() or "default",
        min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Namespace of the heartbeat and placement Leases; default the pod's own namespace, else "
        "`default`. Managers sharing it form one placement group",
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [n.strip() for n in v.split(",") if n.strip()]
        return v
