"""Errors of the formats layer.

Invariants:

- Every error raised by `pageserver_operator.formats` is a `FormatError`, which is a `ValueError`:
  callers can catch one class for "this input is not a valid pageserver file / name / value".
- Each error carries a machine `reason` (CamelCase, usable as `status.reason` or an Event reason)
  as a class attribute of its subclass; callers branch on the class or on `reason`, never on the
  text.
- The human message names the offending value, rendered by `show()`: truncated to a sane length
  and with control (and other non-printable) characters escaped, so that a hostile input can
  neither flood a log line nor forge one.
"""

from __future__ import annotations

from typing import Final

#: Longest rendering of an offending value, in characters (before quoting and escaping).
SHOW_LIMIT: Final = 120


def show(value: object, limit: int = SHOW_LIMIT) -> str:
    """Render `value` for an error message: quoted, escaped, truncated.

    Strings are shown with `repr()` (which escapes control and non-printable characters);
    other values are shown with their `repr()`, itself escaped. Anything longer than `limit`
    characters is cut and marked with the original length.
    """
    if isinstance(value, str):
        text = value
        if len(text) > limit:
            return f"{text[:limit]!r}... ({len(text)} characters)"
        return repr(text)
    rendered = repr(value)
    if len(rendered) > limit:
        rendered = f"{rendered[:limit]}... ({len(rendered)} characters)"
    # repr() of arbitrary objects may still contain raw control characters (custom __repr__).
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in rendered)


class FormatError(ValueError):
    """Base of every formats-layer error: the input is not a valid name, value or file."""

    reason: str = "InvalidFormat"
    """Machine-readable reason (CamelCase)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidLsn(FormatError):
    """An LSN text or value is malformed or out of range."""

    reason = "InvalidLsn"


class InvalidId(FormatError):
    """A tenant or timeline id is not 32 lowercase hex characters (or 16 bytes)."""

    reason = "InvalidId"


class InvalidLayerName(FormatError):
    """A layer file name does not match the canonical grammar, or its ranges are empty."""

    reason = "InvalidLayerName"


class InvalidGeneration(FormatError):
    """A generation is not a u32 (or has no successor)."""

    reason = "InvalidGeneration"


class InvalidMetadata(FormatError):
    """The timeline `metadata` file is malformed (wrong length, bad header, bad body)."""

    reason = "InvalidMetadata"


class MetadataChecksumMismatch(InvalidMetadata):
    """The CRC-32C stored in the `metadata` header does not match its body."""

    reason = "MetadataChecksumMismatch"


class UnsupportedMetadataVersion(InvalidMetadata):
    """The `metadata` header names a format version other than 3 or 4."""

    reason = "UnsupportedMetadataVersion"


class InvalidIndexPart(FormatError):
    """`index_part.json` is malformed, has wrong types, or names an invalid layer."""

    reason = "InvalidIndexPart"


class InvalidTenantConfig(FormatError):
    """A tenant config override or the tenant `config` TOML file is invalid."""

    reason = "InvalidTenantConfig"
