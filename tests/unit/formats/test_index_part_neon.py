"""Tests of `formats.index_part` against Neon's own test vectors, and of per-layer generations.

Fixtures `fixtures/neon_<test name>.json` are the JSON documents of Neon's tests of the same name,
copied byte for byte from pageserver/src/tenant/remote_timeline_client/index.rs at Neon commit
6a35a3e9f1 (the raw strings of `v1_indexpart_is_parsed`, `v1_indexpart_is_parsed_with_optional_
missing_layers`, `v2_indexpart_is_parsed_with_deleted_at`, `empty_layers_are_parsed`,
`v4_indexpart_is_parsed`, `v5_indexpart_is_parsed`, `v6_indexpart_is_parsed` and
`v7_indexpart_is_parsed`). Each test below asserts what Neon's asserts (layer names, sizes,
generations, disk_consistent_lsn, metadata), with one deliberate difference for versions 1 and 2
(`test_neon_v1_indexpart_is_parsed`): there `timeline_layers` is the layer set (DESIGN §4), so
the second `layer_metadata` key, which `timeline_layers` does not list, is ignored, where Neon
(which has not read `timeline_layers` since its version 3) takes it as a layer.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from pageserver_operator.formats import errors
from pageserver_operator.formats.generation import Generation, layer_object_name, split_layer_object_name
from pageserver_operator.formats.ids import TimelineId
from pageserver_operator.formats.index_part import IndexPart, LayerFileMetadata
from pageserver_operator.formats.layer_name import DeltaLayerName, Key, parse_layer_name
from pageserver_operator.formats.lsn import Lsn
from pageserver_operator.formats.metadata import TimelineMetadata

FIXTURES = Path(__file__).parent / "fixtures"
V1_BYTES = (FIXTURES / "index_part_v1.json").read_bytes()


def neon(test_name: str) -> bytes:
    return (FIXTURES / f"neon_{test_name}.json").read_bytes()


D1 = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000001696070-00000000016960E9"
D2 = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__00000000016B59D8-00000000016B5A51"
V5_A = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__00000000014EF420-00000000014EF499"
V5_B = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__00000000014EF499-00000000015A7619"
IMAGE = "000000000000000000000000000000000000-030000000000000000000000000000000002__0000000001696070"
DELTA = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000001696070-00000000016B5A51"

# Neon's `TimelineMetadata::from_bytes(&[113,11,159,210,...])` of v1, v2, v4, v6.
NEON_METADATA = TimelineMetadata(
    disk_consistent_lsn=Lsn.parse("0/16960E8"),
    prev_record_lsn=Lsn.parse("0/1696070"),
    ancestor_timeline=None,
    ancestor_lsn=Lsn.ZERO,
    latest_gc_cutoff_lsn=Lsn.parse("0/1696070"),
    initdb_lsn=Lsn.parse("0/1696070"),
    pg_version=14,
)
NONE = Generation.none()


def layers(*items: tuple[str, int | None, Generation]) -> dict[Any, LayerFileMetadata]:
    return {parse_layer_name(name): LayerFileMetadata(size, generation) for name, size, generation in items}


def test_neon_v1_indexpart_is_parsed() -> None:
    parsed = IndexPart.parse(neon("v1_indexpart_is_parsed"))
    assert parsed.version == 1
    assert parsed.layers == layers((D1, 25600000, NONE))
    # Neon reads this key as a second layer (size 9007199254741001); timeline_layers does not list it.
    assert parsed.ignored_metadata_keys == (D2,)
    assert parsed.missing_layers == ()
    assert parsed.disk_consistent_lsn == Lsn.parse("0/16960E8")
    assert parsed.metadata == NEON_METADATA


def test_neon_v1_indexpart_is_parsed_with_optional_missing_layers() -> None:
    parsed = IndexPart.parse(neon("v1_indexpart_is_parsed_with_optional_missing_layers"))
    assert parsed.version == 1
    assert parsed.layers == layers((D1, 25600000, NONE))
    assert parsed.ignored_metadata_keys == (D2,)
    assert parsed.missing_layers == ("This shouldn't fail deserialization",)
    assert parsed.disk_consistent_lsn == Lsn.parse("0/16960E8")
    assert parsed.metadata == NEON_METADATA


def test_neon_v2_indexpart_is_parsed_with_deleted_at() -> None:
    parsed = IndexPart.parse(neon("v2_indexpart_is_parsed_with_deleted_at"))
    assert parsed.version == 2
    assert parsed.layers == layers((D1, 25600000, NONE))
    assert parsed.ignored_metadata_keys == (D2,)
    assert parsed.disk_consistent_lsn == Lsn.parse("0/16960E8")
    assert parsed.metadata == NEON_METADATA


def test_neon_empty_layers_are_parsed() -> None:
    parsed = IndexPart.parse(neon("empty_layers_are_parsed"))
    assert parsed.version == 1
    assert parsed.layers == {}
    assert parsed.disk_consistent_lsn == Lsn.parse("0/2532648")
    assert parsed.metadata == TimelineMetadata(
        disk_consistent_lsn=Lsn.parse("0/2532648"),
        prev_record_lsn=Lsn.parse("0/2532620"),
        ancestor_timeline=TimelineId.parse("57c6f08761772d7d261d9ba18c8dffd2"),
        ancestor_lsn=Lsn.parse("0/2532648"),
        latest_gc_cutoff_lsn=Lsn.parse("0/149F0C0"),
        initdb_lsn=Lsn.parse("0/149F0C0"),
        pg_version=15,
    )


def test_neon_v4_indexpart_is_parsed() -> None:
    """Version 4: no timeline_layers; the layers are the keys of layer_metadata."""
    parsed = IndexPart.parse(neon("v4_indexpart_is_parsed"))
    assert parsed.version == 4
    assert parsed.layers == layers((D1, 25600000, NONE), (D2, 9007199254741001, NONE))
    assert parsed.ignored_metadata_keys == ()
    assert parsed.disk_consistent_lsn == Lsn.parse("0/16960E8")
    assert parsed.metadata == NEON_METADATA


def test_neon_v5_indexpart_is_parsed() -> None:
    """Version 5: layers uploaded in generation 1 (and `lineage`, ignored)."""
    parsed = IndexPart.parse(neon("v5_indexpart_is_parsed"))
    assert parsed.version == 5
    assert parsed.layers == layers((V5_A, 23289856, Generation(1)), (V5_B, 1015808, Generation(1)))
    assert parsed.disk_consistent_lsn == Lsn.parse("0/15A7618")
    assert parsed.metadata == TimelineMetadata(
        disk_consistent_lsn=Lsn.parse("0/15A7618"),
        prev_record_lsn=None,
        ancestor_timeline=None,
        ancestor_lsn=Lsn.ZERO,
        latest_gc_cutoff_lsn=Lsn.parse("0/14EF420"),
        initdb_lsn=Lsn.parse("0/14EF420"),
        pg_version=16,
    )
    assert parsed.layer_object_names() == {
        parse_layer_name(V5_A): V5_A + "-00000001",
        parse_layer_name(V5_B): V5_B + "-00000001",
    }


def test_neon_v6_indexpart_is_parsed() -> None:
    parsed = IndexPart.parse(neon("v6_indexpart_is_parsed"))
    assert parsed.version == 6
    assert parsed.layers == layers((D1, 25600000, NONE), (D2, 9007199254741001, NONE))
    assert parsed.disk_consistent_lsn == Lsn.parse("0/16960E8")
    assert parsed.metadata == NEON_METADATA
    assert parsed.layer_object_names() == {parse_layer_name(D1): D1, parse_layer_name(D2): D2}


def test_neon_v7_indexpart_is_refused_precisely() -> None:
    """Version 7 dropped `metadata_bytes` for a structured `metadata`: not read (yet), and said so."""
    with pytest.raises(errors.InvalidIndexPart) as info:
        IndexPart.parse(neon("v7_indexpart_is_parsed"))
    assert str(info.value) == (
        "index_part.json: required field 'metadata_bytes' is missing: this index carries the "
        "structured 'metadata' of Neon's version 7 and later (version 7 read), which is not supported"
    )


def test_neon_v5_is_continued_as_version_1_with_its_generations() -> None:
    parsed = IndexPart.parse(neon("v5_indexpart_is_parsed"))
    written = parsed.to_json_bytes()
    document = json.loads(written)
    assert document["version"] == 1
    assert document["timeline_layers"] == [V5_A, V5_B]
    assert document["layer_metadata"] == {
        V5_A: {"file_size": 23289856, "generation": 1},
        V5_B: {"file_size": 1015808, "generation": 1},
    }
    assert f'"{V5_A}":{{"file_size":23289856,"generation":1}}'.encode() in written
    assert "lineage" not in document
    reread = IndexPart.parse(written)
    assert reread.layers == parsed.layers
    assert reread.metadata_bytes == parsed.metadata_bytes


def v1_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(V1_BYTES)
    return document


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


def test_generation_is_read_per_layer() -> None:
    document = v1_document()
    document["layer_metadata"][IMAGE]["generation"] = 0
    document["layer_metadata"][DELTA]["generation"] = 0xFFFFFFFF
    parsed = IndexPart.parse(encode(document))
    assert parsed.layers == layers((IMAGE, 16777216, Generation(0)), (DELTA, 2146304, Generation.MAX))
    assert parsed.layer_object_names() == {
        parse_layer_name(IMAGE): IMAGE + "-00000000",
        parse_layer_name(DELTA): DELTA + "-ffffffff",
    }
    for name, object_name in parsed.layer_object_names().items():
        assert split_layer_object_name(object_name) == (name, parsed.layers[name].generation)


@pytest.mark.parametrize("bad", [-1, 1 << 32, 1.0, 1.5, "1", "00000001", True, None, [], {}])
def test_invalid_generations_are_rejected_precisely(bad: object) -> None:
    document = v1_document()
    document["layer_metadata"][IMAGE]["generation"] = bad
    with pytest.raises(errors.InvalidIndexPart) as info:
        IndexPart.parse(encode(document))
    message = str(info.value)
    assert message.startswith(
        f"index_part.json: layer_metadata['{IMAGE}'].generation must be an integer 0..4294967295 (a u32), got "
    )
    assert errors.show(bad) in message


def test_invalid_generation_of_an_ignored_entry_is_rejected() -> None:
    document = v1_document()
    document["layer_metadata"]["not_a_real_layer"] = {"file_size": 1, "generation": -1}
    with pytest.raises(errors.InvalidIndexPart, match=r"\['not_a_real_layer'\]\.generation must be"):
        IndexPart.parse(encode(document))


def test_generation_is_written_only_when_not_none() -> None:
    image, delta = parse_layer_name(IMAGE), parse_layer_name(DELTA)
    metadata = IndexPart.parse(V1_BYTES).metadata
    # all none: byte for byte the index written before generations existed
    assert IndexPart.build({image: LayerFileMetadata(16777216), delta: 2146304}, metadata).to_json_bytes() == V1_BYTES
    built = IndexPart.build(
        {image: LayerFileMetadata(16777216, Generation(0)), delta: LayerFileMetadata(2146304, Generation(10))},
        metadata,
    )
    written = built.to_json_bytes()
    assert written == V1_BYTES.replace(
        b'"file_size":16777216}', b'"file_size":16777216,"generation":0}'
    ).replace(b'"file_size":2146304}', b'"file_size":2146304,"generation":10}')
    assert IndexPart.parse(written) == built


def test_build_accepts_sizes_and_metadata() -> None:
    image, delta = parse_layer_name(IMAGE), parse_layer_name(DELTA)
    metadata = IndexPart.parse(V1_BYTES).metadata
    built = IndexPart.build({image: None, delta: LayerFileMetadata(5, Generation(2))}, metadata)
    assert built.layers == {image: LayerFileMetadata(None, NONE), delta: LayerFileMetadata(5, Generation(2))}
    with pytest.raises(errors.InvalidIndexPart):
        IndexPart.build({image: "5"}, metadata)  # type: ignore[dict-item]


def test_layer_file_metadata_checks_its_generation() -> None:
    assert LayerFileMetadata(1).generation == NONE
    assert LayerFileMetadata(1, Generation(3)) != LayerFileMetadata(1, Generation(4))
    with pytest.raises(errors.InvalidIndexPart, match="layer generation must be a Generation, got 1"):
        LayerFileMetadata(1, 1)  # type: ignore[arg-type]


def test_round_trip_with_random_generations() -> None:
    seed = random.randrange(1 << 32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    metadata = IndexPart.parse(V1_BYTES).metadata
    chosen: dict[Any, LayerFileMetadata] = {}
    for _ in range(200):
        start = rng.randrange(1 << 40)
        name = DeltaLayerName(Key.MIN, Key.MAX, Lsn(start), Lsn(start + rng.randrange(1, 1 << 20)))
        generation = rng.choice([NONE, Generation(0), Generation(rng.randrange(1 << 32))])
        chosen[name] = LayerFileMetadata(rng.choice([None, rng.randrange(1 << 40)]), generation)
    built = IndexPart.build(chosen, metadata)
    reread = IndexPart.parse(built.to_json_bytes())
    assert reread == built
    assert reread.to_json_bytes() == built.to_json_bytes()
    for name, object_name in reread.layer_object_names().items():
        assert object_name == layer_object_name(name, chosen[name].generation)


def v4_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(neon("v4_indexpart_is_parsed"))
    return document


def test_from_version_3_timeline_layers_is_ignored() -> None:
    """Neon's version 3 still wrote timeline_layers but no longer read it: neither do we."""
    document = v4_document()
    document["version"] = 3
    document["timeline_layers"] = [D1, "../not/even/a/layer"]
    parsed = IndexPart.parse(encode(document))
    assert parsed.layer_names == {parse_layer_name(D1), parse_layer_name(D2)}


def test_from_version_3_layer_metadata_is_required() -> None:
    document = v4_document()
    del document["layer_metadata"]
    document["timeline_layers"] = [D1]
    with pytest.raises(errors.InvalidIndexPart) as info:
        IndexPart.parse(encode(document))
    assert str(info.value) == (
        "index_part.json: required field 'layer_metadata' is missing (required from version 3 on, version 4 read)"
    )


def test_up_to_version_2_timeline_layers_is_required() -> None:
    document = v4_document()
    document["version"] = 2
    with pytest.raises(errors.InvalidIndexPart) as info:
        IndexPart.parse(encode(document))
    assert str(info.value) == (
        "index_part.json: required field 'timeline_layers' is missing (required up to version 2, version 2 read)"
    )


@pytest.mark.parametrize("key", ["not_a_real_layer", "../evil", "", D1 + "-00000001", D1 + "\x00"])
def test_from_version_3_every_layer_metadata_key_must_be_a_layer(key: str) -> None:
    document = v4_document()
    document["layer_metadata"][key] = {"file_size": 1}
    with pytest.raises(errors.InvalidIndexPart) as info:
        IndexPart.parse(encode(document))
    assert str(info.value).startswith(f"index_part.json: layer_metadata[{errors.show(key)}]: invalid layer file name")
    assert isinstance(info.value.__cause__, errors.InvalidLayerName)


def test_from_version_3_hex_case_in_keys_is_insignificant() -> None:
    document = v4_document()
    document["layer_metadata"][D1.lower()] = {"file_size": 7, "generation": 2}
    parsed = IndexPart.parse(encode(document))
    assert parsed.layers == layers((D1, 7, Generation(2)), (D2, 9007199254741001, NONE))
    assert [str(name) for name in parsed.layers] == [D1, D2]


def test_from_version_3_an_empty_layer_metadata_is_an_empty_timeline() -> None:
    document = v4_document()
    document["layer_metadata"] = {}
    assert IndexPart.parse(encode(document)).layers == {}
