"""Tests of `formats.tenant_config`: rendering `spec.config` overrides to the tenant `config` TOML and reading it back."""

from __future__ import annotations

import tomllib

import pytest

from pageserver_operator.formats import errors, tenant_config
from pageserver_operator.formats.tenant_config import (
    TENANT_CONFIG_KEYS,
    parse_tenant_config,
    render_tenant_config,
)

ALL_OVERRIDES: dict[str, object] = {
    "checkpointDistance": 268435456,
    "checkpointTimeout": "10m",
    "compactionTargetSize": 134217728,
    "compactionPeriod": "20 s",
    "compactionThreshold": 10,
    "gcHorizon": 67108864,
    "gcPeriod": "100 s",
    "imageCreationThreshold": 3,
    "pitrInterval": "30 days",
    "walreceiverConnectTimeout": "2 s",
    "laggingWalTimeout": "3s",
    "maxLsnWalLag": 10485760,
    "traceReadRequests": False,
}


def snake(overrides: dict[str, object]) -> dict[str, object]:
    return {TENANT_CONFIG_KEYS[key].toml_key: value for key, value in overrides.items()}


def test_keys_cover_the_reference_list() -> None:
    assert set(TENANT_CONFIG_KEYS) == set(ALL_OVERRIDES)
    assert {spec.toml_key for spec in TENANT_CONFIG_KEYS.values()} == {
        "checkpoint_distance",
        "checkpoint_timeout",
        "compaction_target_size",
        "compaction_period",
        "compaction_threshold",
        "gc_horizon",
        "gc_period",
        "image_creation_threshold",
        "pitr_interval",
        "walreceiver_connect_timeout",
        "lagging_wal_timeout",
        "max_lsn_wal_lag",
        "trace_read_requests",
    }
    assert TENANT_CONFIG_KEYS["gcPeriod"].kind == "duration"
    assert TENANT_CONFIG_KEYS["checkpointDistance"].kind == "bytes"
    assert TENANT_CONFIG_KEYS["compactionThreshold"].kind == "int"
    assert TENANT_CONFIG_KEYS["traceReadRequests"].kind == "bool"
    assert tenant_config.TENANT_CONFIG_TOML_KEYS["gc_period"] == "gcPeriod"


def test_render_exact_text() -> None:
    text = render_tenant_config(
        {"gcPeriod": "100 s", "checkpointDistance": 131072, "traceReadRequests": True}
    )
    assert text == (
        "# This file contains a specific per-tenant's config.\n"
        "#  It is read in case of pageserver restart.\n"
        "\n"
        "[tenant_config]\n"
        "checkpoint_distance = 131072\n"
        'gc_period = "100 s"\n'
        "trace_read_requests = true\n"
    )


def test_render_empty_has_only_the_header() -> None:
    text = render_tenant_config({})
    assert text.splitlines()[:2] == [
        "# This file contains a specific per-tenant's config.",
        "#  It is read in case of pageserver restart.",
    ]
    assert text.rstrip().endswith("[tenant_config]")
    assert parse_tenant_config(text) == {}


def test_round_trip_all_keys() -> None:
    text = render_tenant_config(ALL_OVERRIDES)
    assert parse_tenant_config(text) == snake(ALL_OVERRIDES)
    assert tomllib.loads(text) == {"tenant_config": snake(ALL_OVERRIDES)}


def test_render_is_deterministic_and_sorted() -> None:
    forward = render_tenant_config(ALL_OVERRIDES)
    backward = render_tenant_config(dict(reversed(list(ALL_OVERRIDES.items()))))
    assert forward == backward
    keys = [line.split(" = ")[0] for line in forward.splitlines() if " = " in line]
    assert keys == sorted(keys)


def test_none_means_unset() -> None:
    text = render_tenant_config({"gcPeriod": None, "pitrInterval": "0s"})
    assert parse_tenant_config(text) == {"pitr_interval": "0s"}


def test_unknown_spec_key_is_rejected_by_name() -> None:
    with pytest.raises(
        errors.InvalidTenantConfig, match="unknown tenant config key 'evictionPolicy'"
    ) as info:
        render_tenant_config({"evictionPolicy": "x"})
    assert info.value.reason == "InvalidTenantConfig"


def test_snake_case_spec_key_gets_a_hint() -> None:
    with pytest.raises(errors.InvalidTenantConfig, match="did you mean 'gcPeriod'"):
        render_tenant_config({"gc_period": "1h"})


@pytest.mark.parametrize(
    "duration",
    [
        "20 s",
        "1h",
        "30 days",
        "10m",
        "0s",
        "1h 30m",
        "1h30m",
        "2 hours 5 min",
        "500ms",
        "1M",
        "1y",
        "7 weeks",
    ],
)
def test_valid_durations(duration: str) -> None:
    assert parse_tenant_config(render_tenant_config({"gcPeriod": duration})) == {"gc_period": duration}


@pytest.mark.parametrize(
    "duration",
    [
        "",
        " ",
        "1",
        "s",
        "1.5h",
        "-1s",
        "+1s",
        "1 fortnight",
        "1H",
        "1 s ",
        " 1s",
        "1s,2m",
        "1\ts",
        "1s\n",
        "1 h\x00",
        "99999999999999999999s",
        "1" * 200 + "s",
        "600000000000y",
    ],
)
def test_invalid_durations(duration: str) -> None:
    with pytest.raises(errors.InvalidTenantConfig, match="gcPeriod"):
        render_tenant_config({"gcPeriod": duration})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gcPeriod", 100),
        ("checkpointDistance", "256Mi"),
        ("checkpointDistance", True),
        ("checkpointDistance", 1.5),
        ("checkpointDistance", -1),
        ("checkpointDistance", 1 << 63),
        ("compactionThreshold", "10"),
        ("maxLsnWalLag", 0),
        ("traceReadRequests", 1),
        ("traceReadRequests", "true"),
    ],
)
def test_wrong_types_are_rejected(key: str, value: object) -> None:
    with pytest.raises(errors.InvalidTenantConfig, match=key):
        render_tenant_config({key: value})


def test_boundaries_are_accepted() -> None:
    text = render_tenant_config({"checkpointDistance": (1 << 63) - 1, "gcHorizon": 0, "maxLsnWalLag": 1})
    assert parse_tenant_config(text) == {
        "checkpoint_distance": (1 << 63) - 1,
        "gc_horizon": 0,
        "max_lsn_wal_lag": 1,
    }


def test_toml_string_escaping() -> None:
    assert tenant_config._toml_string('a"b\\c\nd\x01\x7f') == '"a\\"b\\\\c\\nd\\u0001\\u007F"'
    assert (
        tomllib.loads("x = " + tenant_config._toml_string('a"b\\c\nd\x01\x7fé'))["x"] == 'a"b\\c\nd\x01\x7fé'
    )


def test_parse_rejects_unknown_top_level_keys() -> None:
    with pytest.raises(errors.InvalidTenantConfig, match="unknown top-level key 'remote_storage'"):
        parse_tenant_config("[tenant_config]\ngc_period = '1h'\n[remote_storage]\nlocal_path = '/x'\n")
    with pytest.raises(errors.InvalidTenantConfig, match="unknown top-level key 'gc_period'"):
        parse_tenant_config("gc_period = '1h'\n")


def test_parse_rejects_unknown_table_keys() -> None:
    with pytest.raises(errors.InvalidTenantConfig, match="unknown tenant config key 'gcPeriod'"):
        parse_tenant_config("[tenant_config]\ngcPeriod = '1h'\n")


def test_parse_checks_value_types() -> None:
    with pytest.raises(errors.InvalidTenantConfig, match="checkpoint_distance"):
        parse_tenant_config("[tenant_config]\ncheckpoint_distance = '256 MiB'\n")
    # The pageserver's own quirk (checkpoint_timeout as a secs/nanos table) is not a valid file.
    with pytest.raises(errors.InvalidTenantConfig, match="checkpoint_timeout"):
        parse_tenant_config("[tenant_config]\ncheckpoint_timeout = { secs = 600, nanos = 0 }\n")
    with pytest.raises(errors.InvalidTenantConfig, match="must be a table"):
        parse_tenant_config("tenant_config = 5\n")


def test_parse_rejects_invalid_toml() -> None:
    with pytest.raises(errors.InvalidTenantConfig, match="not valid TOML"):
        parse_tenant_config("[tenant_config\n")


def test_parse_empty_file_means_defaults() -> None:
    assert parse_tenant_config("") == {}
    assert parse_tenant_config("# only a comment\n") == {}
