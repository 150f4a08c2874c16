"""How the engine classifies a failure (`engine.errors.classify`): transient ones keep the tenant
retrying, permanent ones make it Broken. ``TimeoutError`` and ``ConnectionError`` are
subclasses of ``OSError``: they must be recognised as transient *before* the catch-all for
local I/O errors (defect 10 of issue 14: a sync that timed out made the tenant Broken
``LocalIOError``, while the README promises a retry)."""

from __future__ import annotations

import errno

import pytest

from pageserver_operator.engine import errors
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import ids
from pageserver_operator.remote import errors as remote_errors

TID = ids.TenantId.parse("0123456789abcdef0123456789abcdef")

CASES: list[tuple[BaseException, str, bool]] = [
    (TimeoutError("sync took too long"), "Timeout", True),
    (TimeoutError(), "Timeout", True),  # what asyncio.wait_for raises
    (ConnectionResetError(104, "Connection reset by peer"), "ConnectionError", True),
    (ConnectionRefusedError(111, "Connection refused"), "ConnectionError", True),
    (BrokenPipeError(32, "Broken pipe"), "ConnectionError", True),
    (OSError(errno.ETIMEDOUT, "timed out"), "Timeout", True),
    (remote_errors.TransientRemoteError("503"), "RemoteStorageUnavailable", True),
    (remote_errors.PermanentRemoteError("AccessDenied"), "RemoteStorageRejected", False),
    (remote_errors.NotFound("no such key"), "RemoteObjectNotFound", False),
    (OSError(errno.ENOSPC, "No space left on device"), "DiskFull", False),
    (OSError(errno.EIO, "Input/output error"), "LocalIOError", False),
    (PermissionError(errno.EACCES, "Permission denied"), "LocalIOError", False),
    (FileNotFoundError(errno.ENOENT, "No such file"), "LocalIOError", False),
    (format_errors.InvalidIndexPart("index_part.json: bad"), "InvalidIndexPart", False),
    (EngineError("Whatever", "as given", transient=True), "Whatever", True),
    (RuntimeError("bug"), "InternalError", False),
]


@pytest.mark.parametrize(("exc", "reason", "transient"), CASES, ids=[f"{type(c[0]).__name__}-{c[1]}" for c in CASES])
def test_classification_table(exc: BaseException, reason: str, transient: bool) -> None:
    err = errors.classify(exc, f"tenant {TID}")
    assert (err.reason, err.transient) == (reason, transient), err.message
    assert f"tenant {TID}" in err.message or reason == "Whatever"
