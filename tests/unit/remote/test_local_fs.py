"""Tests of `remote.local_fs` beyond the shared contract: temp files never show, failed writes
leave nothing behind, empty directories are pruned but the root is kept, nothing outside the
root is touched (symlinks included), and store errors are classified while the caller's own
file errors are not."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest

from pageserver_operator.remote import errors, keys, local_fs, retry

from .conftest import RecordingSleep

KEY = "tenants/t/timelines/tl/index_part.json"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def storage(root: Path, fast_retrier: retry.Retrier) -> local_fs.LocalFsStorage:
    return local_fs.LocalFsStorage(root, concurrency=2, retrier=fast_retrier)


def _files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir()}


def test_the_root_is_created_on_first_write_not_before(storage: local_fs.LocalFsStorage, root: Path) -> None:
    assert storage.list_dirs("") == [] and storage.list_objects("") == {}
    assert not root.exists()
    storage.put_bytes(KEY, b"{}")
    assert (root / KEY).read_bytes() == b"{}"
    assert storage.describe() == f"file://{root}"


def test_stale_temp_files_never_show_in_listings(storage: local_fs.LocalFsStorage, root: Path) -> None:
    storage.put_bytes(KEY, b"{}")
    (root / "tenants/t/timelines/tl" / f"layer.1234{keys.TEMP_SUFFIX}").write_bytes(b"partial")
    (root / "tenants/t/timelines/only-temp").mkdir()
    (root / "tenants/t/timelines/only-temp" / f"x{keys.TEMP_SUFFIX}").write_bytes(b"partial")
    (root / "tenants/t/timelines/empty-dir").mkdir()

    assert storage.list_objects("") == {KEY: 2}
    assert storage.list_dirs("tenants/t/timelines/") == ["tl"]


def test_a_failed_write_leaves_the_old_object_and_no_temp_file(
    storage: local_fs.LocalFsStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.put_bytes(KEY, b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(errors.TransientRemoteError, match="8 attempts"):
        storage.put_bytes(KEY, b"new")

    monkeypatch.undo()
    assert storage.get_bytes(KEY) == b"old"
    assert _files(root) == {KEY}


def test_out_of_space_is_permanent_and_not_retried(
    storage: local_fs.LocalFsStorage, root: Path, sleeps: RecordingSleep, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(errors.PermanentRemoteError, match="No space left"):
        storage.put_bytes(KEY, b"data")
    monkeypatch.setattr(os, "write", real_write)
    assert sleeps.delays == []
    assert _files(root) == set()


def test_a_transient_read_error_is_retried(
    storage: local_fs.LocalFsStorage, sleeps: RecordingSleep, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.put_bytes(KEY, b"payload")
    real_read_bytes = Path.read_bytes
    failures = [OSError(errno.ESTALE, "Stale file handle")]

    def flaky_read_bytes(self: Path) -> bytes:
        if failures:
            raise failures.pop()
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", flaky_read_bytes)
    assert storage.get_bytes(KEY) == b"payload"
    assert len(sleeps.delays) == 1


def test_a_permission_error_is_permanent(
    storage: local_fs.LocalFsStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.put_bytes(KEY, b"payload")

    def denied(self: Path) -> bytes:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(errors.PermanentRemoteError, match="Permission denied"):
        storage.get_bytes(KEY)


def test_errors_of_the_callers_out_file_are_not_remote_errors(
    storage: local_fs.LocalFsStorage, sleeps: RecordingSleep
) -> None:
    storage.put_bytes(KEY, b"payload")

    class FullDisk(io.BytesIO):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as raised:
        storage.download_to(KEY, FullDisk(), 7)
    assert not isinstance(raised.value, errors.RemoteError)
    assert sleeps.delays == []


def test_delete_prunes_empty_directories_but_keeps_the_root(
    storage: local_fs.LocalFsStorage, root: Path
) -> None:
    storage.put_bytes("a/b/c/one", b"1")
    storage.put_bytes("a/two", b"2")
    storage.delete("a/b/c/one")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["a", "a/two"]
    storage.delete("a/two")
    assert root.is_dir() and list(root.iterdir()) == []


def test_a_directory_key_is_missing_not_an_error(storage: local_fs.LocalFsStorage, root: Path) -> None:
    storage.put_bytes("a/b", b"1")
    with pytest.raises(errors.NotFound):
        storage.get_bytes("a")
    storage.delete("a")  # no object "a": success, and "a/b" stays
    assert storage.get_bytes("a/b") == b"1"


def test_object_and_keys_below_it_cannot_coexist(storage: local_fs.LocalFsStorage) -> None:
    storage.put_bytes("a", b"object")
    with pytest.raises(errors.PermanentRemoteError, match="below an object"):
        storage.put_bytes("a/b", b"x")
    storage.put_bytes("d/e", b"x")
    with pytest.raises(errors.PermanentRemoteError, match="keys below it"):
        storage.put_bytes("d", b"x")
    assert storage.list_objects("") == {"a": 6, "d/e": 1}


def test_nothing_outside_the_root_is_touched_through_a_symlink(
    storage: local_fs.LocalFsStorage, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(errors.PermanentRemoteError, match="outside the storage root"):
        storage.put_bytes("link/new", b"x")
    with pytest.raises(errors.PermanentRemoteError, match="outside the storage root"):
        storage.put_bytes("link/sub/new", b"x")
    with pytest.raises(errors.PermanentRemoteError, match="outside the storage root"):
        storage.delete("link/victim")

    assert _files(outside) == {"victim"}
    assert (outside / "victim").read_bytes() == b"precious"


def test_upload_file_reads_exactly_size_bytes_and_rejects_a_changed_file(
    storage: local_fs.LocalFsStorage, tmp_path: Path
) -> None:
    source = tmp_path / "layer"
    source.write_bytes(b"x" * (local_fs.CHUNK_SIZE + 5))
    storage.upload_file("layer", source, local_fs.CHUNK_SIZE + 5)
    assert storage.list_objects("") == {"layer": local_fs.CHUNK_SIZE + 5}
    with pytest.raises(errors.PermanentRemoteError, match="expected a file of 3 bytes"):
        storage.upload_file("layer2", source, 3)


def test_concurrency_is_the_configured_limit(root: Path) -> None:
    assert local_fs.LocalFsStorage(root, concurrency=7).concurrency == 7
    with pytest.raises(ValueError):
        local_fs.LocalFsStorage(root, concurrency=0)
