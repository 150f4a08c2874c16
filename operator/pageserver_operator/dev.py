"""``pageserver-operator dev``: the embedded default, end to end, in one command.

Starts the local control plane and object store (built once, cached), seeds a sample tenant in
the exact remote formats (once: it stays in the object store's state), installs the CRD, runs
the operator as a child process and applies ``examples/tenant.yaml``; then shows the Tenant go
from Attaching to Active with its progress, and writes ``<state-dir>/env`` for a second shell
(to ``source``: KUBECONFIG, the S3 endpoint and credentials, the operator's workdir and remote,
and PATH with this virtualenv's scripts).
The control plane and the object store reuse the previous run's ports when they are free, so a
shell that sourced the file earlier keeps working after a restart.
Ctrl-C (or SIGTERM) stops the operator, then the object store, then the control plane.
A second run starts in seconds: nothing is rebuilt and the sample data is already there.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from pageserver_operator import testdata
from pageserver_operator.api import crd, v1alpha1
from pageserver_operator.devenv import binaries, environment
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids
from pageserver_operator.remote import errors as remote_errors
from pageserver_operator.remote import factory as remote_factory
from pageserver_operator.remote import url as remote_url

BUCKET = "pageserver-dev"
SAMPLE_SHAPE = testdata.TenantShape(timelines=3, layers=24, layer_size=4 << 20, seed=1)

_EMBEDDED_SAMPLE = """\
apiVersion: pageserver.dev/v1alpha1
kind: Tenant
metadata:
  name: sample
spec:
  tenantId: 5ca1ab1e000000000000000000000001
"""


def _say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def sample_manifest() -> str:
    """``examples/tenant.yaml`` of the checkout (the file the README shows), else a copy."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        path = base / "examples" / "tenant.yaml"
        if path.is_file():
            return path.read_text()
    return _EMBEDDED_SAMPLE


def sample_tenant_id(manifest: str) -> ids.TenantId:
    for line in manifest.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "tenantId":
            return ids.TenantId.parse(value.strip().strip("'\""))
    raise ValueError("the sample manifest has no spec.tenantId")


def path_line(dirs: list[str]) -> str:
    """The env file's ``PATH`` line: ``dirs`` (this virtualenv's scripts, kubectl's directory)
    ahead of the sourcing shell's own PATH, so that the banner's ``pageserver-operator status``
    and ``kubectl`` lines work in a shell that only sourced the file."""
    unique = list(dict.fromkeys(d for d in dirs if d))
    return "PATH=" + ":".join(shlex.quote(d) for d in unique) + ':"$PATH"'


def _kubectl(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(binaries.find_kubectl()), *args], input=stdin, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _seed(remote: str, tenant_id: ids.TenantId, env: dict[str, str]) -> None:
    os.environ.update(env)
    storage = remote_factory.open_remote(remote_url.parse_remote_url(remote))
    try:
        tl_prefix = paths.remote_timelines_prefix(tenant_id)
        try:
            if storage.list_dirs(tl_prefix):
                _say(f"sample tenant {tenant_id} already in s3://{BUCKET}")
                return
        except remote_errors.NotFound:
            pass
        started = time.monotonic()
        gen = testdata.make_remote_tenant(storage, SAMPLE_SHAPE, tenant_id)
        _say(
            f"seeded sample tenant {tenant_id}: {len(gen.timelines)} timelines, "
            f"{gen.layer_bytes >> 20} MiB in {time.monotonic() - started:.1f} s"
        )
    finally:
        storage.close()


def _watch_until_active(
    env: dict[str, str], name: str, operators: list[subprocess.Popen[bytes]], timeout: float
) -> dict[str, Any]:
    """Show the Tenant's progress until it is Active; returns it."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for operator in operators:
            if operator.poll() is not None:
                raise RuntimeError(f"an operator exited with status {operator.returncode}; see its log")
        try:
            doc: dict[str, Any] = json.loads(_kubectl(env, "get", "tenant", name, "-o", "json"))
        except RuntimeError:
            time.sleep(0.5)
            continue
        st = doc.get("status") or {}
        prog = st.get("progress") or {}
        line = (
            f"tenant/{name}: {st.get('phase', 'Pending'):<9} "
            f"{prog.get('percent', 0):>3}% ({prog.get('layersDone', 0)}/{prog.get('layersTotal', 0)} layers, "
            f"{prog.get('bytesDone', 0) >> 20}/{prog.get('bytesTotal', 0) >> 20} MiB) {st.get('message', '')}"
        )
        if line != last:
            _say(line)
            last = line
        if st.get("phase") == "Active":
            return doc
        if st.get("phase") == "Broken":
            raise RuntimeError(f"the sample tenant is Broken: {st.get('reason')}: {st.get('message')}")
        time.sleep(0.5)
    raise RuntimeError(f"the sample tenant did not become Active within {timeout:.0f} s")


def _wait_registered(env: dict[str, str], names: list[str], operators: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Until every manager's Pageserver exists: ready means every manager is up, not only the
    one the sample went to (a manager's first request may wait out a retry)."""
    deadline = time.monotonic() + timeout
    missing = set(names)
    while time.monotonic() < deadline:
        for operator in operators:
            if operator.poll() is not None:
                raise RuntimeError(f"an operator exited with status {operator.returncode}; see its log")
        try:
            doc = json.loads(_kubectl(env, "get", v1alpha1.PAGESERVER_PLURAL, "-o", "json"))
            missing = set(names) - {(i.get("metadata") or {}).get("name") for i in doc.get("items") or []}
        except RuntimeError:
            pass
        if not missing:
            return
        time.sleep(0.5)
    raise RuntimeError(f"pageservers not registered within {timeout:.0f} s: {', '.join(sorted(missing))}; see their logs")


def _names(pageservers: int) -> list[str | None]:
    """The managers' ``--pageserver`` names: one manager keeps the default (the host name)."""
    return [None] if pageservers == 1 else [f"dev-{i}" for i in range(pageservers)]


def _volume(state: Path, name: str | None) -> Path:
    return state / "volume" if name is None else state / "volumes" / name


def run(state_dir: Path | None, exit_when_ready: bool = False, pageservers: int = 1) -> None:
    if pageservers < 1:
        raise ValueError("--pageservers must be at least 1")
    state = (state_dir or environment.default_state_dir()).resolve()
    started = time.monotonic()
    env_ = environment.start_environment(state)
    operators: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        assert env_.object_store is not None
        env_.object_store.create_bucket(BUCKET)
        env = {**os.environ, **env_.env()}
        remote = f"s3://{BUCKET}?endpoint={env_.object_store.endpoint}&region={env_.object_store.region}"
        names = _names(pageservers)
        workdir = _volume(state, names[0])
        manifest = sample_manifest()
        tenant_id = sample_tenant_id(manifest)
        _seed(remote, tenant_id, env_.env())
        for which in (v1alpha1.PLURAL, v1alpha1.PAGESERVER_PLURAL):
            _kubectl(env, "apply", "-f", "-", stdin=crd.render(which))
            _kubectl(env, "wait", "--for=condition=Established", f"crd/{which}.{v1alpha1.GROUP}", "--timeout=60s")
        extra = {
            "PAGESERVER_OPERATOR_WORKDIR": str(workdir),
            "PAGESERVER_OPERATOR_REMOTE": remote,
            "PAGESERVER_OPERATOR_METRICS_PORT": "0",
            "PAGESERVER_OPERATOR_LIVENESS_PORT": "0",
            "PAGESERVER_OPERATOR_SYNC_PERIOD": "10",
            "PAGESERVER_OPERATOR_LEASE_NAMESPACE": "default",
        }
        for name in names:
            volume = _volume(state, name)
            volume.mkdir(parents=True, exist_ok=True)
            own = {**extra, "PAGESERVER_OPERATOR_WORKDIR": str(volume)}
            if name is not None:
                own["PAGESERVER_OPERATOR_PAGESERVER"] = name
            log_path = state / ("operator.log" if name is None else f"operator-{name}.log")
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pageserver_operator.cli", "run"],
                    env={**env, **own}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            operators.append(proc)
            _say(f"operator {name or ''} running (pid {proc.pid}, volume {volume}), log: {log_path}".replace("  ", " "))
        _kubectl(env, "apply", "-f", "-", stdin=manifest)
        doc = _watch_until_active(env, "sample", operators, timeout=300)
        if pageservers > 1:
            _wait_registered(env, [n for n in names if n is not None], operators, timeout=120)
        attached = ((doc.get("status") or {}).get("placement") or {}).get("attached")
        if pageservers > 1 and attached in names:
            workdir = _volume(state, attached)  # the volume the sample is attached on
            extra["PAGESERVER_OPERATOR_WORKDIR"] = str(workdir)
            _say(f"the sample is attached on {attached}")
        env_file = env_.write_env_file()
        with open(env_file, "a") as f:
            for k, v in extra.items():
                if k in ("PAGESERVER_OPERATOR_WORKDIR", "PAGESERVER_OPERATOR_REMOTE"):
                    f.write(f"{k}={shlex.quote(v)}\n")
            f.write(path_line([sysconfig.get_path("scripts"), str(binaries.find_kubectl().parent)]) + "\n")
        _say(f"ready in {time.monotonic() - started:.1f} s. In another shell:")
        print(f"  set -a; . {env_file}; set +a")
        print("  kubectl get tenants -o wide")
        print("  kubectl get pageservers")
        print(f"  pageserver-operator status --workdir {workdir} {tenant_id}")
        for line in env_file.read_text().splitlines():
            print(f"  {line}")
        if exit_when_ready:
            return
        _say("Ctrl-C stops everything")
        while not stop.wait(1.0):
            for proc in operators:
                if proc.poll() is not None:
                    raise RuntimeError(f"an operator exited with status {proc.returncode}; see its log in {state}")
    finally:
        for proc in operators:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in operators:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        env_.stop()
        _say("stopped")
