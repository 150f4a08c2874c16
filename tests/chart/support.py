"""Helpers of the chart and image tests: helm, rendered manifests, the chart's settings as an
operator environment, seeding a tenant with the CLI, and the operator as a separate process.

Used by tests/chart and tests/image (``from chart import support``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import helpers
from helpers.components import in_ci as in_ci  # re-exported: tests/image uses support.in_ci
from helpers.components import unavailable as unavailable
from pageserver_operator.devenv import objectstore, processes

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pageserver-operator"
CHART_CRD = CHART / "crds" / "tenants.pageserver.dev.yaml"
TOP_CRD = REPO / "crds" / "tenants.pageserver.dev.yaml"
CRD_NAME = "tenants.pageserver.dev"
#: every CRD the chart installs (its crds/: Tenant and Pageserver)
CHART_CRDS = CHART / "crds"
CRD_NAMES = ("tenants.pageserver.dev", "pageservers.pageserver.dev")
HELM_SCRIPT = REPO / "hack" / "helm.sh"
EXAMPLE_TENANT = REPO / "examples" / "tenant.yaml"
CONTAINER = "operator"
OPERATOR_START_TIMEOUT = 60.0


# ---- helm -----------------------------------------------------------------------------------------


class HelmError(AssertionError):
    """A helm command failed; the message has its arguments, exit status and output."""


@dataclass(frozen=True)
class Helm:
    binary: Path

    def run(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), *([f"--kubeconfig={kubeconfig}"] if kubeconfig else []), *args]
        # helm keeps caches and repository config under HOME; keep them out of the user's.
        env = dict(os.environ)
        state = Path(tempfile.gettempdir()) / "pageserver-operator-helm"
        env.update({
            "HELM_CACHE_HOME": str(state / "cache"),
            "HELM_CONFIG_HOME": str(state / "config"),
            "HELM_DATA_HOME": str(state / "data"),
        })  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
        if check and result.returncode != 0:
            raise HelmError(
                f"`helm {' '.join(args)}` exited {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result

    def template(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        release: str = "pso",
        namespace: str = "pageserver",
        value_files: Sequence[Path] = (),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``helm template`` of the chart (without its CRDs) with ``values`` as a values file."""
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="values-") as f:
            yaml.safe_dump(dict(values or {}), f)
            f.flush()
            args = ["template", release, str(CHART), "--namespace", namespace]
            for path in value_files:
                args += ["--values", str(path)]
            args += ["--values", f.name]
            return self.run(*args, check=check)

    def render(self, values: Mapping[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        """The chart's objects, parsed."""
        return parse_docs(self.template(values, **kwargs).stdout)


def parse_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(docs: Iterable[Mapping[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [dict(d) for d in docs if d.get("kind") in kinds]


def one(docs: Iterable[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def container(statefulset: Mapping[str, Any], name: str = CONTAINER) -> dict[str, Any]:
    for c in statefulset["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            found: dict[str, Any] = c
            return found
    raise AssertionError(f"no container {name} in {statefulset['metadata']['name']}")


def s3_values(server: objectstore.ObjectStore, bucket: str, secret: str) -> dict[str, Any]:
    """Chart values for a bucket on the test S3 server, credentials from Secret ``secret``."""
    endpoint = server.endpoint
    return {
        "remote": {
            "bucket": bucket,
            "endpoint": endpoint,
            "region": server.region,
            "credentialsSecret": secret,
        },
    }


def credentials_secret(name: str, namespace: str, server: objectstore.ObjectStore) -> dict[str, Any]:
    """The Secret that ``remote.credentialsSecret`` names (keys AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key},
    }


def resolve_env(
    env_list: Sequence[Mapping[str, Any]],
    secrets: Mapping[str, Mapping[str, str]],
    fields: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment the kubelet would give the container: ``value`` as is, ``secretKeyRef``
    looked up in ``secrets`` (name -> string data), optional missing keys left out;
    ``fieldRef`` looked up in ``fields`` (field path -> the pod's value, e.g. metadata.name)."""
    env: dict[str, str] = {}
    for item in env_list:
        if "valueFrom" not in item:
            env[item["name"]] = str(item.get("value", ""))  # the API server drops value: ""
            continue
        field = item["valueFrom"].get("fieldRef")
        if field is not None:
            path = field["fieldPath"]
            assert fields is not None and path in fields, f"env {item['name']}: no pod field {path} given"
            env[item["name"]] = fields[path]
            continue
        ref = item["valueFrom"].get("secretKeyRef")
        assert ref is not None, f"unsupported env source in the chart: {item}"
        data = secrets.get(ref["name"])
        if data is None or ref["key"] not in data:
            assert ref.get("optional"), f"env {item['name']}: Secret {ref['name']} has no key {ref['key']}"
            continue
        env[item["name"]] = data[ref["key"]]
    return env


# ---- the cluster ----------------------------------------------------------------------------------


def wait_established(
    kube: helpers.Kubectl, timeout: float = 60.0, names: Sequence[str] = (CRD_NAME,)
) -> None:
    for name in names:

        def established(name: str = name) -> bool:
            crd = kube.get_json("crd", name)
            conditions = (crd.get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

        helpers.wait_for(established, timeout, f"the CRD {name} to be Established")


def apply_docs(kube: helpers.Kubectl, docs: Sequence[Mapping[str, Any]], *args: str) -> str:
    """``kubectl apply -f -`` of ``docs`` as one List; returns kubectl's output."""
    body = {"apiVersion": "v1", "kind": "List", "items": list(docs)}
    return kube.run("apply", *args, "-f", "-", stdin=json.dumps(body)).stdout


def service_account_token(kube: helpers.Kubectl, namespace: str, name: str) -> str:
    return kube.run("create", "token", name, "-n", namespace, "--duration=2h").stdout.strip()


# ---- the data -------------------------------------------------------------------------------------


def cli(*args: str, env: Mapping[str, str], timeout: float = 120.0) -> str:
    """``pageserver-operator ARGS`` as a subprocess; returns stdout (fails the test on error)."""
    result = subprocess.run(
        [sys.executable, "-m", "pageserver_operator.cli", *args],
        capture_output=True, text=True, timeout=timeout, check=False, env={**os.environ, **env},
    )  # fmt: skip
    assert result.returncode == 0, (
        f"pageserver-operator {' '.join(args)} exited {result.returncode}: {result.stderr}"
    )
    return result.stdout


def seed_tenant(
    remote_url: str, server: objectstore.ObjectStore, *, timelines: int = 2, layers: int = 3
) -> str:
    """``pageserver-operator testdata make-tenant``: a tenant in the bucket; returns its id."""
    out = cli(
        "testdata", "make-tenant", "--remote", remote_url, "--timelines", str(timelines),
        "--layers", str(layers), "--layer-size", "32KiB",
        env=aws_env(server),
    )  # fmt: skip
    tenant_id = out.strip().splitlines()[-1]
    assert len(tenant_id) == 32, out
    return tenant_id


def aws_env(server: objectstore.ObjectStore) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": server.region,
    }


def bucket_keys(server: objectstore.ObjectStore, bucket: str) -> list[str]:
    client = server.client()
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    return keys


# ---- the operator ---------------------------------------------------------------------------------


@dataclass
class Operator:
    """``pageserver-operator run`` configured only through its environment (as in the pod)."""

    process: processes.ManagedProcess
    liveness_port: int

    def log(self) -> str:
        path = self.process.log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_live(self, timeout: float = OPERATOR_START_TIMEOUT) -> None:
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        try:
            processes.wait_until(self.process, lambda: helpers.http_status(url) == 200, timeout, "live", 0.2)
        except processes.StartError as e:
            pytest.fail(f"{e}\n----- operator log -----\n{self.log()}", pytrace=False)

    def stop(self) -> None:
        self.process.stop(timeout=15)


def start_operator(env: Mapping[str, str], log_path: Path, liveness_port: int) -> Operator:
    """Start ``pageserver-operator run`` with no flags: every setting comes from ``env``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAGESERVER_OPERATOR_", "AWS_", "KUBECONFIG"))
    }
    base.update(env)
    base["PYTHONUNBUFFERED"] = "1"
    process = processes.ManagedProcess.start(
        "operator (chart settings)",
        [sys.executable, "-m", "pageserver_operator.cli", "run"],
        log_path,
        env=base,
        cwd=log_path.parent,
    )
    return Operator(process, liveness_port)
