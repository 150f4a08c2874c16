"""The one small interface every remote storage backend implements.

Keys are relative, '/'-separated paths such as
``tenants/<tid>/timelines/<tlid>/index_part.json``; a backend maps them under its own root
(a directory for ``file://``, ``bucket/prefix`` for ``s3://``). No key ever starts with '/'.

Backends are *blocking* (boto3 is): the engine calls them from worker threads. Every request
goes through one concurrency limit shared by all operations of the backend, and transient
failures are retried inside the backend with capped exponential backoff before a
`TransientRemoteError` reaches the caller. Invariants:

- ``delete`` of a missing object succeeds (S3 semantics, on every backend).
- ``get_bytes``/``download_to`` of a missing object raise `NotFound`.
- ``upload_file``/``put_bytes`` replace the object atomically as seen by readers (a reader sees
  the old or the new content, never a partial one).
- ``download_to`` never sends a HEAD: the expected size comes from the caller (the index); a
  different byte count raises `PermanentRemoteError`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

#: Called with the number of bytes just transferred; used for progress and metrics.
ProgressCallback = Callable[[int], None]


@runtime_checkable
class RemoteStorage(Protocol):
    """A remote object store, addressed by relative keys."""

    @property
    def concurrency(self) -> int:
        """The number of requests this backend runs at once (its limit)."""
        ...

    def describe(self) -> str:
        """A human-readable location with no secrets (for logs and status)."""
        ...

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate "subdirectories" under ``prefix`` (which ends with '/').

        For ``tenants/<tid>/timelines/`` this returns the timeline id strings. An empty or
        missing prefix yields an empty list. Some S3-compatible servers (SeaweedFS) keep a
        "directory" whose objects were all deleted, so a listed name may hold no object.
        """
        ...

    def list_objects(self, prefix: str) -> dict[str, int]:
        """Every object key under ``prefix`` (recursively) with its size. For tests and tools."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The whole object in memory (small objects such as the index)."""
        ...

    def download_to(
        self,
        key: str,
        out: BinaryIO,
        expected_size: int | None,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Stream the object into ``out`` (positioned at 0, truncated) and return the byte count.

        ``progress`` is called per chunk; when a transient failure mid-stream restarts the
        download, it is first called with the negative count of the abandoned bytes, so the
        sum of all calls is always the bytes kept in ``out``.
        """
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Create or replace a small object."""
        ...

    def upload_file(self, key: str, path: Path, size: int, progress: ProgressCallback | None = None) -> None:
        """Create or replace an object with the content of a local file of exactly ``size`` bytes.

        ``progress(size)`` is called once the object exists. A local file of another size is a
        `PermanentRemoteError`; a missing local file raises the plain ``OSError``.
        """
        ...

    def delete(self, key: str) -> None:
        """Delete an object; a missing object is success."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...
