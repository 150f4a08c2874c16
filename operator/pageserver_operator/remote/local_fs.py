"""Remote storage in a local directory (``file:///path``): the embedded default, and the test twin of S3.

Object ``KEY`` is the regular file ``<root>/KEY`` (``/`` separates directories). The backend
behaves like S3 wherever the engine could notice a difference:

- Writes are atomic for readers: the content goes to ``<name>.<random>.___temp`` in the target
  directory, is fsynced, then ``os.replace``d over the name, and the directory is fsynced. A
  reader sees the old or the new file, never a partial one. A crash leaves at most a temp file,
  which listings never show (the suffix is reserved by `keys.validate_key`, so no key can clash).
- ``delete`` of a missing object succeeds, and empty directories left behind are pruned (up to,
  never including, the root), so a "prefix" exists only while an object lives below it, as on
  S3. ``list_dirs`` ignores directories that hold no object.
- Listing prefixes match keys by plain string prefix, as S3 does.
- Nothing outside ``root`` is ever created, written or removed: keys are validated (relative, no
  ``..``/``.``/empty segments, no NUL; `ValueError` otherwise), and a write or delete whose
  directory resolves outside the root through a symlink is refused.
- ``download_to`` checks the size against the caller's expectation before copying (from
  ``fstat``) and after (the byte count): a mismatch is a `PermanentRemoteError`.

Known difference from S3: a key cannot be both an object and a "directory" (``a`` and ``a/b``);
such a write fails with `PermanentRemoteError`. The engine's layout never needs it.

Errors: a missing file is `NotFound`; permission, read-only, no-space errors are
`PermanentRemoteError`; other ``OSError``s of the store (EIO, ESTALE on NFS, ...) are
transient and retried by `retry.Retrier`. Errors of the caller's files (the ``out`` stream of
``download_to``, the source file of ``upload_file``) propagate as plain ``OSError``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
import threading
from pathlib import Path
from typing import BinaryIO

from pageserver_operator.remote import base, errors, keys, metrics, retry

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20

_PERMANENT_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.ELOOP}
)
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


class LocalFsStorage:
    """`base.RemoteStorage` over a directory tree."""

    def __init__(self, root: Path, concurrency: int = 8, *, retrier: retry.Retrier | None = None) -> None:
        """Serve the tree under ``root`` (created on the first write); ``retrier`` replaces the default
        retry policy (tests pass one that does not sleep)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._root = Path(os.path.abspath(root))
        self._concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._retrier = retrier or retry.Retrier()

    @property
    def root(self) -> Path:
        return self._root

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def describe(self) -> str:
        return f"file://{self._root}"

    def close(self) -> None:
        """Nothing to release."""

    # -- listing ---------------------------------------------------------------------------------

    def list_dirs(self, prefix: str) -> list[str]:
        keys.validate_prefix(prefix, directory=True)
        base_dir = self._root.joinpath(*prefix.split("/")[:-1])

        def attempt() -> list[str]:
            with self._slots:
                try:
                    entries = list(os.scandir(base_dir))
                except (FileNotFoundError, NotADirectoryError):
                    return []
                except OSError as exc:
                    raise self._error(exc, "list", prefix) from exc
                names = [e.name for e in entries if e.is_dir(follow_symlinks=False) and _holds_object(e.path)]
                return sorted(names)

        return self._retrier.run("list", prefix, attempt)

    def list_objects(self, prefix: str) -> dict[str, int]:
        keys.validate_prefix(prefix, directory=False)
        dir_part = prefix.rpartition("/")[0]
        base_dir = self._root.joinpath(*dir_part.split("/")) if dir_part else self._root

        def attempt() -> dict[str, int]:
            found: dict[str, int] = {}
            with self._slots:
                for dirpath, _dirs, files in os.walk(base_dir, onerror=_raise_unless_missing):
                    rel_dir = os.path.relpath(dirpath, self._root)
                    for name in files:
                        if name.endswith(keys.TEMP_SUFFIX):
                            continue
                        key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                        if not key.startswith(prefix):
                            continue
                        try:
                            st = os.stat(os.path.join(dirpath, name), follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # deleted while listing
                        if _is_regular(st.st_mode):
                            found[key] = st.st_size
            return dict(sorted(found.items()))

        def guarded() -> dict[str, int]:
            try:
                return attempt()
            except OSError as exc:
                raise self._error(exc, "list", prefix) from exc

        return self._retrier.run("list", prefix, guarded)

    # -- reading ---------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)

        def attempt() -> bytes:
            with self._slots:
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise self._error(exc, "get", key, missing_is_not_found=True) from exc
            metrics.count_bytes("download", len(data))
            return data

        return self._retrier.run("get", key, attempt)

    def download_to(
        self,
        key: str,
        out: BinaryIO,
        expected_size: int | None,
        progress: base.ProgressCallback | None = None,
    ) -> int:
        path = self._path(key)
        reported = 0  # bytes reported to `progress` by earlier, failed attempts

        def attempt() -> int:
            nonlocal reported
            if progress is not None and reported:
                progress(-reported)  # take back the bytes of the failed attempt
                reported = 0
            out.seek(0)
            out.truncate()
            copied = 0
            with self._slots:
                try:
                    src = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
                except OSError as exc:
                    raise self._error(exc, "download", key, missing_is_not_found=True) from exc
                with src:
                    if expected_size is not None:
                        actual = os.fstat(src.fileno()).st_size
                        if actual != expected_size:
                            raise _size_mismatch(self.describe(), key, expected_size, actual)
                    while True:
                        try:
                            chunk = src.read(CHUNK_SIZE)
                        except OSError as exc:
                            raise self._error(exc, "download", key, missing_is_not_found=True) from exc
                        if not chunk:
                            break
                        out.write(chunk)  # the caller's file: its errors are not remote errors
                        copied += len(chunk)
                        metrics.count_bytes("download", len(chunk))
                        if progress is not None:
                            progress(len(chunk))
                            reported += len(chunk)
            if expected_size is not None and copied != expected_size:
                raise _size_mismatch(self.describe(), key, expected_size, copied)
            return copied

        return self._retrier.run("download", key, attempt)

    # -- writing ---------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)

        def attempt() -> None:
            with self._slots:
                writer = _AtomicWriter(self, key, path)
                try:
                    writer.write(data)
                    writer.commit()
                except BaseException:
                    writer.abort()
                    raise
            metrics.count_bytes("upload", len(data))

        self._retrier.run("put", key, attempt)

    def upload_file(
        self, key: str, path: Path, size: int, progress: base.ProgressCallback | None = None
    ) -> None:
        """Copy ``path`` (exactly ``size`` bytes) to ``key``; ``progress(size)`` once, on success."""
        target = self._path(key)

        def attempt() -> None:
            with open(path, "rb", buffering=0) as src:  # the caller's file: its errors propagate as they are
                actual = os.fstat(src.fileno()).st_size
                if actual != size:
                    raise _source_size_mismatch(path, key, size, actual)
                with self._slots:
                    writer = _AtomicWriter(self, key, target)
                    try:
                        remaining = size
                        while remaining:
                            chunk = src.read(min(CHUNK_SIZE, remaining))
                            if not chunk:
                                raise _source_size_mismatch(path, key, size, size - remaining)
                            writer.write(chunk)
                            remaining -= len(chunk)
                        writer.commit()
                    except BaseException:
                        writer.abort()
                        raise
            metrics.count_bytes("upload", size)

        self._retrier.run("upload", key, attempt)
        if progress is not None:
            progress(size)

    def delete(self, key: str) -> None:
        path = self._path(key)

        def attempt() -> None:
            with self._slots:
                try:
                    self._check_inside(path.parent, key)
                    os.unlink(path)
                except _MISSING:
                    return  # S3 semantics: deleting a missing object succeeds
                except OSError as exc:
                    raise self._error(exc, "delete", key) from exc
                self._prune_empty_dirs(path.parent)

        self._retrier.run("delete", key, attempt)

    # -- helpers ---------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*keys.validate_key(key).split("/"))

    def _check_inside(self, directory: Path, key: str) -> None:
        """Refuse to touch ``directory`` if it resolves (through symlinks) outside the root."""
        real_root = os.path.realpath(self._root)
        real_dir = os.path.realpath(directory)
        if real_dir != real_root and not real_dir.startswith(real_root + os.sep):
            raise errors.PermanentRemoteError(
                f"refusing to write {key!r}: {directory} resolves outside the storage root {self._root}"
            )

    def _prune_empty_dirs(self, directory: Path) -> None:
        """Remove now-empty directories from ``directory`` up to (never including) the root."""
        while directory != self._root and self._root in directory.parents:
            try:
                os.rmdir(directory)
            except OSError:
                return  # not empty (or already gone, or a concurrent writer): stop
            _fsync_dir(directory.parent)
            directory = directory.parent

    def _makedirs(self, directory: Path, key: str) -> None:
        """Create ``directory`` and its missing parents inside the root, durably."""
        missing: list[Path] = []
        probe = directory
        while not probe.is_dir():
            if probe == self._root or self._root not in probe.parents:
                break
            missing.append(probe)
            probe = probe.parent
        self._check_inside(probe, key)
        if not self._root.is_dir():
            self._root.mkdir(parents=True, exist_ok=True)
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                if not d.is_dir():
                    raise errors.PermanentRemoteError(
                        f"cannot store {key!r} in {self.describe()}: {d.relative_to(self._root)} is an "
                        "object, and the local backend cannot hold keys below an object"
                    ) from None
            _fsync_dir(d.parent)

    def _error(
        self, exc: OSError, op: str, key: str, *, missing_is_not_found: bool = False
    ) -> errors.RemoteError:
        where = f"{self.describe()}/{key}"
        if missing_is_not_found and isinstance(exc, _MISSING):
            return errors.NotFound(f"no object {key!r} in {self.describe()}")
        if exc.errno in _PERMANENT_ERRNOS:
            return errors.PermanentRemoteError(f"{op} of {where} failed: {exc.strerror} (errno {exc.errno})")
        return errors.TransientRemoteError(f"{op} of {where} failed: {exc}")


class _AtomicWriter:
    """One atomic write: temp file in the target directory, fsync, rename, directory fsync.

    Only errors of the store are mapped to remote errors here; the caller reads its source
    outside these methods, so source errors stay plain ``OSError``s.
    """

    def __init__(self, storage: LocalFsStorage, key: str, path: Path) -> None:
        self._storage = storage
        self._key = key
        self._path = path
        self._tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}{keys.TEMP_SUFFIX}")
        self._fd = -1
        for _ in range(5):
            try:
                storage._makedirs(path.parent, key)
                self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                return
            except FileNotFoundError:
                continue  # a concurrent delete pruned a directory between mkdir and open: again
            except NotADirectoryError as exc:
                raise errors.PermanentRemoteError(
                    f"cannot store {key!r} in {storage.describe()}: a parent of it is an object, and "
                    "the local backend cannot hold keys below an object"
                ) from exc
            except OSError as exc:
                raise storage._error(exc, "write", key) from exc
        raise errors.TransientRemoteError(f"write of {key!r}: its directory kept disappearing")

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            raise self._storage._error(exc, "write", self._key) from exc

    def commit(self) -> None:
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.replace(self._tmp, self._path)
        except IsADirectoryError as exc:
            raise errors.PermanentRemoteError(
                f"cannot store {self._key!r} in {self._storage.describe()}: keys exist below it, and the "
                "local backend cannot hold an object and keys below it"
            ) from exc
        except OSError as exc:
            raise self._storage._error(exc, "write", self._key) from exc
        try:
            _fsync_dir(self._path.parent)
        except OSError as exc:
            raise self._storage._error(exc, "write", self._key) from exc

    def abort(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning(
                "could not remove temp file %s: %s",
                self._tmp,
                exc,
                extra={"remote_key": self._key, "path": str(self._tmp)},
            )


def _holds_object(directory: str) -> bool:
    """True if a non-temp regular file lives somewhere below ``directory``."""
    for _dirpath, _dirs, files in os.walk(directory):
        if any(not name.endswith(keys.TEMP_SUFFIX) for name in files):
            return True
    return False


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def _raise_unless_missing(exc: OSError) -> None:
    if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        raise exc


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size_mismatch(where: str, key: str, expected: int, got: int) -> errors.PermanentRemoteError:
    return errors.PermanentRemoteError(
        f"size mismatch for {key!r} in {where}: expected {expected} bytes, got {got}"
    )


def _source_size_mismatch(path: Path, key: str, expected: int, got: int) -> errors.PermanentRemoteError:
    return errors.PermanentRemoteError(
        f"cannot upload {path} to {key!r}: expected a file of {expected} bytes, it has {got}"
    )
