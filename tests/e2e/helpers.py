"""Helpers of the operator end-to-end tests: kubectl, waiting, Tenant manifests, metrics, S3.

Everything here talks to the real components the way a person would: ``kubectl`` for the
cluster (so the tests also prove the CRD works for kubectl users: short names, printer columns,
``kubectl wait``), the Prometheus text format for metrics, boto3 for the bucket.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from helpers import tree
from pageserver_operator.api import v1alpha1

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

API_VERSION = f"{v1alpha1.GROUP}/{v1alpha1.VERSION}"
RESOURCE = f"{v1alpha1.PLURAL}.{v1alpha1.GROUP}"


class WaitTimeout(AssertionError):
    """A condition did not become true in time (an AssertionError so pytest shows it as a failure)."""


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.2,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy, and return that.

    On timeout, fail with ``what`` and, if given, ``describe()`` (the state that was seen)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            seen = ""
            if describe is not None:
                try:
                    seen = f"; last seen: {describe()}"
                except Exception as e:  # the description must never hide the timeout
                    seen = f"; (describe failed: {e})"
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}{seen}")
        time.sleep(interval)


# ---- kubectl --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Api:
    """Direct GETs against the API server of a kubeconfig written by devenv (server, CA, token)."""

    server: str
    token: str
    context: ssl.SSLContext


_API_CACHE: dict[tuple[Path, int], _Api | None] = {}


def _api_of(kubeconfig: Path) -> _Api | None:
    """The kubeconfig's server, token and CA if it is the simple kind devenv writes, else None."""
    try:
        key = (kubeconfig, kubeconfig.stat().st_mtime_ns)
    except OSError:
        return None
    if key not in _API_CACHE:
        api: _Api | None = None
        try:
            config = json.loads(kubeconfig.read_text())
            cluster = config["clusters"][0]["cluster"]
            user = config["users"][0]["user"]
            if "token" in user and "certificate-authority" in cluster and len(config["clusters"]) == 1:
                context = ssl.create_default_context(cafile=cluster["certificate-authority"])
                api = _Api(cluster["server"].rstrip("/"), user["token"], context)
        except (OSError, ValueError, KeyError, IndexError, TypeError, ssl.SSLError):
            api = None
        _API_CACHE[key] = api
    return _API_CACHE[key]


@dataclass(frozen=True)
class Kubectl:
    """``kubectl`` bound to one kubeconfig and (optionally) one namespace."""

    binary: Path
    kubeconfig: Path
    namespace: str | None = None

    def in_namespace(self, namespace: str) -> Kubectl:
        return Kubectl(self.binary, self.kubeconfig, namespace)

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}"]
        if self.namespace is not None:
            argv.append(f"--namespace={self.namespace}")
        argv += list(args)
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"`kubectl {' '.join(args)}` exited {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result

    def apply(
        self, *docs: Mapping[str, Any], check: bool = True, args: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of ``docs`` (one List)."""
        body = {"apiVersion": "v1", "kind": "List", "items": list(docs)}
        return self.run("apply", *args, "-f", "-", stdin=json.dumps(body), check=check)

    def get_json(self, *args: str) -> Any:
        return json.loads(self.run("get", *args, "-o", "json").stdout)

    def _get_tenants(self, name: str | None) -> tuple[bool, Any]:
        """GET a Tenant (or the list) straight from the API server: (found, object).

        Why not ``kubectl get``: the tests poll Tenants every 0.2 s, and one kubectl run costs
        about 140 ms and 50 ms of CPU here against 8 ms and 2 ms for this GET; on 2 cores that
        CPU is taken from the operator under test. The object is the API server's JSON, the same
        that ``kubectl get -o json`` prints. Falls back to kubectl for other kubeconfigs.
        """
        api = _api_of(self.kubeconfig)
        if api is None:
            if name is None:
                return True, self.get_json(RESOURCE)
            result = self.run("get", RESOURCE, name, "-o", "json", "--ignore-not-found", check=False)
            if result.returncode != 0:
                raise AssertionError(f"kubectl get {name}: {result.stderr}")
            return bool(result.stdout.strip()), json.loads(result.stdout) if result.stdout.strip() else None
        path = f"/apis/{API_VERSION}/namespaces/{self.namespace or 'default'}/{v1alpha1.PLURAL}"
        if name is not None:
            path += f"/{name}"
        request = urllib.request.Request(api.server + path, headers={"Authorization": f"Bearer {api.token}"})
        try:
            with urllib.request.urlopen(request, timeout=30, context=api.context) as response:
                return True, json.load(response)
        except urllib.error.HTTPError as error:
            if error.code == 404 and name is not None:
                return False, None
            raise AssertionError(f"GET {path}: HTTP {error.code}: {error.read()[:500]!r}") from error

    def tenant(self, name: str) -> dict[str, Any]:
        found, obj = self._get_tenants(name)
        if not found:
            raise AssertionError(f"no Tenant {name} in namespace {self.namespace}")
        return dict(obj)

    def tenant_or_none(self, name: str) -> dict[str, Any] | None:
        found, obj = self._get_tenants(name)
        return dict(obj) if found else None

    def tenants(self) -> list[dict[str, Any]]:
        _, obj = self._get_tenants(None)
        items: list[dict[str, Any]] = obj["items"]
        return items

    def events(self, name: str) -> list[dict[str, Any]]:
        """Events whose involved object is the Tenant ``name`` of this namespace (polled by
        `wait_event`: a direct GET like `tenant`, kubectl for other kubeconfigs)."""
        selector = f"involvedObject.name={name},involvedObject.kind={v1alpha1.KIND}"
        api = _api_of(self.kubeconfig)
        if api is None:
            items: list[dict[str, Any]] = self.get_json("events", f"--field-selector={selector}")["items"]
            return items
        query = urllib.parse.urlencode({"fieldSelector": selector})
        path = f"/api/v1/namespaces/{self.namespace or 'default'}/events?{query}"
        request = urllib.request.Request(api.server + path, headers={"Authorization": f"Bearer {api.token}"})
        try:
            with urllib.request.urlopen(request, timeout=30, context=api.context) as response:
                listed: list[dict[str, Any]] = json.load(response)["items"]
                return listed
        except urllib.error.HTTPError as error:
            raise AssertionError(f"GET {path}: HTTP {error.code}: {error.read()[:500]!r}") from error


def tenant_manifest(name: str, tenant_id: str, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"tenantId": tenant_id}
    if config is not None:
        spec["config"] = dict(config)
    return {"apiVersion": API_VERSION, "kind": v1alpha1.KIND, "metadata": {"name": name}, "spec": spec}


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            found: dict[str, Any] = c
            return found
    return None


def phase(obj: Mapping[str, Any] | None) -> str | None:
    value = ((obj or {}).get("status") or {}).get("phase")
    return str(value) if value is not None else None


def summary(obj: Mapping[str, Any] | None) -> str:
    """Phase, reason and message of a Tenant, for failure messages."""
    if obj is None:
        return "(no such Tenant)"
    st = obj.get("status") or {}
    return f"phase={st.get('phase')} reason={st.get('reason')} message={st.get('message')!r}"


def wait_phase(k: Kubectl, name: str, want: str | Iterable[str], timeout: float = 60.0) -> dict[str, Any]:
    """Wait until Tenant ``name`` is in phase ``want`` (one of them) and return the object."""
    wanted = {want} if isinstance(want, str) else set(want)
    last: list[dict[str, Any] | None] = [None]

    def check() -> dict[str, Any] | None:
        obj = k.tenant_or_none(name)
        last[0] = obj
        return obj if phase(obj) in wanted else None

    return wait_for(check, timeout, f"Tenant {name} to be {'/'.join(sorted(wanted))}",
                    describe=lambda: summary(last[0]))  # fmt: skip


def wait_gone(k: Kubectl, name: str, timeout: float = 60.0) -> None:
    wait_for(lambda: k.tenant_or_none(name) is None, timeout, f"Tenant {name} to be deleted",
             describe=lambda: summary(k.tenant_or_none(name)))  # fmt: skip


def wait_event(k: Kubectl, name: str, reason: str, timeout: float = 30.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        return next((e for e in k.events(name) if e.get("reason") == reason), None)

    return wait_for(check, timeout, f"an Event {reason} for Tenant {name}",
                    describe=lambda: str(sorted({str(e.get("reason")) for e in k.events(name)})))  # fmt: skip


# ---- metrics --------------------------------------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (None if absent).

    ``name`` is the sample name as exposed (counters end in ``_total``)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


# ---- processes ------------------------------------------------------------------------------------


def peak_rss_bytes(pid: int) -> int:
    """The peak resident set size (``VmHWM``) of a live process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


# ---- the volume and the bucket --------------------------------------------------------------------


def files_below(root: Path) -> list[str]:
    """Every file and directory below ``root`` (relative paths, sorted)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def assert_tenant_matches(
    workdir: Path, remote: tree.RemoteTenant, scratch: Path, allow_config: bool = False
) -> None:
    """`tree.assert_matches_remote` for one tenant of a volume that also holds other tenants
    (whose markers or temp files must not count against this one): the tenant directory is
    copied alone onto a scratch volume and compared there."""
    tid = str(remote.tenant_id)
    alone = scratch / "alone"
    shutil.copytree(workdir / "tenants" / tid, alone / "tenants" / tid, symlinks=True)
    try:
        tree.assert_matches_remote(alone, remote, allow_config=allow_config)
    finally:
        shutil.rmtree(alone)


def bucket_objects(client: S3Client, bucket: str) -> dict[str, tuple[int, str]]:
    """Every object of ``bucket``: key -> (size, ETag)."""
    out: dict[str, tuple[int, str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = (obj["Size"], obj["ETag"])
    return out


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# ---- a switchable TCP path to a server ------------------------------------------------------------


class TcpForwarder:
    """Forwards connections from ``127.0.0.1:port`` to ``target`` -- once `open` was called.

    Before that nothing listens on the port (connections are refused, as when a server is down),
    so a test can make a server unreachable and then reachable again without touching it."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self._listener: socket.socket | None = None
        self._closed = threading.Event()

    def open(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, name="forwarder", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
