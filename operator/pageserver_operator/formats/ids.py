"""Tenant and timeline ids: 16 random bytes, written as 32 lowercase hex characters.

Invariants:

- An id always holds exactly 16 bytes (`raw`, type `bytes`), checked at construction.
- `str(id)` is 32 lowercase hex characters; `parse` accepts exactly that and nothing else (no
  uppercase, no dashes, no whitespace, no `0x`). Ids become path components
  (`tenants/<tenant id>/timelines/<timeline id>`), so the strict grammar is also what keeps a
  hostile id from escaping its directory: `parse(s)` succeeds only if `str(parse(s)) == s`.
- `TenantId` and `TimelineId` are distinct types: equal bytes of different kinds are not equal.
  Both are hashable and ordered (by bytes, within one kind).
- Pure: no I/O (`generate` uses the `secrets` random source, nothing else).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from pageserver_operator.formats import errors

#: Length of an id in bytes.
ID_BYTES: Final = 16

_TEXT_RE: Final = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, order=True)
class _HexId:
    """Shared implementation of the 16-byte ids; use `TenantId` or `TimelineId`."""

    raw: bytes

    KIND: ClassVar[str] = "id"
    """Human name of the id kind, used in error messages."""

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != ID_BYTES:
            raise errors.InvalidId(f"{self.KIND} must be {ID_BYTES} bytes, got {errors.show(self.raw)}")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse 32 lowercase hex characters; raises `InvalidId` naming the kind and the value."""
        if not isinstance(text, str) or _TEXT_RE.fullmatch(text) is None:
            raise errors.InvalidId(
                f"invalid {cls.KIND} {errors.show(text)}: expected exactly 32 lowercase hex characters"
            )
        return cls(bytes.fromhex(text))

    @classmethod
    def generate(cls) -> Self:
        """A new random id."""
        return cls(secrets.token_bytes(ID_BYTES))

    def __str__(self) -> str:
        return self.raw.hex()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw.hex()!r})"


class TenantId(_HexId):
    """Id of a tenant (`spec.tenantId`, the `tenants/<id>` directory)."""

    KIND = "tenant id"


class TimelineId(_HexId):
    """Id of a timeline (the `timelines/<id>` directory, `ancestor_timeline` in metadata)."""

    KIND = "timeline id"
