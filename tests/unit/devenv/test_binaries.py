"""`devenv.binaries`: fetching the pinned release binaries instead of building them (with devenv.fetch).

Against a local HTTP server on 127.0.0.1 serving release-shaped archives (the official paths
and member layout; the binaries are small scripts that print the expected version), with the
archives' digests pinned by the test in place of the real ones:

- configured: the binaries are fetched, verified, cached where builds go, and Go is not run;
  the Kubernetes server archive fills every empty Kubernetes slot at once;
- a wrong digest: the archive is refused, nothing is cached (no binary, no archive, no
  partial file), and the Go build is the fallback;
- an unreachable source: the Go build is the fallback;
- not configured: no host is contacted at all;
(the pinned digests: test_components.py; the Go build's heartbeat lines: test_gobuild.py and
test_fetch.py).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pageserver_operator.devenv import binaries, components, fetch, processes

ARCH = components.go_arch()


def _script(text: str) -> bytes:
    return f"#!/bin/sh\necho '{text}'\n".encode()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def release_site(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A static HTTP server on 127.0.0.1 over ``tmp_path/site``: (base URL, root, requested paths)."""
    root = tmp_path / "site"
    root.mkdir()
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(components.CACHE_ENV, str(root))
    monkeypatch.delenv(components.KUBERNETES_RELEASES_ENV, raising=False)
    monkeypatch.delenv(components.ETCD_RELEASES_ENV, raising=False)
    return root


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Go builds are recorded, not run (a fallback build returns a path that does not exist)."""
    calls: list[str] = []

    def fake_build(component: components.Component) -> Path:
        calls.append(component.name)
        return Path("/nonexistent/built") / component.name

    monkeypatch.setattr(binaries, "build", fake_build)
    return calls


def _publish_etcd(root: Path, body: bytes | None = None) -> str:
    version = components.ETCD_VERSION
    archive = body or _tar_gz({f"etcd-{version}-linux-{ARCH}/etcd": _script(f"etcd Version: {version[1:]}")})
    path = root / version / f"etcd-{version}-linux-{ARCH}.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(archive)
    return "sha256:" + hashlib.sha256(archive).hexdigest()


def _publish_kubernetes(root: Path) -> str:
    version = components.KUBERNETES_VERSION
    members = {
        f"kubernetes/server/bin/{name}": _script(f"Kubernetes {version}")
        for name in components.KUBERNETES_SERVER_ARCHIVE.members
    }
    members["kubernetes/server/bin/kubectl"] = _script(f"Client Version: {version}")
    members["kubernetes/server/bin/kubeadm"] = _script(version)
    archive = _tar_gz(members)
    path = root / version / f"kubernetes-server-linux-{ARCH}.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(archive)
    return "sha512:" + hashlib.sha512(archive).hexdigest()


def _leftovers(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and p.name != "build.lock")


def test_fetches_verifies_and_caches_without_building(
    release_site: tuple[str, Path, list[str]], cache: Path, builds: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root, requested = release_site
    monkeypatch.setitem(components.ETCD_ARCHIVE.digests, (components.ETCD_VERSION, ARCH), _publish_etcd(root))
    monkeypatch.setitem(
        components.KUBERNETES_SERVER_ARCHIVE.digests, (components.KUBERNETES_VERSION, ARCH), _publish_kubernetes(root)
    )
    monkeypatch.setenv(components.ETCD_RELEASES_ENV, base)
    monkeypatch.setenv(components.KUBERNETES_RELEASES_ENV, base + "/")

    etcd = binaries.ensure(components.ETCD)
    apiserver = binaries.ensure(components.KUBE_APISERVER)
    assert builds == []
    assert etcd == components.binary_path(components.ETCD) and etcd.is_file()
    assert apiserver == components.binary_path(components.KUBE_APISERVER)
    assert binaries._HOW["kube-apiserver"] == "fetched"
    # one download of the server archive filled every Kubernetes slot; the archives are not kept
    for name in components.KUBERNETES_SERVER_ARCHIVE.members:
        component = components.by_name()[name]
        assert components.is_usable(components.binary_path(component), component), name
    assert not (cache / "downloads").exists() or not any((cache / "downloads").iterdir())
    assert requested == [
        f"/{components.ETCD_VERSION}/etcd-{components.ETCD_VERSION}-linux-{ARCH}.tar.gz",
        f"/{components.KUBERNETES_VERSION}/kubernetes-server-linux-{ARCH}.tar.gz",
    ]
    # warm: nothing is fetched again
    assert binaries.ensure(components.KUBECTL) == components.binary_path(components.KUBECTL)
    assert binaries._HOW["kubectl"] == "cached" and len(requested) == 2


def test_a_wrong_digest_is_refused_nothing_is_cached_and_the_build_is_the_fallback(
    release_site: tuple[str, Path, list[str]],
    cache: Path,
    builds: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, root, requested = release_site
    good = _publish_etcd(root)
    tampered = _tar_gz({f"etcd-{components.ETCD_VERSION}-linux-{ARCH}/etcd": _script("etcd Version: 3.6.6 (evil)")})
    _publish_etcd(root, tampered)
    monkeypatch.setitem(components.ETCD_ARCHIVE.digests, (components.ETCD_VERSION, ARCH), good)
    monkeypatch.setenv(components.ETCD_RELEASES_ENV, base)

    assert binaries.ensure(components.ETCD) == Path("/nonexistent/built/etcd")
    assert builds == ["etcd"]
    assert binaries._HOW["etcd"] == "built"
    assert len(requested) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "nothing was cached" in err and "building it instead" in err, err
    assert _leftovers(cache) == [], "a refused archive must leave nothing in the cache"


def test_an_unreachable_source_falls_back_to_the_build(
    cache: Path, builds: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = processes.free_port()  # bound then closed: nothing listens there
    monkeypatch.setenv(components.ETCD_RELEASES_ENV, f"http://127.0.0.1:{port}")
    binaries.ensure(components.ETCD)
    assert builds == ["etcd"]
    assert "fetch failed" in capsys.readouterr().err
    assert _leftovers(cache) == []


def test_nothing_is_contacted_unless_configured(
    cache: Path, builds: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a host was contacted without a configured download source")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", no_network)
    binaries.ensure(components.ETCD)
    binaries.ensure(components.KUBE_APISERVER)
    assert builds == ["etcd", "kube-apiserver"]


def test_the_binaries_command_runs_without_network_when_cached(cache: Path) -> None:
    """`python -m pageserver_operator.devenv.binaries --help` documents the download variables."""
    out = subprocess.run(
        [sys.executable, "-m", "pageserver_operator.devenv.binaries", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert components.KUBERNETES_RELEASES_ENV in out and components.ETCD_RELEASES_ENV in out


def test_check_says_what_is_missing_and_never_builds_nor_fetches(
    cache: Path, builds: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """hack/dev.sh's check before hack/install.sh: a silent build there would be minutes without a word."""
    monkeypatch.setenv(components.ETCD_RELEASES_ENV, "http://127.0.0.1:9")  # configured, yet not contacted
    monkeypatch.setattr(fetch.urllib.request, "urlopen", lambda *a, **k: pytest.fail("contacted a host"))
    assert binaries.main(["--check", "--kubectl", "never"]) == 1
    out = capsys.readouterr().out
    assert "missing: kube-apiserver" in out and "missing: etcd" in out
    assert builds == [] and not (cache / "bin").exists()
