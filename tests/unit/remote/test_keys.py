"""Tests of `remote.keys`: the one key syntax every backend accepts, and listing prefixes."""

from __future__ import annotations

import pytest

from pageserver_operator.remote import keys


@pytest.mark.parametrize(
    "key",
    [
        "index_part.json",
        "tenants/t/timelines/tl/index_part.json",
        "a/b.c/d-e_f",
        ".hidden/x",
        "a/..b",
        "a/b...",
    ],
)
def test_valid_keys(key: str) -> None:
    assert keys.validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "empty"),
        ("/abs", "relative"),
        ("a//b", "segment"),
        ("a/", "segment"),
        (".", "segment"),
        ("a/./b", "segment"),
        ("..", "segment"),
        ("a/../../etc/passwd", "segment"),
        ("a\x00b", "NUL"),
        ("x" * 256, "longer than 255"),
        ("/".join(["x" * 200] * 6), "longer than 1024"),
        ("dir/name.___temp", "reserved"),
    ],
)
def test_invalid_keys(key: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        keys.validate_key(key)


def test_prefixes() -> None:
    assert keys.validate_prefix("", directory=True) == ""
    assert keys.validate_prefix("tenants/", directory=True) == "tenants/"
    assert keys.validate_prefix("tenants/ab", directory=False) == "tenants/ab"
    with pytest.raises(ValueError, match="must end with '/'"):
        keys.validate_prefix("tenants", directory=True)
    for bad in ("/", "/tenants/", "a//", "../"):
        with pytest.raises(ValueError):
            keys.validate_prefix(bad, directory=False)
