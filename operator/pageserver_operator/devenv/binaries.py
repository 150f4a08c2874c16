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

Fetch before building, only where the user allows it: when
``$PAGESERVER_OPERATOR_KUBERNETES_RELEASES`` (e.g. ``https://dl.k8s.io``) or
``$PAGESERVER_OPERATOR_ETCD_RELEASES`` (e.g. ``https://github.com/etcd-io/etcd/releases/download``)
names the release site or a mirror with the same layout, the pinned release archive
(:data:`RELEASES`) is downloaded, checked against the digest pinned here, and its binaries
are cached like built ones; any failure falls back to the Go build, saying why. Without
those variables nothing contacts any host but the Go module proxy of the build.

Long steps (module downloads, each ``go build``, a download) print a line at least every
10 s with an estimate (:class:`~pageserver_operator.devenv.fetch.Heartbeat`); the estimate
is the duration of the same step last time (``<cache>/timings.json``), else a default
measured on a 2-core machine, refined by the count of packages compiled.

Run ``python -m pageserver_operator.devenv.binaries`` to just ensure the binaries
(``--kind-node`` for the kind node set).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import platform
import re
import shutil
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from pageserver_operator.devenv import fetch

ETCD_VERSION = "v3.6.6"
KUBERNETES_VERSION = "v1.34.2"

CACHE_ENV = "PAGESERVER_OPERATOR_CACHE"
KUBERNETES_RELEASES_ENV = "PAGESERVER_OPERATOR_KUBERNETES_RELEASES"
"""Base URL of Kubernetes release archives (``https://dl.k8s.io`` or a mirror); unset: never fetch."""
ETCD_RELEASES_ENV = "PAGESERVER_OPERATOR_ETCD_RELEASES"
"""Base URL of etcd release archives (``https://github.com/etcd-io/etcd/releases/download``
or a mirror); unset: never fetch."""


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

DEFAULT_SECONDS = {
    "kube-apiserver go build": 410.0,
    "etcd go build": 40.0,
    "kubectl go build": 150.0,
    "kube-apiserver package list": 20.0,
    "etcd package list": 5.0,
    "kubernetes source download": 30.0,
    "kubernetes module downloads": 60.0,
    "etcd module downloads": 20.0,
}
"""Expected durations of the long steps when no earlier run is recorded (2-core machine, cold)."""


class _NotConfigured(Exception):
    """No download source configured for a binary: the build path, silently."""


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


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false", "GOWORK": "off"})
    return env


def _run_go(
    go: Path, args: list[str], cwd: Path, step: str | None = None, packages: int | None = None
) -> str:
    """Run one go command with a static, reproducible-enough environment; return stdout.

    With ``step``, a long run prints a heartbeat line every 10 s with an estimate (the step's
    last recorded duration, or with ``packages`` and ``-v`` the count of packages compiled), and
    its duration is recorded for the next estimate.
    """
    with tempfile.TemporaryDirectory(prefix="go-run-") as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            process = subprocess.Popen([str(go), *args], cwd=cwd, env=_go_env(), stdout=out, stderr=err)

            def compiled() -> tuple[int, int] | None:
                if packages is None:
                    return None
                try:
                    done = err_path.read_bytes().count(b"\n")
                except OSError:
                    return None
                return min(done, packages), packages

            heartbeat = fetch.Heartbeat(step or f"go {args[0]}", _expected_seconds(step), compiled, log=_log)
            while True:
                try:
                    returncode = process.wait(timeout=fetch.HEARTBEAT_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    if step is not None:
                        heartbeat.beat()
        stdout = out_path.read_text(errors="replace")
        stderr = err_path.read_text(errors="replace")
    if returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-30:])
        raise BuildError(f"`go {' '.join(args)}` failed in {cwd} (exit {returncode}):\n{tail}")
    if step is not None:
        _record_seconds(step, time.monotonic() - heartbeat.started)
    return stdout


def _timings_path() -> Path:
    return cache_root() / "timings.json"


def _expected_seconds(step: str | None) -> float | None:
    """How long ``step`` took last time here, else :data:`DEFAULT_SECONDS`."""
    if step is None:
        return None
    try:
        recorded = json.loads(_timings_path().read_text())
        return float(recorded[step])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_SECONDS.get(step)


def _record_seconds(step: str, seconds: float) -> None:
    """Remember a step's duration for the next estimate (best effort: a failure only loses it)."""
    path = _timings_path()
    try:
        recorded = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(recorded, dict):
            recorded = {}
        recorded[step] = round(seconds, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        partial.replace(path)
    except (OSError, ValueError):
        pass


def staging_modules(go: Path, kubernetes_version: str, workdir: Path) -> list[str]:
    """The ``k8s.io/*`` modules that the release's own go.mod points at ``./staging``.

    Why: those directories are not in the module zip, so each must be replaced by its
    published version; reading the list from the release keeps it right for any version.
    """
    info = json.loads(
        _run_go(
            go, ["mod", "download", "-json", f"k8s.io/kubernetes@{kubernetes_version}"], workdir,
            step="kubernetes source download",
        )
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
    _run_go(go, ["mod", "tidy"], workdir, step=f"{component.module} module downloads")
    tidied = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{component.name}.partial")
    try:  # the number of packages, for the progress lines (`go build -v` names each one it compiles)
        listed = _run_go(go, ["list", "-deps", component.package], workdir, step=f"{component.name} package list")
        packages: int | None = len(listed.split())
    except BuildError:
        packages = None
    _run_go(
        go, ["build", "-v", "-trimpath", f"-ldflags={ldflags}", "-o", str(partial), component.package], workdir,
        step=f"{component.name} go build", packages=packages,
    )
    if not _is_usable(partial, component):
        raise BuildError(f"built {partial} but its version output lacks {component.version_text!r}")
    partial.replace(target)
    finished = time.monotonic()
    _log(
        f"built {component.name} {component.version} in {finished - started:.1f} s "
        f"(mod tidy {tidied - started:.1f} s, go build {finished - tidied:.1f} s) -> {target}"
    )
    return target


def go_arch() -> str:
    """This machine's GOARCH name (``amd64``, ``arm64``), as release archives spell it."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _release_for(component: Component) -> ReleaseArchive | None:
    for archive in RELEASES:
        if component.name in archive.members:
            return archive
    return None


def _components_by_name() -> dict[str, Component]:
    return {c.name: c for c in (*KIND_NODE, KUBECTL, ETCD)}


def fetch_release(component: Component) -> Path:
    """Fetch ``component`` from its configured release archive into its cache slot.

    Every binary of the archive whose cache slot is empty is installed too (the Kubernetes
    server archive holds kube-apiserver, kubectl and the kind node's binaries). Raises
    ``_NotConfigured`` when no source is configured, :class:`fetch.FetchError` on any failure
    (nothing is cached then for ``component``).
    """
    archive = _release_for(component)
    base = os.environ.get(archive.source_env, "").strip() if archive else ""
    if archive is None or not base:
        raise _NotConfigured
    arch = go_arch()
    digest = archive.digests.get((component.version, arch))
    if digest is None:
        raise fetch.FetchError(f"no pinned digest for {component.name} {component.version} linux/{arch}")
    fill = {"version": component.version, "arch": arch}
    url = f"{base.rstrip('/')}/{archive.path.format(**fill)}"
    downloaded = cache_root() / "downloads" / Path(archive.path.format(**fill)).name
    known = _components_by_name()
    wanted: dict[str, Component] = {}
    try:
        fetch.download(url, downloaded, digest, f"{component.name} {component.version}")
        for name in archive.members:
            other = known.get(name)
            if other is not None and other.version == component.version and (
                other is component or not _is_usable(binary_path(other), other)
            ):
                wanted[name] = other
        partials = {
            archive.members[name].format(**fill): binary_path(c).with_name(f".{name}.partial")
            for name, c in wanted.items()
        }
        fetch.extract(downloaded, partials)
        for name, c in wanted.items():
            partial = binary_path(c).with_name(f".{name}.partial")
            if not _is_usable(partial, c):
                partial.unlink(missing_ok=True)
                raise fetch.FetchError(f"{name} from {url} does not report {c.version_text!r}")
            partial.replace(binary_path(c))
    finally:
        downloaded.unlink(missing_ok=True)  # the archive is not kept (hundreds of MiB)
        for name, c in wanted.items():  # what a failed extraction left
            binary_path(c).with_name(f".{name}.partial").unlink(missing_ok=True)
    return binary_path(component)


_HOW: dict[str, str] = {}
"""Binary name -> how :func:`ensure` got it this time: cached, fetched or built."""


def ensure(component: Component) -> Path:
    """Return a usable cached binary for ``component``: cached, else fetched (if configured), else built."""
    target = binary_path(component)
    _HOW[component.name] = "cached"
    if _is_usable(target, component):
        return target
    with _build_lock():
        if _is_usable(target, component):  # another process built it while we waited
            return target
        started = time.monotonic()
        try:
            path = fetch_release(component)
        except _NotConfigured:
            archive = _release_for(component)
            if archive is not None:
                _log(f"{component.name}: no download source configured (${archive.source_env}); building it")
        except fetch.FetchError as error:
            _log(f"{component.name}: fetch failed, building it instead: {error}")
        else:
            _HOW[component.name] = "fetched"
            _log(f"fetched {component.name} {component.version} in {time.monotonic() - started:.1f} s -> {path}")
            return path
        _HOW[component.name] = "built"
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
            f"{component.name} {component.version} ready ({_HOW[component.name]}) in "
            f"{time.monotonic() - started:.1f} s: {paths[component.name]}"
        )
    if "kubectl" not in paths and kubectl == "auto":
        paths["kubectl"] = find_kubectl()
    return paths


def missing_binaries(components: tuple[Component, ...] | None = None, kubectl: str = "auto") -> list[Component]:
    """What :func:`ensure_all` (or ``components``) would have to fetch or build; never builds."""
    wanted = list(components) if components is not None else list(CONTROL_PLANE)
    if components is None and (kubectl == "always" or (kubectl == "auto" and shutil.which("kubectl") is None)):
        wanted.append(KUBECTL)
    return [c for c in wanted if not _is_usable(binary_path(c), c)]


def ensure_kind_node() -> dict[str, Path]:
    """Ensure every binary of :data:`KIND_NODE`; return name -> path."""
    paths: dict[str, Path] = {}
    for component in KIND_NODE:
        started = time.monotonic()
        paths[component.name] = ensure(component)
        _log(
            f"{component.name} {component.version} ready ({_HOW[component.name]}) in "
            f"{time.monotonic() - started:.1f} s: {paths[component.name]}"
        )
    return paths


def main(argv: list[str] | None = None) -> int:
    """Console entry: ensure the binaries, print their paths; exit 1 with the reason on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m pageserver_operator.devenv.binaries",
        description="Build (once) and cache etcd, kube-apiserver and, if needed, kubectl.",
        epilog=(
            f"Fetch the pinned release archives instead (checksum-verified; the build is the fallback) "
            f"by naming the release site or a mirror: {KUBERNETES_RELEASES_ENV}=https://dl.k8s.io "
            f"{ETCD_RELEASES_ENV}=https://github.com/etcd-io/etcd/releases/download. "
            "Unset, no host is contacted but Go's module proxy."
        ),
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
    parser.add_argument(
        "--check",
        action="store_true",
        help="only say whether everything is cached (exit 0) or what is missing (exit 1); never builds",
    )
    args = parser.parse_args(argv)
    if args.check:
        missing = missing_binaries(KIND_NODE if args.kind_node else None, args.kubectl)
        for component in missing:
            print(f"missing: {component.name} {component.version} ({binary_path(component)})")
        return 1 if missing else 0
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
