"""Layer file names: the grammar of the pageserver's image and delta layer files.

```
image layer :  <KEYSTART:36hex>-<KEYEND:36hex>__<LSN:16hex>
delta layer :  <KEYSTART:36hex>-<KEYEND:36hex>__<LSNSTART:16hex>-<LSNEND:16hex>
```

Invariants:

- `parse_layer_name` accepts only the *canonical* form the pageserver writes: keys exactly 36
  and LSNs exactly 16 UPPERCASE hex digits. So for every accepted `s`:
  `str(parse_layer_name(s)) == s`. Local file names are parsed this way: the pageserver writes
  only uppercase, and a file whose name is another spelling is not a layer (it is left alone).
- Names read from a remote index are parsed with ``any_case=True``, as Neon's reader does (its
  `Key::from_hex` / `Lsn::from_hex` use `from_str_radix`, which takes either case; the lengths
  are still exactly 36 and 16): hex letters may be lowercase, and the result is the same layer
  as the uppercase spelling. `str` of the result is always the canonical uppercase text, and
  only that text becomes a file name or a remote key (Neon derives both from the parsed name
  too): one layer has one file and one key whatever its spelling in the index.
- Because the grammar only admits `0-9A-Fa-f`, `-` and `_`, no accepted name can contain `/`,
  `\\`, NUL, `..`, whitespace or any other character: a name taken from a remote index that
  parses is safe to join to a timeline directory (this is the path-traversal guard), and the
  path is built from the canonical `str`, never from the text read.
- Ranges are half-open and never empty: `key_start < key_end` always, and for deltas
  `lsn_start < lsn_end` (checked at construction, not only at parse).
- Layer names are immutable and hashable (usable as set members and mapping keys). Image and
  delta names are never equal to each other; to sort a mixed collection, sort by `sort_key()`:
  the order of `str` without formatting the names. The text is fixed-width uppercase hex (byte
  order is numeric order) with the separators at the same places, so it sorts by key start, key
  end, first LSN; an image name is a prefix of the delta name with the same three, so it comes
  first (its fourth element, -1, is below any end LSN).
- Keys parsed from text are shared (`_key_from_hex`, bounded): indexes repeat a few key
  boundaries across many layers (every L0 delta spans the whole key space), and a big index
  should not hold one key object per use.
- Pure: no I/O.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

from pageserver_operator.formats import errors
from pageserver_operator.formats.lsn import Lsn

#: Size of a key in bytes.
KEY_BYTES: Final = 18
#: Number of distinct keys.
KEY_LIMIT: Final = 1 << (8 * KEY_BYTES)

_KEY_HEX: Final = r"[0-9A-F]{36}"
_LSN_HEX: Final = r"[0-9A-F]{16}"
_LAYER_RE: Final = re.compile(rf"({_KEY_HEX})-({_KEY_HEX})__({_LSN_HEX})(?:-({_LSN_HEX}))?")
# Spelled out rather than re.IGNORECASE: only ASCII letters, never a Unicode case fold.
_LAYER_RE_ANY_CASE: Final = re.compile(
    _LAYER_RE.pattern.replace("[0-9A-F]", "[0-9A-Fa-f]"), re.ASCII
)
_KEY_RE: Final = re.compile(_KEY_HEX)


@dataclass(frozen=True, order=True, slots=True)
class Key:
    """An 18-byte page key; `str` is 36 uppercase hex digits."""

    value: int

    MIN: ClassVar[Key]
    """The smallest key (all zeros)."""

    MAX: ClassVar[Key]
    """The largest key (all `F`s); as an exclusive end it covers the whole key space but one key."""

    def __post_init__(self) -> None:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.InvalidLayerName(f"key must be an integer, got {errors.show(value)}")
        if not 0 <= value < KEY_LIMIT:
            raise errors.InvalidLayerName(f"key {value:#x} is out of range [0, 2**144)")

    @classmethod
    def parse(cls, text: str) -> Key:
        """Parse exactly 36 uppercase hex digits; raises `InvalidLayerName`."""
        if not isinstance(text, str) or _KEY_RE.fullmatch(text) is None:
            raise errors.InvalidLayerName(
                f"invalid key {errors.show(text)}: expected exactly 36 uppercase hex digits"
            )
        return cls(int(text, 16))

    def __str__(self) -> str:
        return f"{self.value:036X}"

    def __repr__(self) -> str:
        return f"Key({self})"


Key.MIN = Key(0)
Key.MAX = Key(KEY_LIMIT - 1)


def _check_key_range(key_start: Key, key_end: Key) -> None:
    if not isinstance(key_start, Key) or not isinstance(key_end, Key):
        raise errors.InvalidLayerName(
            f"key range must be two Keys, got {errors.show(key_start)} and {errors.show(key_end)}"
        )
    if key_start.value >= key_end.value:
        raise errors.InvalidLayerName(f"empty key range: start {key_start} >= end {key_end}")


@dataclass(frozen=True, order=True, slots=True)
class ImageLayerName:
    """Name of an image layer: all pages of `[key_start, key_end)` materialized at `lsn`."""

    key_start: Key
    key_end: Key
    lsn: Lsn

    def __post_init__(self) -> None:
        _check_key_range(self.key_start, self.key_end)
        if not isinstance(self.lsn, Lsn):
            raise errors.InvalidLayerName(f"image layer LSN must be an Lsn, got {errors.show(self.lsn)}")

    @property
    def kind(self) -> Literal["image"]:
        """`"image"`."""
        return "image"

    @property
    def file_name(self) -> str:
        """The file name (same as `str(self)`)."""
        return str(self)

    def is_future(self, disk_consistent_lsn: Lsn) -> bool:
        """True if this layer is beyond `disk_consistent_lsn` (not durably complete): `lsn > D`."""
        return self.lsn > disk_consistent_lsn

    def sort_key(self) -> tuple[int, int, int, int]:
        """Orders names as their text does (module docstring)."""
        return (self.key_start.value, self.key_end.value, self.lsn.value, -1)

    def __hash__(self) -> int:
        return hash((self.key_start.value, self.key_end.value, self.lsn.value))

    def __str__(self) -> str:
        return f"{self.key_start}-{self.key_end}__{self.lsn.hex16()}"

    def __repr__(self) -> str:
        return f"ImageLayerName({str(self)!r})"


@dataclass(frozen=True, order=True, slots=True)
class DeltaLayerName:
    """Name of a delta layer: WAL of `[key_start, key_end)` over LSNs `[lsn_start, lsn_end)`."""

    key_start: Key
    key_end: Key
    lsn_start: Lsn
    lsn_end: Lsn

    def __post_init__(self) -> None:
        _check_key_range(self.key_start, self.key_end)
        if not isinstance(self.lsn_start, Lsn) or not isinstance(self.lsn_end, Lsn):
            raise errors.InvalidLayerName(
                f"delta layer LSN range must be two Lsns, got {errors.show(self.lsn_start)} "
                f"and {errors.show(self.lsn_end)}"
            )
        if self.lsn_start.value >= self.lsn_end.value:
            raise errors.InvalidLayerName(
                f"empty LSN range: start {self.lsn_start.hex16()} >= end {self.lsn_end.hex16()}"
            )

    @property
    def kind(self) -> Literal["delta"]:
        """`"delta"`."""
        return "delta"

    @property
    def file_name(self) -> str:
        """The file name (same as `str(self)`)."""
        return str(self)

    def is_future(self, disk_consistent_lsn: Lsn) -> bool:
        """True if this layer is beyond `disk_consistent_lsn` (not durably complete): `lsn_end > D + 1`."""
        return self.lsn_end.value > disk_consistent_lsn.value + 1

    def sort_key(self) -> tuple[int, int, int, int]:
        """Orders names as their text does (module docstring)."""
        return (self.key_start.value, self.key_end.value, self.lsn_start.value, self.lsn_end.value)

    def __hash__(self) -> int:
        return hash((self.key_start.value, self.key_end.value, self.lsn_start.value, self.lsn_end.value))

    def __str__(self) -> str:
        return f"{self.key_start}-{self.key_end}__{self.lsn_start.hex16()}-{self.lsn_end.hex16()}"

    def __repr__(self) -> str:
        return f"DeltaLayerName({str(self)!r})"


LayerName = ImageLayerName | DeltaLayerName
"""A parsed layer file name, image or delta."""

_GRAMMAR: Final = "KEY-KEY__LSN or KEY-KEY__LSN-LSN (36 / 16 uppercase hex digits)"


@functools.lru_cache(maxsize=4096)
def _key_from_hex(text: str) -> Key:
    return Key(int(text, 16))


def parse_layer_name(name: str, *, any_case: bool = False) -> LayerName:
    """Parse a layer file name; raises `InvalidLayerName` naming the offending value.

    By default only the exact form the pageserver writes is accepted (see the module
    docstring), so the result's `str` is `name` itself. With ``any_case`` (names read from a
    remote index) hex letters may also be lowercase; the result's `str` is the canonical
    uppercase spelling.
    """
    if not isinstance(name, str):
        raise errors.InvalidLayerName(f"layer file name must be a string, got {errors.show(name)}")
    match = (_LAYER_RE_ANY_CASE if any_case else _LAYER_RE).fullmatch(name)
    if match is None:
        if not any_case and _LAYER_RE_ANY_CASE.fullmatch(name) is not None:
            detail = "hex digits must be uppercase (only the canonical form is accepted)"
        elif not name:
            detail = "the name is empty"
        else:
            detail = f"expected {_GRAMMAR}"
        raise errors.InvalidLayerName(f"invalid layer file name {errors.show(name)}: {detail}")
    key_start_hex, key_end_hex, lsn_a, lsn_b = match.groups()
    try:
        key_start, key_end = _key_from_hex(key_start_hex), _key_from_hex(key_end_hex)
        if lsn_b is None:
            return ImageLayerName(key_start, key_end, Lsn(int(lsn_a, 16)))
        return DeltaLayerName(key_start, key_end, Lsn(int(lsn_a, 16)), Lsn(int(lsn_b, 16)))
    except errors.FormatError as exc:
        raise errors.InvalidLayerName(f"invalid layer file name {errors.show(name)}: {exc}") from exc


def is_layer_file_name(name: str) -> bool:
    """True if `name` is a canonical layer file name (see `parse_layer_name`)."""
    try:
        parse_layer_name(name)
    except errors.FormatError:
        return False
    return True
