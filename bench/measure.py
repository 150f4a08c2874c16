"""One timed run of a command: wall time, client CPU, peak RSS, server counters.

Every measured run holds ``~/.cache/pageserver-operator/heavy.lock`` (flock(2), the same lock as
the ``flock`` command) so it never overlaps another heavy job on the machine; the time spent
waiting for the lock is not measured. The command is the harness's direct child, so
``os.wait4`` returns exactly its resource usage: user+system CPU seconds and ``ru_maxrss``
(peak RSS of the process; for a process that forks, the largest of the waited-for tree).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import servers

TIME = "/usr/bin/time"

#: ``BENCH_HEAVY_LOCK`` names another lock file (the harness's own smoke test, run by a suite
#: that may itself hold the machine-wide lock, uses a private one).
LOCK_PATH = Path(
    os.environ.get("BENCH_HEAVY_LOCK") or Path.home() / ".cache" / "pageserver-operator" / "heavy.lock"
)


@contextlib.contextmanager
def heavy_lock() -> Iterator[float]:
    """Hold the machine-wide heavy-job lock; yields the seconds spent waiting for it."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    t0 = time.monotonic()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield time.monotonic() - t0
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _kill_tree(pid: int) -> None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            child.kill()
        os.kill(pid, signal.SIGKILL)


@dataclass
class RunResult:
    wall: float
    user: float
    sys: float
    maxrss_mib: float
    rc: int
    server: servers.ServerCounters
    started_at: float  # time.time() at launch
    sync_seconds: float = 0.0  # a `sync` right after the run (dirty data the tool left behind)
    stderr: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    killed: bool = False

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def run(
    argv: Sequence[str],
    env: Mapping[str, str],
    server: servers.Server,
    *,
    cwd: Path | None = None,
    stderr_path: Path | None = None,
    kill_when: Callable[[], bool] | None = None,
    poll: float = 0.005,
    timeout: float = 1800.0,
    sync_after: bool = True,
) -> RunResult:
    """Run ``argv`` under the heavy lock and measure it.

    ``kill_when``: polled every ``poll`` s while the command runs; when it returns True the
    command gets SIGKILL (for the resume test). ``sync_after``: time a ``sync(1)`` right after
    the command, still under the lock, so dirty page-cache data a tool left is accounted for.
    """
    rss_file = Path(tempfile.mkstemp(prefix="bench-rss-")[1])
    with heavy_lock():
        before = server.counters()
        err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            started_at = time.time()
            t0 = time.perf_counter()
            # /usr/bin/time forks the tool from a ~2 MiB process: ``ru_maxrss`` of our own wait4
            # would include the RSS of the forked Python harness (inherited across exec).
            p = subprocess.Popen(
                [TIME, "-f", "%M", "-o", str(rss_file), *argv],
                env=dict(env),
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            killed = False
            if kill_when is None:
                timer = threading.Timer(timeout, _kill_tree, (p.pid,))
                timer.start()
                _, status, ru = os.wait4(p.pid, 0)  # blocking: the harness uses no CPU meanwhile
                timer.cancel()
            else:
                deadline = time.monotonic() + timeout
                while True:
                    pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                    if pid:
                        break
                    if not killed and (kill_when() or time.monotonic() > deadline):
                        for child in psutil.Process(p.pid).children(recursive=True):
                            child.kill()  # the tool, not /usr/bin/time (which then reports it)
                        killed = True
                    time.sleep(poll)
            wall = time.perf_counter() - t0
            p.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if stderr_path:
                err.close()  # type: ignore[union-attr]
        sync_s = 0.0
        if sync_after:
            s0 = time.perf_counter()
            os.sync()
            sync_s = time.perf_counter() - s0
        # the server may still be finishing a response it wrote to a dead socket
        if killed:
            time.sleep(0.3)
        after = server.counters()
    text = stderr_path.read_text(errors="replace") if stderr_path and stderr_path.exists() else ""
    try:
        maxrss_kib = float(rss_file.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        maxrss_kib = float("nan")
    rss_file.unlink(missing_ok=True)
    return RunResult(
        wall=wall,
        user=ru.ru_utime,
        sys=ru.ru_stime,
        maxrss_mib=maxrss_kib / 1024,
        rc=p.returncode,
        server=after.minus(before),
        started_at=started_at,
        sync_seconds=sync_s,
        stderr=text,
        killed=killed,
    )
