"""Progress of the current attach/reconcile, shared between download threads and readers.

Writers are worker threads (one call per chunk), readers are status writers that sample it at
a bounded rate; a lock keeps the counters consistent. The ETA comes from the rate over a sliding
window of recent samples, not from the start, so a slow start does not distort it forever.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class ProgressSnapshot:
    layers_total: int
    layers_done: int
    bytes_total: int
    bytes_done: int
    started_at: datetime | None
    eta_seconds: int | None


class Progress:
    WINDOW_SECONDS = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.layers_total = 0
        self.layers_done = 0
        self.bytes_total = 0
        self.bytes_done = 0
        self.started_at: datetime | None = None
        self._samples: deque[tuple[float, int]] = deque()

    def start(self, layers_total: int, bytes_total: int, layers_done: int = 0, bytes_done: int = 0) -> None:
        with self._lock:
            self.layers_total, self.bytes_total = layers_total, bytes_total
            self.layers_done, self.bytes_done = layers_done, bytes_done
            self.started_at = datetime.now(UTC)
            self._samples.clear()
            self._samples.append((time.monotonic(), bytes_done))

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n

    def add_layer(self) -> None:
        with self._lock:
            self.layers_done += 1

    def unknown_size_done(self, n: int) -> None:
        """A layer whose size the index did not know: count its bytes into the total too."""
        with self._lock:
            self.bytes_total += n

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            now = time.monotonic()
            self._samples.append((now, self.bytes_done))
            while len(self._samples) > 2 and now - self._samples[0][0] > self.WINDOW_SECONDS:
                self._samples.popleft()
            t0, b0 = self._samples[0]
            eta: int | None = None
            remaining = max(self.bytes_total - self.bytes_done, 0)
            if self.layers_total == 0 and self.bytes_total == 0:
                eta = None  # nothing planned yet (listing remote storage): unknown, not "done"
            elif remaining == 0 and self.started_at is not None:
                eta = 0
            elif now > t0 and self.bytes_done > b0:
                eta = int(remaining / ((self.bytes_done - b0) / (now - t0)) + 0.5)
            return ProgressSnapshot(
                self.layers_total, self.layers_done, self.bytes_total, self.bytes_done, self.started_at, eta
            )
