"""A fault-injecting wrapper around any backend, to test the engine under remote failures.

Modelled on Neon's ``UnreliableWrapper``: the first ``fail_first`` calls of every operation
*on each target* (op + key, or op + prefix for listings) raise ``error`` before anything is
delegated; later calls go through to the wrapped backend unchanged. Counting per target means
every object in a test sees the failures, not just the first one touched.

Where it sits: *outside* the backend's own retry loop (`retry.Retrier`). A
`TransientRemoteError` from this wrapper therefore means what a real one means to the caller:
the backend already tried ``max_attempts`` times and gave up. It tests the engine's reaction to
an exhausted retry budget (upload queue retries, attach retries, Broken with a reason), not the
backend's inner retry loop; that loop is tested per backend by injecting faults at the request
level (botocore events for S3, see tests/unit/remote/s3/test_storage.py). With ``error`` set to
`PermanentRemoteError` or `NotFound` it tests the non-retryable paths.

Invariants: the wrapper never alters data, never injects after delegating (a failed call has no
effect on the store), and is thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from pageserver_operator.remote import base, errors, metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

ALL_OPS: frozenset[metrics.Op] = frozenset({"list", "get", "download", "upload", "put", "delete"})


class UnreliableStorage:
    """Fails the first ``fail_first`` calls of each (operation, target), then delegates.

    ``ops`` picks the operations by their metric names (`ALL_OPS`: ``list`` for both listings,
    ``get``, ``download``, ``upload``, ``put``, ``delete``); None means all of them. ``error`` is
    the exception class raised, constructed with a message naming the operation and target.
    """

    def __init__(
        self,
        inner: base.RemoteStorage,
        fail_first: int,
        ops: set[str] | frozenset[str] | None = None,
        error: type[Exception] = errors.TransientRemoteError,
    ) -> None:
        if fail_first < 0:
            raise ValueError(f"fail_first must be >= 0, got {fail_first}")
        chosen = frozenset(ALL_OPS if ops is None else ops)
        unknown = chosen - ALL_OPS
        if unknown:
            raise ValueError(f"unknown operation(s) {sorted(unknown)}; choose from {sorted(ALL_OPS)}")
        self.inner = inner
        self.fail_first = fail_first
        self.ops = chosen
        self.error = error
        self._calls: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.injected = 0
        """Failures injected so far (all targets)."""

    @property
    def concurrency(self) -> int:
        return self.inner.concurrency

    def describe(self) -> str:
        return (
            f"{self.inner.describe()} (unreliable: first {self.fail_first} calls of {sorted(self.ops)} fail)"
        )

    def calls(self, op: str, target: str) -> int:
        """How many times ``op`` was called on ``target`` (failed calls included)."""
        with self._lock:
            return self._calls.get((op, target), 0)

    def list_dirs(self, prefix: str) -> list[str]:
        return self._call("list", "dirs:" + prefix, lambda: self.inner.list_dirs(prefix))

    def list_objects(self, prefix: str) -> dict[str, int]:
        return self._call("list", "objects:" + prefix, lambda: self.inner.list_objects(prefix))

    def get_bytes(self, key: str) -> bytes:
        return self._call("get", key, lambda: self.inner.get_bytes(key))

    def download_to(
        self,
        key: str,
        out: BinaryIO,
        expected_size: int | None,
        progress: base.ProgressCallback | None = None,
    ) -> int:
        return self._call("download", key, lambda: self.inner.download_to(key, out, expected_size, progress))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self.inner.put_bytes(key, data))

    def upload_file(
        self, key: str, path: Path, size: int, progress: base.ProgressCallback | None = None
    ) -> None:
        self._call("upload", key, lambda: self.inner.upload_file(key, path, size, progress))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    def close(self) -> None:
        self.inner.close()

    def _call(self, op: metrics.Op, target: str, delegate: Callable[[], T]) -> T:
        if op in self.ops:
            with self._lock:
                n = self._calls.get((op, target), 0) + 1
                self._calls[(op, target)] = n
                inject = n <= self.fail_first
                if inject:
                    self.injected += 1
            if inject:
                log.info(
                    "injecting failure %d of %d into %s of %s",
                    n,
                    self.fail_first,
                    op,
                    target,
                    extra={"remote_op": op, "remote_key": target, "attempt": n},
                )
                raise self.error(f"injected failure {n} of {self.fail_first}: {op} of {target!r}")
        return delegate()
