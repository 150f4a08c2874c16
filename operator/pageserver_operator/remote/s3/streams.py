"""The body of one GET, from botocore or from the obstore data path, read the same way.

`copy_body` copies a `Stream` to the caller's file in chunks of at most `CHUNK_SIZE`, counting
the bytes in the metrics and reporting them to the caller's progress callback through
`Reported`, which takes them back (a negative call) when the attempt is abandoned for a retry:
the sum of all progress calls is always the bytes kept. Failures of the stream are classified
by the ``map_err`` the storage passes in; errors of the caller's file propagate as they are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from pageserver_operator.remote import base, errors, metrics
from pageserver_operator.remote.s3 import errors as s3_errors
from pageserver_operator.remote.s3 import transfer as s3_transfer

CHUNK_SIZE = 1 << 20


class Stream(Protocol):
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


ErrorMapper = Callable[[BaseException, str, str], errors.RemoteError]


class BotoStream:
    """A botocore GetObject response."""

    def __init__(self, response: Any, full_key: str, map_err: ErrorMapper) -> None:
        self.length: int | None = response.get("ContentLength")
        self.total: int | None = self.length
        self._body = response["Body"]
        self._key = full_key
        self._map_err = map_err

    def chunks(self) -> Iterator[bytes | memoryview]:
        while True:
            try:
                chunk = self._body.read(CHUNK_SIZE)
            except s3_errors.remote_exceptions() as exc:
                raise self._map_err(exc, "download", self._key) from exc
            if not chunk:
                return
            yield chunk

    def finished(self) -> None:
        pass

    def close(self) -> None:
        self._body.close()


class TransferStream:
    """A `s3_transfer.TransferStream` (obstore) with its failures classified."""

    def __init__(self, stream: s3_transfer.TransferStream, full_key: str, map_err: ErrorMapper) -> None:
        self.length = stream.length
        self.total = stream.total
        self._stream = stream
        self._key = full_key
        self._map_err = map_err

    def chunks(self) -> Iterator[bytes | memoryview]:
        try:
            yield from self._stream.chunks()
        except s3_transfer.TRANSFER_EXCEPTIONS as exc:
            raise self._map_err(exc, "download", self._key) from exc

    def finished(self) -> None:
        self._stream.finished()

    def close(self) -> None:
        self._stream.close()


class Reported:
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


def copy_body(
    stream: Stream,
    write: Callable[[bytes | memoryview, int], object],
    pos: int,
    reported: Reported,
    stop: threading.Event | None = None,
) -> int:
    """Copy the body of ``stream`` through ``write(chunk, offset)`` from offset ``pos``, counting
    and reporting the bytes; return the offset after the last byte. The caller's file errors are
    not remote errors: they propagate as they are."""
    for chunk in stream.chunks():
        if stop is not None and stop.is_set():
            raise PartStopped()
        write(chunk, pos)
        n = len(chunk)
        pos += n
        metrics.count_bytes("download", n)
        reported.add(n)
    stream.finished()
    return pos


class PartStopped(Exception):
    """A ranged part gave up because another part of the same object failed."""
