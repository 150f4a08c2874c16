"""`remote.s3.ranged` in process, with a stand-in for the obstore path (the real server:
tests/integration/test_s3_transfer.py): parts at their offsets under the backend's request slots,
a failed part retried alone, the object's size checked against every part, the lowest part's
failure raised once every part has ended."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import obstore.exceptions
import pytest

from pageserver_operator.remote import errors, retry
from pageserver_operator.remote.s3 import errors as s3_errors
from pageserver_operator.remote.s3 import ranged

PART = 1000
SEED = 20261205


class Part:
    """What `Transfer.get_range` returns: the asked range of ``data`` in chunks of 300 bytes."""

    def __init__(self, data: bytes, start: int, length: int, total: int) -> None:
        self.length: int | None = min(length, len(data) - start)
        self.total: int | None = total
        self._body = data[start : start + self.length]

    def chunks(self) -> Iterator[bytes]:
        for i in range(0, len(self._body), 300):
            yield self._body[i : i + 300]

    def finished(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeDirect:
    def __init__(self, data: bytes, total: int | None = None) -> None:
        self.data = data
        self.total = len(data) if total is None else total
        self.calls: list[int] = []
        self.fail: dict[int, int] = {}  # start -> failures left
        self.active = 0
        self.most = 0
        self._lock = threading.Lock()

    def get_range(self, full: str, start: int, length: int) -> Part:
        with self._lock:
            self.calls.append(start)
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            if self.fail.get(start):
                self.fail[start] -= 1
                raise obstore.exceptions.GenericError("Generic S3 error: HTTP error: connection reset")
            return Part(self.data, start, length, self.total)
        finally:
            with self._lock:
                self.active -= 1


class Out:
    """A file that writes at an offset (what the engine's writer offers)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._lock = threading.Lock()

    def seek(self, pos: int) -> None:
        pass

    def truncate(self) -> None:
        self.buf.clear()

    def pwrite(self, chunk: bytes | memoryview, pos: int) -> None:
        with self._lock:
            if len(self.buf) < pos + len(chunk):
                self.buf.extend(bytes(pos + len(chunk) - len(self.buf)))
            self.buf[pos : pos + len(chunk)] = chunk


def map_error(exc: BaseException, op: str, full_key: str) -> errors.RemoteError:
    return s3_errors.map_obstore_error(
        exc, op=op, bucket="bkt", full_key=full_key, endpoint="http://127.0.0.1:1"
    )


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranged, "RANGE_PART", PART)


def getter(direct: FakeDirect, fast_retrier: retry.Retrier, concurrency: int = 2) -> ranged.RangedGets:
    slots = threading.BoundedSemaphore(concurrency)
    return ranged.RangedGets("bkt", direct, slots, fast_retrier, concurrency, map_error)  # type: ignore[arg-type]


def data(size: int) -> bytes:
    print(f"seed {SEED}")
    return random.Random(SEED).randbytes(size)


def test_parts_land_at_their_offsets_under_the_request_slots(fast_retrier: retry.Retrier) -> None:
    body = data(4 * PART + 123)
    direct = FakeDirect(body)
    g = getter(direct, fast_retrier, concurrency=2)
    out, progress = Out(), []
    try:
        assert g.download("k", "pfx/k", out, out.pwrite, len(body), progress.append) == len(body)  # type: ignore[arg-type]
    finally:
        g.close()
    assert bytes(out.buf) == body
    assert sum(progress) == len(body)
    assert sorted(direct.calls) == [0, PART, 2 * PART, 3 * PART, 4 * PART]
    assert direct.most <= 2


def test_a_failed_part_is_retried_alone_and_its_bytes_counted_once(fast_retrier: retry.Retrier) -> None:
    body = data(3 * PART)
    direct = FakeDirect(body)
    direct.fail[PART] = 1
    g = getter(direct, fast_retrier)
    out, progress = Out(), []
    try:
        g.download("k", "pfx/k", out, out.pwrite, len(body), progress.append)  # type: ignore[arg-type]
    finally:
        g.close()
    assert bytes(out.buf) == body and sum(progress) == len(body)
    assert sorted(direct.calls) == [0, PART, PART, 2 * PART]


def test_another_object_size_in_any_part_is_a_permanent_size_mismatch(fast_retrier: retry.Retrier) -> None:
    body = data(3 * PART)
    g = getter(FakeDirect(body, total=len(body) + 1), fast_retrier)
    try:
        message = f"s3://bkt/pfx/k: expected {len(body)} bytes, got {len(body) + 1}"
        with pytest.raises(errors.PermanentRemoteError, match=message):
            g.download("k", "pfx/k", Out(), Out().pwrite, len(body), None)  # type: ignore[arg-type]
    finally:
        g.close()


def test_a_part_failing_for_good_fails_the_download_after_every_part_ended(
    fast_retrier: retry.Retrier,
) -> None:
    body = data(4 * PART)
    direct = FakeDirect(body)
    direct.fail[2 * PART] = 1000  # every attempt of this part fails: the retrier gives up
    g = getter(direct, fast_retrier)
    out = Out()
    ended = threading.Event()
    late: list[int] = []

    def pwrite(chunk: bytes | memoryview, pos: int) -> None:
        if ended.is_set():
            late.append(pos)
        out.pwrite(chunk, pos)

    try:
        with pytest.raises(errors.TransientRemoteError):
            g.download("k", "pfx/k", out, pwrite, len(body), None)  # type: ignore[arg-type]
        ended.set()
    finally:
        g.close()  # waits for the pool's threads: a part still running would write now
    assert late == [], "a part wrote after the download ended"
    # a closed getter makes a new pool: a later download works
    direct.fail.clear()
    try:
        assert g.download("k", "pfx/k", out, out.pwrite, len(body), None) == len(body)  # type: ignore[arg-type]
    finally:
        g.close()
    assert bytes(out.buf) == body
