"""Tests of `formats.lsn`: the HI/LO text form, the 16-hex form of layer names, arithmetic, validation."""

from __future__ import annotations

import pytest

from pageserver_operator.formats import errors, lsn
from pageserver_operator.formats.lsn import Lsn


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/16B5A50", 0x16B5A50),
        ("0/16960E8", 0x16960E8),
        ("1/0", 1 << 32),
        ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1),
        ("DEADBEEF/1", (0xDEADBEEF << 32) | 1),
    ],
)
def test_parse_and_str_round_trip(text: str, value: int) -> None:
    parsed = Lsn.parse(text)
    assert parsed.value == value
    assert str(parsed) == text
    assert Lsn.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "canonical"), [("0/16b5a50", "0/16B5A50"), ("00000000/016B5A50", "0/16B5A50")]
)
def test_parse_accepts_lowercase_and_leading_zeros(text: str, canonical: str) -> None:
    assert str(Lsn.parse(text)) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/",
        "0/",
        "/0",
        "0",
        "16B5A50",
        "0/16B5A50/",
        "0//1",
        " 0/1",
        "0/1 ",
        "0/1\n",
        "0x0/1",
        "-1/0",
        "+1/0",
        "100000000/0",
        "0/100000000",
        "0/G",
        "0/1_0",
        "\uff10/1",  # full-width digit
        "0/\x00",
    ],
)
def test_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(errors.InvalidLsn) as info:
        Lsn.parse(text)
    assert info.value.reason == "InvalidLsn"
    assert isinstance(info.value, errors.FormatError)
    assert isinstance(info.value, ValueError)


def test_parse_error_names_the_value_escaped_and_truncated() -> None:
    with pytest.raises(errors.InvalidLsn, match=r"'0/\\x00'"):
        Lsn.parse("0/\x00")
    with pytest.raises(errors.InvalidLsn) as info:
        Lsn.parse("9" * 10_000)
    assert len(str(info.value)) < 400
    assert "10000 characters" in str(info.value)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(errors.InvalidLsn):
        Lsn.parse(123)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 1 << 64, True, 1.0, "0/1", None])
def test_construction_is_validated(value: object) -> None:
    with pytest.raises(errors.InvalidLsn):
        Lsn(value)  # type: ignore[arg-type]


def test_hex16_round_trip() -> None:
    value = Lsn.parse("0/16B5A51")
    assert value.hex16() == "00000000016B5A51"
    assert Lsn.from_hex16("00000000016B5A51") == value
    assert Lsn.MAX.hex16() == "F" * 16
    assert Lsn.ZERO.hex16() == "0" * 16


@pytest.mark.parametrize(
    "text", ["", "16B5A51", "00000000016b5a51", "000000000016B5A51", "0000000 016B5A51", "0x00000016B5A51"]
)
def test_from_hex16_accepts_only_the_canonical_form(text: str) -> None:
    with pytest.raises(errors.InvalidLsn):
        Lsn.from_hex16(text)


def test_constants() -> None:
    assert Lsn(0) == Lsn.ZERO
    assert str(Lsn.ZERO) == "0/0"
    assert Lsn.MAX.value == lsn.LSN_LIMIT - 1


def test_arithmetic_and_order() -> None:
    base = Lsn.parse("0/16B5A50")
    assert base + 1 == Lsn.parse("0/16B5A51")
    assert base + 0 == base
    assert str(Lsn.parse("0/FFFFFFFF") + 1) == "1/0"
    assert base - Lsn.parse("0/16B5A40") == 0x10
    assert Lsn.ZERO < base < base + 1
    assert sorted([base + 1, Lsn.ZERO, base]) == [Lsn.ZERO, base, base + 1]
    assert int(base) == 0x16B5A50
    assert len({base, Lsn(base.value)}) == 1


def test_arithmetic_never_wraps() -> None:
    with pytest.raises(errors.InvalidLsn):
        Lsn.MAX + 1
    with pytest.raises(errors.InvalidLsn):
        Lsn.ZERO + -1


def test_alignment() -> None:
    assert Lsn.parse("0/16B5A50").is_aligned()
    assert Lsn.ZERO.is_aligned()
    assert not Lsn.parse("0/16B5A51").is_aligned()
    assert not Lsn.parse("0/16B5A54").is_aligned()


def test_lsn_is_immutable() -> None:
    value = Lsn(5)
    with pytest.raises(AttributeError):
        value.value = 6  # type: ignore[misc]
