"""Requests through obstore (Rust ``object_store``): the request path of `remote.s3.storage`.

Why a library and which one: issue 19 measured the S3 clients side by side (docs/performance.md,
"S3 data path: the decision (issue 19)"): the obstore program was the best durable client on
D1-D3 and tied with the best on the 26,690-layer shape, so layer transfers went through it first.
In the operator's attach it gained 20-30 % on D1-D3 (CLI) and lost 22 % on 26,690 small layers;
the profile then found the cause outside the client (fsyncs, a spinning directory lock, one future
per file: "Issue 19, second pass" there), and D7 is at 1.16 x s5cmd. Since then the listings, the
index and the deletes go through it too (`list_dirs`, `list_prefix`, `get_bytes`, `put_bytes`,
`delete`): a CLI attach sends its first request without importing botocore (about 150 ms of its
start-up: docs/performance.md, "CLI start-up"); botocore serves only where this path does not
apply (see `s3.client.make_transfer`).

Scope and invariants:

- One ``S3Store`` per backend. With an ``endpoint`` (an S3-compatible server): path-style
  addressing (``<endpoint>/<bucket>/<key>``), plain http allowed when the endpoint says http.
  Without one (AWS itself): virtual-host addressing (``https://<bucket>.s3.<region>.amazonaws.com``).
- Credentials come from botocore's default chain (environment, config files, web identity /
  IRSA, container and instance metadata; botocore refreshes them), or straight from the
  environment when it alone decides that chain's answer (`s3.client.environment_credentials`):
  obstore asks `_credentials`, which hands it the current frozen credentials, valid for
  `CREDENTIAL_LIFETIME` at most (botocore refreshes at least 10 minutes before an expiry, so they
  never expire in between).
  Nothing obstore would read from the environment itself overrides them.
- Payloads are signed: over plain http the PUT body's SHA-256 is in the signature (a GET's empty
  body too); over https the payload is ``UNSIGNED-PAYLOAD``, which TLS protects.
- obstore's own retries are off (``max_retries`` 0): `retry.Retrier` is the only retry layer,
  and one attempt of ours is exactly one request.
- Every failure is mapped at once, from the answer's status code and S3 error code, into the
  project's errors (`s3.errors.map_obstore_error`): no request is ever repeated through botocore.
- A PUT is one request with the file's exact length, its body a read-only ``mmap`` of the
  caller's file (obstore borrows the buffer: no copy of the file in the process's memory).
- Listings: ``list_dirs`` is one delimiter listing (all its pages); ``list_from`` lists a
  directory recursively from a key on (S3's ``start-after``), in the server's key order, so a
  caller wanting a plain string prefix stops at the first key past it. object_store reports a
  key with a trailing ``/`` (a "folder" marker) without it.
- Bodies are streamed in chunks of at most `CHUNK_SIZE` (``GetResult.stream``); the size of the
  object (whole GET) or of the range and the object's total (ranged GET) are known before the
  first byte, from the answer's head.
- Nothing is logged; no credential ever reaches a message (messages name the bucket and key).

Crash behaviour: nothing is kept but the connection pool inside the store.
"""

from __future__ import annotations

import datetime
import mmap
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import obstore
import obstore.exceptions
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore import ObjectMeta
    from obstore.store import ClientConfig, S3Config, S3Credential

#: The largest chunk of a body handed to the caller.
CHUNK_SIZE = 1 << 20
#: Objects per chunk of a listing handed to the caller (S3 pages hold 1,000).
LIST_CHUNK = 1000
#: The bound of one whole request, its body included (stalls end by the read timeout first).
REQUEST_TIMEOUT = datetime.timedelta(hours=1)
#: How long obstore may keep one set of botocore's credentials before asking again.
CREDENTIAL_LIFETIME = datetime.timedelta(minutes=5)

#: What obstore raises for a request: its own errors, and Python's own for some (an object that
#: is not there is a ``FileNotFoundError``; a connection failure may be a ``ConnectionError`` or
#: a ``TimeoutError``). Only the calls into obstore are wrapped, never the caller's file I/O.
TRANSFER_EXCEPTIONS: tuple[type[BaseException], ...] = (
    obstore.exceptions.BaseError,
    FileNotFoundError,
    ConnectionError,
    TimeoutError,
)


class TransferStream:
    """The body of one GET: ``length`` bytes (of an object of ``total``), read with `chunks`."""

    def __init__(self, result: Any, length: int, total: int) -> None:
        self.length: int | None = length
        self.total: int | None = total
        self._result = result

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The body in chunks of at most `CHUNK_SIZE` (obstore gathers at least half of it per
        chunk; a longer one is cut, without a copy); obstore's errors propagate (the caller maps
        them)."""
        for chunk in self._result.stream(min_chunk_size=CHUNK_SIZE // 2):
            view = memoryview(chunk)
            for start in range(0, len(view), CHUNK_SIZE):
                yield view[start : start + CHUNK_SIZE]

    def finished(self) -> None:
        pass

    def close(self) -> None:
        self._result = None


class Transfer:
    """GET, ranged GET and PUT of objects in one bucket, through one obstore ``S3Store``."""

    def __init__(
        self,
        bucket: str,
        region: str,
        credentials: Any,
        *,
        endpoint: str | None,
        ca_bundle: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        pool_size: int = 16,
    ) -> None:
        """``credentials``: botocore's (``Session.get_credentials()``); ``endpoint`` None is AWS
        itself; ``ca_bundle``: a PEM file of extra roots to trust (``AWS_CA_BUNDLE``)."""
        self._credentials_source = credentials
        https = endpoint is None or endpoint.startswith("https:")
        client_options: ClientConfig = {
            "allow_http": not https,
            "connect_timeout": datetime.timedelta(seconds=connect_timeout),
            "read_timeout": datetime.timedelta(seconds=read_timeout),
            # obstore's own bound of a whole request (30 s by default) would cut a large layer on
            # a slow link; a stalled transfer is the read timeout's to end
            "timeout": REQUEST_TIMEOUT,
            "pool_max_idle_per_host": str(pool_size),
            "user_agent": "pageserver-operator",
        }
        if ca_bundle:
            with open(ca_bundle, "rb") as f:
                client_options["root_certificate"] = f.read()
        config: S3Config = {
            "region": region,
            "virtual_hosted_style_request": endpoint is None,
            "unsigned_payload": https,
            "skip_signature": False,
        }
        if endpoint is not None:
            config["endpoint"] = endpoint
        self.endpoint = endpoint
        self._store = S3Store(
            bucket,
            config=config,
            client_options=client_options,
            retry_config={
                "max_retries": 0,
                "retry_timeout": datetime.timedelta(seconds=connect_timeout + read_timeout),
            },
            credential_provider=self._credentials,
        )

    @property
    def store(self) -> S3Store:
        return self._store

    def _credentials(self) -> S3Credential:
        """botocore's current credentials (refreshed there), in obstore's form."""
        creds = self._credentials_source.get_frozen_credentials()
        return {
            "access_key_id": creds.access_key,
            "secret_access_key": creds.secret_key,
            "token": creds.token,
            "expires_at": datetime.datetime.now(datetime.UTC) + CREDENTIAL_LIFETIME,
        }

    def get(self, full_key: str) -> TransferStream:
        """One GET of the whole object; its size is known from the head."""
        result = obstore.get(self._store, full_key)
        size = int(result.meta["size"])
        return TransferStream(result, size, size)

    def get_range(self, full_key: str, start: int, length: int) -> TransferStream:
        """One GET of bytes ``[start, start + length)``; `TransferStream.total` is the object's size
        (a range past the object's end is answered with what there is: the caller checks)."""
        result = obstore.get(self._store, full_key, options={"range": (start, start + length)})
        lo, hi = result.range
        return TransferStream(result, int(hi) - int(lo), int(result.meta["size"]))

    def get_bytes(self, full_key: str) -> bytes:
        """One GET of a whole (small) object, returned at once."""
        return bytes(obstore.get(self._store, full_key).bytes())

    def put_bytes(self, full_key: str, data: bytes) -> None:
        """One PUT of ``data``."""
        obstore.put(self._store, full_key, data, use_multipart=False)

    def delete(self, full_key: str) -> None:
        """One DELETE (S3 answers a missing key with success too)."""
        obstore.delete(self._store, full_key)

    def list_dirs(self, full_dir: str) -> list[str]:
        """The common prefixes directly under ``full_dir`` (``""`` or ending in ``/``), as full
        keys without their trailing ``/``: one delimiter listing, all its pages."""
        result = obstore.list_with_delimiter(self._store, full_dir.removesuffix("/") or None)
        return list(result["common_prefixes"])

    def list_from(self, full_dir: str, after: str | None) -> Iterator[Sequence[ObjectMeta]]:
        """Every object under ``full_dir`` (``""`` or ending in ``/``), recursively, from the
        first key after ``after`` on, in chunks, in the server's key order (S3's is
        lexicographic); pages are requested as the chunks are taken."""
        yield from obstore.list(
            self._store, full_dir.removesuffix("/") or None, offset=after, chunk_size=LIST_CHUNK
        )

    def list_prefix(self, full: str) -> dict[str, int]:
        """Every object whose key starts with ``full`` (S3's plain string prefix: ``a/b`` matches
        ``a/bc/d``), with its size. obstore lists by directory, so: the directory of ``full``,
        from the key just before ``full`` on (``start-after``), until the first key past every
        key that starts with it (the server lists in key order, and those keys are contiguous
        in it)."""
        directory, _, name = full.rpartition("/")
        directory = directory + "/" if directory else ""
        after = full[:-1] if name else None
        found: dict[str, int] = {}
        for chunk in self.list_from(directory, after):
            for meta in chunk:
                key = meta["path"]
                if key.startswith(full):
                    found[key] = int(meta["size"])
                elif key > full:
                    return found
        return found

    def put_file(self, full_key: str, src: BinaryIO, size: int) -> None:
        """One PUT of the first ``size`` bytes of ``src`` (a regular file)."""
        if size == 0:
            obstore.put(self._store, full_key, b"", use_multipart=False)
            return
        with mmap.mmap(src.fileno(), size, access=mmap.ACCESS_READ) as body, memoryview(body) as view:
            obstore.put(self._store, full_key, view, use_multipart=False)

    def close(self) -> None:
        pass
