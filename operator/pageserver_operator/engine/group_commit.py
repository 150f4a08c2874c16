"""Group commit of downloaded layer files: many files made durable by one ``syncfs``.

Why: an attach of 26,690 small layers spent most of its kernel time in 26,690 fsyncs (each one an
ext4 journal commit), while a peer that writes without fsync and runs ``sync`` once at the end
pays for one flush. docs/performance.md ("Durable downloads: group commit") has the figures.

Protocol (engine/download.py hands every downloaded file here):

- A worker thread that has written ``<layer>.temp_download`` completely (its fd still open) calls
  `GroupCommit.submit` with the fd, the final name and a callback, and goes on to its next GET.
- One committer thread takes *every* file waiting at that moment (a group), calls ``syncfs`` once
  per filesystem of the group (every byte written to that filesystem before the call is on
  stable storage when it returns; Linux reports writeback errors through it since 5.8), then
  closes each fd and renames each temp file over its final name. While it flushes, the next
  group gathers: the slower the disk, the larger the groups.
- When ``syncfs`` fails or does not exist (not Linux), each file of the group is fsynced on its
  own, so that an error names its file; a file whose fsync fails keeps its temp name, and its
  callback gets the error.
- Each callback is called once, on the committer thread, after its file was renamed (with None)
  or failed (with the error). No per-file future or lock is kept: 26,690 of them cost an attach
  tens of MiB of peak RSS.

Invariants: a final name is only ever given to a complete file whose data was durable before the
rename (the same rule as a per-file fsync); the caller fsyncs the directory (per timeline,
before the metadata is written). At most `max_files` files and `max_bytes` bytes wait at once:
`submit` blocks beyond that, but never while nothing waits (one file larger than the byte bound
still goes through). That bounds open fds and unsynced data.

Cost on a shared volume: ``syncfs`` flushes everything dirty on the filesystem, the pageserver's
own writes included, so on a volume with a busy writer a group also waits for that data (and
flushes it early). Correctness is unaffected either way; only the attach's pace depends on it.

Crash behaviour: nothing is kept here. A kill loses at most the files waiting (their temp files
are deleted by the next attach or load, and downloaded again); every renamed file was durable.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pageserver_operator.engine import paths

log = logging.getLogger(__name__)

#: Called once per file: None once it has its final name, else why it has not.
Done = Callable[[BaseException | None], None]


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(fd)`` (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return typing.cast(Callable[[int], int], fn)


_libc_syncfs = _load_syncfs()


def syncfs(fd: int) -> None:
    """Flush the whole filesystem that ``fd`` is on; `OSError` on failure (or where unavailable)."""
    if _libc_syncfs is None:
        raise OSError("syncfs is not available on this platform")
    if _libc_syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


#: Held around every change of a directory's entries by a download (the temp file's create, the
#: renames of a group). Many threads creating files in one directory make ext4 spin on the
#: directory's lock (``rwsem_spin_on_owner``: 9 % of an attach's CPU on 26,690 small layers,
#: burnt on one of two cores while the other held the lock); on this lock they sleep instead.
NAMESPACE_LOCK = threading.Lock()


@dataclass(slots=True)
class _File:
    fd: int
    final: Path
    size: int
    done: Done


class GroupCommit:
    """One committer thread that makes downloaded files durable in groups (see the module)."""

    def __init__(self, *, max_files: int, max_bytes: int, name: str = "remote-io-commit") -> None:
        if max_files < 1 or max_bytes < 1:
            raise ValueError("GroupCommit needs room for at least one file and one byte")
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._waiting: list[_File] = []
        self._waiting_bytes = 0
        self._committing = 0  # files of the group being committed (still unsynced or unrenamed)
        self._closed = False
        #: groups committed, and the files in them (for tests and the docs' figures)
        self.groups = 0
        self.files = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fd: int, final: Path, size: int, done: Done) -> None:
        """Make the complete file ``<final>.temp_download`` behind ``fd`` durable and rename it
        to ``final``; the fd belongs to this object from here on (closed by it, also on error).
        Blocks while the bounds are reached. ``done`` is called once the file has its final name
        (with None), or failed (with the error: it then keeps its temp name)."""
        item = _File(fd, final, size, done)
        with self._cond:
            while (
                not self._closed
                and self._waiting
                and (
                    len(self._waiting) + self._committing >= self.max_files
                    or self._waiting_bytes + size > self.max_bytes
                )
            ):
                self._cond.wait()
            if self._closed:
                os.close(fd)
                raise RuntimeError("GroupCommit is closed")
            self._waiting.append(item)
            self._waiting_bytes += size
            self._cond.notify_all()

    def close(self) -> None:
        """Commit every file submitted so far, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if not self._waiting:
                    return
                group, self._waiting = self._waiting, []
                self._waiting_bytes = 0
                self._committing = len(group)
                self._cond.notify_all()
            try:
                self._commit(group)
            finally:
                with self._cond:
                    self._committing = 0
                    self.groups += 1
                    self.files += len(group)
                    self._cond.notify_all()

    @staticmethod
    def _commit(group: list[_File]) -> None:
        """syncfs once per filesystem of ``group`` (or fsync each file), then close and rename."""
        synced = False
        try:
            devices: dict[int, int] = {}
            for f in group:
                devices.setdefault(os.fstat(f.fd).st_dev, f.fd)
            for fd in devices.values():
                syncfs(fd)
            synced = True
        except OSError:
            pass  # each file on its own below: an error then names its file
        durable: list[_File] = []
        for f in group:
            try:
                try:
                    if not synced:
                        os.fsync(f.fd)
                finally:
                    os.close(f.fd)
            except OSError as exc:  # the file keeps its temp name
                _call(f, exc)
            else:
                durable.append(f)
        renamed: list[_File] = []
        with NAMESPACE_LOCK:
            for f in durable:
                try:
                    os.replace(f.final.with_name(f.final.name + paths.TEMP_DOWNLOAD_SUFFIX), f.final)
                except OSError as exc:
                    _call(f, exc)
                else:
                    renamed.append(f)
        for f in renamed:  # the callbacks run outside the lock
            _call(f, None)


def _call(f: _File, exc: BaseException | None) -> None:
    """``f``'s callback; a failure of it is logged, never ends the committer thread."""
    try:
        f.done(exc)
    except Exception:
        log.exception("callback of the group commit of %s failed", f.final)
