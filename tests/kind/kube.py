"""Typed helpers of the kind e2e suite: kubectl and helm as subprocesses, against the kind cluster
that ``hack/kind/run-e2e.sh`` created (``KUBECONFIG`` and the tool paths come from it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "pageserver-operator"
EXAMPLE_TENANT = REPO / "examples" / "tenant.yaml"
TENANTS = "tenants.pageserver.dev"
CRD_NAME = "tenants.pageserver.dev"

T = TypeVar("T")


def log(message: str) -> None:
    print(f"[kind-e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class CommandError(RuntimeError):
    """A kubectl/helm command failed; the message has its arguments, exit status and stderr."""


@dataclass(frozen=True)
class Kube:
    """kubectl and helm bound to one kubeconfig."""

    kubectl_bin: str
    helm_bin: str
    kubeconfig: str

    @classmethod
    def from_env(cls) -> Kube:
        """From the environment ``hack/kind/run-e2e.sh`` sets; KeyError names a missing variable."""
        return cls(
            kubectl_bin=os.environ["KIND_E2E_KUBECTL"],
            helm_bin=os.environ["KIND_E2E_HELM"],
            kubeconfig=os.environ["KUBECONFIG"],
        )

    def _run(
        self, argv: Sequence[str], stdin: str | None, timeout: float, check: bool
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig)
        result = subprocess.run(
            list(argv), input=stdin, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise CommandError(
                f"`{' '.join(argv)}` exited {result.returncode}:\n{result.stderr.strip()}\n{result.stdout.strip()[-2000:]}"
            )
        return result

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._run([self.kubectl_bin, *args], stdin, timeout, check)

    def helm(
        self, *args: str, timeout: float = 600.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._run([self.helm_bin, "--kubeconfig", self.kubeconfig, *args], None, timeout, check)

    def get(self, *args: str) -> dict[str, Any]:
        """``kubectl get ... -o json`` as a dict."""
        out = self.kubectl("get", *args, "-o", "json").stdout
        data: dict[str, Any] = json.loads(out)
        return data

    def exists(self, *args: str) -> bool:
        return (
            self.kubectl("get", *args, "--ignore-not-found", "-o", "name", check=False).stdout.strip() != ""
        )

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl("apply", *ns, "-f", "-", stdin=manifest)

    def exec(
        self,
        namespace: str,
        pod: str,
        argv: Sequence[str],
        timeout: float = 300.0,
        container: str | None = None,
    ) -> str:
        """``kubectl exec`` in a pod; its stdout."""
        extra = ["-c", container] if container else []
        return self.kubectl("exec", "-n", namespace, pod, *extra, "--", *argv, timeout=timeout).stdout

    def python(self, namespace: str, pod: str, script: str, *args: str, timeout: float = 300.0) -> Any:
        """Run ``python3 -c SCRIPT ARGS...`` in a pod; its stdout parsed as JSON."""
        return json.loads(self.exec(namespace, pod, ["python3", "-c", script, *args], timeout=timeout))

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "-n", namespace, "-l", selector)["items"]
        return items

    def logs(self, namespace: str, pod: str, previous: bool = False) -> str:
        args = ["logs", "-n", namespace, pod, "--all-containers"]
        if previous:
            args.append("--previous")
        return self.kubectl(*args, check=False).stdout


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value is not None and value is not False:
                return value
        except (CommandError, subprocess.TimeoutExpired, KeyError, IndexError) as error:
            last_error = error
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f} s waiting for {what}; last error: {last_error}"
            )
        time.sleep(interval)


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class Watch:
    """``kubectl get ARGS --watch --output-watch-events -o json`` read by a thread: the newest
    version of each object (by name), and ``on_event(type, object)`` called for every event, in
    order, in the reader thread (under the lock `wait` uses). The first events are the objects
    that exist when it starts (ADDED). Waits are woken by events, not by polling."""

    def __init__(
        self, k: Kube, *args: str, on_event: Callable[[str, dict[str, Any]], None] | None = None
    ) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.events = 0
        self._on_event = on_event
        self._cond = threading.Condition()
        self._ended: str | None = None
        env = dict(os.environ, KUBECONFIG=k.kubeconfig)
        self._proc = subprocess.Popen(
            [k.kubectl_bin, "get", *args, "--watch", "--output-watch-events", "-o", "json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._read, name=f"watch {' '.join(args)}", daemon=True)
        self._thread.start()

    def _stream(self) -> Iterator[dict[str, Any]]:
        assert self._proc.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        while line := self._proc.stdout.readline():
            buffer += line
            # kubectl writes each event on one line; a pretty-printed one would end with a "}"
            # line at column 0: only there can a top-level object end
            if line[:1].isspace() or not line.rstrip().endswith("}"):
                continue
            try:
                value, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                continue  # a "}" line inside a string: the object goes on
            buffer = buffer.lstrip()[end:]
            yield value

    def _read(self) -> None:
        try:
            for event in self._stream():
                obj = event.get("object") or {}
                name = (obj.get("metadata") or {}).get("name", "")
                with self._cond:
                    if event.get("type") == "DELETED":
                        self.objects.pop(name, None)
                    else:
                        self.objects[name] = obj
                    self.events += 1
                    if self._on_event is not None:
                        self._on_event(str(event.get("type")), obj)
                    self._cond.notify_all()
        finally:
            self._proc.wait()
            assert self._proc.stderr is not None
            with self._cond:
                self._ended = f"kubectl exited {self._proc.returncode}: {self._proc.stderr.read().strip()[-2000:]}"
                self._cond.notify_all()

    def wait(self, what: str, probe: Callable[[dict[str, dict[str, Any]]], T | None], timeout: float) -> T:
        """Evaluate ``probe(objects)`` after each event (and once now) until it returns
        something other than None/False; fail after ``timeout`` or when the watch ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = probe(self.objects)
                if value is not None and value is not False:
                    return value
                if self._ended is not None:
                    raise CommandError(f"the watch ended while waiting for {what}: {self._ended}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
                self._cond.wait(left)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._cond:
            return dict(self.objects)

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._thread.join(timeout=10)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
