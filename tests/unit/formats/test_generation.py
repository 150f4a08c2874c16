"""Tests of `formats.generation`: the Generation value, its suffix, and the index / layer object names.

Neon's own expectations (libs/utils/src/generation.rs at Neon commit 6a35a3e9f1, tests
`generation_gt` and `suffix_is_stable`) are reproduced in `test_neon_generation_gt` and
`test_neon_suffix_is_stable`.
"""

from __future__ import annotations

import random

import pytest

from pageserver_operator.formats import errors
from pageserver_operator.formats.generation import (
    GENERATION_LIMIT,
    INDEX_FILE_NAME,
    Generation,
    index_file_name,
    layer_object_name,
    parse_index_file_name,
    split_layer_object_name,
)
from pageserver_operator.formats.layer_name import parse_layer_name

IMAGE = "000000000000000000000000000000000000-030000000000000000000000000000000002__0000000001696070"
DELTA = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000001696070-00000000016B5A51"
# A delta whose end LSN has only decimal digits, and one whose last 8 digits are lowercase-hex-like:
# neither may be mistaken for a layer with a generation suffix.
DELTA_DIGITS = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000001696070-0000000001696078"
DELTA_ZEROS = "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF__0000000000000000-0000000100000000"


def test_neon_generation_gt() -> None:
    assert Generation.none() < Generation(0)
    assert Generation.none() < Generation(1)


def test_neon_suffix_is_stable() -> None:
    assert Generation.none().suffix() == ""
    assert Generation(0).suffix() == "-00000000"
    assert Generation(0xFFFFFFFF).suffix() == "-ffffffff"
    assert Generation.MAX.suffix() == "-ffffffff"
    assert Generation(10).suffix() == "-0000000a"


def test_total_order() -> None:
    seed = random.randrange(1 << 32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    values = [Generation.none(), Generation(0), Generation(1), Generation(2), Generation.MAX]
    values += [Generation(rng.randrange(GENERATION_LIMIT)) for _ in range(50)]
    shuffled = values[:]
    rng.shuffle(shuffled)
    ordered = sorted(shuffled)
    assert ordered[0] == Generation.none()
    assert ordered[-1] == Generation.MAX
    keys = [-1 if g.value is None else g.value for g in ordered]
    assert keys == sorted(keys)
    for a in values[:10]:
        for b in values[:10]:
            key_a = -1 if a.value is None else a.value
            key_b = -1 if b.value is None else b.value
            assert (a < b) == (key_a < key_b)
            assert (a <= b) == (key_a <= key_b)
            assert (a > b) == (key_a > key_b)
            assert (a >= b) == (key_a >= key_b)
            assert (a == b) == (key_a == key_b)
    assert max(Generation.none(), Generation(0)) == Generation(0)


def test_equality_and_hash() -> None:
    assert Generation(5) == Generation(5)
    assert Generation.none() == Generation.none()
    assert Generation.none() != Generation(0)
    assert len({Generation(1), Generation(1), Generation.none(), Generation.none(), Generation(0)}) == 3
    assert Generation(1) != 1  # not an int
    with pytest.raises(TypeError):
        assert Generation(1) < 2  # type: ignore[operator]


def test_is_immutable() -> None:
    generation = Generation(1)
    with pytest.raises(AttributeError):
        generation.value = 2  # type: ignore[misc]


def test_next_and_previous_as_neon() -> None:
    assert Generation.none().next() == Generation(1)
    assert Generation(0).next() == Generation(1)
    assert Generation(7).next() == Generation(8)
    assert Generation(0xFFFFFFFE).next() == Generation.MAX
    with pytest.raises(errors.InvalidGeneration, match="no successor"):
        Generation.MAX.next()
    assert Generation(0).previous() == Generation.none()
    assert Generation.none().previous() == Generation.none()
    assert Generation(8).previous() == Generation(7)
    assert Generation.MAX.previous() == Generation(0xFFFFFFFE)


def test_str_and_repr() -> None:
    assert str(Generation(10)) == "0000000a"
    assert str(Generation.none()) == "none"
    assert repr(Generation(10)) == "Generation(10)"
    assert repr(Generation.none()) == "Generation.none()"
    assert Generation.none().is_none() and not Generation(0).is_none()
    assert Generation(10).value == 10 and Generation.none().value is None


@pytest.mark.parametrize("bad", [-1, GENERATION_LIMIT, 1 << 64, True, False, 1.0, "1", b"1"])
def test_invalid_values_are_rejected(bad: object) -> None:
    with pytest.raises(errors.InvalidGeneration) as info:
        Generation(bad)  # type: ignore[arg-type]
    assert info.value.reason == "InvalidGeneration"
    assert isinstance(info.value, errors.FormatError)


def test_index_file_names() -> None:
    assert INDEX_FILE_NAME == "index_part.json"
    assert index_file_name(Generation.none()) == "index_part.json"
    assert index_file_name(Generation(1)) == "index_part.json-00000001"
    assert index_file_name(Generation.MAX) == "index_part.json-ffffffff"
    with pytest.raises(errors.InvalidGeneration):
        index_file_name(1)  # type: ignore[arg-type]


def test_index_file_name_round_trips() -> None:
    seed = random.randrange(1 << 32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    generations = [Generation.none(), Generation(0), Generation(1), Generation.MAX]
    generations += [Generation(rng.randrange(GENERATION_LIMIT)) for _ in range(200)]
    for generation in generations:
        name = index_file_name(generation)
        assert parse_index_file_name(name) == generation
        parsed = parse_index_file_name(name)
        assert parsed is not None and index_file_name(parsed) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "index_part",
        "index_part.json-",
        "index_part.json-0000000A",  # uppercase: not what the pageserver writes
        "index_part.json-1",  # too short (Neon's lax parser would take it)
        "index_part.json-000000001",  # too long
        "index_part.json-0000000g",
        "index_part.json_00000001",
        "index_part.json-00000001 ",
        "index_part.json-00000001\n",
        "index_part.json-+0000001",
        "index_part.json.temp_download",
        "index_part.json-00000001.tmp",
        "Index_part.json",
        "x/index_part.json",
        "tenants/t/timelines/x/index_part.json-00000001",  # a key, not a file name
        "heatmap-v1.json",
        "tenant-manifest-00000001.json",
        DELTA,
        DELTA + "-00000001",
    ],
)
def test_names_that_are_not_index_objects(name: str) -> None:
    assert parse_index_file_name(name) is None


def test_parse_index_file_name_of_a_non_string() -> None:
    assert parse_index_file_name(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("layer", [IMAGE, DELTA, DELTA_DIGITS, DELTA_ZEROS])
def test_layer_object_names_round_trip(layer: str) -> None:
    parsed = parse_layer_name(layer)
    for generation in (Generation.none(), Generation(0), Generation(1), Generation(0xABCDEF12), Generation.MAX):
        name = layer_object_name(parsed, generation)
        assert name == layer + generation.suffix()
        assert split_layer_object_name(name) == (parsed, generation)
        assert layer_object_name(*split_layer_object_name(name)) == name


def test_the_delta_layer_ambiguity() -> None:
    """A delta name ends in `-` + 16 hex digits; the suffix is `-` + 8: never confused."""
    assert split_layer_object_name(DELTA_DIGITS) == (parse_layer_name(DELTA_DIGITS), Generation.none())
    assert split_layer_object_name(DELTA_ZEROS) == (parse_layer_name(DELTA_ZEROS), Generation.none())
    # the last 8 characters of a delta name are hex, but not preceded by "-"
    assert DELTA_DIGITS[-8:] == "01696078" and DELTA_DIGITS[-9] != "-"
    layer, generation = split_layer_object_name(DELTA_ZEROS + "-00000002")
    assert str(layer) == DELTA_ZEROS and generation == Generation(2)
    # an image layer with a suffix is not a delta layer
    layer, generation = split_layer_object_name(IMAGE + "-00000003")
    assert layer.kind == "image" and generation == Generation(3)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "expected a layer file name, optionally followed by a generation suffix"),
        ("index_part.json", "expected a layer file name"),
        ("index_part.json-00000001", "what precedes it is not a layer file name"),
        (IMAGE + "-0000000A", "the generation suffix -0000000A must be 8 lowercase hex digits"),
        (DELTA + "-ABCDEF12", "the generation suffix -ABCDEF12 must be 8 lowercase hex digits"),
        (IMAGE + "-1", "expected a layer file name, optionally followed"),
        (IMAGE + "-000000001", "expected a layer file name, optionally followed"),
        (IMAGE + "-", "expected a layer file name, optionally followed"),
        (IMAGE + "_00000001", "expected a layer file name, optionally followed"),
        (IMAGE + "-00000001-00000001", "what precedes it is not a layer file name"),
        (IMAGE + "-00000001.temp_download", "expected a layer file name, optionally followed"),
        (DELTA.lower() + "-00000001", "hex digits must be uppercase"),
        (DELTA.lower(), "expected a layer file name, optionally followed"),
        (DELTA[:-1] + "-00000001", "what precedes it is not a layer file name"),
        ("../" + IMAGE + "-00000001", "what precedes it is not a layer file name"),
        (IMAGE + "\n-00000001", "what precedes it is not a layer file name"),
        (IMAGE + "-00000001\n", "expected a layer file name, optionally followed"),
    ],
)
def test_bad_layer_object_names_are_rejected_precisely(name: str, fragment: str) -> None:
    with pytest.raises(errors.InvalidLayerName) as info:
        split_layer_object_name(name)
    message = str(info.value)
    assert message.startswith(f"invalid layer object name {name!r}: ")
    assert fragment in message
    assert info.value.reason == "InvalidLayerName"


def test_layer_object_name_checks_its_arguments() -> None:
    with pytest.raises(errors.InvalidLayerName):
        layer_object_name(IMAGE, Generation(1))  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidGeneration):
        layer_object_name(parse_layer_name(IMAGE), 1)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidLayerName):
        split_layer_object_name(None)  # type: ignore[arg-type]
