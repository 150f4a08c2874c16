"""Build and cache the Go binaries of the local control plane: etcd and kube-apiserver.

Why built here: neither is pip- or apt-installable at a current version, and
``go install`` refuses both (their ``go.mod`` files carry ``replace`` directives).
Each is built from a small wrapper module (templates in ``devenv/go/<module>/``) that
requires the upstream module. For kube-apiserver the wrapper also replaces every
``k8s.io/*`` staging module by its published ``v0.X.Y``; that list is read from the
release's own ``go.mod`` (``go mod download -json``), never typed by hand.

Invariants:
- Binaries live in ``<cache>/bin/<name>-<version>/<name>``; ``<cache>`` is
  ``$PAGESERVER_OPERATOR_CACHE`` or ``~/.cache/pageserver-operator``. Nothing is written
  inside the repository.
- A cached binary is used only if it runs ``--version`` and reports the expected version;
  a warm call never starts Go.
- A binary appears at its final path only complete (built to a temp name, then renamed).
- One Go build at a time across processes (a file lock): the machines have 2 cores.

kubectl is built from the same Kubernetes wrapper, but only when asked or when none is
on PATH (:func:`find_kubectl`).

The same wrapper also builds what a kind node needs (:data:`KIND_NODE`: kubelet, kubeadm,
kube-controller-manager, kube-scheduler, kube-proxy besides kube-apiserver and kubectl);
``hack/kind/`` assembles an offline kind node image from them.

Run ``python -m pageserver_operator.devenv.binaries`` to just ensure the binaries
(``--kind-node`` for the kind node set).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import re
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

ETCD_VERSION = "v3.6.6"
KUBERNETES_VERSION = "v1.34.2"

CACHE_ENV = "PAGESERVER_OPERATOR_CACHE"


class BuildError(RuntimeError):
    """A binary could not be built; the message says which step failed and why."""


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


def cache_root() -> Path:
    """Root of everything this project caches outside the repository."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "pageserver-operator"


def binary_path(component: Component) -> Path:
    """Final, version-keyed location of a component's binary."""
    return cache_root() / "bin" / f"{component.name}-{component.version}" / component.name


def _log(message: str) -> None:
    print(f"[devenv.binaries] {message}", file=sys.stderr, flush=True)


def _is_usable(path: Path, component: Component) -> bool:
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


def find_go() -> Path:
    """Locate the Go toolchain, or explain that it is missing."""
    found = shutil.which("go")
    candidates = [found] if found else []
    candidates += ["/usr/local/go/bin/go", str(Path.home() / "go" / "bin" / "go")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise BuildError("the Go toolchain (`go`) is not on PATH nor in /usr/local/go/bin; install Go >= 1.24")


def _run_go(go: Path, args: list[str], cwd: Path) -> str:
    """Run one go command with a static, reproducible-enough environment; return stdout."""
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false", "GOWORK": "off"})
    result = subprocess.run([str(go), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-30:])
        raise BuildError(f"`go {' '.join(args)}` failed in {cwd} (exit {result.returncode}):\n{tail}")
    return result.stdout


def staging_modules(go: Path, kubernetes_version: str, workdir: Path) -> list[str]:
    """The ``k8s.io/*`` modules that the release's own go.mod points at ``./staging``.

    Why: those directories are not in the module zip, so each must be replaced by its
    published version; reading the list from the release keeps it right for any version.
    """
    info = json.loads(
        _run_go(go, ["mod", "download", "-json", f"k8s.io/kubernetes@{kubernetes_version}"], workdir)
    )
    go_mod = Path(str(info.get("GoMod", "")))
    if not go_mod.is_file():
        raise BuildError(
            f"`go mod download` gave no go.mod for k8s.io/kubernetes@{kubernetes_version}: {info}"
        )
    pattern = re.compile(r"^\s*(?:replace\s+)?(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/", re.MULTILINE)
    modules = sorted(set(pattern.findall(go_mod.read_text())))
    if not modules:
        raise BuildError(f"no `=> ./staging/...` replace lines found in {go_mod}")
    return modules


def _published_staging_version(kubernetes_version: str) -> str:
    """v1.34.2 -> v0.34.2: the version under which staging modules are published."""
    match = re.fullmatch(r"v1\.(\d+)\.(\d+)", kubernetes_version)
    if not match:
        raise BuildError(f"unexpected Kubernetes version {kubernetes_version!r} (want v1.MINOR.PATCH)")
    return f"v0.{match.group(1)}.{match.group(2)}"


def _kubernetes_ldflags(version: str, commit: str) -> str:
    """Version stamps: clients parse ``/version`` and complain about the unset default."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if not match:
        raise BuildError(f"unexpected Kubernetes version {version!r}")
    pkg = "k8s.io/component-base/version"
    flags = [
        "-s",
        "-w",
        f"-X {pkg}.gitVersion={version}",
        f"-X {pkg}.gitMajor={match.group(1)}",
        f"-X {pkg}.gitMinor={match.group(2)}",
        f"-X {pkg}.gitTreeState=clean",
    ]
    if commit:
        flags.append(f"-X {pkg}.gitCommit={commit}")
    return " ".join(flags)


def _template(component: Component, filename: str) -> string.Template:
    source = resources.files("pageserver_operator.devenv").joinpath("go", component.module, filename)
    return string.Template(source.read_text())


def _write_wrapper(go: Path, component: Component, workdir: Path) -> str:
    """Write the wrapper module for ``component`` into ``workdir``; return its ldflags."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("go.mod", "go.sum"):
        (workdir / stale).unlink(missing_ok=True)
    values = {"version": component.version, "replaces": ""}
    ldflags = "-s -w"
    if component.module == "kubernetes":
        # `go mod download` needs a module context to run in; an empty one will do.
        (workdir / "go.mod").write_text("module pageserver-operator.local/build/probe\n\ngo 1.24\n")
        published = _published_staging_version(component.version)
        modules = staging_modules(go, component.version, workdir)
        values["replaces"] = "\n".join(f"\t{module} => {module} {published}" for module in modules)
        info = json.loads(
            _run_go(go, ["mod", "download", "-json", f"k8s.io/kubernetes@{component.version}"], workdir)
        )
        commit = str((info.get("Origin") or {}).get("Hash", ""))
        ldflags = _kubernetes_ldflags(component.version, commit)
        _log(f"{component.name}: replacing {len(modules)} staging modules by {published}")
    (workdir / "go.mod").write_text(_template(component, "go.mod.in").substitute(values))
    (workdir / "tools.go").write_text(_template(component, "tools.go.in").substitute(values))
    return ldflags


@contextmanager
def _build_lock() -> Iterator[None]:
    """Serialise Go builds across processes (pytest workers, CI steps, a person's shell)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / "build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(component: Component) -> Path:
    """Build ``component`` unconditionally into its cache slot; return the binary path."""
    go = find_go()
    target = binary_path(component)
    workdir = cache_root() / "build" / f"{component.module}-{component.version}"
    started = time.monotonic()
    _log(f"building {component.name} {component.version} with {go} (this can take minutes)")
    ldflags = _write_wrapper(go, component, workdir)
    _run_go(go, ["mod", "tidy"], workdir)
    tidied = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{component.name}.partial")
    _run_go(go, ["build", "-trimpath", f"-ldflags={ldflags}", "-o", str(partial), component.package], workdir)
    if not _is_usable(partial, component):
        raise BuildError(f"built {partial} but its version output lacks {component.version_text!r}")
    partial.replace(target)
    finished = time.monotonic()
    _log(
        f"built {component.name} {component.version} in {finished - started:.1f} s "
        f"(mod tidy {tidied - started:.1f} s, go build {finished - tidied:.1f} s) -> {target}"
    )
    return target


def ensure(component: Component) -> Path:
    """Return a usable cached binary for ``component``, building it only if needed."""
    target = binary_path(component)
    if _is_usable(target, component):
        return target
    with _build_lock():
        if _is_usable(target, component):  # another process built it while we waited
            return target
        return build(component)


def ensure_etcd() -> Path:
    """Path of a working etcd binary (built on first use)."""
    return ensure(ETCD)


def ensure_kube_apiserver() -> Path:
    """Path of a working kube-apiserver binary (built on first use)."""
    return ensure(KUBE_APISERVER)


def find_kubectl() -> Path:
    """A kubectl: the cached build if present, else the one on PATH, else build it."""
    cached = binary_path(KUBECTL)
    if _is_usable(cached, KUBECTL):
        return cached
    on_path = shutil.which("kubectl")
    if on_path:
        return Path(on_path)
    return ensure(KUBECTL)


def ensure_all(kubectl: str = "auto") -> dict[str, Path]:
    """Ensure the control-plane binaries (slowest first) and a kubectl.

    ``kubectl``: ``"auto"`` builds it only if none is on PATH, ``"always"`` builds it,
    ``"never"`` leaves it out.
    """
    wanted = list(CONTROL_PLANE)
    if kubectl == "always" or (kubectl == "auto" and shutil.which("kubectl") is None):
        wanted.append(KUBECTL)
    paths: dict[str, Path] = {}
    for component in wanted:
        started = time.monotonic()
        paths[component.name] = ensure(component)
        _log(
            f"{component.name} {component.version} ready in {time.monotonic() - started:.1f} s: {paths[component.name]}"
        )
    if "kubectl" not in paths and kubectl == "auto":
        paths["kubectl"] = find_kubectl()
    return paths


def ensure_kind_node() -> dict[str, Path]:
    """Ensure every binary of :data:`KIND_NODE`; return name -> path."""
    paths: dict[str, Path] = {}
    for component in KIND_NODE:
        started = time.monotonic()
        paths[component.name] = ensure(component)
        _log(
            f"{component.name} {component.version} ready in {time.monotonic() - started:.1f} s: {paths[component.name]}"
        )
    return paths


def main(argv: list[str] | None = None) -> int:
    """Console entry: ensure the binaries, print their paths; exit 1 with the reason on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m pageserver_operator.devenv.binaries",
        description="Build (once) and cache etcd, kube-apiserver and, if needed, kubectl.",
    )
    parser.add_argument(
        "--kubectl",
        choices=("auto", "always", "never"),
        default="auto",
        help="auto: build kubectl only if none is on PATH (default: %(default)s)",
    )
    parser.add_argument(
        "--kind-node",
        action="store_true",
        help="ensure every binary of an offline kind node image instead (kubelet, kubeadm, ...)",
    )
    args = parser.parse_args(argv)
    try:
        paths = ensure_kind_node() if args.kind_node else ensure_all(args.kubectl)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
