"""The key syntax shared by every remote storage backend.

Invariants:

- One key syntax for every backend (`validate_key`): relative, '/'-separated, no empty, ``.`` or
  ``..`` segments, no NUL, no temp-file suffix, S3's length limits. A key that is valid on one
  backend is valid on all of them, so tests against the local backend mean something for S3.
- Listing prefixes (`validate_prefix`) are ``""`` or key-like text; a directory prefix ends in '/'.
- Pure: no I/O, no imports of other modules of the package (the URL model and both backends
  import this one).
"""

from __future__ import annotations

#: Suffix of the local backend's in-progress writes. Reserved on every backend so that no key can
#: be mistaken for (or hidden as) a temp file.
TEMP_SUFFIX = ".___temp"

_MAX_KEY_BYTES = 1024  # S3's limit on a full key (prefix included)
_MAX_SEGMENT_BYTES = 255  # a file name on every Linux file system


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise `ValueError` naming the problem."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid remote key {key!r}: empty")
    if "\x00" in key:
        raise ValueError(f"invalid remote key {key!r}: contains NUL")
    if key.startswith("/"):
        raise ValueError(f"invalid remote key {key!r}: must be relative (no leading '/')")
    segments = key.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"invalid remote key {key!r}: empty, '.' or '..' path segment")
        if len(segment.encode()) > _MAX_SEGMENT_BYTES:
            raise ValueError(
                f"invalid remote key {key!r}: a segment is longer than {_MAX_SEGMENT_BYTES} bytes"
            )
    if segments[-1].endswith(TEMP_SUFFIX):
        raise ValueError(f"invalid remote key {key!r}: the suffix {TEMP_SUFFIX!r} is reserved for temp files")
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise ValueError(f"invalid remote key {key[:64]!r}...: longer than {_MAX_KEY_BYTES} bytes")
    return key


def validate_prefix(prefix: str, *, directory: bool) -> str:
    """Return a listing prefix if valid: ``""``, or key-like text (ending in '/' when ``directory``).

    A non-directory prefix matches keys by plain string prefix, as S3 does (``tenants/ab`` matches
    ``tenants/abc/x``).
    """
    if prefix == "":
        return prefix
    if directory and not prefix.endswith("/"):
        raise ValueError(f"invalid remote directory prefix {prefix!r}: must end with '/'")
    body = prefix[:-1] if prefix.endswith("/") else prefix
    try:
        validate_key(body)
    except ValueError as exc:
        raise ValueError(f"invalid remote prefix {prefix!r}: {exc}") from None
    return prefix
