"""Engine failures: a machine reason (CamelCase, for ``status.reason`` and Event reasons) and a
human message that names the tenant, the timeline and the file.

`transient` tells the caller whether waiting and retrying may help (remote storage down, disk
full) or whether the input itself is wrong (a corrupt index, remote ahead of local): the
first keeps the tenant retrying, the second makes it Broken. `classify` turns any failure that
reaches an entry point of the engine (a format error, a remote storage error, a local OSError,
a bug) into an `EngineError`: the one place that decides which failures are transient.
Nothing here does I/O.
"""

from __future__ import annotations

import errno

from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats.generation import Generation
from pageserver_operator.remote import errors as remote_errors


class EngineError(Exception):
    def __init__(self, reason: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.transient = transient

    def __str__(self) -> str:
        return self.message


class TenantNotFound(EngineError):
    def __init__(self, message: str) -> None:
        super().__init__("TenantNotFound", message)


def show_generation(g: Generation) -> str:
    """A generation as people give it (``--generation N``, ``status.placement.generation``)."""
    return "none" if g.value is None else str(g.value)


def stale(where: str, own: Generation, current: Generation | None, seen: str) -> EngineError:
    """The reason ``Stale``: a newer attachment of the tenant exists; this one stops writing
    (DESIGN §8.2). ``current``: the newer generation when known; ``seen``: where it was seen."""
    newer = "a newer one" if current is None else f"generation {show_generation(current)}"
    return EngineError(
        "Stale",
        f"{where}: this attachment has generation {show_generation(own)}, but {newer} exists ({seen}): "
        "another pageserver manager attached the tenant after this one; it stops writing and "
        "deletes nothing (attach again with a higher generation to take the tenant over)",
    )


def classify(e: BaseException, where: str) -> EngineError:
    """``e`` as an `EngineError` whose message starts with ``where`` (e.g. "tenant <id>"):
    remote storage unreachable, timeouts and refused connections are transient; corrupt input,
    a full disk, other local I/O failures and bugs are not (an `EngineError` is kept as is)."""
    if isinstance(e, EngineError):
        return e
    if isinstance(e, format_errors.FormatError):
        return EngineError(e.reason, f"{where}: {e}")
    if isinstance(e, remote_errors.TransientRemoteError):
        return EngineError(e.reason, f"{where}: remote storage unavailable: {e}", transient=True)
    if isinstance(e, remote_errors.RemoteError):
        return EngineError(e.reason, f"{where}: remote storage: {e}")
    # TimeoutError and ConnectionError are OSErrors: transient, so tested before the
    # catch-all for local I/O (defect 10 of issue 14)
    if isinstance(e, TimeoutError):
        return EngineError("Timeout", f"{where}: timed out: {e or 'no answer in time'}", transient=True)
    if isinstance(e, ConnectionError):
        return EngineError("ConnectionError", f"{where}: connection failed: {e}", transient=True)
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return EngineError("DiskFull", f"{where}: no space left on the volume: {e}")
    if isinstance(e, OSError):
        return EngineError("LocalIOError", f"{where}: local I/O failed: {e}")
    return EngineError("InternalError", f"{where}: unexpected {type(e).__name__}: {e}")
