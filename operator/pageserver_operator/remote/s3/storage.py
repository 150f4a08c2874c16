"""Remote storage in an S3 bucket (AWS or an S3-compatible server), through obstore or botocore.

Key mapping (Neon's pageserver layout, docs/architecture.md, "Where the engine's rules come
from", Layouts): object ``KEY`` is stored as ``<prefix>/KEY``, or as ``KEY`` with no leading slash
when there is no prefix.

How requests are arranged (docs/architecture.md, "remote/"; the measured effect of each choice is
in docs/performance.md, "Changes made for these numbers"):

- One client per backend; its connection pool (``max_pool_connections``) is larger than the
  concurrency, with TCP keep-alive, so no request ever waits for a connection.
- One ``BoundedSemaphore(concurrency)`` is held around every request (a listing page, a GET
  *including its body stream*, a PUT, a DELETE), shared by all operations. Backoff sleeps happen
  outside it.
- botocore's own retries are off (one attempt per request); `retry.Retrier` retries transient
  failures with capped backoff. There is exactly one retry layer, so no retry storms.
- Downloads are one streaming GET per object with **no HEAD**: the size comes from the caller
  (the index), is checked against ``Content-Length`` before the body is read and against the
  byte count after; the body is copied in 1 MiB chunks. A transient failure mid-stream restarts
  the whole GET after truncating ``out``, and ``progress`` is called with the negative count
  of the abandoned bytes so the caller's totals stay right.
- Every request goes through obstore (`s3.transfer`: the decision and its figures are in
  docs/performance.md, "S3 data path: the decision (issue 19)"), for an endpoint and for AWS
  itself alike: layer GETs and PUTs (a fraction of botocore's CPU per request), listings, the
  index and deletes. Its failures are mapped at once into our errors
  (`s3.errors.map_obstore_error`): one attempt is one request, never redone through botocore.
  botocore carries them instead without credentials (its error says what to set), when a proxy
  applies, or with ``direct=False`` (what tests that hook into botocore's events or use moto
  in-process pass). botocore's client is built at once only when its credential chain is needed
  (`s3.client.environment_credentials`), otherwise on first use: a CLI attach with credentials
  in its environment never imports botocore.
- A plain string prefix (``list_objects("…/index_part.json")``) is listed on the obstore path
  from the key before it on (S3's ``start-after``) until the first key past it, in the server's
  key order (`s3.transfer.Transfer.list_prefix`): one page for an index's generations, not the timeline's layers.
- Objects of at least `ranged.RANGED_MIN` bytes, when the obstore path applies, the concurrency
  is above 1 and ``out`` can write at an offset (``out.pwrite``), are fetched as parallel ranged
  GETs (`s3.ranged`): one stream per object leaves the server's and the network's other streams
  idle when few large layers remain (docs/performance.md, D3).
- With an ``endpoint`` (S3-compatible server) addressing is path-style, and checksums are only
  sent or checked when the operation requires them (many servers lack the newer algorithms).
- Uploads are one PUT with the exact ``ContentLength`` (no multipart: layer files are at most a
  few hundred MiB, well under S3's 5 GiB single-PUT limit).
- ``list_dirs`` returns the common prefixes as the server reports them: SeaweedFS keeps a
  "directory" whose objects were all deleted, so a listed name may hold no object.

Errors are classified by `s3.errors`; the client is built by `s3.client`; response bodies are
read through `s3.streams`; large objects are fetched in parallel ranges by `s3.ranged`. Credentials come only from the standard AWS chain (environment,
config files, IRSA, instance profile) and are never logged or put into messages.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from pageserver_operator.remote import base, errors, keys, metrics, retry, url
from pageserver_operator.remote.s3 import client as s3_client
from pageserver_operator.remote.s3 import errors as s3_errors
from pageserver_operator.remote.s3 import ranged, streams
from pageserver_operator.remote.s3 import transfer as s3_transfer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ListObjectsV2OutputTypeDef

log = logging.getLogger(__name__)

T = TypeVar("T")


class S3Storage:
    """`base.RemoteStorage` over ``s3://bucket/prefix``."""

    def __init__(
        self,
        config: url.RemoteConfig,
        *,
        retrier: retry.Retrier | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        list_page_size: int = 1000,
        direct: bool = True,
    ) -> None:
        """Create the client for ``config`` (an ``s3`` one); nothing is sent until the first operation.

        ``retrier`` replaces the default retry policy (tests pass one that does not sleep);
        ``connect_timeout``/``read_timeout`` bound each request's socket waits, in seconds;
        ``list_page_size`` is ListObjectsV2's ``MaxKeys`` on the botocore path (S3 caps it at 1000);
        ``direct=False`` sends every request through botocore (see `s3.transfer`).
        """
        if config.kind != "s3" or config.bucket is None:
            raise ValueError(f"S3Storage serves s3:// configs, not {config.describe()}")
        self._config = config
        bucket, endpoint, region, concurrency = (
            config.bucket,
            config.endpoint,
            config.region,
            config.concurrency,
        )
        self._bucket = bucket
        self._prefix = config.prefix
        self._concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._retrier = retrier or retry.Retrier()
        self._page_size = list_page_size
        self._timeouts = (connect_timeout, read_timeout)
        self._boto_lock = threading.Lock()
        self._boto_client: S3Client | None = None
        credentials: Any = s3_client.environment_credentials() if direct else None
        if credentials is not None:  # the obstore path without botocore (see s3.client)
            ca_bundle: str | None = os.environ.get("AWS_CA_BUNDLE") or None
        else:
            self._boto_client, credentials, ca_bundle = self._create_boto()
        self._direct: s3_transfer.Transfer | None = None
        #: parallel ranged GETs of large objects (they need the obstore path and concurrency > 1)
        self._ranged: ranged.RangedGets | None = None
        if direct:
            self._direct = s3_client.make_transfer(
                credentials,
                ca_bundle,
                endpoint,
                bucket,
                region,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                pool_size=concurrency + s3_client.POOL_HEADROOM,
            )
        if self._direct is not None and concurrency > 1:
            self._ranged = ranged.RangedGets(
                bucket, self._direct, self._slots, self._retrier, concurrency, self._map_transfer_error
            )

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def describe(self) -> str:
        return self._config.describe()

    def close(self) -> None:
        if self._ranged is not None:
            self._ranged.close()
        if self._direct is not None:
            self._direct.close()
        if self._boto_client is not None:
            self._boto_client.close()

    # -- the botocore client (built when first needed) -----------------------------------------

    def _create_boto(self) -> tuple[S3Client, Any, str | None]:
        config = self._config
        return s3_client.create(
            endpoint=config.endpoint,
            region=config.region,
            pool_size=self._concurrency + s3_client.POOL_HEADROOM,
            connect_timeout=self._timeouts[0],
            read_timeout=self._timeouts[1],
        )

    @property
    def _client(self) -> S3Client:
        """botocore's client: built on first use when the obstore path started without it."""
        client = self._boto_client
        if client is None:
            with self._boto_lock:
                if self._boto_client is None:
                    self._boto_client = self._create_boto()[0]
                client = self._boto_client
        return client

    # -- listing ---------------------------------------------------------------------------------

    def list_dirs(self, prefix: str) -> list[str]:
        keys.validate_prefix(prefix, directory=True)
        full = self._full(prefix)
        names: list[str] = []
        direct = self._direct
        if direct is not None:
            with metrics.observe("list"):
                found = self._retrier.call(
                    "list", prefix, lambda: self._transfer_request("list", full, lambda: direct.list_dirs(full))
                )
            return sorted(n for p in found if (n := p[len(full) :]) and "/" not in n and p.startswith(full))
        with metrics.observe("list"):
            for page in self._pages(prefix, delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    name = common.get("Prefix", "")[len(full) :].removesuffix("/")
                    if name and "/" not in name:
                        names.append(name)
        return sorted(names)

    def list_objects(self, prefix: str) -> dict[str, int]:
        keys.validate_prefix(prefix, directory=False)
        strip = len(self._prefix) + 1 if self._prefix else 0
        found: dict[str, int] = {}
        direct = self._direct
        if direct is not None:
            full = self._full(prefix)
            with metrics.observe("list"):
                listed = self._retrier.call(
                    "list", prefix, lambda: self._transfer_request("list", full, lambda: direct.list_prefix(full))
                )
            return {k[strip:]: size for k, size in sorted(listed.items())}
        with metrics.observe("list"):
            for page in self._pages(prefix, delimiter=None):
                for obj in page.get("Contents", []):
                    full_key = obj.get("Key", "")
                    if self._prefix and not full_key.startswith(self._prefix + "/"):
                        continue
                    found[full_key[strip:]] = obj.get("Size", 0)
        return dict(sorted(found.items()))

    def _pages(self, prefix: str, delimiter: str | None) -> Iterator[ListObjectsV2OutputTypeDef]:
        """ListObjectsV2 pages under ``prefix``; each page request is retried on its own."""
        full = self._full(prefix)
        token: str | None = None
        while True:

            def request(token: str | None = token) -> ListObjectsV2OutputTypeDef:
                kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": full, "MaxKeys": self._page_size}
                if delimiter is not None:
                    kwargs["Delimiter"] = delimiter
                if token is not None:
                    kwargs["ContinuationToken"] = token
                return self._request("list", full, lambda: self._client.list_objects_v2(**kwargs))

            page = self._retrier.call("list", prefix, request)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    # -- reading ---------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        full = self._full(keys.validate_key(key))
        direct = self._direct
        if direct is not None:

            def get() -> bytes:
                data = self._transfer_request("get", full, lambda: direct.get_bytes(full))
                metrics.count_bytes("download", len(data))
                return data

            return self._retrier.run("get", key, get)

        def attempt() -> bytes:
            with self._slots:
                try:
                    body = self._client.get_object(Bucket=self._bucket, Key=full)["Body"]
                    try:
                        data = body.read()
                    finally:
                        body.close()
                except s3_errors.remote_exceptions() as exc:
                    raise self._map_error(exc, "get", full) from exc
            metrics.count_bytes("download", len(data))
            return data

        return self._retrier.run("get", key, attempt)

    def download_to(
        self,
        key: str,
        out: BinaryIO,
        expected_size: int | None,
        progress: base.ProgressCallback | None = None,
    ) -> int:
        full = self._full(keys.validate_key(key))
        pwrite = getattr(out, "pwrite", None)
        if (
            expected_size is not None
            and expected_size >= ranged.RANGED_MIN
            and pwrite is not None
            and self._ranged is not None
        ):
            return self._ranged.download(key, full, out, pwrite, expected_size, progress)
        reported = streams.Reported(progress)

        def attempt() -> int:
            reported.restart()
            out.seek(0)
            out.truncate()
            with self._slots:
                stream = self._open_stream(full)
                try:
                    length = stream.length
                    if expected_size is not None and length is not None and length != expected_size:
                        raise self._size_mismatch(full, expected_size, length)
                    copied = streams.copy_body(stream, lambda chunk, _pos: out.write(chunk), 0, reported)
                finally:
                    stream.close()
            if expected_size is not None and copied != expected_size:
                raise self._size_mismatch(full, expected_size, copied)
            return copied

        return self._retrier.run("download", key, attempt)

    def _open_stream(self, full: str) -> streams.Stream:
        """One GET of ``full``: through obstore (`s3.transfer`) when this backend has that path,
        else through botocore; either way one request, its failure mapped at once."""
        direct = self._direct
        if direct is not None:
            try:
                return streams.TransferStream(direct.get(full), full, self._map_transfer_error)
            except s3_transfer.TRANSFER_EXCEPTIONS as exc:
                raise self._map_transfer_error(exc, "download", full) from exc
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=full)
        except s3_errors.remote_exceptions() as exc:
            raise self._map_error(exc, "download", full) from exc
        return streams.BotoStream(response, full, self._map_error)

    # -- writing ---------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._full(keys.validate_key(key))
        direct = self._direct

        def attempt() -> None:
            if direct is not None:
                self._transfer_request("put", full, lambda: direct.put_bytes(full, data))
                metrics.count_bytes("upload", len(data))
                return
            self._request(
                "put",
                full,
                lambda: self._client.put_object(
                    Bucket=self._bucket, Key=full, Body=data, ContentLength=len(data)
                ),
            )
            metrics.count_bytes("upload", len(data))

        self._retrier.run("put", key, attempt)

    def upload_file(
        self, key: str, path: Path, size: int, progress: base.ProgressCallback | None = None
    ) -> None:
        """PUT ``path`` (exactly ``size`` bytes) as ``key``; ``progress(size)`` once, on success.

        botocore may read the body more than once (payload hash, checksum), so per-chunk progress
        would over-count; the whole size is reported when the object exists.
        """
        full = self._full(keys.validate_key(key))

        def attempt() -> None:
            with open(path, "rb") as src:  # the caller's file: its errors propagate as they are
                actual = os.fstat(src.fileno()).st_size
                if actual != size:
                    raise errors.PermanentRemoteError(
                        f"cannot upload {path} to {self._where(full)}: expected a file of {size} bytes, it has {actual}"
                    )
                direct = self._direct
                if direct is not None:
                    self._transfer_request("upload", full, lambda: direct.put_file(full, src, size))
                else:
                    self._request(
                        "upload",
                        full,
                        lambda: self._client.put_object(
                            Bucket=self._bucket, Key=full, Body=src, ContentLength=size
                        ),
                    )
            metrics.count_bytes("upload", size)

        self._retrier.run("upload", key, attempt)
        if progress is not None:
            progress(size)

    def delete(self, key: str) -> None:
        full = self._full(keys.validate_key(key))
        # S3 DeleteObject already succeeds for a missing key.
        direct = self._direct
        if direct is not None:
            self._retrier.run(
                "delete", key, lambda: self._transfer_request("delete", full, lambda: direct.delete(full))
            )
            return
        self._retrier.run(
            "delete",
            key,
            lambda: self._request(
                "delete", full, lambda: self._client.delete_object(Bucket=self._bucket, Key=full)
            ),
        )

    # -- helpers ---------------------------------------------------------------------------------

    def _full(self, key_or_prefix: str) -> str:
        return f"{self._prefix}/{key_or_prefix}" if self._prefix else key_or_prefix

    def _where(self, full_key: str) -> str:
        return s3_errors.where(self._bucket, full_key)

    def _request(self, op: str, full_key: str, call: Callable[[], T]) -> T:
        """One request under the concurrency limit, with its failure classified."""
        with self._slots:
            try:
                return call()
            except s3_errors.remote_exceptions() as exc:
                raise self._map_error(exc, op, full_key) from exc

    def _transfer_request(self, op: str, full_key: str, call: Callable[[], T]) -> T:
        """One request of the obstore path under the concurrency limit, its failure mapped."""
        with self._slots:
            try:
                return call()
            except s3_transfer.TRANSFER_EXCEPTIONS as exc:
                raise self._map_transfer_error(exc, op, full_key) from exc

    def _size_mismatch(self, full_key: str, expected: int, got: int) -> errors.PermanentRemoteError:
        return s3_errors.size_mismatch(self._bucket, full_key, expected, got)

    def _map_error(self, exc: BaseException, op: str, full_key: str) -> errors.RemoteError:
        return s3_errors.map_error(
            exc, op=op, bucket=self._bucket, full_key=full_key, endpoint=self._config.endpoint
        )

    def _map_transfer_error(self, exc: BaseException, op: str, full_key: str) -> errors.RemoteError:
        return s3_errors.map_obstore_error(
            exc, op=op, bucket=self._bucket, full_key=full_key, endpoint=self._config.endpoint
        )
