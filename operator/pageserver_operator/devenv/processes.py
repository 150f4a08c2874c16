"""Child processes of the dev environment that never outlive their owner.

Why: a test run that fails, is interrupted or crashes must not leave etcd, kube-apiserver
or SeaweedFS running (they hold ports, disk and ~1 GiB of RAM).

Guarantees, strongest first:
- ``stop()`` sends SIGTERM to the child's whole process group, waits, then SIGKILLs it.
- Every live process is also stopped by an ``atexit`` hook (interpreter exit after an
  exception, ``sys.exit``, a fixture that never ran its finaliser).
- Children started from the main thread get ``PR_SET_PDEATHSIG=SIGKILL``: the kernel kills
  them if the owner dies without running Python code (SIGKILL, OOM kill).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A component did not start; the message carries the reason and its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all held open together so none repeats)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ports_free(ports: Sequence[int]) -> bool:
    """True if every port in ``ports`` can be bound on 127.0.0.1 now (as servers bind them,
    with ``SO_REUSEADDR``, so connections of a previous run in TIME_WAIT do not count)."""
    held: list[socket.socket] = []
    try:
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for sock in held:
            sock.close()


def reuse_ports(record: Path, count: int, fresh: Callable[[], list[int]]) -> tuple[list[int], bool]:
    """The ports recorded in ``record`` by the previous start if there are ``count`` of them and
    all are free, else ``fresh()``; and whether they were reused.

    Why: a shell that sourced the dev environment's ``env`` file keeps pointing at the same
    endpoints across restarts. The caller records the ports it started on (:func:`record_ports`).
    """
    try:
        previous = [int(p) for p in json.loads(record.read_text())]
    except (OSError, ValueError, TypeError):
        previous = []
    if len(previous) == count and len(set(previous)) == count and ports_free(previous):
        return previous, True
    return fresh(), False


def record_ports(record: Path, ports: Sequence[int]) -> None:
    """Remember the ports a component started on, for :func:`reuse_ports` (best effort)."""
    with contextlib.suppress(OSError):
        record.write_text(json.dumps(list(ports)) + "\n")


def free_port_pairs(count: int, offset: int) -> list[tuple[int, int]]:
    """``count`` pairs of free ports ``(p, p + offset)``, all distinct.

    Why: SeaweedFS derives some gRPC addresses as HTTP port + 10000 even when the gRPC
    port is given, so pinned ports must follow that convention to stay reachable.
    """
    held: list[socket.socket] = []
    pairs: list[tuple[int, int]] = []
    try:
        for _ in range(count * 50):
            if len(pairs) == count:
                break
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(first)
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port + offset > 65535:
                continue
            second = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(second)
            try:
                second.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
            pairs.append((port, port + offset))
    finally:
        for sock in held:
            sock.close()
    if len(pairs) < count:
        raise StartError(f"could not find {count} free port pairs (p, p+{offset}) on 127.0.0.1")
    return pairs


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec hook asking the kernel to SIGKILL the child when its parent thread dies.

    Only from the main thread: the signal fires when the *thread* that forked exits, which
    for a worker thread would kill the child far too early.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return hook


class ManagedProcess:
    """One child process in its own process group, logging to a file."""

    _live: list[ManagedProcess] = []  # noqa: RUF012 -- start order, for the atexit hook
    _lock = threading.Lock()

    def __init__(
        self, name: str, popen: subprocess.Popen[bytes], log_path: Path, log_file: IO[bytes]
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._popen = popen
        self._log_file = log_file

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` with stdout and stderr appended to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),  # only prctl, see _pdeathsig_preexec
            )
        except OSError as error:
            log_file.close()
            raise StartError(f"{name}: cannot execute {argv[0]}: {error}") from error
        process = cls(name, popen, log_path, log_file)
        with cls._lock:
            cls._live.append(process)
        return process

    @property
    def pid(self) -> int:
        return self._popen.pid

    def running(self) -> bool:
        return self._popen.poll() is None

    def returncode(self) -> int | None:
        return self._popen.poll()

    def log_tail(self, lines: int = 25) -> str:
        """Last lines of the log, for error messages that say why a start failed."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signum)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait up to ``timeout``, then SIGKILL it. Idempotent."""
        try:
            if self._popen.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self._popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self._popen.wait(10)
            # Whatever the leader left in its group (helpers, grandchildren) goes too.
            self._signal_group(signal.SIGKILL)
        finally:
            self._log_file.close()
            with self._lock:
                if self in self._live:
                    self._live.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        """Stop every live process, last started first (the atexit safety net).

        Reverse start order stops a client (kube-apiserver) before its server (etcd).
        """
        with cls._lock:
            live = list(reversed(cls._live))
        for process in live:
            process.stop(timeout=5.0)


atexit.register(ManagedProcess.stop_all)


def wait_until(
    process: ManagedProcess,
    ready: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> float:
    """Poll ``ready`` until true; fail fast with the log tail if ``process`` exits.

    Returns the seconds waited.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if not process.running():
            raise StartError(
                f"{process.name} exited with status {process.returncode()} before {what}; "
                f"log {process.log_path}:\n{process.log_tail()}"
            )
        if ready():
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise StartError(
                f"{process.name} not {what} after {timeout:.0f} s; log {process.log_path}:\n{process.log_tail()}"
            )
        time.sleep(interval)


def http_ok(
    url: str,
    context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
    accept_status: Sequence[int] = (200,),
) -> bool:
    """True if GET ``url`` answers with one of ``accept_status`` within 2 s."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return int(response.status) in accept_status
    except urllib.error.HTTPError as error:
        return error.code in accept_status
    except (OSError, http.client.HTTPException):
        return False
