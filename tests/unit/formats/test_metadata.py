"""Tests of `formats.metadata`: the 512-byte timeline metadata file, byte for byte (v4 written, v3 read).

Golden fixtures: `fixtures/metadata_v4.bin` (the reference's worked example), `metadata_v4_branch.bin`
(with an ancestor, size 70) and `metadata_v3.bin` (the same example in format version 3). They were
packed independently of the module under test (struct + google_crc32c). When the format changes, add a
fixture and a test named after the new version.
"""

from __future__ import annotations

import struct
from pathlib import Path

import google_crc32c
import pytest

from pageserver_operator.formats import errors, metadata
from pageserver_operator.formats.ids import TimelineId
from pageserver_operator.formats.lsn import Lsn
from pageserver_operator.formats.metadata import TimelineMetadata, parse_metadata_with_version

FIXTURES = Path(__file__).parent / "fixtures"

EXAMPLE = TimelineMetadata(
    disk_consistent_lsn=Lsn.parse("0/16B5A50"),
    prev_record_lsn=Lsn.parse("0/16B5A18"),
    ancestor_timeline=None,
    ancestor_lsn=Lsn.ZERO,
    latest_gc_cutoff_lsn=Lsn.parse("0/1696070"),
    initdb_lsn=Lsn.parse("0/1696070"),
    pg_version=14,
)
EXAMPLE_HEX = (
    "df1c961b 0036 0004 | 00000000016b5a50 | 01 00000000016b5a18 | 00 | 0000000000000000 | "
    "0000000001696070 | 0000000001696070 | 0000000e"
)
UPSTREAM = TimelineMetadata(
    disk_consistent_lsn=Lsn.parse("0/16960E8"),
    prev_record_lsn=Lsn.parse("0/1696070"),
    ancestor_timeline=None,
    ancestor_lsn=Lsn.ZERO,
    latest_gc_cutoff_lsn=Lsn.parse("0/1696070"),
    initdb_lsn=Lsn.parse("0/1696070"),
    pg_version=14,
)
BRANCH = TimelineMetadata(
    disk_consistent_lsn=Lsn.parse("0/16B5A50"),
    prev_record_lsn=Lsn.parse("0/16B5A18"),
    ancestor_timeline=TimelineId(b"\x11" * 16),
    ancestor_lsn=Lsn.parse("0/1696070"),
    latest_gc_cutoff_lsn=Lsn.parse("0/1696070"),
    initdb_lsn=Lsn.parse("0/1696070"),
    pg_version=15,
)


def pack(body: bytes, version: int = 4, *, size: int | None = None, checksum: int | None = None) -> bytes:
    """A 512-byte file image with a correct (or the given) header for `body`."""
    size = 8 + len(body) if size is None else size
    crc = google_crc32c.value(body[: max(size - 8, 0)]) if checksum is None else checksum
    return (struct.pack(">IHH", crc, size, version) + body).ljust(512, b"\0")[:512]


def example_body_v4(dcl: int = 0x16B5A50) -> bytes:
    return struct.pack(">QBQBQQQI", dcl, 1, 0x16B5A18, 0, 0, 0x1696070, 0x1696070, 14)


def test_v4_metadata_is_parsed() -> None:
    data = (FIXTURES / "metadata_v4.bin").read_bytes()
    assert TimelineMetadata.from_bytes(data) == EXAMPLE
    assert parse_metadata_with_version(data) == (EXAMPLE, 4)


def test_v4_metadata_is_written_byte_exact() -> None:
    data = EXAMPLE.to_bytes()
    assert len(data) == metadata.METADATA_FILE_SIZE == 512
    assert data == (FIXTURES / "metadata_v4.bin").read_bytes()
    expected_prefix = bytes.fromhex(EXAMPLE_HEX.replace(" ", "").replace("|", ""))
    assert data[:54] == expected_prefix
    assert data[54:] == bytes(512 - 54)


def test_upstream_vector_checksum() -> None:
    data = UPSTREAM.to_bytes()
    assert data[:4].hex() == "710b9fd2"
    assert data[4:8] == b"\x00\x36\x00\x04"
    assert TimelineMetadata.from_bytes(data) == UPSTREAM


def test_v4_branch_metadata_is_parsed_and_written() -> None:
    data = (FIXTURES / "metadata_v4_branch.bin").read_bytes()
    assert TimelineMetadata.from_bytes(data) == BRANCH
    assert BRANCH.to_bytes() == data


@pytest.mark.parametrize(
    ("prev", "ancestor", "size"),
    [
        (None, None, 46),
        (Lsn(8), None, 54),
        (None, TimelineId(b"\x01" * 16), 62),
        (Lsn(8), TimelineId(b"\x01" * 16), 70),
    ],
)
def test_size_field_and_round_trip(prev: Lsn | None, ancestor: TimelineId | None, size: int) -> None:
    value = TimelineMetadata(Lsn(0x100), prev, ancestor, Lsn(0x10), Lsn(0x20), Lsn(0x30), 15)
    data = value.to_bytes()
    assert struct.unpack(">H", data[4:6])[0] == size
    assert data[size:] == bytes(512 - size)
    assert TimelineMetadata.from_bytes(data) == value


def test_v3_metadata_is_parsed_and_upgraded() -> None:
    data = (FIXTURES / "metadata_v3.bin").read_bytes()
    parsed, version = parse_metadata_with_version(data)
    assert version == 3
    assert parsed == EXAMPLE  # pg_version defaulted to 14
    assert parsed.pg_version == metadata.V3_DEFAULT_PG_VERSION == 14
    rewritten = parsed.to_bytes()
    assert rewritten[6:8] == b"\x00\x04"
    assert rewritten == (FIXTURES / "metadata_v4.bin").read_bytes()
    assert parse_metadata_with_version(rewritten) == (EXAMPLE, 4)


def test_v3_skips_the_alignment_check() -> None:
    body = struct.pack(">QBBQQQ", 0x16B5A51, 0, 0, 0, 0, 0)
    parsed, version = parse_metadata_with_version(pack(body, 3))
    assert version == 3
    assert parsed.disk_consistent_lsn == Lsn(0x16B5A51)


def test_flipping_byte_8_is_a_checksum_mismatch() -> None:
    data = bytearray(EXAMPLE.to_bytes())
    data[8] ^= 0xFF
    with pytest.raises(errors.MetadataChecksumMismatch, match="metadata checksum mismatch") as info:
        TimelineMetadata.from_bytes(bytes(data))
    assert info.value.reason == "MetadataChecksumMismatch"
    assert isinstance(info.value, errors.InvalidMetadata)


@pytest.mark.parametrize("offset", [0, 3, *range(8, 54)])
def test_any_covered_byte_flip_is_detected(offset: int) -> None:
    data = bytearray(EXAMPLE.to_bytes())
    data[offset] ^= 0x01
    with pytest.raises(errors.MetadataChecksumMismatch):
        TimelineMetadata.from_bytes(bytes(data))


def test_padding_is_not_covered_by_the_checksum() -> None:
    data = bytearray(EXAMPLE.to_bytes())
    data[511] = 0xFF
    assert TimelineMetadata.from_bytes(bytes(data)) == EXAMPLE


@pytest.mark.parametrize("length", [0, 54, 511, 513, 4096])
def test_length_must_be_512(length: int) -> None:
    data = EXAMPLE.to_bytes().ljust(length, b"\0")[:length]
    with pytest.raises(errors.InvalidMetadata, match=f"{length} bytes, expected 512"):
        TimelineMetadata.from_bytes(data)


def test_accepts_bytearray_and_memoryview() -> None:
    data = EXAMPLE.to_bytes()
    assert TimelineMetadata.from_bytes(bytearray(data)) == EXAMPLE
    assert TimelineMetadata.from_bytes(memoryview(data)) == EXAMPLE


def test_rejects_non_bytes() -> None:
    with pytest.raises(errors.InvalidMetadata):
        TimelineMetadata.from_bytes("x" * 512)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [513, 0xFFFF])
def test_size_field_above_512_is_rejected(size: int) -> None:
    with pytest.raises(errors.InvalidMetadata, match="exceeds 512"):
        TimelineMetadata.from_bytes(pack(example_body_v4(), size=size, checksum=0))


@pytest.mark.parametrize("size", [0, 7])
def test_size_field_below_header_is_rejected(size: int) -> None:
    with pytest.raises(errors.InvalidMetadata, match="smaller than"):
        TimelineMetadata.from_bytes(pack(example_body_v4(), size=size, checksum=0))


@pytest.mark.parametrize("version", [0, 1, 2, 5, 0xFFFF])
def test_unknown_versions_are_unsupported(version: int) -> None:
    with pytest.raises(errors.UnsupportedMetadataVersion, match=f"version {version}") as info:
        TimelineMetadata.from_bytes(pack(example_body_v4(), version))
    assert info.value.reason == "UnsupportedMetadataVersion"


def test_trailing_bytes_in_the_body_are_rejected() -> None:
    with pytest.raises(errors.InvalidMetadata, match="trailing"):
        TimelineMetadata.from_bytes(pack(example_body_v4() + b"\0"))
    # A v4 body decoded as v3 leaves the 4 pg_version bytes over.
    with pytest.raises(errors.InvalidMetadata, match="trailing"):
        TimelineMetadata.from_bytes(pack(example_body_v4(), 3))


def test_truncated_body_is_rejected() -> None:
    with pytest.raises(errors.InvalidMetadata, match="truncated"):
        TimelineMetadata.from_bytes(pack(example_body_v4()[:-1]))
    with pytest.raises(errors.InvalidMetadata, match="truncated"):
        TimelineMetadata.from_bytes(pack(b""))


def test_invalid_option_tag_is_rejected() -> None:
    body = bytearray(example_body_v4())
    body[8] = 2  # prev_record_lsn tag
    with pytest.raises(errors.InvalidMetadata, match="Option tag 2"):
        TimelineMetadata.from_bytes(pack(bytes(body)))


def test_unaligned_disk_consistent_lsn_is_rejected_on_v4() -> None:
    with pytest.raises(errors.InvalidMetadata, match="not 8-byte aligned"):
        TimelineMetadata.from_bytes(pack(example_body_v4(dcl=0x16B5A51)))


def test_unaligned_disk_consistent_lsn_is_not_written() -> None:
    value = TimelineMetadata(Lsn(0x16B5A51), None, None, Lsn.ZERO, Lsn.ZERO, Lsn.ZERO, 14)
    with pytest.raises(errors.InvalidMetadata, match="not 8-byte aligned"):
        value.to_bytes()


@pytest.mark.parametrize(
    "changes",
    [
        {"pg_version": -1},
        {"pg_version": 1 << 32},
        {"pg_version": True},
        {"disk_consistent_lsn": 0},
        {"prev_record_lsn": 8},
        {"ancestor_timeline": "11" * 16},
    ],
)
def test_construction_is_validated(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "disk_consistent_lsn": Lsn(8),
        "prev_record_lsn": None,
        "ancestor_timeline": None,
        "ancestor_lsn": Lsn.ZERO,
        "latest_gc_cutoff_lsn": Lsn.ZERO,
        "initdb_lsn": Lsn.ZERO,
        "pg_version": 14,
    }
    fields.update(changes)
    with pytest.raises(errors.InvalidMetadata):
        TimelineMetadata(**fields)  # type: ignore[arg-type]


def test_every_error_is_a_format_error() -> None:
    for data in (b"", b"\xff" * 512, pack(b"\x00" * 100, 7)):
        with pytest.raises(errors.FormatError):
            TimelineMetadata.from_bytes(data)
