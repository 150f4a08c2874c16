"""Large objects as parallel ranged GETs, each part written at its offset.

One stream per object leaves the server's and the network's other streams idle when few large
layers remain (docs/performance.md, D3), so `S3Storage.download_to` hands an object of at least
`RANGED_MIN` bytes here when the obstore path applies (`s3.transfer`), the
backend's concurrency is above 1 and the caller's file can write at an offset (``pwrite``).

Invariants:
- Parts of `RANGE_PART` bytes run on a pool of the backend's own, and each holds one of the
  backend's request slots like any GET: the concurrency limit is unchanged.
- Parts are submitted as slots free up, never all at once (an absurd size from an index ends in
  the size check of the first parts, not in billions of futures).
- Each part is retried on its own (`retry.Retrier`); the object's size is checked against the
  answer of every part (its ``Content-Range``), and the bytes of each part against its length.
- The first failure stops the other parts at their next chunk; it is raised once every part has
  ended, so no part writes after `download` returned or raised. The lowest part's failure is
  raised: it names what is wrong with the object itself (its size), not a consequence.
- A part's failure is mapped at once (`s3.errors.map_obstore_error`): one attempt, one request.

Crash behaviour: nothing is kept between calls but the pool; the caller's file holds what was
written, and the caller truncates it before a retry of the whole object.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from pageserver_operator.remote import base, errors, retry
from pageserver_operator.remote.s3 import errors as s3_errors
from pageserver_operator.remote.s3 import streams
from pageserver_operator.remote.s3 import transfer as s3_transfer

#: Objects at least this large are downloaded as parallel ranged GETs.
RANGED_MIN = 128 << 20
#: The size of one ranged GET.
RANGE_PART = 32 << 20


@dataclass(eq=False)
class RangedGets:
    """The parallel ranged GETs of one `S3Storage` (its obstore path, slots and retrier)."""

    bucket: str
    transfer: s3_transfer.Transfer
    slots: threading.BoundedSemaphore
    retrier: retry.Retrier
    concurrency: int
    map_error: streams.ErrorMapper
    _pool: ThreadPoolExecutor | None = field(default=None, init=False)  # created when first needed
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def close(self) -> None:
        """Stop the pool: parts not started are cancelled (their download fails as transient)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def download(
        self,
        key: str,
        full: str,
        out: BinaryIO,
        pwrite: Callable[[bytes | memoryview, int], object],
        size: int,
        progress: base.ProgressCallback | None,
    ) -> int:
        """``S3Storage.download_to`` of an object of ``size`` bytes as parallel ranged GETs; the
        first failure stops the other parts at their next chunk and is raised once every part
        has ended (none writes afterwards)."""
        out.seek(0)
        out.truncate()
        stop = threading.Event()

        def part(start: int, length: int) -> None:
            reported = streams.Reported(progress)

            def attempt() -> None:
                reported.restart()
                with self.slots:
                    if stop.is_set():
                        raise streams.PartStopped()
                    stream = self._open(full, start, length, size)
                    try:
                        end = streams.copy_body(stream, pwrite, start, reported, stop)
                    finally:
                        stream.close()
                if end != start + length:
                    raise s3_errors.size_mismatch(self.bucket, full, size, end)

            self.retrier.run("download", key, attempt)

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-range")
            pool = self._pool
        # Parts are submitted as slots free up, never all at once: the size comes from the
        # index, and an absurd one (2**63) must end in the size check of the first parts, not
        # in a list of billions of futures.
        in_flight: dict[concurrent.futures.Future[None], int] = {}
        failed: dict[int, BaseException] = {}

        def collect(done: set[concurrent.futures.Future[None]]) -> None:
            for f in done:
                start = in_flight.pop(f)
                if f.cancelled():  # the pool was shut down: this backend is closing
                    failed[start] = errors.TransientRemoteError(
                        f"download of {s3_errors.where(self.bucket, full)} stopped: the storage is closing"
                    )
                elif (exc := f.exception()) is not None and not isinstance(exc, streams.PartStopped):
                    failed[start] = exc

        for start in range(0, size, RANGE_PART):
            while len(in_flight) >= self.concurrency and not failed:
                done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                collect(done)
            if failed:
                break
            in_flight[pool.submit(part, start, min(RANGE_PART, size - start))] = start
        while in_flight:
            done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
            collect(done)
            if failed:
                stop.set()  # the other parts end at their next chunk
        if failed:
            # The lowest part's failure: it names what is wrong with the object itself (its size)
            # rather than a consequence (a range beyond the real end).
            raise failed[min(failed)]
        return size

    def _open(self, full: str, start: int, length: int, size: int) -> streams.Stream:
        """One ranged GET of an object of ``size`` bytes through obstore, its failure mapped at
        once. An answer giving another size for the object is a size mismatch."""
        try:
            stream = streams.TransferStream(
                self.transfer.get_range(full, start, length), full, self.map_error
            )
        except s3_transfer.TRANSFER_EXCEPTIONS as exc:
            raise self.map_error(exc, "download", full) from exc
        if stream.total != size:
            stream.close()
            got = -1 if stream.total is None else stream.total
            raise s3_errors.size_mismatch(self.bucket, full, size, got)
        return stream
