"""Engine failures: a machine reason (CamelCase, for ``status.reason`` and Event reasons) and a
human message that names the tenant, the timeline and the file.

`transient` tells the caller whether waiting and retrying may help (remote storage down, disk
full) or whether the input itself is wrong (a corrupt index, remote ahead of local): the
first keeps the tenant retrying, the second makes it Broken.
"""

from __future__ import annotations


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
