"""Get the Go binaries of the local control plane: cached, else fetched, else built.

`ensure` returns a usable binary of a `components.Component`: the cached one when it runs and
reports its version (a warm call never starts Go nor contacts any host); else, under the build
lock, the pinned release archive when the user named a source for it (below); else the Go build
(`gobuild.build`). `ensure_all` gets what the control plane needs (and a kubectl),
`ensure_kind_node` what an offline kind node image is assembled from (``hack/kind/``).

kubectl is built from the same Kubernetes wrapper, but only when asked or when none is on PATH
(`find_kubectl`).

Fetch before building, only where the user allows it: when
``$PAGESERVER_OPERATOR_KUBERNETES_RELEASES`` (e.g. ``https://dl.k8s.io``) or
``$PAGESERVER_OPERATOR_ETCD_RELEASES`` (e.g. ``https://github.com/etcd-io/etcd/releases/download``)
names the release site or a mirror with the same layout, the pinned release archive
(`components.RELEASES`) is downloaded, checked against the digest pinned there, and its binaries
are cached like built ones; any failure falls back to the Go build, saying why. Without those
variables nothing contacts any host but the Go module proxy of the build.

Invariants: a binary reaches its cache slot only complete and checked (a partial name, then a
rename); a fetch that fails leaves nothing of itself in the cache (no archive, no partial file).

Run ``python -m pageserver_operator.devenv.binaries`` to just ensure the binaries
(``--kind-node`` for the kind node set).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from pageserver_operator.devenv import fetch
from pageserver_operator.devenv.components import (
    CONTROL_PLANE,
    ETCD,
    ETCD_RELEASES_ENV,
    KIND_NODE,
    KUBE_APISERVER,
    KUBECTL,
    KUBERNETES_RELEASES_ENV,
    Component,
    binary_path,
    by_name,
    cache_root,
    go_arch,
    is_usable,
    release_for,
)
from pageserver_operator.devenv.gobuild import BuildError, build, build_lock


class _NotConfigured(Exception):
    """No download source configured for a binary: the build path, silently."""


def _log(message: str) -> None:
    print(f"[devenv.binaries] {message}", file=sys.stderr, flush=True)


def fetch_release(component: Component) -> Path:
    """Fetch ``component`` from its configured release archive into its cache slot.

    Every binary of the archive whose cache slot is empty is installed too (the Kubernetes
    server archive holds kube-apiserver, kubectl and the kind node's binaries). Raises
    ``_NotConfigured`` when no source is configured, :class:`fetch.FetchError` on any failure
    (nothing is cached then for ``component``).
    """
    archive = release_for(component)
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
    known = by_name()
    wanted: dict[str, Component] = {}
    try:
        fetch.download(url, downloaded, digest, f"{component.name} {component.version}")
        for name in archive.members:
            other = known.get(name)
            if other is not None and other.version == component.version and (
                other is component or not is_usable(binary_path(other), other)
            ):
                wanted[name] = other
        partials = {
            archive.members[name].format(**fill): binary_path(c).with_name(f".{name}.partial")
            for name, c in wanted.items()
        }
        fetch.extract(downloaded, partials)
        for name, c in wanted.items():
            partial = binary_path(c).with_name(f".{name}.partial")
            if not is_usable(partial, c):
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
    if is_usable(target, component):
        return target
    with build_lock():
        if is_usable(target, component):  # another process built it while we waited
            return target
        started = time.monotonic()
        try:
            path = fetch_release(component)
        except _NotConfigured:
            archive = release_for(component)
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
    if is_usable(cached, KUBECTL):
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
    return [c for c in wanted if not is_usable(binary_path(c), c)]


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
