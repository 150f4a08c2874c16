"""The timeline `metadata` file: 512 bytes, CRC-32C checked, format version 4 (3 read).

Layout (bincode, big-endian fixed-width integers)::

    header (8)  : checksum u32 | size u16 | format_version u16
    body v4     : disk_consistent_lsn u64
                  prev_record_lsn     Option<u64>      (tag byte 0/1, then the value if 1)
                  ancestor_timeline   Option<16 bytes>
                  ancestor_lsn        u64
                  latest_gc_cutoff_lsn u64
                  initdb_lsn          u64
                  pg_version          u32
    padding     : zeros up to 512 bytes

`size` is header + body (46, 54, 62 or 70 for v4), `checksum` is CRC-32C over bytes `[8, size)`.
Body v3 is the v4 body without `pg_version`; it is read as pg_version 14.

Invariants:

- `TimelineMetadata.to_bytes()` always returns exactly `METADATA_FILE_SIZE` (512) bytes in
  format version 4, and `from_bytes(to_bytes(m)) == m`. It refuses to encode a
  `disk_consistent_lsn` that is not 8-byte aligned, because such a file could not be read back.
- `from_bytes` follows the pageserver's read procedure exactly: length must be 512, `size` must
  be within `[8, 512]`, the checksum must match ("metadata checksum mismatch"), the version must
  be 4 or 3, the body must be consumed exactly (no trailing bytes before `size`), Option tags
  must be 0 or 1, and (v4 only) `disk_consistent_lsn` must be 8-byte aligned. The padding after
  `size` is not covered by the checksum and is not inspected.
- Every failure is an `InvalidMetadata` (or its subclasses `MetadataChecksumMismatch`,
  `UnsupportedMetadataVersion`); nothing else escapes.
- Pure: no I/O. Writing the file durably is the engine's job.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

import google_crc32c

from pageserver_operator.formats import errors
from pageserver_operator.formats.ids import TimelineId
from pageserver_operator.formats.lsn import Lsn

#: Size of the `metadata` file in bytes (always).
METADATA_FILE_SIZE: Final = 512
#: Format version written by `to_bytes`.
METADATA_FORMAT_VERSION: Final = 4
#: Older format version that is read and upgraded (pg_version := 14).
METADATA_FORMAT_VERSION_V3: Final = 3
#: pg_version assigned to metadata read from a version 3 file.
V3_DEFAULT_PG_VERSION: Final = 14
#: Size of the header (checksum, size, format_version).
METADATA_HEADER_SIZE: Final = 8

_HEADER: Final = struct.Struct(">IHH")
_U64: Final = struct.Struct(">Q")
_U32: Final = struct.Struct(">I")
_U32_LIMIT: Final = 1 << 32


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C (Castagnoli) of `data`, as stored in the metadata header."""
    return int(google_crc32c.value(bytes(data)))


@dataclass(frozen=True)
class TimelineMetadata:
    """Contents of a timeline's `metadata` file (also carried in `index_part.json`)."""

    disk_consistent_lsn: Lsn
    """All WAL up to this LSN is captured in the timeline's layer files."""
    prev_record_lsn: Lsn | None
    """Start LSN of the last record, when everything was flushed; else None."""
    ancestor_timeline: TimelineId | None
    """Parent timeline of a branch; None for a root timeline."""
    ancestor_lsn: Lsn
    """Branch point on the parent (0/0 for roots)."""
    latest_gc_cutoff_lsn: Lsn
    """Reads and branching below this LSN are refused."""
    initdb_lsn: Lsn
    """LSN of the initial import."""
    pg_version: int
    """PostgreSQL major version (14 or 15 in practice); any u32 is representable."""

    def __post_init__(self) -> None:
        for name in ("disk_consistent_lsn", "ancestor_lsn", "latest_gc_cutoff_lsn", "initdb_lsn"):
            if not isinstance(getattr(self, name), Lsn):
                raise errors.InvalidMetadata(
                    f"metadata {name} must be an Lsn, got {errors.show(getattr(self, name))}"
                )
        if self.prev_record_lsn is not None and not isinstance(self.prev_record_lsn, Lsn):
            raise errors.InvalidMetadata(
                f"metadata prev_record_lsn must be an Lsn or None, got {errors.show(self.prev_record_lsn)}"
            )
        if self.ancestor_timeline is not None and not isinstance(self.ancestor_timeline, TimelineId):
            raise errors.InvalidMetadata(
                f"metadata ancestor_timeline must be a TimelineId or None, got {errors.show(self.ancestor_timeline)}"
            )
        pg_version = self.pg_version
        if (
            isinstance(pg_version, bool)
            or not isinstance(pg_version, int)
            or not 0 <= pg_version < _U32_LIMIT
        ):
            raise errors.InvalidMetadata(f"metadata pg_version must be a u32, got {errors.show(pg_version)}")

    def to_bytes(self) -> bytes:
        """Encode as a 512-byte format-version-4 file image."""
        if not self.disk_consistent_lsn.is_aligned():
            raise errors.InvalidMetadata(
                f"refusing to encode metadata with disk_consistent_lsn {self.disk_consistent_lsn} "
                "that is not 8-byte aligned: the pageserver could not read it back"
            )
        body = _encode_body(self, with_pg_version=True)
        size = METADATA_HEADER_SIZE + len(body)
        header = _HEADER.pack(crc32c(body), size, METADATA_FORMAT_VERSION)
        return (header + body).ljust(METADATA_FILE_SIZE, b"\0")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> TimelineMetadata:
        """Decode a 512-byte `metadata` file image (v4, or v3 upgraded); raises `InvalidMetadata`."""
        return parse_metadata_with_version(data)[0]


def parse_metadata_with_version(data: bytes | bytearray | memoryview) -> tuple[TimelineMetadata, int]:
    """Decode like `TimelineMetadata.from_bytes`, also returning the format version read (4 or 3).

    A result with version 3 was upgraded (pg_version 14); writing it back produces version 4.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise errors.InvalidMetadata(f"metadata must be bytes, got {errors.show(data)}")
    raw = bytes(data)
    if len(raw) != METADATA_FILE_SIZE:
        raise errors.InvalidMetadata(f"metadata is {len(raw)} bytes, expected {METADATA_FILE_SIZE}")
    checksum, size, version = _HEADER.unpack_from(raw, 0)
    if size > METADATA_FILE_SIZE:
        raise errors.InvalidMetadata(f"metadata size field {size} exceeds {METADATA_FILE_SIZE}")
    if size < METADATA_HEADER_SIZE:
        raise errors.InvalidMetadata(
            f"metadata size field {size} is smaller than the {METADATA_HEADER_SIZE}-byte header"
        )
    body = raw[METADATA_HEADER_SIZE:size]
    computed = crc32c(body)
    if computed != checksum:
        raise errors.MetadataChecksumMismatch(
            f"metadata checksum mismatch: header says {checksum:08x}, body has {computed:08x}"
        )
    if version == METADATA_FORMAT_VERSION:
        metadata = _decode_body(body, with_pg_version=True, version=version)
        if not metadata.disk_consistent_lsn.is_aligned():
            raise errors.InvalidMetadata(
                f"metadata disk_consistent_lsn {metadata.disk_consistent_lsn} is not 8-byte aligned"
            )
        return metadata, version
    if version == METADATA_FORMAT_VERSION_V3:
        return _decode_body(body, with_pg_version=False, version=version), version
    raise errors.UnsupportedMetadataVersion(
        f"unsupported metadata format version {version} (expected {METADATA_FORMAT_VERSION} or "
        f"{METADATA_FORMAT_VERSION_V3})"
    )


def _encode_body(metadata: TimelineMetadata, *, with_pg_version: bool) -> bytes:
    parts = [_U64.pack(metadata.disk_consistent_lsn.value)]
    if metadata.prev_record_lsn is None:
        parts.append(b"\0")
    else:
        parts.append(b"\1" + _U64.pack(metadata.prev_record_lsn.value))
    if metadata.ancestor_timeline is None:
        parts.append(b"\0")
    else:
        parts.append(b"\1" + metadata.ancestor_timeline.raw)
    parts.append(_U64.pack(metadata.ancestor_lsn.value))
    parts.append(_U64.pack(metadata.latest_gc_cutoff_lsn.value))
    parts.append(_U64.pack(metadata.initdb_lsn.value))
    if with_pg_version:
        parts.append(_U32.pack(metadata.pg_version))
    return b"".join(parts)


class _Reader:
    """Cursor over a body; every short read is an `InvalidMetadata`."""

    def __init__(self, body: bytes, version: int) -> None:
        self._body = body
        self._pos = 0
        self._version = version

    def take(self, count: int, field: str) -> bytes:
        end = self._pos + count
        if end > len(self._body):
            raise errors.InvalidMetadata(
                f"metadata v{self._version} body is truncated: {len(self._body)} bytes end inside {field}"
            )
        chunk = self._body[self._pos : end]
        self._pos = end
        return chunk

    def u64(self, field: str) -> int:
        value: int = _U64.unpack(self.take(8, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = _U32.unpack(self.take(4, field))[0]
        return value

    def option_tag(self, field: str) -> bool:
        tag = self.take(1, field)[0]
        if tag not in (0, 1):
            raise errors.InvalidMetadata(f"metadata {field} has invalid Option tag {tag} (expected 0 or 1)")
        return tag == 1

    def finish(self) -> None:
        if self._pos != len(self._body):
            raise errors.InvalidMetadata(
                f"metadata v{self._version} body has {len(self._body) - self._pos} trailing bytes "
                f"(body is {len(self._body)} bytes, decoded {self._pos})"
            )


def _decode_body(body: bytes, *, with_pg_version: bool, version: int) -> TimelineMetadata:
    reader = _Reader(body, version)
    disk_consistent_lsn = Lsn(reader.u64("disk_consistent_lsn"))
    prev_record_lsn = Lsn(reader.u64("prev_record_lsn")) if reader.option_tag("prev_record_lsn") else None
    ancestor_timeline = (
        TimelineId(reader.take(16, "ancestor_timeline")) if reader.option_tag("ancestor_timeline") else None
    )
    ancestor_lsn = Lsn(reader.u64("ancestor_lsn"))
    latest_gc_cutoff_lsn = Lsn(reader.u64("latest_gc_cutoff_lsn"))
    initdb_lsn = Lsn(reader.u64("initdb_lsn"))
    pg_version = reader.u32("pg_version") if with_pg_version else V3_DEFAULT_PG_VERSION
    reader.finish()
    return TimelineMetadata(
        disk_consistent_lsn=disk_consistent_lsn,
        prev_record_lsn=prev_record_lsn,
        ancestor_timeline=ancestor_timeline,
        ancestor_lsn=ancestor_lsn,
        latest_gc_cutoff_lsn=latest_gc_cutoff_lsn,
        initdb_lsn=initdb_lsn,
        pg_version=pg_version,
    )
