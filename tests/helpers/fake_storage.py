"""An in-memory `RemoteStorage` whose operations can be held in flight and failed on demand.

Used by the upload-queue unit tests to observe ordering deterministically: a test *holds* an
operation on a key (`hold`), the operation blocks in its worker thread once it has started
(`Gate.started` is set), and the test decides when it may finish (`Gate.release`). Every start
and finish is appended to `log`, and `in_flight()` tells which operations are running right now.

Only the backend contract matters here: keys are relative, ``delete`` of a missing object
succeeds, a missing object raises `NotFound`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from pageserver_operator.remote import base, errors

T = TypeVar("T")

#: Longest a held operation waits for its release before failing the test (no hung suites).
HOLD_TIMEOUT = 10.0


@dataclass
class Gate:
    """One held operation: ``started`` when it is in flight, it finishes after ``release()``."""

    op: str
    key_suffix: str
    started: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    used: bool = False

    def release(self) -> None:
        self.released.set()

    def wait_started(self, timeout: float = 5.0) -> bool:
        return self.started.wait(timeout)


class FakeStorage:
    """`base.RemoteStorage` in memory, with holds and injected failures."""

    def __init__(self, concurrency: int = 16) -> None:
        self._concurrency = concurrency
        self.objects: dict[str, bytes] = {}
        #: (event, op, key) with event "start" or "end" (or "fail"), in the order they happened.
        self.log: list[tuple[str, str, str]] = []
        #: every version of every object ever written, in order (key, bytes)
        self.writes: list[tuple[str, bytes]] = []
        self._gates: list[Gate] = []
        self._failures: dict[tuple[str, str], list[Exception]] = {}
        self._running: dict[int, tuple[str, str]] = {}
        self._next = 0
        self._lock = threading.Lock()

    # ---- test controls ------------------------------------------------------------------------

    def hold(self, op: str, key_suffix: str) -> Gate:
        """Hold the next ``op`` ("upload", "put", "delete", "get", ...) on a key ending with
        ``key_suffix`` until the returned gate is released."""
        gate = Gate(op, key_suffix)
        with self._lock:
            self._gates.append(gate)
        return gate

    def fail(self, op: str, key_suffix: str, *excs: Exception) -> None:
        """Make the next ``len(excs)`` calls of ``op`` on the key raise these exceptions."""
        with self._lock:
            self._failures.setdefault((op, key_suffix), []).extend(excs)

    def release_all(self) -> None:
        with self._lock:
            gates = list(self._gates)
        for g in gates:
            g.release()

    def in_flight(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._running.values())

    def events(self, event: str | None = None) -> list[tuple[str, str, str]]:
        with self._lock:
            return [e for e in self.log if event is None or e[0] == event]

    # ---- the interface ------------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def describe(self) -> str:
        return "fake://memory"

    def close(self) -> None:
        self.release_all()

    def list_dirs(self, prefix: str) -> list[str]:
        def do() -> list[str]:
            with self._lock:
                names = {k[len(prefix):].split("/", 1)[0] for k in self.objects if k.startswith(prefix) and "/" in k[len(prefix):]}
            return sorted(names)

        return self._op("list", prefix, do)

    def list_objects(self, prefix: str) -> dict[str, int]:
        with self._lock:
            return {k: len(v) for k, v in sorted(self.objects.items()) if k.startswith(prefix)}

    def get_bytes(self, key: str) -> bytes:
        def do() -> bytes:
            with self._lock:
                if key not in self.objects:
                    raise errors.NotFound(f"no object {key!r}")
                return self.objects[key]

        return self._op("get", key, do)

    def download_to(
        self, key: str, out: BinaryIO, expected_size: int | None, progress: base.ProgressCallback | None = None
    ) -> int:
        def do() -> int:
            with self._lock:
                if key not in self.objects:
                    raise errors.NotFound(f"no object {key!r}")
                data = self.objects[key]
            if expected_size is not None and len(data) != expected_size:
                raise errors.PermanentRemoteError(f"size mismatch for {key!r}: {expected_size} != {len(data)}")
            out.seek(0)
            out.truncate()
            out.write(data)
            if progress is not None:
                progress(len(data))
            return len(data)

        return self._op("download", key, do)

    def put_bytes(self, key: str, data: bytes) -> None:
        def do() -> None:
            self._store(key, bytes(data))

        self._op("put", key, do)

    def upload_file(self, key: str, path: Path, size: int, progress: base.ProgressCallback | None = None) -> None:
        def do() -> None:
            data = Path(path).read_bytes()  # a vanished file raises FileNotFoundError, as the real backends do
            if len(data) != size:
                raise errors.PermanentRemoteError(f"cannot upload {path}: {len(data)} bytes, expected {size}")
            self._store(key, data)
            if progress is not None:
                progress(size)

        self._op("upload", key, do)

    def delete(self, key: str) -> None:
        def do() -> None:
            with self._lock:
                self.objects.pop(key, None)

        self._op("delete", key, do)

    # ---- internals ----------------------------------------------------------------------------

    def _store(self, key: str, data: bytes) -> None:
        with self._lock:
            self.objects[key] = data
            self.writes.append((key, data))

    def _op(self, op: str, key: str, fn: Callable[[], T]) -> T:
        with self._lock:
            tid = self._next
            self._next += 1
            self._running[tid] = (op, key)
            self.log.append(("start", op, key))
            gate = next((g for g in self._gates if not g.used and g.op == op and key.endswith(g.key_suffix)), None)
            if gate is not None:
                gate.used = True
            failure: Exception | None = None
            for (fop, suffix), excs in self._failures.items():
                if fop == op and excs and key.endswith(suffix):
                    failure = excs.pop(0)
                    break
        try:
            if gate is not None:
                gate.started.set()
                if not gate.released.wait(HOLD_TIMEOUT):
                    raise RuntimeError(f"held {op} of {key} was never released")
            if failure is not None:
                with self._lock:
                    self.log.append(("fail", op, key))
                raise failure
            result = fn()
            with self._lock:
                self.log.append(("end", op, key))
            return result
        finally:
            with self._lock:
                self._running.pop(tid, None)

