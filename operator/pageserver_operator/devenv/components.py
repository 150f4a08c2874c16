"""What the local control plane is built from: the pinned versions, the Go-built binaries
(`Component`), the official release archives that hold them (`ReleaseArchive`, with pinned
digests), and where each binary is cached.

Invariants:
- Binaries live in ``<cache>/bin/<name>-<version>/<name>``; ``<cache>`` is
  ``$PAGESERVER_OPERATOR_CACHE`` or ``~/.cache/pageserver-operator``. Nothing is written
  inside the repository.
- A cached binary counts only if it runs its version command and reports the expected version
  (`is_usable`): a cache filled by another version, or a partial file, is never used.
- Every release archive is pinned by its digest here; a download is checked against it
  (`devenv.fetch`).

Nothing here builds or downloads: that is `gobuild` (the Go build) and `binaries` (cached, else
fetched, else built).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
from pathlib import Path

ETCD_VERSION = "v3.6.6"
KUBERNETES_VERSION = "v1.34.2"

CACHE_ENV = "PAGESERVER_OPERATOR_CACHE"
KUBERNETES_RELEASES_ENV = "PAGESERVER_OPERATOR_KUBERNETES_RELEASES"
"""Base URL of Kubernetes release archives (``https://dl.k8s.io`` or a mirror); unset: never fetch."""
ETCD_RELEASES_ENV = "PAGESERVER_OPERATOR_ETCD_RELEASES"
"""Base URL of etcd release archives (``https://github.com/etcd-io/etcd/releases/download``
or a mirror); unset: never fetch."""


@dataclasses.dataclass(frozen=True)
class Component:
    """One Go-built binary: where its source module lives and how to check the result."""

    name: str
    """Binary name."""
    module: str
    """Wrapper-module template directory under ``devenv/go/`` (also its build directory)."""
    version: str
    """Upstream module version (``v``-prefixed)."""
    package: str
    """Go package path of the ``main`` package to build."""
    version_text: str
    """Substring that the version command must print for a cached binary to count."""
    version_args: tuple[str, ...] = ("--version",)
    """Arguments that make the binary print its version."""


ETCD = Component(
    name="etcd",
    module="etcd",
    version=ETCD_VERSION,
    package="go.etcd.io/etcd/server/v3",
    version_text=f"etcd Version: {ETCD_VERSION.removeprefix('v')}",
)

KUBE_APISERVER = Component(
    name="kube-apiserver",
    module="kubernetes",
    version=KUBERNETES_VERSION,
    package="k8s.io/kubernetes/cmd/kube-apiserver",
    version_text=f"Kubernetes {KUBERNETES_VERSION}",
)

KUBECTL = Component(
    name="kubectl",
    module="kubernetes",
    version=KUBERNETES_VERSION,
    package="k8s.io/kubernetes/cmd/kubectl",
    version_text=f"Client Version: {KUBERNETES_VERSION}",
    version_args=("version", "--client"),
)

CONTROL_PLANE = (KUBE_APISERVER, ETCD)
"""What the control plane needs, slowest build first."""


def _kubernetes_command(name: str) -> Component:
    """A ``k8s.io/kubernetes/cmd/<name>`` binary built from the shared Kubernetes wrapper."""
    return Component(
        name=name,
        module="kubernetes",
        version=KUBERNETES_VERSION,
        package=f"k8s.io/kubernetes/cmd/{name}",
        version_text=f"Kubernetes {KUBERNETES_VERSION}",
    )


KUBELET = _kubernetes_command("kubelet")
KUBE_CONTROLLER_MANAGER = _kubernetes_command("kube-controller-manager")
KUBE_SCHEDULER = _kubernetes_command("kube-scheduler")
KUBE_PROXY = _kubernetes_command("kube-proxy")
KUBEADM = Component(
    name="kubeadm",
    module="kubernetes",
    version=KUBERNETES_VERSION,
    package="k8s.io/kubernetes/cmd/kubeadm",
    version_text=KUBERNETES_VERSION,
    version_args=("version", "-o", "short"),
)

KIND_NODE = (
    KUBE_APISERVER,
    KUBELET,
    KUBE_CONTROLLER_MANAGER,
    KUBEADM,
    KUBE_PROXY,
    KUBE_SCHEDULER,
    KUBECTL,
    ETCD,
)
"""What an offline kind node image is assembled from (its node binaries and component images)."""


@dataclasses.dataclass(frozen=True)
class ReleaseArchive:
    """An official release archive that holds some of the binaries, and its pinned digests."""

    source_env: str
    """Environment variable naming the base URL (the release site or a mirror)."""
    path: str
    """Archive path under the base URL; ``{version}`` and ``{arch}`` are filled in."""
    members: dict[str, str]
    """Binary name -> member path in the archive (``{version}``/``{arch}`` filled in)."""
    digests: dict[tuple[str, str], str]
    """(version, GOARCH) -> ``sha256:<hex>`` / ``sha512:<hex>`` of the archive."""


KUBERNETES_SERVER_ARCHIVE = ReleaseArchive(
    source_env=KUBERNETES_RELEASES_ENV,
    path="{version}/kubernetes-server-linux-{arch}.tar.gz",
    members={
        name: f"kubernetes/server/bin/{name}"
        for name in (
            "kube-apiserver", "kubectl", "kubelet", "kubeadm",
            "kube-controller-manager", "kube-scheduler", "kube-proxy",
        )
    },
    # The sha512 hashes of the release notes (CHANGELOG/CHANGELOG-1.34.md, "Server Binaries").
    digests={
        ("v1.34.2", "amd64"): "sha512:016b09cb70b4335201095b96cd564059eece9ece9e945e045b4558afa9dbd998"
        "40cd7a48ed6c06a888276c939c8dc30afc8a7435689c9efd295a9f9de1f477c3",
        ("v1.34.2", "arm64"): "sha512:b5a74b68e3e88f420ff6bae262f0611a80360672a05170b71613babb4fd072f3"
        "6b2f067347feb16f0a9c1b20bca01fc8c07d83e3a55ecd133615c9fa6e5066ca",
    },
)

ETCD_ARCHIVE = ReleaseArchive(
    source_env=ETCD_RELEASES_ENV,
    path="{version}/etcd-{version}-linux-{arch}.tar.gz",
    members={"etcd": "etcd-{version}-linux-{arch}/etcd"},
    # The release's SHA256SUMS.
    digests={
        ("v3.6.6", "amd64"): "sha256:887afaa4a99f22d802ccdfbe65730a5e79aa5c9ce2c8799c67e9d804c50ecedb",
    },
)

RELEASES = (KUBERNETES_SERVER_ARCHIVE, ETCD_ARCHIVE)
"""Where each binary can be fetched from (when configured), with the pinned digests."""


def cache_root() -> Path:
    """Root of everything this project caches outside the repository."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "pageserver-operator"


def binary_path(component: Component) -> Path:
    """Final, version-keyed location of a component's binary."""
    return cache_root() / "bin" / f"{component.name}-{component.version}" / component.name


def is_usable(path: Path, component: Component) -> bool:
    """True if ``path`` runs and reports the expected version (a cheap warm-cache check)."""
    if not path.is_file() or not os.access(path, os.X_OK):
        return False
    try:
        result = subprocess.run(
            [str(path), *component.version_args], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and component.version_text in result.stdout + result.stderr


def go_arch() -> str:
    """This machine's GOARCH name (``amd64``, ``arm64``), as release archives spell it."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def release_for(component: Component) -> ReleaseArchive | None:
    """The release archive that holds ``component``, if any."""
    for archive in RELEASES:
        if component.name in archive.members:
            return archive
    return None


def by_name() -> dict[str, Component]:
    """Every known component by its binary name."""
    return {c.name: c for c in (*KIND_NODE, KUBECTL, ETCD)}
