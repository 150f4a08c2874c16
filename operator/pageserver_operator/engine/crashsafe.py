"""Durable filesystem primitives: what a crash at any line leaves behind is always recognisable.

- `durable_write`: ``<name>___temp`` written, fsynced, renamed over ``<name>``, directory
  fsynced. A crash leaves the old file or the new one, plus at most a ``___temp`` leftover that
  the next load removes. Used for ``metadata`` (idempotent: Neon's create-new write
  failed on resume) and ``config``.
- `create_marker` / `remove_marker`: empty file + fsync file + fsync parent; removal followed by
  an fsync of the parent.
- `durable_mkdir`: mkdir (parents too) + fsync of each parent that gained an entry.
- `set_aside`: rename a file to the first free ``<name>.<N>.old``; nothing is ever deleted that
  could be the only copy of data.
- `remove_tree`: rename aside (one atomic step that makes the tree invisible), fsync the parent,
  then delete; a crash after the rename leaves only a ``___temp`` directory to be cleaned.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from pageserver_operator.engine import paths


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_mkdir(path: Path, *, parents: bool = True) -> None:
    """Create ``path`` and missing parents, fsyncing each parent that changed. Without
    ``parents`` a missing parent is a ``FileNotFoundError`` (nothing above ``path`` is created:
    a directory removed meanwhile stays removed)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    if not parents and len(missing) > 1:
        raise FileNotFoundError(errno.ENOENT, "parent directory does not exist", str(path.parent))
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        fsync_dir(d.parent)


def durable_write(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    The temp file is created anew (a leftover is removed first) and never through a symbolic
    link: a planted ``<name>___temp`` link must not make us write outside the tenant directory."""
    tmp = path.with_name(path.name + paths.TEMP_SUFFIX)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


def create_marker(path: Path) -> None:
    """Create an empty marker file durably (idempotent)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def remove_marker(path: Path) -> None:
    """Remove a marker file durably (a missing marker is fine)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fsync_dir(path.parent)


def set_aside(path: Path) -> Path:
    """Rename ``path`` to the first free ``<name>.<N>.old`` and return the new path."""
    n = 0
    while True:
        target = path.with_name(f"{path.name}.{n}{paths.OLD_SUFFIX}")
        if not target.exists():
            os.rename(path, target)
            return target
        n += 1


def remove_tree(path: Path, aside: Path) -> None:
    """Remove a directory tree crash-safely: rename to ``aside``, fsync the parent, delete.

    ``path == aside`` (a leftover that is already its own aside name) is just deleted."""
    if path != aside and path.exists():
        if aside.exists():
            shutil.rmtree(aside)
        os.rename(path, aside)
        fsync_dir(aside.parent)
    if aside.exists():
        shutil.rmtree(aside)
        fsync_dir(aside.parent)
