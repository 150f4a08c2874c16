"""Log sequence numbers (LSNs): 64-bit WAL positions and their two text forms.

Invariants:

- An `Lsn` always holds an `int` with `0 <= value < 2**64` (checked at construction); `bool` is
  not accepted as an int.
- `str(lsn)` is the pageserver's `HI/LO` form: the upper and lower 32 bits as uppercase hex
  without leading zeros (`0/16B5A50`). `Lsn.parse` accepts exactly `HEX/HEX` with 1-8 ASCII hex
  digits (either case) on each side and nothing else (no sign, no spaces, no `0x`), so
  `Lsn.parse(str(lsn)) == lsn` always holds.
- `lsn.hex16()` is the 16-digit zero-padded uppercase form used inside layer file names;
  `Lsn.from_hex16` accepts only that canonical form (exactly 16 of `0-9A-F`).
- Arithmetic never wraps: a result outside `[0, 2**64)` raises `InvalidLsn`.
- Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Final

from pageserver_operator.formats import errors

#: Number of distinct LSN values.
LSN_LIMIT: Final = 1 << 64

_TEXT_RE: Final = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_HEX16_RE: Final = re.compile(r"[0-9A-F]{16}")


@dataclass(frozen=True, order=True, slots=True)
class Lsn:
    """A position in the WAL (unsigned 64-bit). Ordered, hashable, immutable."""

    value: int

    ZERO: ClassVar[Lsn]
    """The LSN 0/0 (e.g. the ancestor LSN of a root timeline)."""

    MAX: ClassVar[Lsn]
    """The largest LSN, FFFFFFFF/FFFFFFFF."""

    def __post_init__(self) -> None:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.InvalidLsn(f"LSN must be an integer, got {errors.show(value)}")
        if not 0 <= value < LSN_LIMIT:
            raise errors.InvalidLsn(f"LSN {value} is out of range [0, 2**64)")

    @classmethod
    def parse(cls, text: str) -> Lsn:
        """Parse the `HI/LO` text form (e.g. `0/16B5A50`); raises `InvalidLsn`."""
        if not isinstance(text, str):
            raise errors.InvalidLsn(f"LSN must be a string like '0/16B5A50', got {errors.show(text)}")
        match = _TEXT_RE.fullmatch(text)
        if match is None:
            raise errors.InvalidLsn(
                f"invalid LSN {errors.show(text)}: expected HI/LO with 1-8 hex digits each, like '0/16B5A50'"
            )
        return cls((int(match.group(1), 16) << 32) | int(match.group(2), 16))

    @classmethod
    def from_hex16(cls, text: str) -> Lsn:
        """Parse the 16-digit uppercase hex form used in layer file names; raises `InvalidLsn`."""
        if not isinstance(text, str) or _HEX16_RE.fullmatch(text) is None:
            raise errors.InvalidLsn(
                f"invalid LSN {errors.show(text)}: expected exactly 16 uppercase hex digits"
            )
        return cls(int(text, 16))

    def hex16(self) -> str:
        """The 16-digit zero-padded uppercase hex form (as in layer file names)."""
        return f"{self.value:016X}"

    def is_aligned(self) -> bool:
        """True when the LSN is 8-byte aligned (WAL records start on such boundaries)."""
        return self.value % 8 == 0

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def __repr__(self) -> str:
        return f"Lsn({self})"

    def __int__(self) -> int:
        return self.value

    def __add__(self, other: int) -> Lsn:
        if isinstance(other, bool) or not isinstance(other, int):
            return NotImplemented
        return Lsn(self.value + other)

    def __sub__(self, other: Lsn) -> int:
        """Distance in bytes between two LSNs (may be negative)."""
        if not isinstance(other, Lsn):
            return NotImplemented
        return self.value - other.value


Lsn.ZERO = Lsn(0)
Lsn.MAX = Lsn(LSN_LIMIT - 1)
