"""engine.group_commit: many downloaded files made durable by one syncfs, renamed only after it."""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pageserver_operator.engine import group_commit, paths


def _temp(final: Path, data: bytes) -> int:
    """A written ``<final>.temp_download``, its fd open (what download_to_temp hands over)."""
    fd = os.open(
        final.with_name(final.name + paths.TEMP_DOWNLOAD_SUFFIX), os.O_WRONLY | os.O_CREAT | os.O_EXCL
    )
    os.write(fd, data)
    return fd


def _submit(gc: group_commit.GroupCommit, fd: int, final: Path, size: int) -> concurrent.futures.Future[None]:
    """`GroupCommit.submit`, its callback turned into a future (a test's convenience)."""
    future: concurrent.futures.Future[None] = concurrent.futures.Future()

    def done(exc: BaseException | None) -> None:
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)

    gc.submit(fd, final, size, done)
    return future


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records every syncfs, fsync and rename, in order (the real calls still run)."""
    seen: list[str] = []
    real_syncfs, real_fsync, real_replace = group_commit.syncfs, os.fsync, os.replace

    def syncfs(fd: int) -> None:
        real_syncfs(fd)
        seen.append("syncfs")

    def fsync(fd: int) -> None:
        real_fsync(fd)
        seen.append("fsync")

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_replace(src, dst)
        seen.append(f"rename {Path(dst).name}")

    monkeypatch.setattr(group_commit, "syncfs", syncfs)
    monkeypatch.setattr(group_commit.os, "fsync", fsync)
    monkeypatch.setattr(group_commit.os, "replace", replace)
    yield seen


def test_every_file_is_renamed_after_a_syncfs_that_followed_its_write(
    tmp_path: Path, events: list[str]
) -> None:
    gc = group_commit.GroupCommit(max_files=64, max_bytes=1 << 20)
    try:
        futures = [_submit(gc, _temp(tmp_path / f"L{i}", b"x" * i), tmp_path / f"L{i}", i) for i in range(40)]
        for f in futures:
            f.result(timeout=30)
    finally:
        gc.close()
    for i in range(40):
        assert (tmp_path / f"L{i}").read_bytes() == b"x" * i
    assert not list(tmp_path.glob("*" + paths.TEMP_DOWNLOAD_SUFFIX))
    assert "fsync" not in events
    # each rename comes after a syncfs issued once its file was handed over
    assert events[0] == "syncfs"
    assert gc.files == 40 and 1 <= gc.groups <= 40
    assert events.count("syncfs") == gc.groups


@dataclass
class _Held:
    """A syncfs that waits for `release` once `flushing` is set (the committer stopped mid-flush)."""

    flushing: threading.Event
    release: threading.Event


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Held]:
    h = _Held(threading.Event(), threading.Event())
    real = group_commit.syncfs

    def slow_syncfs(fd: int) -> None:
        h.flushing.set()
        assert h.release.wait(30)
        real(fd)

    monkeypatch.setattr(group_commit, "syncfs", slow_syncfs)
    yield h
    h.release.set()


def test_files_waiting_while_a_group_flushes_form_the_next_group(tmp_path: Path, held: _Held) -> None:
    flushing, release = held.flushing, held.release
    gc = group_commit.GroupCommit(max_files=64, max_bytes=1 << 20)
    try:
        first = _submit(gc, _temp(tmp_path / "A", b"a"), tmp_path / "A", 1)
        assert flushing.wait(30)
        rest = [_submit(gc, _temp(tmp_path / f"B{i}", b"b"), tmp_path / f"B{i}", 1) for i in range(10)]
        assert not (tmp_path / "A").exists()  # not renamed before its flush returned
        release.set()
        for f in [first, *rest]:
            f.result(timeout=30)
    finally:
        release.set()
        gc.close()
    assert (gc.groups, gc.files) == (2, 11)


def test_submit_blocks_at_the_bounds_and_never_when_nothing_waits(tmp_path: Path, held: _Held) -> None:
    flushing, release = held.flushing, held.release
    gc = group_commit.GroupCommit(max_files=2, max_bytes=10)
    try:
        # larger than the byte bound, alone: accepted
        big = _submit(gc, _temp(tmp_path / "big", b"z" * 50), tmp_path / "big", 50)
        assert flushing.wait(30)
        one = _submit(gc, _temp(tmp_path / "one", b"1"), tmp_path / "one", 1)  # 2 unsynced: the bound
        blocked_done = threading.Event()

        def third() -> None:
            _submit(gc, _temp(tmp_path / "two", b"2"), tmp_path / "two", 1).result(timeout=30)
            blocked_done.set()

        t = threading.Thread(target=third)
        t.start()
        assert not blocked_done.wait(0.2)  # still blocked: two files are unsynced
        release.set()
        t.join(30)
        assert blocked_done.is_set()
        big.result(timeout=30)
        one.result(timeout=30)
    finally:
        release.set()
        gc.close()
    assert {p.name for p in tmp_path.iterdir()} == {"big", "one", "two"}


def test_a_failed_syncfs_falls_back_to_one_fsync_per_file_and_a_failure_keeps_the_temp_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: list[str]
) -> None:
    def broken_syncfs(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(group_commit, "syncfs", broken_syncfs)
    gc = group_commit.GroupCommit(max_files=64, max_bytes=1 << 20)
    bad_fd = _temp(tmp_path / "bad", b"b")
    real_fsync = group_commit.os.fsync

    def fsync(fd: int) -> None:
        if fd == bad_fd:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(group_commit.os, "fsync", fsync)
    try:
        good = _submit(gc, _temp(tmp_path / "good", b"g"), tmp_path / "good", 1)
        bad = _submit(gc, bad_fd, tmp_path / "bad", 1)
        good.result(timeout=30)
        with pytest.raises(OSError, match="Input/output error"):
            bad.result(timeout=30)
    finally:
        gc.close()
    assert (tmp_path / "good").read_bytes() == b"g"
    assert not (tmp_path / "bad").exists()
    assert (tmp_path / ("bad" + paths.TEMP_DOWNLOAD_SUFFIX)).exists()
    with pytest.raises(OSError):  # the fd was closed despite the failure
        os.fstat(bad_fd)


def test_close_commits_every_file_submitted(tmp_path: Path) -> None:
    gc = group_commit.GroupCommit(max_files=4, max_bytes=1 << 20)
    futures = [_submit(gc, _temp(tmp_path / f"L{i}", b"d"), tmp_path / f"L{i}", 1) for i in range(12)]
    gc.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"L{i}" for i in range(12))
    fd = _temp(tmp_path / "late", b"x")
    with pytest.raises(RuntimeError, match="closed"):
        _submit(gc, fd, tmp_path / "late", 1)


def test_syncfs_reports_an_error_for_a_bad_descriptor() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        group_commit.syncfs(r)


def test_a_failing_callback_does_not_stop_the_committer(tmp_path: Path) -> None:
    gc = group_commit.GroupCommit(max_files=4, max_bytes=1 << 20)

    def bad(exc: BaseException | None) -> None:
        raise ValueError("a bug in a caller")

    try:
        gc.submit(_temp(tmp_path / "A", b"a"), tmp_path / "A", 1, bad)
        _submit(gc, _temp(tmp_path / "B", b"b"), tmp_path / "B", 1).result(timeout=30)
    finally:
        gc.close()
    assert (tmp_path / "A").exists() and (tmp_path / "B").exists()
