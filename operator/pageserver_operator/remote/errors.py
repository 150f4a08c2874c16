"""Errors of the remote storage layer.

Callers branch on the class, never on the text: `NotFound` means "this object does not exist"
(a timeline that never uploaded an index), `TransientRemoteError` may heal by itself (network,
5xx, throttling) and has already been retried by the backend, `PermanentRemoteError` will not
(access denied, bad bucket, size mismatch).
"""

from __future__ import annotations


class RemoteError(Exception):
    """Base of every remote storage failure."""

    reason = "RemoteStorageError"


class NotFound(RemoteError):
    """The object (or prefix) does not exist."""

    reason = "RemoteObjectNotFound"


class TransientRemoteError(RemoteError):
    """A failure that may heal: connection reset, timeout, 5xx, SlowDown. Retries were exhausted."""

    reason = "RemoteStorageUnavailable"


class PermanentRemoteError(RemoteError):
    """A failure that retrying will not fix: access denied, no such bucket, size mismatch."""

    reason = "RemoteStorageRejected"
