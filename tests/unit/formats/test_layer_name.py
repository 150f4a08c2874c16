"""Tests of `formats.layer_name`: the strict canonical grammar (the path-traversal guard), ranges, future layers."""

from __future__ import annotations

import random

import pytest

from pageserver_operator.formats import errors, layer_name
from pageserver_operator.formats.layer_name import (
    DeltaLayerName,
    ImageLayerName,
    Key,
    is_layer_file_name,
    parse_layer_name,
)
from pageserver_operator.formats.lsn import Lsn

K0 = "000000000000000000000000000000000000"
KMAX = "F" * 36
K3 = "030000000000000000000000000000000002"
L0_DELTA = f"{K0}-{KMAX}__0000000001696070-00000000016960E9"
L1_DELTA = "000000067F000032AC000040040000000000-030000000000000000000000000000000002__000000000176DB59-000000000177E831"
IMAGE = f"{K0}-{K3}__00000000016FDD40"


@pytest.mark.parametrize("name", [L0_DELTA, L1_DELTA, IMAGE])
def test_reference_examples_round_trip(name: str) -> None:
    parsed = parse_layer_name(name)
    assert str(parsed) == name
    assert parsed.file_name == name
    assert is_layer_file_name(name)


def test_image_fields() -> None:
    parsed = parse_layer_name(IMAGE)
    assert isinstance(parsed, ImageLayerName)
    assert parsed.kind == "image"
    assert parsed.key_start == Key(0)
    assert parsed.key_end == Key(0x030000000000000000000000000000000002)
    assert parsed.lsn == Lsn.parse("0/16FDD40")


def test_delta_fields() -> None:
    parsed = parse_layer_name(L0_DELTA)
    assert isinstance(parsed, DeltaLayerName)
    assert parsed.kind == "delta"
    assert parsed.key_start == Key.MIN
    assert parsed.key_end == Key.MAX
    assert parsed.lsn_start == Lsn.parse("0/1696070")
    assert parsed.lsn_end == Lsn.parse("0/16960E9")


def test_constructed_names_render_canonically() -> None:
    image = ImageLayerName(Key(1), Key(2), Lsn(0x10))
    assert str(image) == f"{1:036X}-{2:036X}__{0x10:016X}"
    assert parse_layer_name(str(image)) == image
    delta = DeltaLayerName(Key(1), Key(2), Lsn(0x10), Lsn(0x20))
    assert parse_layer_name(delta.file_name) == delta


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "../" + IMAGE,
        IMAGE + "/../../etc/passwd",
        "/etc/passwd",
        "/" + IMAGE,
        IMAGE[:-1] + "\x00",
        IMAGE + "\x00",
        "..",
        ".",
        "a\\b",
        IMAGE.replace("-", "\\"),
        " " + IMAGE,
        IMAGE + " ",
        IMAGE + "\n",
        IMAGE + "\t",
        IMAGE.lower(),
        L0_DELTA.replace("E9", "e9"),
        IMAGE + ".temp_download",
        IMAGE + ".0.old",
        IMAGE + "___temp",
        IMAGE + "-0000000a",  # generation suffix: not at this commit
        IMAGE.replace("__", "_"),
        IMAGE.replace("__", "___"),
        f"{K0}-{K3}__",
        f"{K0}-{K3}__1696070",  # LSN not 16 digits
        f"{K0}-{K3}__000000000016FDD40",  # LSN 17 digits
        f"{K0[1:]}-{K3}__00000000016FDD40",  # key 35 digits
        f"{K0}0-{K3}__00000000016FDD40",  # key 37 digits
        f"{K0}-{K3}-{K3}__00000000016FDD40",
        f"{K0}__00000000016FDD40",
        f"{K0}-{K3}__00000000016FDD40-00000000016FDD41-00000000016FDD42",
        f"{K0}-{K3}__0000000001696070-",
        f"{K0}-{K3}__G000000001696070",
        f"{K0}-{K3}__+000000001696070",
        f"{K0}-{K3}__\uff10000000001696070",  # full-width digit
        "index_part.json",
        "metadata",
        "ephemeral-1",
    ],
)
def test_hostile_and_non_canonical_names_are_rejected(name: str) -> None:
    with pytest.raises(errors.InvalidLayerName) as info:
        parse_layer_name(name)
    assert info.value.reason == "InvalidLayerName"
    assert not is_layer_file_name(name)
    if name.upper() != name and is_layer_file_name(name.upper()):
        return  # another spelling of a canonical name: see test_any_case_*
    with pytest.raises(errors.InvalidLayerName):
        parse_layer_name(name, any_case=True)


@pytest.mark.parametrize("name", [L0_DELTA, L1_DELTA, IMAGE])
def test_any_case_takes_either_case_and_gives_the_canonical_name(name: str) -> None:
    """Names read from a remote index: as Neon's reader (`from_str_radix`), hex in either case;
    the result is the same layer, and its `str` (file name, remote key) is the canonical one."""
    rng = random.Random(14)
    mixed = "".join(c.lower() if rng.random() < 0.5 else c for c in name)
    for spelling in (name, name.lower(), mixed):
        parsed = parse_layer_name(spelling, any_case=True)
        assert parsed == parse_layer_name(name)
        assert hash(parsed) == hash(parse_layer_name(name))
        assert str(parsed) == name


@pytest.mark.parametrize("letter", ["\u212a", "\u017f", "\u0131", "\uff21", "G", "g"])
def test_any_case_admits_only_ascii_hex_letters(letter: str) -> None:
    with pytest.raises(errors.InvalidLayerName):
        parse_layer_name(letter + L0_DELTA[1:], any_case=True)


def test_lowercase_gets_a_specific_message() -> None:
    with pytest.raises(errors.InvalidLayerName, match="uppercase"):
        parse_layer_name(L1_DELTA.lower())


def test_message_names_the_value_escaped() -> None:
    with pytest.raises(errors.InvalidLayerName) as info:
        parse_layer_name("evil\x00\x1b[31mname")
    message = str(info.value)
    assert "\\x00" in message and "\\x1b" in message
    assert "\x00" not in message and "\x1b" not in message


def test_long_names_are_truncated_in_messages() -> None:
    with pytest.raises(errors.InvalidLayerName) as info:
        parse_layer_name("A" * 100_000)
    assert len(str(info.value)) < 500


@pytest.mark.parametrize(
    "name",
    [
        f"{K3}-{K3}__00000000016FDD40",  # key_start == key_end
        f"{K3}-{K0}__00000000016FDD40",  # key_start > key_end
        f"{K0}-{K3}__00000000016FDD40-00000000016FDD40",  # lsn_start == lsn_end
        f"{K0}-{K3}__00000000016FDD41-00000000016FDD40",  # lsn_start > lsn_end
        f"{K3}-{K3}__00000000016FDD40-00000000016FDD41",
    ],
)
def test_empty_ranges_are_rejected(name: str) -> None:
    with pytest.raises(errors.InvalidLayerName, match="empty"):
        parse_layer_name(name)


def test_empty_ranges_are_rejected_at_construction() -> None:
    with pytest.raises(errors.InvalidLayerName):
        ImageLayerName(Key(2), Key(2), Lsn(1))
    with pytest.raises(errors.InvalidLayerName):
        DeltaLayerName(Key(1), Key(2), Lsn(3), Lsn(3))
    with pytest.raises(errors.InvalidLayerName):
        ImageLayerName(Key(1), Key(2), 5)  # type: ignore[arg-type]


def test_non_string_is_rejected() -> None:
    with pytest.raises(errors.InvalidLayerName):
        parse_layer_name(None)  # type: ignore[arg-type]
    assert not is_layer_file_name(b"x")  # type: ignore[arg-type]


def test_key_parse_and_range() -> None:
    assert str(Key.parse(K3)) == K3
    assert str(Key.MAX) == KMAX
    for bad in ("", KMAX.lower(), K3[1:], K3 + "0", " " + K3[1:]):
        with pytest.raises(errors.InvalidLayerName):
            Key.parse(bad)
    with pytest.raises(errors.InvalidLayerName):
        Key(layer_name.KEY_LIMIT)
    with pytest.raises(errors.InvalidLayerName):
        Key(-1)


def test_is_future_image() -> None:
    image = parse_layer_name(IMAGE)
    assert not image.is_future(Lsn.parse("0/16FDD40"))
    assert not image.is_future(Lsn.parse("0/16FDD48"))
    assert image.is_future(Lsn.parse("0/16FDD3F"))


def test_is_future_delta() -> None:
    delta = parse_layer_name(L0_DELTA)  # end 0/16960E9 (exclusive)
    assert not delta.is_future(Lsn.parse("0/16960E8"))  # end == D + 1: complete
    assert delta.is_future(Lsn.parse("0/16960E7"))  # end > D + 1
    assert not delta.is_future(Lsn.MAX)


def test_names_are_hashable_and_distinct_kinds() -> None:
    names = {parse_layer_name(IMAGE), parse_layer_name(IMAGE), parse_layer_name(L0_DELTA)}
    assert len(names) == 2
    assert sorted(names, key=str) == [parse_layer_name(IMAGE), parse_layer_name(L0_DELTA)]
    assert repr(parse_layer_name(IMAGE)) == f"ImageLayerName({IMAGE!r})"


def test_sort_key_orders_exactly_as_the_file_names() -> None:
    """`sort_key()` must agree with sorting by text (the index writer's order) for mixed
    image/delta names, including the tie where an image name is a prefix of a delta name."""
    rng = random.Random(20261202)
    keys = [0, 1, 0xAB, 2**80, 2**143, 2**144 - 2, 2**144 - 1]
    lsns = [1, 2, 0x16960E9, 2**40, 2**64 - 2, 2**64 - 1]
    names: list[layer_name.LayerName] = []
    for _ in range(3000):
        start, end = sorted(rng.sample(keys, 2))
        lsn_a, lsn_b = sorted(rng.sample(lsns, 2))
        if rng.random() < 0.4:
            names.append(ImageLayerName(Key(start), Key(end), Lsn(lsn_a)))
        else:
            names.append(DeltaLayerName(Key(start), Key(end), Lsn(lsn_a), Lsn(lsn_b)))
    # the prefix tie: same keys and first LSN, image and delta
    names += [ImageLayerName(Key(0), Key(5), Lsn(7)), DeltaLayerName(Key(0), Key(5), Lsn(7), Lsn(8))]
    assert [str(n) for n in sorted(names, key=lambda n: n.sort_key())] == sorted(str(n) for n in names)


def test_parsed_names_share_key_objects() -> None:
    first, second = parse_layer_name(L0_DELTA), parse_layer_name(L0_DELTA.replace("E9", "EA"))
    assert first.key_start is second.key_start and first.key_end is second.key_end
    assert first != second
