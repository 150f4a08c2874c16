"""Typed helpers of the kind e2e suite: kubectl and helm as subprocesses, against the kind cluster
that ``hack/kind/run-e2e.sh`` created (``KUBECONFIG`` and the tool paths come from it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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
