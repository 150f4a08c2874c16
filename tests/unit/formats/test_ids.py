"""Tests of `formats.ids`: strict parsing of tenant and timeline ids (they become path components)."""

from __future__ import annotations

import pytest

from pageserver_operator.formats import errors
from pageserver_operator.formats.ids import TenantId, TimelineId

GOOD = "3aa8fcc61f6d357410b7de754b1d9001"


@pytest.mark.parametrize("kind", [TenantId, TimelineId])
def test_parse_and_str_round_trip(kind: type[TenantId] | type[TimelineId]) -> None:
    parsed = kind.parse(GOOD)
    assert str(parsed) == GOOD
    assert parsed.raw == bytes.fromhex(GOOD)
    assert kind.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        GOOD.upper(),
        GOOD[:-1],
        GOOD + "0",
        GOOD[:-1] + "g",
        "3aa8fcc6-1f6d-3574-10b7-de754b1d9001",
        " " + GOOD[1:],
        GOOD + "\n",
        "../" + GOOD[3:],
        "/etc/passwd" + GOOD[11:],
        GOOD[:-1] + "\x00",
        "\uff10" + GOOD[1:],  # full-width digit
    ],
)
def test_parse_is_strict(text: str) -> None:
    with pytest.raises(errors.InvalidId) as info:
        TenantId.parse(text)
    assert info.value.reason == "InvalidId"
    assert "tenant id" in str(info.value)


def test_error_names_the_kind() -> None:
    with pytest.raises(errors.InvalidId, match="timeline id 'nope'"):
        TimelineId.parse("nope")
    with pytest.raises(errors.InvalidId, match="tenant id"):
        TenantId.parse(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [b"", b"\x00" * 15, b"\x00" * 17, "0" * 16, bytearray(16)])
def test_construction_is_validated(raw: object) -> None:
    with pytest.raises(errors.InvalidId):
        TenantId(raw)  # type: ignore[arg-type]


def test_generate_is_random_and_valid() -> None:
    ids = {TimelineId.generate() for _ in range(100)}
    assert len(ids) == 100
    for generated in ids:
        assert TimelineId.parse(str(generated)) == generated


def test_kinds_are_distinct_hashable_and_ordered() -> None:
    raw = bytes.fromhex(GOOD)
    tenant: object = TenantId(raw)
    assert tenant != TimelineId(raw)
    assert TenantId(raw) == TenantId(raw)
    assert len({TenantId(raw), TenantId(raw)}) == 1
    low, high = TenantId(b"\x00" * 16), TenantId(b"\xff" * 16)
    assert low < high
    assert sorted([high, low]) == [low, high]
    assert repr(low) == "TenantId('00000000000000000000000000000000')"
