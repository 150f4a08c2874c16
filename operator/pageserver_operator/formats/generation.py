"""Generations: the u32 attached to every remote write, and the object names that carry it.

A generation is issued by the control plane for each attachment of a tenant (DESIGN §8.2,
Neon's RFC 025). Remote objects written under generation ``g`` carry the suffix ``-{g:08x}``::

    index object :  index_part.json-0000000a
    layer object :  <layer file name>-0000000a

Objects written before generations (the seed's format, Neon's "legacy" keys) have no suffix:
their generation is "none". This module is Neon's `utils::generation::Generation` and its key
helpers (`remote_index_path`, `remote_layer_path`, `parse_remote_index_path`, the scrubber's
`parse_layer_object_name`), at Neon commit 6a35a3e9f1.

Invariants:

- A `Generation` is immutable and hashable; it is either none or holds an `int` with
  ``0 <= value < 2**32`` (checked at construction; `bool` is not an int).
- Total order, as Neon's derived `Ord`: none < 0 < 1 < ... < 2**32 - 1. A tenant upgraded
  from the seed's format (none) therefore continues with any valid generation.
- ``suffix()`` is ``""`` for none and ``-`` + exactly 8 lowercase hex digits otherwise; it is
  the only way a generation enters a name. ``str()`` is for messages (Neon's `Debug`: 8 hex
  digits, or ``none``), never for building names.
- ``previous()`` is Neon's: the previous of 0 is none, of none is none. ``next()`` of none is
  1 (Neon's), and ``next()`` of the largest generation raises `InvalidGeneration` (Neon panics).
- Names are parsed strictly, so that every name accepted maps back to itself:
  ``index_file_name(parse_index_file_name(n)) == n`` and
  ``layer_object_name(*split_layer_object_name(n)) == n``. The suffix must be exactly ``-`` and
  8 lowercase hex digits (what Neon writes); anything else is not one of our objects (Neon's own
  readers are laxer: `from_str_radix` takes either case and fewer digits). The layer part must
  be the canonical (uppercase) layer file name, as `layer_name.parse_layer_name` without
  ``any_case``: a remote key is always derived from the parsed name, so another spelling is
  another object.
- The two suffixes cannot be confused: a layer file name ends in 16 hex digits (an LSN) after
  its last ``-`` or ``__``, a generation suffix is ``-`` and 8 hex digits, so a layer name
  never ends in something that looks like a suffix.
- Every failure is a `FormatError`: `InvalidGeneration` for a generation value,
  `InvalidLayerName` for a layer object name. `parse_index_file_name` returns None instead of
  raising (a listing holds other objects too).
- Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Final

from pageserver_operator.formats import errors
from pageserver_operator.formats.layer_name import LayerName, parse_layer_name

#: Number of distinct generation values (a generation is a u32).
GENERATION_LIMIT: Final = 1 << 32
#: Name of the index object without a generation suffix (generation none).
INDEX_FILE_NAME: Final = "index_part.json"

_INDEX_RE: Final = re.compile(re.escape(INDEX_FILE_NAME) + r"(?:-([0-9a-f]{8}))?")
_SUFFIXED_RE: Final = re.compile(r"(.*)-([0-9a-f]{8})", re.DOTALL)
_SUFFIX_ANY_CASE_RE: Final = re.compile(r"(.*)-([0-9A-Fa-f]{8})", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Generation:
    """A tenant generation: none, or a u32. Ordered (none first), hashable, immutable.

    ``Generation(n)`` is a valid generation; ``Generation.none()`` is the generation of objects
    written without a suffix.
    """

    value: int | None
    """The u32, or None for the generation "none"."""

    MAX: ClassVar[Generation]
    """The largest generation, ``0xffffffff``."""

    def __post_init__(self) -> None:
        value = self.value
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.InvalidGeneration(f"generation must be an integer, got {errors.show(value)}")
        if not 0 <= value < GENERATION_LIMIT:
            raise errors.InvalidGeneration(f"generation {value} is out of range [0, 2**32)")

    @classmethod
    def none(cls) -> Generation:
        """The generation of objects written before generations (no suffix)."""
        return _NONE

    def is_none(self) -> bool:
        """True for the generation "none"."""
        return self.value is None

    def suffix(self) -> str:
        """``""`` for none, else ``-`` and 8 lowercase hex digits (``-0000000a``)."""
        return "" if self.value is None else f"-{self.value:08x}"

    def next(self) -> Generation:
        """The following generation (none -> 1, as Neon); raises `InvalidGeneration` after MAX."""
        if self.value is None:
            return Generation(1)
        if self.value + 1 >= GENERATION_LIMIT:
            raise errors.InvalidGeneration(f"generation {self} has no successor (it is the largest u32)")
        return Generation(self.value + 1)

    def previous(self) -> Generation:
        """The preceding generation, as Neon: 0 -> none (a pre-generation tenant), none -> none."""
        if self.value is None or self.value == 0:
            return _NONE
        return Generation(self.value - 1)

    def _order(self) -> int:
        return -1 if self.value is None else self.value

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Generation):
            return NotImplemented
        return self._order() < other._order()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Generation):
            return NotImplemented
        return self._order() <= other._order()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Generation):
            return NotImplemented
        return self._order() > other._order()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Generation):
            return NotImplemented
        return self._order() >= other._order()

    def __str__(self) -> str:
        """For messages only (Neon's `Debug` form): ``0000000a`` or ``none``."""
        return "none" if self.value is None else f"{self.value:08x}"

    def __repr__(self) -> str:
        return "Generation.none()" if self.value is None else f"Generation({self.value})"


_NONE: Final = Generation(None)
#: The generation "none" as a constant (argument defaults: `Generation.none()` is the same object).
NONE: Final = _NONE
Generation.MAX = Generation(GENERATION_LIMIT - 1)


def _check_generation(generation: object) -> Generation:
    if not isinstance(generation, Generation):
        raise errors.InvalidGeneration(f"expected a Generation, got {errors.show(generation)}")
    return generation


def index_file_name(generation: Generation) -> str:
    """The index object's name in generation `generation`: ``index_part.json`` + suffix."""
    return INDEX_FILE_NAME + _check_generation(generation).suffix()


def parse_index_file_name(name: str) -> Generation | None:
    """The generation of the index object named `name`, or None if `name` is not one.

    Accepts exactly ``index_part.json`` (generation none) and ``index_part.json-XXXXXXXX`` with
    8 lowercase hex digits. `name` is a file name (the last component of a key), not a path.
    """
    if not isinstance(name, str):
        return None
    match = _INDEX_RE.fullmatch(name)
    if match is None:
        return None
    digits = match.group(1)
    return _NONE if digits is None else Generation(int(digits, 16))


def layer_object_name(layer: LayerName, generation: Generation) -> str:
    """The remote object name of `layer` written in `generation`: the layer file name + suffix."""
    # LayerName is a union; check the members (isinstance on a union works on 3.10+).
    if not isinstance(layer, LayerName):
        raise errors.InvalidLayerName(f"expected a LayerName, got {errors.show(layer)}")
    return str(layer) + _check_generation(generation).suffix()


def split_layer_object_name(name: str) -> tuple[LayerName, Generation]:
    """Split a remote layer object name into its layer and generation; raises `InvalidLayerName`.

    `name` is a canonical layer file name, optionally followed by ``-`` and 8 lowercase hex
    digits (see the module docstring); the result maps back to `name` by `layer_object_name`.
    """
    if not isinstance(name, str):
        raise errors.InvalidLayerName(f"layer object name must be a string, got {errors.show(name)}")
    suffixed = _SUFFIXED_RE.fullmatch(name)
    if suffixed is not None:
        layer_text, digits = suffixed.groups()
        try:
            layer = parse_layer_name(layer_text)
        except errors.FormatError as exc:
            raise errors.InvalidLayerName(
                f"invalid layer object name {errors.show(name)}: it ends in a generation suffix "
                f"-{digits}, but what precedes it is not a layer file name: {exc}"
            ) from exc
        return layer, Generation(int(digits, 16))
    try:
        return parse_layer_name(name), _NONE
    except errors.FormatError as exc:
        any_case = _SUFFIX_ANY_CASE_RE.fullmatch(name)
        if any_case is not None and _is_layer_name(any_case.group(1)):
            detail = (
                f"the generation suffix -{any_case.group(2)} must be 8 lowercase hex digits "
                "(as the pageserver writes it)"
            )
        else:
            detail = (
                "expected a layer file name, optionally followed by a generation suffix "
                f"-XXXXXXXX (8 lowercase hex digits): {exc}"
            )
        raise errors.InvalidLayerName(f"invalid layer object name {errors.show(name)}: {detail}") from exc


def _is_layer_name(text: str) -> bool:
    try:
        parse_layer_name(text)
    except errors.FormatError:
        return False
    return True
