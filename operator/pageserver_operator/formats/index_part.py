"""`index_part.json`: the remote index of one timeline (versions 0 to 6 read, 1 written).

Fields (v1, in the order the writer emits them)::

    version              int                      missing = 0 (v0); selects the layer set (below)
    timeline_layers      [layer name, ...]        the set of layers that make up the remote state
    missing_layers       [string, ...]            unused leftover; tolerated if absent, written as []
    layer_metadata       {name: {"file_size": int|null, "generation": u32}}   missing = {} (v0)
    disk_consistent_lsn  "HI/LO"                  copy of the metadata's, for humans
    metadata_bytes       [512 ints 0..255]        the binary timeline metadata, byte for byte

A `layer_metadata` entry's `generation` (Neon's, DESIGN §8.2) is the generation the layer was
uploaded in, so its remote object is `<layer name>-{generation:08x}`; absent means generation
none (an object without suffix). The writer emits it only when it is not none (as Neon's
`skip_serializing_if = "Generation::is_none"`), so an index without generations is written
byte for byte as before generations existed.

Neon's later versions that still carry `metadata_bytes` (2 to 6: `deleted_at`, `lineage`,
`last_aux_file_policy`, ...) are read too. From version 3 on Neon no longer reads
`timeline_layers` (v3 still wrote it as a copy, v4 dropped it): the layer set is the keys of
`layer_metadata`. Versions 7 and later replace `metadata_bytes` by a structured `metadata`
object and are refused with a message that says so.

Invariants:

- Up to version 2 (and v0), a layer is part of the remote state iff it is in
  `timeline_layers` (required). From version 3 on, iff it is a key of `layer_metadata`
  (required; `timeline_layers` is ignored, as Neon does). `IndexPart.layers` maps exactly those
  names to their `LayerFileMetadata` (size None when unknown, e.g. from a v0 index; generation
  none when absent).
- Every layer name read (each of `timeline_layers` up to version 2, each key of
  `layer_metadata` from version 3 on) is validated by `layer_name.parse_layer_name`
  (``any_case``: hex in either case, as Neon's reader) before anything else can see it: an
  index that lists a traversing or otherwise invalid layer is rejected as a whole. Names are
  compared parsed, not as text: two spellings of one layer are one layer, and when
  `layer_metadata` has an entry for each, the later one wins (as Neon's map deserialisation
  does).
- Up to version 2, a `layer_metadata` key that does not name a listed layer (not in
  `timeline_layers`, or not a layer name at all) is ignored, as Neon's pageserver of that time
  did (its v1 test vector carried ``not_a_real_layer_but_adding_coverage`` there): it is never
  used as a name, a path or a key. Such keys are kept in `IndexPart.ignored_metadata_keys` so
  that the reader can log them once. (Neon today reads every version like version 3 and would
  take a listed-nowhere key that is a layer name as a layer; the two readings differ only for
  an index whose two fields disagree, which no writer produces.) From version 3 on, every key
  is a layer and must be a valid layer name. The value of every entry must be an object whose
  `file_size` is a u64 or null and whose `generation`, if present, is a u32.
- Sets are sets: order and duplicates in `timeline_layers` carry no meaning; two `IndexPart`s
  compare equal regardless of the order their files listed layers in. Duplicate keys in a JSON
  object are rejected as ambiguous.
- Unknown fields (from newer pageservers) are ignored on read, in the document and in a
  `layer_metadata` entry (e.g. Neon's `shard`); the writer emits only the six fields above,
  compact, with layers sorted by name, so its output is deterministic. It always writes
  version 1 (DESIGN §4), whatever version was read.
- `metadata_bytes` is always exactly 512 bytes that parse as `TimelineMetadata`
  (checked at construction). The metadata is authoritative: `disk_consistent_lsn` is kept as read
  (a disagreement is tolerated, as upstream does), but the writer emits the metadata's.
- Absurd inputs are refused before they can cost much: more than `MAX_LAYERS` layers, or more
  than `MAX_INDEX_PART_BYTES` of JSON.
- Every failure is an `InvalidIndexPart` whose message starts with `index_part.json:` and names
  the field and the offending value.
- Pure: no I/O.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from pageserver_operator.formats import errors
from pageserver_operator.formats.generation import GENERATION_LIMIT, Generation, layer_object_name
from pageserver_operator.formats.layer_name import LayerName, parse_layer_name
from pageserver_operator.formats.lsn import Lsn
from pageserver_operator.formats.metadata import METADATA_FILE_SIZE, TimelineMetadata

#: Remote object name of the index (in the timeline's remote "directory").
INDEX_PART_FILE_NAME: Final = "index_part.json"
#: Version written by `to_json_bytes`.
INDEX_PART_VERSION: Final = 1
#: Most layers accepted in one index (guard against absurd input).
MAX_LAYERS: Final = 1_000_000
#: Largest `index_part.json` accepted, in bytes (guard against absurd input).
MAX_INDEX_PART_BYTES: Final = 512 * 1024 * 1024
#: First version whose layer set is the keys of `layer_metadata` (`timeline_layers` ignored).
LAYER_METADATA_KEYS_VERSION: Final = 3

_U64_LIMIT: Final = 1 << 64
_GENERATION_NONE: Final = Generation.none()
_PREFIX: Final = "index_part.json"


def _fail(message: str) -> NoReturn:
    raise errors.InvalidIndexPart(f"{_PREFIX}: {message}")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class LayerFileMetadata:
    """What the index records about one layer file."""

    file_size: int | None = None
    """Size in bytes; None when unknown (layers from a v0 index, until downloaded)."""
    generation: Generation = _GENERATION_NONE
    """Generation the layer was uploaded in: its remote object is the layer name + its suffix."""

    def __post_init__(self) -> None:
        size = self.file_size
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < _U64_LIMIT
        ):
            raise errors.InvalidIndexPart(f"layer file_size must be a u64 or None, got {errors.show(size)}")
        if not isinstance(self.generation, Generation):
            raise errors.InvalidIndexPart(
                f"layer generation must be a Generation, got {errors.show(self.generation)}"
            )


@dataclass(frozen=True)
class IndexPart:
    """The parsed contents of one timeline's `index_part.json`."""

    layers: Mapping[LayerName, LayerFileMetadata]
    """The remote layers (`timeline_layers`), each with its metadata. Read-only, sorted by name."""
    disk_consistent_lsn: Lsn
    """The `disk_consistent_lsn` field as read (the writer copies it from the metadata)."""
    metadata_bytes: bytes
    """The 512-byte binary timeline metadata."""
    version: int = INDEX_PART_VERSION
    """Format version as read (0 when absent); the writer always emits `INDEX_PART_VERSION`."""
    missing_layers: tuple[str, ...] = ()
    """The unused `missing_layers` field as read; the writer always emits `[]`."""
    ignored_metadata_keys: tuple[str, ...] = field(default=(), compare=False)
    """`layer_metadata` keys that name no layer of `timeline_layers`, as read (ignored)."""

    def __post_init__(self) -> None:
        if not isinstance(self.layers, Mapping):
            raise errors.InvalidIndexPart(
                f"{_PREFIX}: layers must be a mapping, got {errors.show(self.layers)}"
            )
        if len(self.layers) > MAX_LAYERS:
            raise errors.InvalidIndexPart(
                f"{_PREFIX}: {len(self.layers)} layers, more than the limit {MAX_LAYERS}"
            )
        for name, meta in self.layers.items():
            if not isinstance(name, LayerName):
                raise errors.InvalidIndexPart(
                    f"{_PREFIX}: layer key must be a LayerName, got {errors.show(name)}"
                )
            if not isinstance(meta, LayerFileMetadata):
                raise errors.InvalidIndexPart(
                    f"{_PREFIX}: metadata of layer {name} must be a LayerFileMetadata, got {errors.show(meta)}"
                )
        ordered = dict(sorted(self.layers.items(), key=lambda item: item[0].sort_key()))
        object.__setattr__(self, "layers", types.MappingProxyType(ordered))
        if not isinstance(self.disk_consistent_lsn, Lsn):
            raise errors.InvalidIndexPart(
                f"{_PREFIX}: disk_consistent_lsn must be an Lsn, got {errors.show(self.disk_consistent_lsn)}"
            )
        if not isinstance(self.metadata_bytes, bytes | bytearray | memoryview):
            raise errors.InvalidIndexPart(
                f"{_PREFIX}: metadata_bytes must be bytes, got {errors.show(self.metadata_bytes)}"
            )
        object.__setattr__(self, "metadata_bytes", bytes(self.metadata_bytes))
        if len(self.metadata_bytes) != METADATA_FILE_SIZE:
            raise errors.InvalidIndexPart(
                f"{_PREFIX}: metadata_bytes has {len(self.metadata_bytes)} entries, expected {METADATA_FILE_SIZE}"
            )
        try:
            TimelineMetadata.from_bytes(self.metadata_bytes)
        except errors.FormatError as exc:
            raise errors.InvalidIndexPart(f"{_PREFIX}: metadata_bytes are not valid metadata: {exc}") from exc
        if (
            isinstance(self.version, bool)
            or not isinstance(self.version, int)
            or not 0 <= self.version < _U64_LIMIT
        ):
            raise errors.InvalidIndexPart(
                f"{_PREFIX}: version must be a non-negative integer, got {errors.show(self.version)}"
            )
        missing = self.missing_layers
        if not isinstance(missing, tuple) or not all(isinstance(item, str) for item in missing):
            raise errors.InvalidIndexPart(
                f"{_PREFIX}: missing_layers must be a tuple of strings, got {errors.show(missing)}"
            )

    @property
    def metadata(self) -> TimelineMetadata:
        """The timeline metadata encoded in `metadata_bytes` (always valid, see the invariants)."""
        return TimelineMetadata.from_bytes(self.metadata_bytes)

    @property
    def layer_names(self) -> frozenset[LayerName]:
        """The set of remote layer names."""
        return frozenset(self.layers)

    def layer_object_names(self) -> dict[LayerName, str]:
        """Each layer's remote object name (layer name + its generation's suffix), by layer."""
        return {name: layer_object_name(name, meta.generation) for name, meta in self.layers.items()}

    @classmethod
    def build(
        cls, layers: Mapping[LayerName, int | LayerFileMetadata | None], metadata: TimelineMetadata
    ) -> IndexPart:
        """A version-1 index for `layers` and `metadata`.

        A layer's value is its `LayerFileMetadata`, or just its size (an int, or None when
        unknown), which means generation none.
        """
        return cls(
            layers={
                name: value if isinstance(value, LayerFileMetadata) else LayerFileMetadata(value)
                for name, value in layers.items()
            },
            disk_consistent_lsn=metadata.disk_consistent_lsn,
            metadata_bytes=metadata.to_bytes(),
            version=INDEX_PART_VERSION,
            missing_layers=(),
        )

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview | str) -> IndexPart:
        """Parse `index_part.json` (v0 or v1, compact or pretty); raises `InvalidIndexPart`."""
        return _parse(data)

    def to_json_bytes(self) -> bytes:
        """Serialize as compact version-1 JSON (serde_json style), deterministic."""
        names = [str(name) for name in self.layers]  # already sorted by name
        document: dict[str, object] = {
            "version": INDEX_PART_VERSION,
            "timeline_layers": names,
            "missing_layers": [],
            "layer_metadata": {str(name): _entry(meta) for name, meta in self.layers.items()},
            # The writer's rule: a copy of the metadata's (which is authoritative).
            "disk_consistent_lsn": str(self.metadata.disk_consistent_lsn),
            "metadata_bytes": list(self.metadata_bytes),
        }
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8"
        )


def _entry(meta: LayerFileMetadata) -> dict[str, object]:
    """A `layer_metadata` entry: Neon's field order, `generation` only when not none."""
    if meta.generation.value is None:
        return {"file_size": meta.file_size}
    return {"file_size": meta.file_size, "generation": meta.generation.value}


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers which keys appeared more than once."""

    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A plain dict, or a `_JsonObject` naming its duplicate keys (the rare case)."""
    plain = dict(pairs)
    if len(plain) == len(pairs):
        return plain
    obj = _JsonObject()
    duplicates = []
    for key, value in pairs:
        if key in obj:
            duplicates.append(key)
        obj[key] = value
    obj.duplicates = tuple(duplicates)
    return obj


def _reject_constant(name: str) -> NoReturn:
    _fail(f"{name} is not valid JSON")


def _check_duplicates(obj: dict[str, Any], where: str) -> None:
    if isinstance(obj, _JsonObject) and obj.duplicates:
        _fail(f"{where} has duplicate key {errors.show(obj.duplicates[0])}")


def _load_json(data: bytes | bytearray | memoryview | str) -> object:
    if isinstance(data, bytes | bytearray | memoryview):
        if len(data) > MAX_INDEX_PART_BYTES:
            _fail(f"{len(data)} bytes, more than the limit {MAX_INDEX_PART_BYTES}")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
    elif isinstance(data, str):
        text = data
        if len(text) > MAX_INDEX_PART_BYTES:
            _fail(f"{len(text)} characters, more than the limit {MAX_INDEX_PART_BYTES}")
    else:
        _fail(f"expected bytes, got {errors.show(data)}")
    try:
        return json.loads(text, object_pairs_hook=_object_pairs, parse_constant=_reject_constant)
    except errors.FormatError:
        raise
    except json.JSONDecodeError as exc:
        _fail(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except (ValueError, RecursionError) as exc:
        # int() digit limit, absurd nesting depth, ...
        _fail(f"not valid JSON: {errors.show(str(exc))}")


def _u64(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{where} must be a non-negative integer, got {_json_type(value)} {errors.show(value)}")
    if not 0 <= value < _U64_LIMIT:
        _fail(f"{where} must be a non-negative integer below 2**64, got {errors.show(value)}")
    return value


def _layer(value: object, cache: dict[str, LayerName], position: int) -> LayerName:
    """Parse the layer name at `timeline_layers[position]` once (memoized in `cache`)."""
    if not isinstance(value, str):
        _fail(f"timeline_layers[{position}] must be a string, got {_json_type(value)} {errors.show(value)}")
    cached = cache.get(value)
    if cached is not None:
        return cached
    try:
        parsed = cache[value] = parse_layer_name(value, any_case=True)
    except errors.FormatError as exc:
        raise errors.InvalidIndexPart(f"{_PREFIX}: timeline_layers[{position}]: {exc}") from exc
    return parsed


def _listed(
    key: str, cache: dict[str, LayerName], listed: dict[LayerName, LayerFileMetadata]
) -> LayerName | None:
    """The listed layer a `layer_metadata` key names, or None (the entry is ignored)."""
    parsed = cache.get(key)
    if parsed is None:
        try:
            parsed = parse_layer_name(key, any_case=True)
        except errors.FormatError:
            return None
    return parsed if parsed in listed else None


def _key_layer(key: str, cache: dict[str, LayerName]) -> LayerName:
    """The layer a `layer_metadata` key names (version 3 on: every key is a layer)."""
    cached = cache.get(key)
    if cached is not None:
        return cached
    try:
        parsed = cache[key] = parse_layer_name(key, any_case=True)
    except errors.FormatError as exc:
        raise errors.InvalidIndexPart(f"{_PREFIX}: layer_metadata[{errors.show(key)}]: {exc}") from exc
    return parsed


def _generation(entry: dict[str, Any], where: str, cache: dict[int, Generation]) -> Generation:
    """The entry's `generation` (a u32; absent = none), one shared object per value."""
    if "generation" not in entry:
        return Generation.none()
    value = entry["generation"]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < GENERATION_LIMIT:
        _fail(
            f"{where}.generation must be an integer 0..{GENERATION_LIMIT - 1} (a u32), "
            f"got {_json_type(value)} {errors.show(value)}"
        )
    cached = cache.get(value)
    if cached is None:
        cached = cache[value] = Generation(value)
    return cached


def _check_required(document: dict[str, Any], version: int, by_keys: bool) -> None:
    if "metadata_bytes" not in document and "metadata" in document:
        _fail(
            "required field 'metadata_bytes' is missing: this index carries the structured "
            f"'metadata' of Neon's version 7 and later (version {version} read), which is not supported"
        )
    layers_field = "layer_metadata" if by_keys else "timeline_layers"
    for required in (layers_field, "disk_consistent_lsn", "metadata_bytes"):
        if required not in document:
            if required == "timeline_layers":
                _fail(
                    f"required field 'timeline_layers' is missing (required up to version "
                    f"{LAYER_METADATA_KEYS_VERSION - 1}, version {version} read)"
                )
            if required == "layer_metadata":
                _fail(
                    f"required field 'layer_metadata' is missing (required from version "
                    f"{LAYER_METADATA_KEYS_VERSION} on, version {version} read)"
                )
            _fail(f"required field {required!r} is missing")


def _string_list(value: object, field: str) -> list[object]:
    if not isinstance(value, list):
        _fail(f"{field} must be an array, got {_json_type(value)} {errors.show(value)}")
    if len(value) > MAX_LAYERS:
        _fail(f"{field} has {len(value)} entries, more than the limit {MAX_LAYERS}")
    return value


def _parse(data: bytes | bytearray | memoryview | str) -> IndexPart:
    document = _load_json(data)
    if not isinstance(document, dict):
        _fail(f"expected a JSON object at the top level, got {_json_type(document)}")
    _check_duplicates(document, "the top-level object")

    version = _u64(document.get("version", 0), "version")
    # Version 3 on: the layers are the keys of layer_metadata, timeline_layers is ignored.
    by_keys = version >= LAYER_METADATA_KEYS_VERSION
    _check_required(document, version, by_keys)

    # Names are parsed once each (they appear in timeline_layers and layer_metadata) and matched
    # parsed: two spellings (hex case) of one layer are one layer.
    parsed_names: dict[str, LayerName] = {}
    if not by_keys:
        for position, item in enumerate(_string_list(document["timeline_layers"], "timeline_layers")):
            _layer(item, parsed_names, position)
    # layer -> its metadata (size None and generation none until layer_metadata gives them)
    unknown = LayerFileMetadata()
    listed: dict[LayerName, LayerFileMetadata] = dict.fromkeys(parsed_names.values(), unknown)
    generations: dict[int, Generation] = {}

    missing_layers: list[str] = []
    for position, item in enumerate(_string_list(document.get("missing_layers", []), "missing_layers")):
        if not isinstance(item, str):
            _fail(f"missing_layers[{position}] must be a string, got {_json_type(item)} {errors.show(item)}")
        missing_layers.append(item)

    ignored: list[str] = []
    layer_metadata = document.get("layer_metadata", {})
    if not isinstance(layer_metadata, dict):
        _fail(
            f"layer_metadata must be an object, got {_json_type(layer_metadata)} {errors.show(layer_metadata)}"
        )
    _check_duplicates(layer_metadata, "layer_metadata")
    if len(layer_metadata) > MAX_LAYERS:
        _fail(f"layer_metadata has {len(layer_metadata)} entries, more than the limit {MAX_LAYERS}")
    for key, entry in layer_metadata.items():
        where = f"layer_metadata[{errors.show(key)}]"
        if not isinstance(entry, dict):
            _fail(f"{where} must be an object, got {_json_type(entry)} {errors.show(entry)}")
        _check_duplicates(entry, where)
        size = entry.get("file_size")
        size = None if size is None else _u64(size, f"{where}.file_size")
        meta = LayerFileMetadata(size, _generation(entry, where, generations))
        name = _key_layer(key, parsed_names) if by_keys else _listed(key, parsed_names, listed)
        if name is None:
            ignored.append(key)
        else:
            listed[name] = meta  # document order: of two spellings, the later one wins

    dcl_text = document["disk_consistent_lsn"]
    if not isinstance(dcl_text, str):
        _fail(f"disk_consistent_lsn must be a string, got {_json_type(dcl_text)} {errors.show(dcl_text)}")
    try:
        disk_consistent_lsn = Lsn.parse(dcl_text)
    except errors.FormatError as exc:
        raise errors.InvalidIndexPart(f"{_PREFIX}: disk_consistent_lsn: {exc}") from exc

    raw = document["metadata_bytes"]
    if not isinstance(raw, list):
        _fail(f"metadata_bytes must be an array, got {_json_type(raw)} {errors.show(raw)}")
    if len(raw) != METADATA_FILE_SIZE:
        _fail(f"metadata_bytes has {len(raw)} entries, expected {METADATA_FILE_SIZE}")
    for position, byte in enumerate(raw):
        if isinstance(byte, bool) or not isinstance(byte, int) or not 0 <= byte <= 255:
            _fail(f"metadata_bytes[{position}] must be an integer 0..255, got {errors.show(byte)}")

    return IndexPart(
        layers=listed,
        disk_consistent_lsn=disk_consistent_lsn,
        metadata_bytes=bytes(raw),
        version=version,
        missing_layers=tuple(missing_layers),
        ignored_metadata_keys=tuple(ignored),
    )
