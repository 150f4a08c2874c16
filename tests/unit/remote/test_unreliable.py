"""Tests of `remote.unreliable.UnreliableStorage`: the first N calls of each (operation, target)
fail before delegation, per target and per operation, with the chosen error; and a caller that
retries (as the engine does) gets through."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pageserver_operator.remote import base, errors, local_fs, retry, unreliable

from .conftest import RecordingSleep


@pytest.fixture
def inner(tmp_path: Path) -> local_fs.LocalFsStorage:
    return local_fs.LocalFsStorage(tmp_path / "store", concurrency=2)


def test_counts_per_target_and_per_operation(inner: local_fs.LocalFsStorage) -> None:
    flaky = unreliable.UnreliableStorage(inner, fail_first=1)
    for key in ("a", "b"):  # every key sees its own failures
        with pytest.raises(errors.TransientRemoteError, match=f"injected failure 1 of 1: put of '{key}'"):
            flaky.put_bytes(key, b"x")
        flaky.put_bytes(key, b"x")
    with pytest.raises(errors.TransientRemoteError):  # another operation on the same key: its own count
        flaky.get_bytes("a")
    assert flaky.get_bytes("a") == b"x"
    assert flaky.calls("put", "a") == 2 and flaky.calls("get", "a") == 2 and flaky.calls("get", "zzz") == 0
    assert flaky.injected == 3


def test_every_operation_can_fail(inner: local_fs.LocalFsStorage, tmp_path: Path) -> None:
    inner.put_bytes("k", b"data")
    source = tmp_path / "src"
    source.write_bytes(b"data")
    flaky = unreliable.UnreliableStorage(inner, fail_first=1)
    calls: list[Callable[[], object]] = [
        lambda: flaky.list_dirs(""),
        lambda: flaky.list_objects(""),
        lambda: flaky.get_bytes("k"),
        lambda: flaky.download_to("k", io.BytesIO(), 4),
        lambda: flaky.put_bytes("k2", b"x"),
        lambda: flaky.upload_file("k3", source, 4),
        lambda: flaky.delete("k"),
    ]
    for call in calls:
        with pytest.raises(errors.TransientRemoteError):
            call()
        call()
    assert inner.list_objects("") == {"k2": 1, "k3": 4}


def test_only_the_chosen_operations_fail_with_the_chosen_error(inner: local_fs.LocalFsStorage) -> None:
    flaky = unreliable.UnreliableStorage(
        inner, fail_first=2, ops={"delete"}, error=errors.PermanentRemoteError
    )
    flaky.put_bytes("k", b"x")
    assert flaky.get_bytes("k") == b"x"
    for _ in range(2):
        with pytest.raises(errors.PermanentRemoteError):
            flaky.delete("k")
    assert inner.get_bytes("k") == b"x", "a failed call must not reach the store"
    flaky.delete("k")
    assert inner.list_objects("") == {}


def test_validation_and_description(inner: local_fs.LocalFsStorage) -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        unreliable.UnreliableStorage(inner, 1, ops={"upload", "fetch"})
    with pytest.raises(ValueError):
        unreliable.UnreliableStorage(inner, -1)
    flaky = unreliable.UnreliableStorage(inner, 3, ops={"get"})
    assert isinstance(flaky, base.RemoteStorage)
    assert flaky.concurrency == 2
    assert inner.describe() in flaky.describe() and "first 3 calls" in flaky.describe()
    passthrough = unreliable.UnreliableStorage(inner, 0)
    passthrough.put_bytes("k", b"x")
    assert passthrough.injected == 0


def test_a_retrying_caller_gets_through(inner: local_fs.LocalFsStorage, sleeps: RecordingSleep) -> None:
    flaky = unreliable.UnreliableStorage(inner, fail_first=3)
    caller = retry.Retrier(retry.RetryPolicy(max_attempts=4), sleep=sleeps)
    caller.call("put", "k", lambda: flaky.put_bytes("k", b"v"))
    assert caller.call("get", "k", lambda: flaky.get_bytes("k")) == b"v"
    assert len(sleeps.delays) == 6


def test_thread_safe_counting(inner: local_fs.LocalFsStorage) -> None:
    flaky = unreliable.UnreliableStorage(inner, fail_first=5, ops={"list"})
    failures = []

    def worker() -> None:
        try:
            flaky.list_objects("")
        except errors.TransientRemoteError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(failures) == 5
    assert flaky.calls("list", "objects:") == 16
