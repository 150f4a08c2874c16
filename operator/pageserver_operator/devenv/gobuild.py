"""Build the Go binaries of the local control plane (etcd, kube-apiserver, kubectl, the kind
node's) from small wrapper modules.

Why built here: neither etcd nor kube-apiserver is pip- or apt-installable at a current version,
and ``go install`` refuses both (their ``go.mod`` files carry ``replace`` directives). Each is
built from a wrapper module (templates in ``devenv/go/<module>/``) that requires the upstream
module. For the Kubernetes binaries the wrapper also replaces every ``k8s.io/*`` staging module
by its published ``v0.X.Y``; that list is read from the release's own ``go.mod`` (``go mod
download -json``), never typed by hand.

Invariants:
- A binary appears at its final path only complete (built to a temp name, checked with
  `components.is_usable`, then renamed); a failed build leaves the cache slot as it was.
- One Go build at a time across processes (`build_lock`, a file lock): the machines have 2
  cores.
- Long steps (module downloads, each ``go build``) print a line at least every 10 s with an
  estimate (`fetch.Heartbeat`); the estimate is the duration of the same step last time
  (``<cache>/timings.json``), else `DEFAULT_SECONDS` (measured on a 2-core machine), refined by
  the count of packages compiled.

Crash behaviour: a killed build leaves at most a ``.<name>.partial`` file and the wrapper's
build directory under the cache; the next build overwrites both.
"""

from __future__ import annotations

import fcntl
import json
import os
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
from pageserver_operator.devenv.components import Component, binary_path, cache_root, is_usable


class BuildError(RuntimeError):
    """A binary could not be built; the message says which step failed and why."""


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


def _log(message: str) -> None:
    print(f"[devenv.binaries] {message}", file=sys.stderr, flush=True)


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
def build_lock() -> Iterator[None]:
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
    if not is_usable(partial, component):
        raise BuildError(f"built {partial} but its version output lacks {component.version_text!r}")
    partial.replace(target)
    finished = time.monotonic()
    _log(
        f"built {component.name} {component.version} in {finished - started:.1f} s "
        f"(mod tidy {tidied - started:.1f} s, go build {finished - tidied:.1f} s) -> {target}"
    )
    return target
