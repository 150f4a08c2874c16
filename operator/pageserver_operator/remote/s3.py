"""Remote storage in an S3 bucket (AWS or an S3-compatible server), through one botocore client.

Key mapping (reference §2.1, with PR #2993's convention): object ``KEY`` is stored as
``<prefix>/KEY``, or as ``KEY`` with no leading slash when there is no prefix.

How requests are arranged (see reference/s3-download-performance.md §0-1):

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
- With an ``endpoint``, layer downloads (``download_to``) and uploads (``upload_file``) take the
  direct path of `s3_direct` (SigV4 signed here, a plain keep-alive HTTP/1.1 connection,
  ``recv_into`` a reused buffer, ``sendfile`` for uploads): about a tenth of botocore's CPU per
  request. It is skipped whenever something hooks into the client's ``before-send`` event
  (moto, stubbers, fault injection), when a proxy applies, or with ``direct=False``; any answer
  but 200 is redone through botocore, so errors and their messages are botocore's.
- Objects of at least `RANGED_MIN` bytes, when the direct path applies and ``out`` can write at
  an offset (``out.pwrite``), are fetched as parallel ranged GETs of `RANGE_PART` bytes, each
  part written at its offset, on a pool of the backend's own (each part holds a request slot
  like any GET, so the limit is unchanged): one stream per object leaves the server's and the
  network's other streams idle when few large layers remain (docs/performance.md, D3). Each part
  is retried on its own; the object's size is checked against ``Content-Range`` of every part.
- With an ``endpoint`` (S3-compatible server) addressing is path-style, and checksums are only
  sent or checked when the operation requires them (many servers lack the newer algorithms).
- Uploads are one PUT with the exact ``ContentLength`` (no multipart: layer files are at most a
  few hundred MiB, well under S3's 5 GiB single-PUT limit).
- ``list_dirs`` returns the common prefixes as the server reports them: SeaweedFS keeps a
  "directory" whose objects were all deleted, so a listed name may hold no object.

Error mapping: ``NoSuchKey``/404 is `NotFound`; ``NoSuchBucket``, ``AccessDenied``,
``InvalidAccessKeyId``, ``SignatureDoesNotMatch`` and other 4xx are `PermanentRemoteError`
naming the bucket, the key and the S3 error code; 5xx, 429, ``SlowDown``, ``RequestTimeout``,
throttling and connection-level failures (refused, reset, timed out, truncated body) are
transient. Credentials come only from the standard AWS chain (environment, config files, IRSA,
instance profile) and are never logged or put into messages.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import logging
import os
import threading
import typing
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

import botocore.exceptions
import botocore.httpsession
import botocore.loaders
import botocore.session
import botocore.utils
import urllib3.exceptions
from botocore.config import Config as BotoConfig

from pageserver_operator.remote import base, errors, keys, metrics, retry, s3_direct, url

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ListObjectsV2OutputTypeDef

log = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK_SIZE = 1 << 20
#: Connections beyond the concurrency limit, so a request never waits for the pool.
POOL_HEADROOM = 4
#: Objects at least this large are downloaded as parallel ranged GETs (see the module doc).
RANGED_MIN = 128 << 20
#: The size of one ranged GET.
RANGE_PART = 32 << 20

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
        "InternalError",
        "ServiceUnavailable",
        "PriorRequestNotComplete",
        "IncompleteBody",
        "BadDigest",
        "XAmzContentSHA256Mismatch",
    }
)
#: Errors of the connection or of the response stream: worth another attempt.
_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    botocore.exceptions.HTTPClientError,  # ReadTimeout, ConnectionClosed, ResponseStreaming
    botocore.exceptions.ConnectionError,  # EndpointConnection, ConnectTimeout, Proxy, SSL
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ChecksumError,
    botocore.exceptions.FlexibleChecksumError,
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.MetadataRetrievalError,
    urllib3.exceptions.HTTPError,  # ProtocolError and friends, when not wrapped by botocore
    http.client.HTTPException,  # IncompleteRead
    ConnectionError,
    TimeoutError,
)
#: Everything a request or a body read can raise that `_map_error` classifies.
_REMOTE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ClientError,
    botocore.exceptions.BotoCoreError,
    *_TRANSIENT_EXCEPTIONS,
)


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
        ``list_page_size`` is ListObjectsV2's ``MaxKeys`` (S3 caps it at 1000);
        ``direct=False`` sends every request through botocore (see `s3_direct`).
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
        self._client, credentials, ca_bundle = _make_client(
            endpoint=endpoint,
            region=region,
            pool_size=concurrency + POOL_HEADROOM,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self._parts: ThreadPoolExecutor | None = None  # ranged GETs, created when first needed
        self._parts_lock = threading.Lock()
        self._direct: _Direct | None = None
        if direct and endpoint is not None:
            self._direct = _make_direct(
                self._client,
                credentials,
                ca_bundle,
                endpoint,
                bucket,
                region,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                pool_size=concurrency + POOL_HEADROOM,
            )

    @property
    def client(self) -> S3Client:
        """The underlying boto3 client (for tests and tools; requests made here bypass the limit)."""
        return self._client

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
        with self._parts_lock:
            pool, self._parts = self._parts, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if self._direct is not None:
            self._direct.client.close()
        self._client.close()

    # -- listing ---------------------------------------------------------------------------------

    def list_dirs(self, prefix: str) -> list[str]:
        keys.validate_prefix(prefix, directory=True)
        full = self._full(prefix)
        names: list[str] = []
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

        def attempt() -> bytes:
            with self._slots:
                try:
                    body = self._client.get_object(Bucket=self._bucket, Key=full)["Body"]
                    try:
                        data = body.read()
                    finally:
                        body.close()
                except _REMOTE_EXCEPTIONS as exc:
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
            and expected_size >= RANGED_MIN
            and pwrite is not None
            and self._concurrency > 1
            and self._direct is not None
            and self._direct.usable("GetObject")
        ):
            return self._download_ranged(key, full, out, pwrite, expected_size, progress)
        reported = _Reported(progress)

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
                    copied = _copy_body(stream, lambda chunk, _pos: out.write(chunk), 0, reported)
                finally:
                    stream.close()
            if expected_size is not None and copied != expected_size:
                raise self._size_mismatch(full, expected_size, copied)
            return copied

        return self._retrier.run("download", key, attempt)

    def _download_ranged(
        self,
        key: str,
        full: str,
        out: BinaryIO,
        pwrite: Callable[[bytes | memoryview, int], object],
        size: int,
        progress: base.ProgressCallback | None,
    ) -> int:
        """`download_to` as parallel ranged GETs; the first failure stops the other parts at
        their next chunk and is raised once every part has ended (none writes afterwards)."""
        out.seek(0)
        out.truncate()
        stop = threading.Event()

        def part(start: int, length: int) -> None:
            reported = _Reported(progress)

            def attempt() -> None:
                reported.restart()
                with self._slots:
                    if stop.is_set():
                        raise _PartStopped()
                    stream = self._open_range(full, start, length, size)
                    try:
                        end = _copy_body(stream, pwrite, start, reported, stop)
                    finally:
                        stream.close()
                if end != start + length:
                    raise self._size_mismatch(full, size, end)

            self._retrier.run("download", key, attempt)

        with self._parts_lock:
            if self._parts is None:
                self._parts = ThreadPoolExecutor(self._concurrency, thread_name_prefix="s3-range")
            pool = self._parts
        # Parts are submitted as slots free up, never all at once: the size comes from the
        # index, and an absurd one (2**63) must end in the size check of the first parts, not
        # in a list of billions of futures.
        in_flight: dict[concurrent.futures.Future[None], int] = {}
        failed: dict[int, BaseException] = {}

        def collect(done: set[concurrent.futures.Future[None]]) -> None:
            for f in done:
                start = in_flight.pop(f)
                if f.cancelled():  # the pool was shut down: this backend is closing
                    failed[start] = errors.TransientRemoteError(
                        f"download of {self._where(full)} stopped: the storage is closing"
                    )
                elif (exc := f.exception()) is not None and not isinstance(exc, _PartStopped):
                    failed[start] = exc

        for start in range(0, size, RANGE_PART):
            while len(in_flight) >= self._concurrency and not failed:
                done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                collect(done)
            if failed:
                break
            in_flight[pool.submit(part, start, min(RANGE_PART, size - start))] = start
        while in_flight:
            done, _ = concurrent.futures.wait(in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
            collect(done)
            if failed:
                stop.set()  # the other parts end at their next chunk
        if failed:
            # The lowest part's failure: it names what is wrong with the object itself (its size)
            # rather than a consequence (a range beyond the real end).
            raise failed[min(failed)]
        return size

    def _open_range(self, full: str, start: int, length: int, size: int) -> _Stream:
        """One ranged GET of an object of ``size`` bytes: directly, else (any answer but the asked
        206) through botocore. An answer giving another size for the object (``Content-Range``
        of a 206, or of a 416 for a range past its end) is a size mismatch."""
        assert self._direct is not None
        try:
            stream: _Stream = _DirectStream(
                self._direct.client.get_range(full, start, length), full, self._map_error
            )
        except s3_direct.Fallback as answer:
            if answer.total is not None and answer.total != size:
                raise self._size_mismatch(full, size, answer.total) from None
        except s3_direct.DirectError as exc:
            raise self._map_error(exc, "download", full) from exc
        else:
            if stream.total != size:
                stream.close()
                raise self._size_mismatch(full, size, -1 if stream.total is None else stream.total)
            return stream
        try:
            response = self._client.get_object(
                Bucket=self._bucket, Key=full, Range=f"bytes={start}-{start + length - 1}"
            )
        except _REMOTE_EXCEPTIONS as exc:
            raise self._map_error(exc, "download", full) from exc
        boto_stream = _BotoStream(response, full, self._map_error)
        try:
            boto_stream.total = int((response.get("ContentRange") or "").rpartition("/")[2])
        except ValueError:
            boto_stream.total = None
        if boto_stream.total != size:
            boto_stream.close()
            raise self._size_mismatch(full, size, -1 if boto_stream.total is None else boto_stream.total)
        return boto_stream

    def _open_stream(self, full: str) -> _Stream:
        """One GET of ``full``: directly (`s3_direct`) when nothing intercepts this client's
        requests, else -- and for every answer other than 200 -- through botocore."""
        direct = self._direct
        if direct is not None and direct.usable("GetObject"):
            try:
                return _DirectStream(direct.client.get(full), full, self._map_error)
            except s3_direct.Fallback:
                pass
            except s3_direct.DirectError as exc:
                raise self._map_error(exc, "download", full) from exc
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=full)
        except _REMOTE_EXCEPTIONS as exc:
            raise self._map_error(exc, "download", full) from exc
        return _BotoStream(response, full, self._map_error)

    # -- writing ---------------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        full = self._full(keys.validate_key(key))

        def attempt() -> None:
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
                if not self._put_direct(full, src, size):
                    src.seek(0)
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

    def _put_direct(self, full: str, src: BinaryIO, size: int) -> bool:
        """PUT ``src`` directly (`s3_direct`); False when botocore must do this attempt."""
        direct = self._direct
        if direct is None or not direct.usable("PutObject"):
            return False
        with self._slots:
            try:
                direct.client.put_file(full, src, size)
            except s3_direct.Fallback:
                return False
            except s3_direct.DirectError as exc:
                raise self._map_error(exc, "upload", full) from exc
        return True

    def delete(self, key: str) -> None:
        full = self._full(keys.validate_key(key))
        # S3 DeleteObject already succeeds for a missing key.
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
        return f"s3://{self._bucket}/{full_key}"

    def _request(self, op: str, full_key: str, call: Callable[[], T]) -> T:
        """One request under the concurrency limit, with its failure classified."""
        with self._slots:
            try:
                return call()
            except _REMOTE_EXCEPTIONS as exc:
                raise self._map_error(exc, op, full_key) from exc

    def _size_mismatch(self, full_key: str, expected: int, got: int) -> errors.PermanentRemoteError:
        return errors.PermanentRemoteError(
            f"size mismatch for {self._where(full_key)}: expected {expected} bytes, got {got}"
        )

    def _map_error(self, exc: BaseException, op: str, full_key: str) -> errors.RemoteError:
        return map_error(exc, op=op, bucket=self._bucket, full_key=full_key, endpoint=self._config.endpoint)


class _Stream(Protocol):
    """The body of one GET: its announced length, its chunks, then `finished` and `close`."""

    length: int | None
    total: int | None  # the object's size, for a ranged GET

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The body in chunks of at most `CHUNK_SIZE`; a chunk is valid until the next one."""
        ...

    def finished(self) -> None:
        """The whole body was read (the connection may be reused)."""
        ...

    def close(self) -> None: ...


_ErrorMapper = Callable[[BaseException, str, str], errors.RemoteError]


class _BotoStream:
    """A botocore GetObject response."""

    def __init__(self, response: Any, full_key: str, map_err: _ErrorMapper) -> None:
        self.length: int | None = response.get("ContentLength")
        self.total: int | None = self.length
        self._body = response["Body"]
        self._key = full_key
        self._map_err = map_err

    def chunks(self) -> Iterator[bytes | memoryview]:
        while True:
            try:
                chunk = self._body.read(CHUNK_SIZE)
            except _REMOTE_EXCEPTIONS as exc:
                raise self._map_err(exc, "download", self._key) from exc
            if not chunk:
                return
            yield chunk

    def finished(self) -> None:
        pass

    def close(self) -> None:
        self._body.close()


class _DirectStream:
    """A `s3_direct.GetStream` with its failures classified like botocore's."""

    def __init__(self, stream: s3_direct.GetStream, full_key: str, map_err: _ErrorMapper) -> None:
        self.length = stream.length
        self.total = stream.total if stream.total is not None else stream.length
        self._stream = stream
        self._key = full_key
        self._map_err = map_err

    def chunks(self) -> Iterator[bytes | memoryview]:
        try:
            yield from self._stream.chunks()
        except s3_direct.DirectError as exc:
            raise self._map_err(exc, "download", self._key) from exc

    def finished(self) -> None:
        self._stream.finished()

    def close(self) -> None:
        self._stream.close()


class _Reported:
    """The bytes one download attempt reported to its ``progress`` callback, taken back when the
    attempt is abandoned for a retry (so the sum of all calls is the bytes kept)."""

    def __init__(self, progress: base.ProgressCallback | None) -> None:
        self._progress = progress
        self._bytes = 0

    def add(self, n: int) -> None:
        if self._progress is not None:
            self._progress(n)
            self._bytes += n

    def restart(self) -> None:
        if self._progress is not None and self._bytes:
            self._progress(-self._bytes)
            self._bytes = 0


def _copy_body(
    stream: _Stream,
    write: Callable[[bytes | memoryview, int], object],
    pos: int,
    reported: _Reported,
    stop: threading.Event | None = None,
) -> int:
    """Copy the body of ``stream`` through ``write(chunk, offset)`` from offset ``pos``, counting
    and reporting the bytes; return the offset after the last byte. The caller's file errors are
    not remote errors: they propagate as they are."""
    for chunk in stream.chunks():
        if stop is not None and stop.is_set():
            raise _PartStopped()
        write(chunk, pos)
        n = len(chunk)
        pos += n
        metrics.count_bytes("download", n)
        reported.add(n)
    stream.finished()
    return pos


class _PartStopped(Exception):
    """A ranged part gave up because another part of the same object failed."""


class _Direct:
    """When to use `s3_direct.DirectS3` for an operation of this client.

    Only when nothing is registered on the client's ``before-send`` event for that operation:
    moto, botocore stubbers and the test suite's fault injection hook in there, and must keep
    seeing every request. (The check costs a few microseconds per request.)
    """

    def __init__(self, client: S3Client, direct: s3_direct.DirectS3) -> None:
        self.client = direct
        self._events: Any = client.meta.events

    def usable(self, operation: str) -> bool:
        try:
            handlers = self._events._emitter._handlers.prefix_search(f"before-send.s3.{operation}")
        except AttributeError:  # another botocore: do not guess
            return False
        return not handlers


def map_error(
    exc: BaseException, *, op: str, bucket: str, full_key: str, endpoint: str | None = None
) -> errors.RemoteError:
    """Classify a boto3/botocore/urllib3 failure as `NotFound`, transient or permanent."""
    where = f"s3://{bucket}/{full_key}"
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        text = str(error.get("Message") or "").strip()
        detail = f"{code or 'error'} (HTTP {status})" + (f": {text}" if text else "")
        if code == "NoSuchBucket":
            return errors.PermanentRemoteError(
                f"{op} of {where} failed: bucket {bucket!r} does not exist ({detail})"
            )
        if code in _NOT_FOUND_CODES or status == 404:
            return errors.NotFound(f"no object {where} ({code or 'HTTP 404'})")
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            return errors.TransientRemoteError(f"{op} of {where} failed: {detail}")
        return errors.PermanentRemoteError(f"{op} of {where} rejected: {detail}")
    if isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        return errors.PermanentRemoteError(
            f"{op} of {where}: no usable AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or use IRSA / an instance profile)"
        )
    if isinstance(exc, _TRANSIENT_EXCEPTIONS):
        server = f" at {endpoint}" if endpoint else ""
        return errors.TransientRemoteError(f"{op} of {where}{server} failed: {type(exc).__name__}: {exc}")
    return errors.PermanentRemoteError(f"{op} of {where} failed: {type(exc).__name__}: {exc}")


def make_client(
    *,
    endpoint: str | None,
    region: str,
    pool_size: int,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
) -> S3Client:
    """A botocore S3 client with our pool, timeouts, and botocore's retries off (we retry ourselves)."""
    return _make_client(
        endpoint=endpoint,
        region=region,
        pool_size=pool_size,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )[0]


def _make_client(
    *,
    endpoint: str | None,
    region: str,
    pool_size: int,
    connect_timeout: float,
    read_timeout: float,
) -> tuple[S3Client, Any, str | None]:
    """`make_client`, plus the session's credentials (botocore's provider chain, refreshed
    there; None when there are none) and its ``ca_bundle`` setting (``AWS_CA_BUNDLE``)."""
    options: dict[str, Any] = {
        "region_name": region,
        "max_pool_connections": pool_size,
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "tcp_keepalive": True,
    }
    if endpoint is not None:
        options["s3"] = {"addressing_style": "path"}
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    with _LOADER_LOCK:
        botocore_session = botocore.session.Session()
        botocore_session.register_component("data_loader", _shared_loader())
        # botocore's client, not boto3's: boto3 adds only resources and s3transfer helpers,
        # none of which is used here, and importing it costs a CLI run ~0.1 s of start-up.
        client = typing.cast(
            "S3Client",
            botocore_session.create_client("s3", endpoint_url=endpoint, config=BotoConfig(**options)),
        )
    ca_bundle = botocore_session.get_config_variable("ca_bundle")
    return client, botocore_session.get_credentials(), ca_bundle


def _make_direct(
    client: S3Client,
    credentials: Any,
    ca_bundle: str | None,
    endpoint: str,
    bucket: str,
    region: str,
    *,
    connect_timeout: float,
    read_timeout: float,
    pool_size: int,
) -> _Direct | None:
    """The direct transfer path for this endpoint, or None where it would change behaviour:
    no credentials (botocore raises the error that says what to set), a proxy applies."""
    if credentials is None or botocore.utils.get_environ_proxies(endpoint):
        return None
    verify: bool | str = True
    if endpoint.startswith("https:"):
        # botocore's own trust store: AWS_CA_BUNDLE, else certifi's bundle
        verify = str(ca_bundle) if ca_bundle else str(botocore.httpsession.get_cert_path(True))
    try:
        direct = s3_direct.DirectS3(
            endpoint,
            bucket,
            region,
            credentials,
            verify=verify,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            pool_size=pool_size,
        )
    except ValueError:
        return None
    return _Direct(client, direct)


_LOADER_LOCK = threading.Lock()
_LOADER: botocore.loaders.Loader | None = None


def _shared_loader() -> botocore.loaders.Loader:
    """One botocore data loader per process: the S3 service model is parsed once, not per client
    (a client is then created in ~15 ms instead of ~70 ms). Credentials stay per session."""
    global _LOADER
    if _LOADER is None:
        _LOADER = botocore.loaders.create_loader()
    return _LOADER
