"""Tests of `formats.index_part`: reading v0 and v1 `index_part.json`, writing v1, and rejecting bad input.

Golden fixtures: `fixtures/index_part_v0.json` (upstream-style v0 vector: no `version`, no
`layer_metadata`, a non-empty `missing_layers`), `fixtures/index_part_v1.json` (the reference's v1
example with its full 512-number `metadata_bytes`, in the exact compact form the writer emits) and
`fixtures/index_part_v1_upstream.json` (the reference's own v1 unit-test vector: a `layer_metadata`
entry `not_a_real_layer_but_adding_coverage` that `timeline_layers` does not list). When the format
changes, add a fixture and a `test_vN_indexpart_is_parsed`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pageserver_operator.formats import errors, index_part
from pageserver_operator.formats.index_part import IndexPart, LayerFileMetadata
from pageserver_operator.formats.layer_name import parse_layer_name
from pageserver_operator.formats.lsn import Lsn
from pageserver_operator.formats.metadata import TimelineMetadata

FIXTURES = Path(__file__).parent / "fixtures"
V0_BYTES = (FIXTURES / "index_part_v0.json").read_bytes()
V1_BYTES = (FIXTURES / "index_part_v1.json").read_bytes()
V1_UPSTREAM_BYTES = (FIXTURES / "index_part_v1_upstream.json").read_bytes()

IMAGE = "000000000000000000000000000000000000-030000000000000000000000000000000002__0000000001696070"
DELTA = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000001696070-00000000016B5A51"
V0_DELTA = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000001696070-00000000016960E9"

EXAMPLE_METADATA = TimelineMetadata(
    disk_consistent_lsn=Lsn.parse("0/16B5A50"),
    prev_record_lsn=Lsn.parse("0/16B5A18"),
    ancestor_timeline=None,
    ancestor_lsn=Lsn.ZERO,
    latest_gc_cutoff_lsn=Lsn.parse("0/1696070"),
    initdb_lsn=Lsn.parse("0/1696070"),
    pg_version=14,
)


def v1_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(V1_BYTES)
    return document


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


def test_v0_indexpart_is_parsed() -> None:
    parsed = IndexPart.parse(V0_BYTES)
    assert parsed.version == 0
    assert parsed.layers == {parse_layer_name(V0_DELTA): LayerFileMetadata(None)}
    assert parsed.disk_consistent_lsn == Lsn.parse("0/16960E8")
    assert parsed.missing_layers == ("not_a_real_layer_but_adding_coverage",)
    assert parsed.metadata_bytes[:4].hex() == "710b9fd2"
    assert parsed.metadata == TimelineMetadata(
        disk_consistent_lsn=Lsn.parse("0/16960E8"),
        prev_record_lsn=Lsn.parse("0/1696070"),
        ancestor_timeline=None,
        ancestor_lsn=Lsn.ZERO,
        latest_gc_cutoff_lsn=Lsn.parse("0/1696070"),
        initdb_lsn=Lsn.parse("0/1696070"),
        pg_version=14,
    )


def test_v1_indexpart_is_parsed() -> None:
    parsed = IndexPart.parse(V1_BYTES)
    assert parsed.version == 1
    assert parsed.layers == {
        parse_layer_name(IMAGE): LayerFileMetadata(16777216),
        parse_layer_name(DELTA): LayerFileMetadata(2146304),
    }
    assert parsed.layer_names == frozenset({parse_layer_name(IMAGE), parse_layer_name(DELTA)})
    assert parsed.disk_consistent_lsn == Lsn.parse("0/16B5A50")
    assert parsed.missing_layers == ()
    assert parsed.metadata == EXAMPLE_METADATA
    assert len(parsed.metadata_bytes) == 512


def test_v1_indexpart_is_written_byte_exact() -> None:
    assert IndexPart.parse(V1_BYTES).to_json_bytes() == V1_BYTES
    built = IndexPart.build(
        {parse_layer_name(DELTA): 2146304, parse_layer_name(IMAGE): 16777216}, EXAMPLE_METADATA
    )
    assert built.to_json_bytes() == V1_BYTES
    assert built == IndexPart.parse(V1_BYTES)


def test_writer_field_order_and_compactness() -> None:
    text = IndexPart.parse(V1_BYTES).to_json_bytes().decode()
    assert " " not in text and "\n" not in text
    keys = list(json.loads(text))
    assert keys == [
        "version",
        "timeline_layers",
        "missing_layers",
        "layer_metadata",
        "disk_consistent_lsn",
        "metadata_bytes",
    ]


def test_v0_upgrade_to_v1_keeps_sizes() -> None:
    v0 = IndexPart.parse(V0_BYTES)
    written = json.loads(v0.to_json_bytes())
    assert written["version"] == 1
    assert written["missing_layers"] == []
    assert written["timeline_layers"] == [V0_DELTA]
    assert written["layer_metadata"] == {V0_DELTA: {"file_size": None}}  # unknown stays unknown
    assert written["metadata_bytes"] == list(v0.metadata_bytes)
    reread = IndexPart.parse(v0.to_json_bytes())
    assert reread.layers == v0.layers
    assert reread.version == 1
    # Once the size is learned (e.g. from a download), the next index carries it.
    learned = dataclasses.replace(reread, layers={parse_layer_name(V0_DELTA): LayerFileMetadata(1234)})
    assert json.loads(learned.to_json_bytes())["layer_metadata"] == {V0_DELTA: {"file_size": 1234}}
    assert IndexPart.parse(learned.to_json_bytes()).layers[parse_layer_name(V0_DELTA)].file_size == 1234


def test_pretty_json_is_accepted() -> None:
    pretty = json.dumps(v1_document(), indent=4).encode()
    assert IndexPart.parse(pretty) == IndexPart.parse(V1_BYTES)
    assert IndexPart.parse(pretty.decode()) == IndexPart.parse(V1_BYTES)


def test_unknown_fields_are_tolerated() -> None:
    document = v1_document()
    document["deleted_at"] = None
    document["lineage"] = {"reparenting_history": []}
    document["metadata"] = {"disk_consistent_lsn": "0/16B5A50"}
    document["layer_metadata"][IMAGE]["shard"] = "0000"
    assert IndexPart.parse(encode(document)) == IndexPart.parse(V1_BYTES)


def test_disk_consistent_lsn_disagreeing_with_metadata_is_tolerated() -> None:
    document = v1_document()
    document["disk_consistent_lsn"] = "0/1"
    parsed = IndexPart.parse(encode(document))
    assert parsed.disk_consistent_lsn == Lsn.parse("0/1")
    assert parsed.metadata.disk_consistent_lsn == Lsn.parse("0/16B5A50")
    assert parsed.to_json_bytes() == V1_BYTES  # the writer copies the metadata's


def test_missing_layers_may_be_absent() -> None:
    document = v1_document()
    del document["missing_layers"]
    assert IndexPart.parse(encode(document)).missing_layers == ()


def test_layer_metadata_may_be_absent_or_partial() -> None:
    document = v1_document()
    del document["layer_metadata"][IMAGE]
    document["layer_metadata"][DELTA] = {}
    parsed = IndexPart.parse(encode(document))
    assert parsed.layers[parse_layer_name(IMAGE)] == LayerFileMetadata(None)
    assert parsed.layers[parse_layer_name(DELTA)] == LayerFileMetadata(None)


def test_sets_are_compared_as_sets() -> None:
    document = v1_document()
    document["timeline_layers"] = [DELTA, IMAGE, DELTA]
    document["layer_metadata"] = dict(reversed(list(document["layer_metadata"].items())))
    shuffled = IndexPart.parse(encode(document))
    assert shuffled == IndexPart.parse(V1_BYTES)
    assert shuffled.to_json_bytes() == V1_BYTES  # output is sorted, deterministic


def test_layer_metadata_for_unlisted_layers_is_ignored() -> None:
    document = v1_document()
    document["timeline_layers"] = [IMAGE]
    parsed = IndexPart.parse(encode(document))
    assert set(parsed.layers) == {parse_layer_name(IMAGE)}
    assert parsed.ignored_metadata_keys == (DELTA,)


def test_upstream_v1_vector_with_a_non_layer_metadata_key_is_parsed() -> None:
    """Issue 14, defect 12: the reference's own v1 test index has a `layer_metadata` entry
    that is not a layer name (and not listed); it reads it, so must we."""
    parsed = IndexPart.parse(V1_UPSTREAM_BYTES)
    assert parsed.version == 1
    assert parsed.layers == {parse_layer_name(V0_DELTA): LayerFileMetadata(25600000)}
    assert parsed.missing_layers == ("not_a_real_layer_but_adding_coverage",)
    assert parsed.ignored_metadata_keys == ("not_a_real_layer_but_adding_coverage",)
    assert parsed.disk_consistent_lsn == Lsn.parse("0/16960E8")
    assert parsed.metadata_bytes[:4].hex() == "710b9fd2"
    # the ignored entry does not survive a rewrite
    assert json.loads(parsed.to_json_bytes())["layer_metadata"] == {V0_DELTA: {"file_size": 25600000}}
    rebuilt = IndexPart.build({parse_layer_name(V0_DELTA): 25600000}, parsed.metadata)
    assert IndexPart.parse(parsed.to_json_bytes()) == rebuilt


@pytest.mark.parametrize("key", ["../evil", "/etc/passwd", "", "x" * 100_000, IMAGE + "\x00", IMAGE + "/../x"])
def test_unlisted_layer_metadata_keys_are_ignored_whatever_they_are(key: str) -> None:
    document = v1_document()
    document["layer_metadata"][key] = {"file_size": 1}
    parsed = IndexPart.parse(encode(document))
    assert parsed == IndexPart.parse(V1_BYTES)
    assert parsed.ignored_metadata_keys == (key,)
    assert parsed.to_json_bytes() == V1_BYTES


def test_hex_case_in_index_names_is_insignificant() -> None:
    """Neon's reader takes hex in either case (`from_str_radix`); the name it derives the
    object key and the file name from is the canonical uppercase one. Two spellings of one
    layer are one layer; of two `layer_metadata` entries for it, the later one wins."""
    document = v1_document()
    document["timeline_layers"] = [DELTA.lower(), IMAGE, DELTA]
    document["layer_metadata"] = {
        DELTA: {"file_size": 1},
        IMAGE.lower(): {"file_size": 16777216},
        DELTA.lower(): {"file_size": 2146304},
    }
    parsed = IndexPart.parse(encode(document))
    assert parsed == IndexPart.parse(V1_BYTES)
    assert [str(n) for n in parsed.layers] == [IMAGE, DELTA]
    assert parsed.ignored_metadata_keys == ()
    assert parsed.to_json_bytes() == V1_BYTES  # written canonical
    document["layer_metadata"] = dict(reversed(list(document["layer_metadata"].items())))
    assert IndexPart.parse(encode(document)).layers[parse_layer_name(DELTA)].file_size == 1


@pytest.mark.parametrize(
    "bad_name",
    [
        "../../../etc/passwd",
        "/etc/passwd",
        DELTA.lower().replace("-", "_"),
        DELTA[:-1],
        IMAGE + "\x00",
        "x/" + IMAGE,
        "",
        "..",
        IMAGE + ".temp_download",
    ],
)
def test_invalid_layer_names_in_timeline_layers_are_rejected(bad_name: str) -> None:
    document = v1_document()
    document["timeline_layers"].append(bad_name)
    with pytest.raises(errors.InvalidIndexPart) as info:
        IndexPart.parse(encode(document))
    message = str(info.value)
    assert message.startswith("index_part.json: timeline_layers[2]")
    assert "invalid layer file name" in message
    assert info.value.reason == "InvalidIndexPart"
    assert isinstance(info.value.__cause__, errors.InvalidLayerName)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"[]", "expected a JSON object at the top level, got array"),
        (b'"x"', "got string"),
        (b"null", "got null"),
        (b"42", "got number"),
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b'{"a":1}garbage', "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_documents_are_rejected(payload: bytes, fragment: str) -> None:
    with pytest.raises(errors.InvalidIndexPart, match=r"^index_part\.json: ") as info:
        IndexPart.parse(payload)
    assert fragment in str(info.value)


@pytest.mark.parametrize("field", ["timeline_layers", "disk_consistent_lsn", "metadata_bytes"])
def test_required_fields(field: str) -> None:
    document = v1_document()
    del document[field]
    with pytest.raises(errors.InvalidIndexPart, match=f"required field '{field}' is missing"):
        IndexPart.parse(encode(document))


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("version",), "1", "version must be a non-negative integer"),
        (("version",), -1, "version must be a non-negative integer"),
        (("version",), True, "version must be a non-negative integer"),
        (("timeline_layers",), IMAGE, "timeline_layers must be an array, got string"),
        (("timeline_layers",), {IMAGE: 1}, "timeline_layers must be an array, got object"),
        (("timeline_layers",), [IMAGE, 7], "timeline_layers[1] must be a string, got number"),
        (("missing_layers",), None, "missing_layers must be an array, got null"),
        (("missing_layers",), [1], "missing_layers[0] must be a string"),
        (("layer_metadata",), [], "layer_metadata must be an object, got array"),
        (("layer_metadata",), None, "layer_metadata must be an object, got null"),
        (("layer_metadata", IMAGE), 5, f"layer_metadata['{IMAGE}'] must be an object"),
        (("layer_metadata", "not-a-layer"), 5, "layer_metadata['not-a-layer'] must be an object"),
        (("layer_metadata", "not-a-layer"), {"file_size": -1}, "file_size must be a non-negative integer"),
        (("layer_metadata", IMAGE, "file_size"), -1, "file_size must be a non-negative integer"),
        (("layer_metadata", IMAGE, "file_size"), 1.5, "file_size must be a non-negative integer"),
        (("layer_metadata", IMAGE, "file_size"), 16777216.0, "file_size must be a non-negative integer"),
        (("layer_metadata", IMAGE, "file_size"), "16777216", "file_size must be a non-negative integer"),
        (("layer_metadata", IMAGE, "file_size"), True, "file_size must be a non-negative integer"),
        (("layer_metadata", IMAGE, "file_size"), 1 << 64, "below 2**64"),
        (("disk_consistent_lsn",), 23812688, "disk_consistent_lsn must be a string, got number"),
        (("disk_consistent_lsn",), "0/16B5A50 ", "disk_consistent_lsn: invalid LSN"),
        (("disk_consistent_lsn",), "16B5A50", "disk_consistent_lsn: invalid LSN"),
        (("metadata_bytes",), "AAAA", "metadata_bytes must be an array, got string"),
        (("metadata_bytes",), [0] * 511, "metadata_bytes has 511 entries, expected 512"),
        (("metadata_bytes",), [0] * 513, "metadata_bytes has 513 entries, expected 512"),
        (("metadata_bytes",), [], "metadata_bytes has 0 entries, expected 512"),
    ],
)
def test_wrong_types_are_rejected_precisely(path: tuple[str, ...], value: object, fragment: str) -> None:
    document = v1_document()
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(errors.InvalidIndexPart) as info:
        IndexPart.parse(encode(document))
    assert str(info.value).startswith("index_part.json: ")
    assert fragment in str(info.value)


def test_exact_message_for_short_metadata_bytes() -> None:
    document = v1_document()
    document["metadata_bytes"] = document["metadata_bytes"][:511]
    with pytest.raises(errors.InvalidIndexPart) as info:
        IndexPart.parse(encode(document))
    assert str(info.value) == "index_part.json: metadata_bytes has 511 entries, expected 512"


@pytest.mark.parametrize("bad", [256, -1, True, 1.0, None, "1"])
def test_metadata_bytes_must_be_bytes(bad: object) -> None:
    document = v1_document()
    document["metadata_bytes"][100] = bad
    with pytest.raises(errors.InvalidIndexPart, match=r"metadata_bytes\[100\] must be an integer 0\.\.255"):
        IndexPart.parse(encode(document))


def test_metadata_bytes_must_parse_as_metadata() -> None:
    document = v1_document()
    document["metadata_bytes"][8] ^= 0xFF
    with pytest.raises(errors.InvalidIndexPart, match="metadata checksum mismatch") as info:
        IndexPart.parse(encode(document))
    assert isinstance(info.value.__cause__, errors.MetadataChecksumMismatch)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_rejected(constant: str) -> None:
    text = V1_BYTES.decode().replace('"file_size":16777216', f'"file_size":{constant}')
    with pytest.raises(errors.InvalidIndexPart, match=f"{constant} is not valid JSON"):
        IndexPart.parse(text.encode())


def test_absurd_integers_are_rejected_without_crashing() -> None:
    text = V1_BYTES.decode().replace('"file_size":16777216', '"file_size":' + "9" * 100_000)
    with pytest.raises(errors.InvalidIndexPart):
        IndexPart.parse(text.encode())


@pytest.mark.parametrize(
    "text",
    [
        V1_BYTES.decode().replace('{"version":1,', '{"version":1,"version":1,'),
        V1_BYTES.decode().replace('"file_size":16777216}', '"file_size":16777216,"file_size":1}'),
        V1_BYTES.decode().replace('"layer_metadata":{', f'"layer_metadata":{{"{IMAGE}":{{"file_size":1}},'),
    ],
)
def test_duplicate_keys_are_rejected(text: str) -> None:
    with pytest.raises(errors.InvalidIndexPart, match="duplicate key"):
        IndexPart.parse(text.encode())


def test_too_many_layers_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_part, "MAX_LAYERS", 1)
    with pytest.raises(errors.InvalidIndexPart, match="more than the limit 1"):
        IndexPart.parse(V1_BYTES)


def test_too_large_documents_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_part, "MAX_INDEX_PART_BYTES", 100)
    with pytest.raises(errors.InvalidIndexPart, match="more than the limit 100"):
        IndexPart.parse(V1_BYTES)


def test_non_bytes_input_is_rejected() -> None:
    with pytest.raises(errors.InvalidIndexPart):
        IndexPart.parse(None)  # type: ignore[arg-type]


def test_build_takes_the_lsn_from_metadata_and_is_immutable() -> None:
    built = IndexPart.build({parse_layer_name(IMAGE): None}, EXAMPLE_METADATA)
    assert built.disk_consistent_lsn == EXAMPLE_METADATA.disk_consistent_lsn
    assert built.version == index_part.INDEX_PART_VERSION == 1
    assert built.metadata == EXAMPLE_METADATA
    with pytest.raises(TypeError):
        built.layers[parse_layer_name(DELTA)] = LayerFileMetadata(1)  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.version = 2  # type: ignore[misc]


def test_build_with_no_layers() -> None:
    built = IndexPart.build({}, EXAMPLE_METADATA)
    assert json.loads(built.to_json_bytes())["timeline_layers"] == []
    assert IndexPart.parse(built.to_json_bytes()) == built


def test_construction_is_validated() -> None:
    good = IndexPart.parse(V1_BYTES)
    with pytest.raises(errors.InvalidIndexPart, match="metadata_bytes has 511 entries, expected 512"):
        dataclasses.replace(good, metadata_bytes=good.metadata_bytes[:511])
    with pytest.raises(errors.InvalidIndexPart, match="not valid metadata"):
        dataclasses.replace(good, metadata_bytes=b"\x01" * 512)
    with pytest.raises(errors.InvalidIndexPart):
        dataclasses.replace(good, layers={IMAGE: LayerFileMetadata(1)})  # type: ignore[dict-item]
    with pytest.raises(errors.InvalidIndexPart):
        dataclasses.replace(good, layers={parse_layer_name(IMAGE): 1})  # type: ignore[dict-item]
    with pytest.raises(errors.InvalidIndexPart):
        LayerFileMetadata(-1)
