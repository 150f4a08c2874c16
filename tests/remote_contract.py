"""The behaviour every remote storage backend must show (`pageserver_operator.remote.base`).

One set of checks, run against every backend: the local directory and moto in the unit tests
(tests/unit/remote/test_contract.py), the real SeaweedFS server in the integration tests
(tests/integration/test_remote_backends.py). A check takes a `Harness` (the backend plus a raw
view of what it stored, to verify the key mapping) and a scratch directory. Add a check here,
and every backend is held to it.

Also here: request-level fault injection for the S3 backend's botocore client (`BotocoreFaults`),
shared by the moto unit tests and the SeaweedFS integration tests, to exercise the S3 backend's
retry loop, and `botocore_client`, the one place a test reaches the backend's client (production
code has no accessor for it).
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.awsrequest
import botocore.exceptions
import pytest
import urllib3.exceptions
from botocore.compat import HTTPHeaders

from pageserver_operator.remote import base, errors, unreliable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from pageserver_operator.remote.s3 import storage as s3_storage

MiB = 1024 * 1024

TL = "tenants/3aa8fcc61f6d357410b7de754b1d9001/timelines/"
TL_A = TL + "11111111111111111111111111111111/"
TL_B = TL + "22222222222222222222222222222222/"
LAYER = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000001696070-00000000016960E9"

INVALID_KEYS = ["", "/abs/key", "a//b", "a/../b", "../a", "a/./b", "a\x00b", "a/", "layer.___temp"]


@dataclass
class Harness:
    """A backend under test, with a raw view of the underlying store."""

    storage: base.RemoteStorage
    raw_keys: Callable[[], set[str]]
    """Every object/file name in the underlying bucket or directory (temp files included)."""
    raw_prefix: str
    """What the backend puts before a key in the raw store ("" or "PREFIX/")."""
    secrets: list[str] = field(default_factory=list)
    """Strings that must never appear in ``describe()``."""
    overwrite_while_reading_ok: bool = True
    """False for moto, whose in-process store closes an overwritten object under its readers."""


Check = Callable[[Harness, Path], None]


def _expect_raw(h: Harness, keys: set[str]) -> None:
    assert h.raw_keys() == {h.raw_prefix + k for k in keys}


def check_put_then_get_round_trips(h: Harness, tmp: Path) -> None:
    payloads = {
        TL_A + "index_part.json": b'{"version":1}',
        TL_A + "empty": b"",
        TL_A + "bin": bytes(range(256)) * 9,
    }
    for key, data in payloads.items():
        h.storage.put_bytes(key, data)
    for key, data in payloads.items():
        assert h.storage.get_bytes(key) == data
    _expect_raw(h, set(payloads))


def check_put_replaces_the_whole_object(h: Harness, tmp: Path) -> None:
    key = TL_A + "index_part.json"
    h.storage.put_bytes(key, b"x" * 1000)
    h.storage.put_bytes(key, b"short")
    assert h.storage.get_bytes(key) == b"short"
    assert h.storage.list_objects(TL_A) == {key: 5}


def check_missing_object_is_not_found_and_nothing_else(h: Harness, tmp: Path) -> None:
    with pytest.raises(errors.NotFound):
        h.storage.get_bytes(TL_A + "index_part.json")
    out = io.BytesIO()
    with pytest.raises(errors.NotFound) as raised:
        h.storage.download_to(TL_A + LAYER, out, 10)
    assert not isinstance(raised.value, (errors.TransientRemoteError, errors.PermanentRemoteError))
    h.storage.put_bytes(TL_A + "x", b"x")  # a sibling existing changes nothing
    with pytest.raises(errors.NotFound):
        h.storage.get_bytes(TL_A + "y")
    with pytest.raises(errors.NotFound):  # a "directory" is not an object
        h.storage.get_bytes(TL_A.rstrip("/"))


def check_list_dirs_names_immediate_children_only(h: Harness, tmp: Path) -> None:
    h.storage.put_bytes(TL_B + "index_part.json", b"b")
    h.storage.put_bytes(TL_A + "index_part.json", b"a")
    h.storage.put_bytes(TL_A + "deeper/still/x", b"x")
    h.storage.put_bytes(TL.rstrip("/") + "-sibling/z/file", b"z")  # same string prefix, other dir
    h.storage.put_bytes(TL + "a-file-not-a-dir", b"f")
    assert h.storage.list_dirs(TL) == ["11111111111111111111111111111111", "22222222222222222222222222222222"]
    assert h.storage.list_dirs(TL_A) == ["deeper"]
    assert h.storage.list_dirs("") == ["tenants"]


def check_list_dirs_of_missing_prefix_is_empty(h: Harness, tmp: Path) -> None:
    assert h.storage.list_dirs(TL) == []
    assert h.storage.list_dirs("") == []
    h.storage.put_bytes(TL_A + "index_part.json", b"a")
    assert h.storage.list_dirs(TL_B) == []
    assert h.storage.list_dirs("nothing/here/") == []


def check_list_dirs_requires_a_directory_prefix(h: Harness, tmp: Path) -> None:
    with pytest.raises(ValueError, match="must end with '/'"):
        h.storage.list_dirs(TL.rstrip("/"))


def check_list_objects_is_recursive_with_sizes(h: Harness, tmp: Path) -> None:
    objects = {TL_A + "index_part.json": 3, TL_A + LAYER: 1000, TL_B + "index_part.json": 7, "other/top": 1}
    for key, size in objects.items():
        h.storage.put_bytes(key, b"q" * size)
    assert h.storage.list_objects("") == objects
    assert h.storage.list_objects(TL) == {k: v for k, v in objects.items() if k.startswith(TL)}
    assert h.storage.list_objects(TL_A) == {TL_A + "index_part.json": 3, TL_A + LAYER: 1000}
    assert h.storage.list_objects(TL + "1") == {
        TL_A + "index_part.json": 3,
        TL_A + LAYER: 1000,
    }  # S3 semantics
    assert h.storage.list_objects("missing/") == {}


def check_many_keys_listed_from_many_threads(h: Harness, tmp: Path) -> None:
    keys = {f"{TL_A}layer-{i:03d}" for i in range(48)}
    dirs = [f"{i:032x}" for i in range(12)]
    chunks = [sorted(keys)[i::4] + [f"{TL}{d}/index_part.json" for d in dirs[i::4]] for i in range(4)]
    threads = [threading.Thread(target=_put_all, args=(h.storage, chunk)) for chunk in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(h.storage.list_objects(TL_A)) == keys
    assert h.storage.list_dirs(TL) == sorted([*dirs, "11111111111111111111111111111111"])


def _put_all(storage: base.RemoteStorage, keys: list[str]) -> None:
    for key in keys:
        storage.put_bytes(key, b"")


def check_download_to_streams_with_progress(h: Harness, tmp: Path) -> None:
    data = os.urandom(2 * MiB + 12345)
    key = TL_A + LAYER
    h.storage.put_bytes(key, data)
    out = io.BytesIO(b"garbage that is longer than nothing" * 100_000)
    out.seek(17)
    calls: list[int] = []
    n = h.storage.download_to(key, out, len(data), calls.append)
    assert n == len(data)
    assert out.getvalue() == data
    assert sum(calls) == len(data)
    assert len(calls) >= 3 and all(0 < c <= MiB for c in calls)


def check_download_to_a_file_and_without_expected_size(h: Harness, tmp: Path) -> None:
    data = os.urandom(300_000)
    key = TL_A + LAYER
    h.storage.put_bytes(key, data)
    target = tmp / "download.temp_download"
    with open(target, "wb") as out:
        assert h.storage.download_to(key, out, None) == len(data)
    assert target.read_bytes() == data


def check_download_size_mismatch_is_permanent(h: Harness, tmp: Path) -> None:
    key = TL_A + LAYER
    h.storage.put_bytes(key, b"z" * 1234)
    for wrong in (1233, 1235, 0):
        with pytest.raises(errors.PermanentRemoteError) as raised:
            h.storage.download_to(key, io.BytesIO(), wrong)
        message = str(raised.value)
        assert LAYER in message and str(wrong) in message and "1234" in message


def check_upload_file_round_trips(h: Harness, tmp: Path) -> None:
    data = os.urandom(3 * MiB + 7)
    source = tmp / "layer"
    source.write_bytes(data)
    calls: list[int] = []
    h.storage.upload_file(TL_A + LAYER, source, len(data), calls.append)
    assert sum(calls) == len(data)
    assert h.storage.list_objects(TL_A) == {TL_A + LAYER: len(data)}
    out = io.BytesIO()
    h.storage.download_to(TL_A + LAYER, out, len(data))
    assert out.getvalue() == data
    _expect_raw(h, {TL_A + LAYER})


def check_upload_file_of_the_wrong_size_stores_nothing(h: Harness, tmp: Path) -> None:
    source = tmp / "layer"
    source.write_bytes(b"a" * 100)
    with pytest.raises(errors.PermanentRemoteError, match="100"):
        h.storage.upload_file(TL_A + LAYER, source, 99)
    assert h.storage.list_objects("") == {}
    with pytest.raises(FileNotFoundError):  # a missing *local* file is not a missing remote object
        h.storage.upload_file(TL_A + LAYER, tmp / "missing", 1)
    assert h.raw_keys() == set()


def check_delete_removes_and_missing_is_success(h: Harness, tmp: Path) -> None:
    h.storage.put_bytes(TL_A + "index_part.json", b"i")
    h.storage.put_bytes(TL_A + LAYER, b"l")
    h.storage.delete(TL_A + LAYER)
    assert h.storage.list_objects("") == {TL_A + "index_part.json": 1}
    h.storage.delete(TL_A + LAYER)  # again: success
    h.storage.delete(TL_B + "never-existed")
    h.storage.delete(TL_A + "index_part.json")
    assert h.storage.list_objects("") == {}
    # AWS S3 and the local backend drop a "directory" with its last object; SeaweedFS keeps the empty
    # folder as a common prefix. Callers must treat a listed timeline without an index as NotFound.
    assert h.storage.list_dirs(TL) in ([], ["11111111111111111111111111111111"])
    assert h.raw_keys() == set()


def check_keys_map_under_the_prefix_without_leading_slash(h: Harness, tmp: Path) -> None:
    keys = {TL_A + "index_part.json", TL_A + LAYER, "top-level-object"}
    for key in keys:
        h.storage.put_bytes(key, b"k")
    raw = h.raw_keys()
    _expect_raw(h, keys)
    assert not any(name.startswith("/") for name in raw)
    assert not any("//" in name for name in raw)


def check_invalid_keys_are_rejected_everywhere(h: Harness, tmp: Path) -> None:
    source = tmp / "f"
    source.write_bytes(b"x")
    for key in INVALID_KEYS:
        with pytest.raises(ValueError):
            h.storage.put_bytes(key, b"x")
        with pytest.raises(ValueError):
            h.storage.get_bytes(key)
        with pytest.raises(ValueError):
            h.storage.download_to(key, io.BytesIO(), 1)
        with pytest.raises(ValueError):
            h.storage.upload_file(key, source, 1)
        with pytest.raises(ValueError):
            h.storage.delete(key)
    for prefix in ("/abs/", "a//", "../", "a\x00/"):
        with pytest.raises(ValueError):
            h.storage.list_dirs(prefix)
        with pytest.raises(ValueError):
            h.storage.list_objects(prefix)
    assert h.raw_keys() == set()


def check_replace_is_atomic_for_readers(h: Harness, tmp: Path) -> None:
    if not h.overwrite_while_reading_ok:
        pytest.skip(
            "the mock server is not thread-safe for overwrites under readers (the real one is tested)"
        )
    key = TL_A + "index_part.json"
    old, new = b"o" * (256 * 1024), b"n" * (256 * 1024 + 1)
    h.storage.put_bytes(key, old)
    seen: set[bytes] = set()
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                data = h.storage.get_bytes(key)
                if data not in (old, new):
                    raise AssertionError(f"torn read of {len(data)} bytes")
                seen.add(data[:1])
        except BaseException as exc:
            failures.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for i in range(20):
            h.storage.put_bytes(key, new if i % 2 == 0 else old)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not failures, failures
    assert h.storage.get_bytes(key) == old
    _expect_raw(h, {key})


def check_describe_and_concurrency(h: Harness, tmp: Path) -> None:
    text = h.storage.describe()
    assert text
    for secret in h.secrets:
        assert secret not in text
    assert h.storage.concurrency >= 1
    assert isinstance(h.storage, base.RemoteStorage)


def check_unreliable_wrapper_fails_first_calls_then_delegates(h: Harness, tmp: Path) -> None:
    flaky = unreliable.UnreliableStorage(h.storage, fail_first=2)
    key = TL_A + "index_part.json"
    for _ in range(2):
        with pytest.raises(errors.TransientRemoteError):
            flaky.put_bytes(key, b"v1")
    assert h.storage.list_objects("") == {}  # failed calls never reached the store
    flaky.put_bytes(key, b"v1")
    for _ in range(2):
        with pytest.raises(errors.TransientRemoteError):
            flaky.get_bytes(key)
    assert flaky.get_bytes(key) == b"v1"
    for _ in range(2):
        with pytest.raises(errors.TransientRemoteError):
            flaky.list_dirs(TL)
    assert flaky.list_dirs(TL) == ["11111111111111111111111111111111"]


CHECKS: list[Check] = [
    check_put_then_get_round_trips,
    check_put_replaces_the_whole_object,
    check_missing_object_is_not_found_and_nothing_else,
    check_list_dirs_names_immediate_children_only,
    check_list_dirs_of_missing_prefix_is_empty,
    check_list_dirs_requires_a_directory_prefix,
    check_list_objects_is_recursive_with_sizes,
    check_many_keys_listed_from_many_threads,
    check_download_to_streams_with_progress,
    check_download_to_a_file_and_without_expected_size,
    check_download_size_mismatch_is_permanent,
    check_upload_file_round_trips,
    check_upload_file_of_the_wrong_size_stores_nothing,
    check_delete_removes_and_missing_is_success,
    check_keys_map_under_the_prefix_without_leading_slash,
    check_invalid_keys_are_rejected_everywhere,
    check_replace_is_atomic_for_readers,
    check_describe_and_concurrency,
    check_unreliable_wrapper_fails_first_calls_then_delegates,
]


def check_id(check: Check) -> str:
    return check.__name__.removeprefix("check_")


# -- request-level fault injection for boto3 clients -------------------------------------------------


class _RawBody:
    """The minimal ``raw`` a botocore `AWSResponse` needs."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        yield self._data


class _BrokenStream:
    """A response body that delivers ``good`` bytes, then fails like a reset connection."""

    def __init__(self, inner: Any, good: int) -> None:
        self._inner = inner
        self._left = good

    def read(self, amt: int | None = None) -> bytes:
        if self._left <= 0:
            raise botocore.exceptions.ResponseStreamingError(
                error=urllib3.exceptions.ProtocolError("Connection broken: injected reset")
            )
        want = self._left if amt is None else min(amt, self._left)
        chunk: bytes = self._inner.read(want)
        self._left -= len(chunk)
        return chunk

    def close(self) -> None:
        self._inner.close()


def botocore_client(storage: s3_storage.S3Storage) -> S3Client:
    """The botocore client of an S3 backend (requests made with it bypass the backend's limit)."""
    return storage._client


class BotocoreFaults:
    """Injects failures into the requests of one boto3 client through botocore's event hooks.

    Each ``fail_*`` call arms the next ``times`` requests of ``operation`` (e.g. ``"GetObject"``)
    to fail in a specific way. Requests, failed or not, are recorded in `sent`.
    """

    def __init__(self, storage: s3_storage.S3Storage) -> None:
        """Hook into ``storage``'s client. Requests of the obstore path (`remote.s3.transfer`) do not
        go through botocore's events: build the storage with ``direct=False``."""
        if storage._direct is not None:
            raise AssertionError(
                "BotocoreFaults would not see the obstore path: build the storage with direct=False"
            )
        client = botocore_client(storage)
        self._lock = threading.Lock()
        self._armed: dict[str, list[Callable[[], Any]]] = {}
        self._broken_bodies: dict[str, int] = {}
        self._good = 0
        self.sent: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0
        client.meta.events.register_first("before-send.s3", self._before_send)
        client.meta.events.register_first("after-call.s3.GetObject", self._after_get)

    def fail_with_connection_error(self, operation: str, times: int) -> None:
        self._arm(operation, times, self._connection_error)

    def fail_with_status(self, operation: str, times: int, status: int, code: str) -> None:
        def respond() -> botocore.awsrequest.AWSResponse:
            body = f"<Error><Code>{code}</Code><Message>injected {code}</Message></Error>".encode()
            return botocore.awsrequest.AWSResponse("http://injected", status, HTTPHeaders(), _RawBody(body))

        self._arm(operation, times, respond)

    def break_body_after(self, times: int, good_bytes: int) -> None:
        """The next ``times`` GetObject bodies fail after ``good_bytes`` bytes."""
        with self._lock:
            self._broken_bodies["GetObject"] = times
            self._good = good_bytes

    def count(self, operation: str) -> int:
        return self.sent.count(operation)

    @staticmethod
    def _connection_error() -> None:
        raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://injected")

    def _arm(self, operation: str, times: int, action: Callable[[], Any]) -> None:
        with self._lock:
            self._armed.setdefault(operation, []).extend([action] * times)

    def _before_send(self, event_name: str, **_: Any) -> Any:
        operation = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self.sent.append(operation)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            queue = self._armed.get(operation)
            action = queue.pop(0) if queue else None
        try:
            if self.delay:
                time.sleep(self.delay)
            return action() if action is not None else None
        finally:
            with self._lock:
                self.in_flight -= 1

    def _after_get(self, parsed: dict[str, Any], **_: Any) -> None:
        with self._lock:
            left = self._broken_bodies.get("GetObject", 0)
            if left <= 0 or "Body" not in parsed:
                return
            self._broken_bodies["GetObject"] = left - 1
        parsed["Body"] = _BrokenStream(parsed["Body"], self._good)
