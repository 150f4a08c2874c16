"""Where the remote storage is: the ``--remote`` URL and its parsed form, `RemoteConfig`.

Two URL forms are accepted (README.md, "Configuration": the ``remote`` setting):

- ``file:///absolute/path``: a local directory (`local_fs.LocalFsStorage`), the embedded default.
- ``s3://BUCKET[/PREFIX]?endpoint=http://HOST:PORT&region=REGION``: a bucket, optionally under a
  prefix, on AWS or an S3-compatible server (`s3.storage.S3Storage`). ``endpoint`` defaults to
  ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; ``region`` to ``AWS_REGION`` /
  ``AWS_DEFAULT_REGION``, else ``us-east-1``. Credentials never come from the URL: only from the
  standard AWS environment variables or the default credential chain (IRSA, instance profile).

Invariants:

- Every malformed URL is rejected here with a one-line `ValueError` that says what to write
  instead; the error never repeats anything that could be a secret (userinfo, query values).
- `RemoteConfig` validates itself, so a config built in code is held to the same rules as one
  parsed from a URL. ``describe()`` and ``repr()`` never contain credentials.
- An S3 prefix follows the key syntax of `keys` (the only module of the package imported here:
  the backends import this one, and `factory.open_remote` turns a config into a backend).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pageserver_operator.remote import keys

RemoteKind = Literal["local", "s3"]

DEFAULT_REGION = "us-east-1"
DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 1024

_USAGE = "use file:///absolute/path or s3://BUCKET[/PREFIX]?endpoint=http://HOST:PORT&region=REGION"
_S3_PARAMS = ("endpoint", "region")
# AWS rules for new buckets: 3-63 of lowercase letters, digits, '.', '-'; starts/ends alnum.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class RemoteConfig:
    """A parsed remote storage location. Fields that do not apply to ``kind`` stay at defaults."""

    kind: RemoteKind
    """``"local"`` (a directory) or ``"s3"`` (a bucket)."""
    local_path: Path | None = None
    """Root directory of the local backend (absolute)."""
    bucket: str | None = None
    """S3 bucket name."""
    prefix: str = ""
    """Key prefix inside the bucket, without leading or trailing '/'; ``""`` for none."""
    endpoint: str | None = None
    """S3 endpoint URL (``http(s)://HOST[:PORT]``) for S3-compatible servers; None for AWS."""
    region: str = DEFAULT_REGION
    """S3 region (just a name for most S3-compatible servers)."""
    concurrency: int = DEFAULT_CONCURRENCY
    """Requests in flight at once, shared by every operation of the backend."""

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(
                f"remote concurrency must be between 1 and {MAX_CONCURRENCY}, got {self.concurrency}"
            )
        if self.kind == "local":
            if self.local_path is None or not self.local_path.is_absolute():
                raise ValueError(
                    f"local remote storage needs an absolute path, got {self.local_path}; {_USAGE}"
                )
            if self.local_path == Path("/"):
                raise ValueError("refusing to use / as the remote storage root; pick a dedicated directory")
            if ".." in self.local_path.parts:
                raise ValueError(f"remote storage path {self.local_path} contains '..'; give it without '..'")
            if self.bucket is not None or self.endpoint is not None or self.prefix:
                raise ValueError("local remote storage takes no bucket, prefix or endpoint")
        elif self.kind == "s3":
            _check_bucket(self.bucket)
            if self.prefix:
                _check_prefix(self.prefix)
            if self.endpoint is not None:
                _check_endpoint(self.endpoint)
            if not _REGION_RE.match(self.region):
                raise ValueError(f"invalid S3 region {self.region!r}: use a name like us-east-1")
            if self.local_path is not None:
                raise ValueError("S3 remote storage takes no local path")
        else:
            raise ValueError(f"unknown remote storage kind {self.kind!r}: use 'local' or 's3'")

    def describe(self) -> str:
        """Where the data is, for logs and status; never contains credentials."""
        if self.kind == "local":
            return f"file://{self.local_path}"
        where = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        endpoint = f"endpoint {self.endpoint}, " if self.endpoint else ""
        return f"{where} ({endpoint}region {self.region})"


def parse_remote_url(url: str, concurrency: int = DEFAULT_CONCURRENCY) -> RemoteConfig:
    """Parse a ``file://`` or ``s3://`` remote URL; raise a one-line `ValueError` when malformed."""
    text = url.strip()
    if not text:
        raise ValueError(f"remote storage URL is empty; {_USAGE}")
    parts = urlsplit(text)
    shown = _redacted(text)
    if parts.fragment:
        raise ValueError(f"remote storage URL {shown} has a '#' fragment; {_USAGE}")
    params = _query_params(parts.query, shown)
    if parts.scheme == "file":
        if params:
            raise ValueError(
                f"unknown parameter(s) {', '.join(sorted(params))} in {shown}: file URLs take none"
            )
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"remote storage URL {shown} names a host: a local path must be absolute, "
                "written with three slashes as file:///absolute/path"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"remote storage path {path!r} is relative; write file:///absolute/path")
        return RemoteConfig(kind="local", local_path=Path(path), concurrency=concurrency)
    if parts.scheme == "s3":
        if "@" in parts.netloc:
            raise ValueError(
                "credentials in the remote storage URL are not supported: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or use IRSA / an instance profile) and write s3://BUCKET[/PREFIX]"
            )
        if not parts.netloc:
            raise ValueError(f"remote storage URL {shown} has no bucket; write s3://BUCKET[/PREFIX]")
        unknown = sorted(set(params) - set(_S3_PARAMS))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(unknown)} in {shown}: s3 URLs take only "
                + " and ".join(_S3_PARAMS)
            )
        endpoint = params.get("endpoint") or _env("AWS_ENDPOINT_URL_S3") or _env("AWS_ENDPOINT_URL")
        region = params.get("region") or _env("AWS_REGION") or _env("AWS_DEFAULT_REGION") or DEFAULT_REGION
        return RemoteConfig(
            kind="s3",
            bucket=parts.netloc,
            prefix=unquote(parts.path).strip("/"),
            endpoint=endpoint,
            region=region,
            concurrency=concurrency,
        )
    if not parts.scheme:
        hint = f" (did you mean file://{text}?)" if text.startswith("/") else ""
        raise ValueError(f"remote storage URL {shown} has no scheme{hint}; {_USAGE}")
    raise ValueError(f"unsupported remote storage scheme {parts.scheme!r} in {shown}; {_USAGE}")


def _check_bucket(bucket: str | None) -> None:
    if not bucket:
        raise ValueError("S3 remote storage has no bucket; write s3://BUCKET[/PREFIX]")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ValueError(
            f"invalid S3 bucket name {bucket!r}: use 3-63 lowercase letters, digits, '.' or '-', "
            "starting and ending with a letter or digit"
        )


def _check_prefix(prefix: str) -> None:
    if prefix != prefix.strip("/"):
        raise ValueError(f"S3 prefix {prefix!r} must not start or end with '/'")
    try:
        keys.validate_key(prefix)
    except ValueError as exc:
        raise ValueError(f"invalid S3 prefix {prefix!r}: {exc}") from None


def _check_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid S3 endpoint {_redacted(endpoint)}: write http://HOST:PORT or https://HOST")
    if "@" in parts.netloc:
        raise ValueError(
            "credentials in the S3 endpoint are not supported: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"invalid S3 endpoint {_redacted(endpoint)}: no query or fragment allowed")
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ValueError(f"invalid S3 endpoint {_redacted(endpoint)}: bad port") from None


def _query_params(query: str, shown: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in params:
            raise ValueError(f"parameter {name!r} given twice in {shown}")
        if not value:
            raise ValueError(f"parameter {name!r} has an empty value in {shown}")
        params[name] = value
    return params


def _redacted(url: str) -> str:
    """``url`` with userinfo and query values masked, for error messages."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    netloc = ("***@" + netloc) if "@" in parts.netloc else netloc
    query = "&".join(f"{name}=..." for name, _ in parse_qsl(parts.query, keep_blank_values=True))
    head = f"{parts.scheme}://{netloc}" if parts.scheme else netloc
    return repr(head + parts.path + (f"?{query}" if query else ""))


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None
