"""Running the ``pageserver-operator`` CLI as a subprocess, the way a person or a script does.

The child inherits ``os.environ`` (so ``monkeypatch.setenv`` of AWS credentials reaches it) and
runs ``python -m pageserver_operator.cli`` with the test's interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

CLI = [sys.executable, "-m", "pageserver_operator.cli"]

#: Exit codes documented in cli.py
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def run(args: Sequence[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ), check=False
    )


def start(args: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ)
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
