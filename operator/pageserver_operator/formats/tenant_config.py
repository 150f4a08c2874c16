"""The tenant `config` file: TOML with one `[tenant_config]` table of overrides.

The file the pageserver reads looks like::

    # This file contains a specific per-tenant's config.
    #  It is read in case of pageserver restart.

    [tenant_config]
    checkpoint_distance = 268435456
    gc_period = "100 s"

The `Tenant` resource carries the same overrides in camelCase (`spec.config.gcPeriod`);
`TENANT_CONFIG_KEYS` maps each camelCase key to its snake_case TOML key and its kind.

Invariants:

- Only the keys of `TENANT_CONFIG_KEYS` exist. An unknown key (in the spec, in the table, or an
  unknown top-level key in the file) is an `InvalidTenantConfig` naming the key.
- Values are checked by kind: `bytes` and `int` are integers (never booleans) within
  `[minimum, 2**63)` (TOML integers are signed 64-bit); `duration` is a humantime string
  (`"20 s"`, `"1h"`, `"30 days"`, `"1h 30m"`: numbers with units `ns`..`y`, no fractions, no
  signs) that the pageserver's parser accepts without overflow; `bool` is a boolean.
- `render_tenant_config` is deterministic: two comment lines, a blank line, `[tenant_config]`,
  then the set keys sorted by TOML key, one per line, strings TOML-escaped; `None` values mean
  "unset" and are omitted. `parse_tenant_config(render_tenant_config(x))` returns `x` with
  snake_case keys.
- Pure: no I/O (the engine writes the file).
"""

from __future__ import annotations

import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from pageserver_operator.formats import errors

#: File name of the tenant config inside the tenant directory.
TENANT_CONFIG_FILE_NAME: Final = "config"
#: The only top-level table of the file.
TENANT_CONFIG_TABLE: Final = "tenant_config"

ConfigKind = Literal["bytes", "duration", "int", "bool"]

_I64_LIMIT: Final = 1 << 63
_U64_LIMIT: Final = 1 << 64
_MAX_DURATION_TEXT: Final = 100

HEADER: Final = (
    "# This file contains a specific per-tenant's config.\n"
    "#  It is read in case of pageserver restart.\n"
    "\n"
    f"[{TENANT_CONFIG_TABLE}]\n"
)
"""Start of every rendered file: two comment lines, a blank line and the table header."""


@dataclass(frozen=True)
class TenantConfigKey:
    """How one tenant config override is named and checked."""

    toml_key: str
    """snake_case key in the `[tenant_config]` table."""
    kind: ConfigKind
    """`bytes` (integer byte count), `duration` (humantime string), `int` or `bool`."""
    minimum: int = 0
    """Smallest allowed value for `bytes` and `int` kinds."""


TENANT_CONFIG_KEYS: Final[Mapping[str, TenantConfigKey]] = types.MappingProxyType(
    {
        "checkpointDistance": TenantConfigKey("checkpoint_distance", "bytes"),
        "checkpointTimeout": TenantConfigKey("checkpoint_timeout", "duration"),
        "compactionTargetSize": TenantConfigKey("compaction_target_size", "bytes"),
        "compactionPeriod": TenantConfigKey("compaction_period", "duration"),
        "compactionThreshold": TenantConfigKey("compaction_threshold", "int"),
        "gcHorizon": TenantConfigKey("gc_horizon", "bytes"),
        "gcPeriod": TenantConfigKey("gc_period", "duration"),
        "imageCreationThreshold": TenantConfigKey("image_creation_threshold", "int"),
        "pitrInterval": TenantConfigKey("pitr_interval", "duration"),
        "walreceiverConnectTimeout": TenantConfigKey("walreceiver_connect_timeout", "duration"),
        "laggingWalTimeout": TenantConfigKey("lagging_wal_timeout", "duration"),
        # NonZeroU64 in the pageserver: 0 is rejected there, so it is rejected here.
        "maxLsnWalLag": TenantConfigKey("max_lsn_wal_lag", "bytes", minimum=1),
        "traceReadRequests": TenantConfigKey("trace_read_requests", "bool"),
    }
)
"""camelCase spec key -> TOML key and kind."""

TENANT_CONFIG_TOML_KEYS: Final[Mapping[str, str]] = types.MappingProxyType(
    {spec.toml_key: camel for camel, spec in TENANT_CONFIG_KEYS.items()}
)
"""snake_case TOML key -> camelCase spec key."""

_BY_TOML_KEY: Final[Mapping[str, TenantConfigKey]] = types.MappingProxyType(
    {spec.toml_key: spec for spec in TENANT_CONFIG_KEYS.values()}
)

# humantime units: name -> (seconds multiplier, nanoseconds multiplier); exactly one is non-zero.
_UNITS: Final[Mapping[str, tuple[int, int]]] = types.MappingProxyType(
    {
        **dict.fromkeys(("nanos", "nsec", "ns"), (0, 1)),
        **dict.fromkeys(("usec", "us"), (0, 1_000)),
        **dict.fromkeys(("millis", "msec", "ms"), (0, 1_000_000)),
        **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), (1, 0)),
        **dict.fromkeys(("minutes", "minute", "mins", "min", "m"), (60, 0)),
        **dict.fromkeys(("hours", "hour", "hrs", "hr", "h"), (3_600, 0)),
        **dict.fromkeys(("days", "day", "d"), (86_400, 0)),
        **dict.fromkeys(("weeks", "week", "w"), (604_800, 0)),
        **dict.fromkeys(("months", "month", "M"), (2_630_016, 0)),
        **dict.fromkeys(("years", "year", "y"), (31_557_600, 0)),
    }
)
_DURATION_RE: Final = re.compile(r"[0-9]+ *[A-Za-z]+(?: *[0-9]+ *[A-Za-z]+)*")
_DURATION_PART_RE: Final = re.compile(r"([0-9]+) *([A-Za-z]+)")


def _duration_error(where: str, value: object, detail: str) -> errors.InvalidTenantConfig:
    return errors.InvalidTenantConfig(
        f"tenant config {where}: invalid duration {errors.show(value)}: {detail}"
    )


def _check_duration(where: str, value: object) -> str:
    """Accept a humantime duration string the pageserver can parse without overflow."""
    if not isinstance(value, str):
        raise errors.InvalidTenantConfig(
            f"tenant config {where} must be a duration string like '20 s' or '1h', got {errors.show(value)}"
        )
    if len(value) > _MAX_DURATION_TEXT or _DURATION_RE.fullmatch(value) is None:
        raise _duration_error(
            where, value, "expected NUMBER UNIT [NUMBER UNIT ...], like '20 s', '1h 30m', '30 days'"
        )
    seconds = nanos = 0
    for number_text, unit in _DURATION_PART_RE.findall(value):
        if unit not in _UNITS:
            raise _duration_error(
                where, value, f"unknown unit {unit!r} (use ns, us, ms, s, m, h, d, w, M, y)"
            )
        number = int(number_text)
        unit_seconds, unit_nanos = _UNITS[unit]
        if number >= _U64_LIMIT or number * unit_seconds >= _U64_LIMIT or number * unit_nanos >= _U64_LIMIT:
            raise _duration_error(where, value, "number is too large")
        seconds += number * unit_seconds
        nanos += number * unit_nanos
        if nanos >= _U64_LIMIT or seconds + nanos // 1_000_000_000 >= _U64_LIMIT:
            raise _duration_error(where, value, "duration is too large")
    return value


def _check_value(where: str, spec: TenantConfigKey, value: object) -> int | str | bool:
    if spec.kind == "duration":
        return _check_duration(where, value)
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise errors.InvalidTenantConfig(
                f"tenant config {where} must be a boolean, got {errors.show(value)}"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        noun = "a byte count (integer)" if spec.kind == "bytes" else "an integer"
        raise errors.InvalidTenantConfig(f"tenant config {where} must be {noun}, got {errors.show(value)}")
    if not spec.minimum <= value < _I64_LIMIT:
        raise errors.InvalidTenantConfig(
            f"tenant config {where} must be between {spec.minimum} and {_I64_LIMIT - 1}, got {value}"
        )
    return value


def _toml_string(text: str) -> str:
    """A TOML basic string (double-quoted) for `text`, escaping what TOML requires."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\t\n\f\r":
            out.append({"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: int | str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return _toml_string(value)


def render_tenant_config(overrides: Mapping[str, object]) -> str:
    """Validate camelCase overrides (from `spec.config`) and render the tenant `config` TOML text.

    `None` values are treated as unset and omitted. Raises `InvalidTenantConfig` naming the key.
    """
    if not isinstance(overrides, Mapping):
        raise errors.InvalidTenantConfig(f"tenant config must be a mapping, got {errors.show(overrides)}")
    values: dict[str, int | str | bool] = {}
    for key, value in overrides.items():
        spec = TENANT_CONFIG_KEYS.get(key) if isinstance(key, str) else None
        if spec is None:
            hint = ""
            if isinstance(key, str) and key in TENANT_CONFIG_TOML_KEYS:
                hint = f" (did you mean {TENANT_CONFIG_TOML_KEYS[key]!r}? spec keys are camelCase)"
            raise errors.InvalidTenantConfig(
                f"unknown tenant config key {errors.show(key)}{hint}; known keys: {', '.join(sorted(TENANT_CONFIG_KEYS))}"
            )
        if value is None:
            continue
        values[spec.toml_key] = _check_value(key, spec, value)
    lines = [f"{toml_key} = {_toml_value(values[toml_key])}\n" for toml_key in sorted(values)]
    return HEADER + "".join(lines)


def parse_tenant_config(text: str) -> dict[str, object]:
    """Parse the tenant `config` TOML text into snake_case overrides; raises `InvalidTenantConfig`.

    A file without the `[tenant_config]` table means "all defaults" (empty result).
    """
    if not isinstance(text, str):
        raise errors.InvalidTenantConfig(f"tenant config must be text, got {errors.show(text)}")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise errors.InvalidTenantConfig(f"tenant config is not valid TOML: {exc}") from exc
    for key in document:
        if key != TENANT_CONFIG_TABLE:
            raise errors.InvalidTenantConfig(
                f"tenant config has unknown top-level key {errors.show(key)} (only [{TENANT_CONFIG_TABLE}] is allowed)"
            )
    table = document.get(TENANT_CONFIG_TABLE, {})
    if not isinstance(table, dict):
        raise errors.InvalidTenantConfig(
            f"tenant config {TENANT_CONFIG_TABLE} must be a table, got {errors.show(table)}"
        )
    result: dict[str, object] = {}
    for key in sorted(table):
        spec = _BY_TOML_KEY.get(key)
        if spec is None:
            raise errors.InvalidTenantConfig(
                f"unknown tenant config key {errors.show(key)} in [{TENANT_CONFIG_TABLE}]; "
                f"known keys: {', '.join(sorted(_BY_TOML_KEY))}"
            )
        result[key] = _check_value(key, spec, table[key])
    return result
