"""The operator image: built here (hack/image/build.sh), non-root with a read-only root file
system, nothing but the runtime inside, and the operator in it attaching a tenant against the
local control plane and S3 server (host network: both listen on 127.0.0.1)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from chart import support
from e2e import helpers
from image.conftest import BuiltImage, docker
from pageserver_operator.devenv import controlplane, objectstore, processes

pytestmark = pytest.mark.docker

UID = 65532
MAX_IMAGE_BYTES = 350_000_000
ACTIVE_TIMEOUT = 120.0


def test_build_reports_the_image_size(image: BuiltImage) -> None:
    size_line = next(
        (ln for ln in image.build_output.splitlines() if ln.startswith("image: ") and "size" in ln), None
    )
    assert size_line is not None, image.build_output[-3000:]
    print(f"\n{size_line} (this run: {image.build_seconds:.1f} s)")
    assert 0 < image.size_bytes < MAX_IMAGE_BYTES, f"image is {image.size_bytes / 1e6:.0f} MB"


def test_image_runs_as_numeric_non_root_with_the_operator_as_entrypoint(image: BuiltImage) -> None:
    config = json.loads(docker("image", "inspect", image.name).stdout)[0]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["pageserver-operator"]
    assert config["Cmd"] == ["run"]
    assert "PAGESERVER_OPERATOR_WORKDIR=/data" in config["Env"]


def test_help_works_as_non_root_with_a_read_only_root(image: BuiltImage) -> None:
    result = docker(
        "run", "--rm", "--read-only", "--user", str(UID), "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--network", "none", image.name, "--help",
    )  # fmt: skip
    assert "usage: pageserver-operator" in result.stdout
    assert "run" in result.stdout and "attach" in result.stdout


def test_run_without_settings_exits_with_a_one_line_reason(image: BuiltImage) -> None:
    result = docker("run", "--rm", "--read-only", "--network", "none", image.name, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "pageserver-operator run: invalid settings: remote: Field required"
    ]


def test_final_image_has_no_compilers_installers_or_caches(image: BuiltImage) -> None:
    script = r"""
        set -u
        for tool in gcc cc c++ make ld pip pip3 apt-get; do
            if command -v "$tool" >/dev/null 2>&1; then echo "found: $tool"; fi
        done
        /opt/venv/bin/python -c 'import pip' 2>/dev/null && echo 'found: pip in the venv'
        for dir in /root/.cache /tmp/pip* /src /wheels /var/cache/apt/archives/*.deb /var/lib/apt/lists/*.lz4; do
            if [ -e "$dir" ]; then echo "found: $dir"; fi
        done
        # The operator's venv: no installer, no wheels (the base's own ensurepip wheels aside).
        find /opt/venv \( -name '*.whl' -o -name 'pip' -o -name 'setuptools' \) 2>/dev/null | sed 's/^/found: /'
        getent passwd "$(id -u)" | cut -d: -f1 | sed 's/^/user=/'
        echo "uid=$(id -u) gid=$(id -g)"
        ls -ldn /data | awk '{print "data=" $3 ":" $4}'
    """
    result = docker(
        "run", "--rm", "--read-only", "--network", "none", "--entrypoint", "/bin/sh", image.name, "-c", script
    )
    found = [ln for ln in result.stdout.splitlines() if ln.startswith("found:")]
    # apt-get comes with the Debian base (dpkg's tooling); the image never runs it.
    assert [f for f in found if f != "found: apt-get"] == [], result.stdout
    assert f"uid={UID} gid={UID}" in result.stdout
    assert f"data={UID}:{UID}" in result.stdout
    assert "user=nonroot" in result.stdout, "UID 65532 has no passwd entry (kopf needs getpass.getuser())"


# ---- the operator in the image --------------------------------------------------------------------


def _container_kubeconfig(plane: controlplane.ControlPlane, path: Path) -> Path:
    """The admin kubeconfig with the CA inline (the container does not see the host's files)."""
    config = json.loads(plane.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    ca = Path(cluster.pop("certificate-authority")).read_bytes()
    cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    path.write_text(json.dumps(config))
    path.chmod(0o644)
    return path


def _owned_by_operator(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, UID, UID)
    else:
        path.chmod(0o777)


@pytest.fixture
def container_name(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"pageserver-operator-test-{uuid.uuid4().hex[:8]}"
    yield name
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
    if failed:
        logs = docker("logs", "--tail", "200", name, check=False)
        print(f"\n----- docker logs {name} -----\n{logs.stdout}{logs.stderr}")
    docker("rm", "--force", name, check=False)


def test_image_runs_the_operator_and_attaches_a_tenant(
    image: BuiltImage,
    control_plane: controlplane.ControlPlane,
    kubectl: Path,
    s3_server: objectstore.ObjectStore,
    s3_bucket: str,
    tmp_path: Path,
    container_name: str,
) -> None:
    kube = helpers.Kubectl(kubectl, control_plane.kubeconfig)
    kube.run("apply", "-f", str(support.TOP_CRD))
    support.wait_established(kube)
    namespace = f"image-{uuid.uuid4().hex[:10]}"
    kube.run("create", "namespace", namespace)
    k = kube.in_namespace(namespace)
    remote_url = f"s3://{s3_bucket}?endpoint={s3_server.endpoint}&region={s3_server.region}"
    tenant_id = support.seed_tenant(remote_url, s3_server)

    kubeconfig = _container_kubeconfig(control_plane, tmp_path / "kubeconfig")
    volume = tmp_path / "volume"
    volume.mkdir()
    _owned_by_operator(volume)
    metrics_port, liveness_port = processes.free_ports(2)
    env = {
        "KUBECONFIG": "/etc/pageserver-operator/kubeconfig",
        "PAGESERVER_OPERATOR_REMOTE": remote_url,
        "PAGESERVER_OPERATOR_NAMESPACES": namespace,
        "PAGESERVER_OPERATOR_SYNC_PERIOD": "1",
        "PAGESERVER_OPERATOR_METRICS_PORT": str(metrics_port),
        "PAGESERVER_OPERATOR_LIVENESS_PORT": str(liveness_port),
        "PAGESERVER_OPERATOR_LOG_FORMAT": "json",
        **support.aws_env(s3_server),
    }
    docker(
        "run", "--detach", "--name", container_name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp", "--user", f"{UID}:{UID}",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--volume", f"{kubeconfig}:/etc/pageserver-operator/kubeconfig:ro",
        "--volume", f"{volume}:/data",
        *(arg for name, value in env.items() for arg in ("--env", f"{name}={value}")),
        image.name,
    )  # fmt: skip

    def live() -> bool:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", container_name).stdout)
        if not state["Running"]:
            logs = docker("logs", container_name, check=False)
            pytest.fail(
                f"the container exited ({state['ExitCode']}):\n{logs.stdout}{logs.stderr}", pytrace=False
            )
        return helpers.http_status(f"http://127.0.0.1:{liveness_port}/healthz") == 200

    helpers.wait_for(live, 60, "the operator in the container to be live")

    name = "sample"
    k.apply(helpers.tenant_manifest(name, tenant_id))
    tenant = helpers.wait_phase(k, name, "Active", timeout=ACTIVE_TIMEOUT)
    assert (helpers.condition(tenant, "Ready") or {}).get("status") == "True"
    tenant_dir = volume / "tenants" / tenant_id
    assert tenant_dir.is_dir()
    assert tenant_dir.stat().st_uid == UID, "the operator in the image wrote as another user"
    assert len(tenant["status"]["timelines"]) == 2
    assert "pageserver_operator" in helpers.scrape(metrics_port)

    k.run("delete", "tenant", name, "--wait=false")
    helpers.wait_gone(k, name, timeout=ACTIVE_TIMEOUT)
    assert not tenant_dir.exists()

    # SIGTERM (what the kubelet sends): kopf stops cleanly.
    docker("stop", "--time", "30", container_name, timeout=60)
    state = json.loads(docker("inspect", "--format", "{{json .State}}", container_name).stdout)
    logs = docker("logs", container_name, check=False)
    assert state["ExitCode"] == 0, logs.stdout + logs.stderr
    lines = [json.loads(ln) for ln in logs.stderr.splitlines() if ln.startswith("{")]
    assert lines, "no JSON log lines: " + logs.stderr[-2000:]
    # kopf logs a retried request at ERROR (e.g. "storage is (re)initializing" of a new CRD's
    # watch cache); anything else at ERROR is a failure.
    errors = [
        ln
        for ln in lines
        if ln.get("level") in ("ERROR", "CRITICAL") and "will retry" not in str(ln.get("message"))
    ]
    assert not errors, json.dumps(errors, indent=1)
