"""`remote.s3.streams`: a GET's body copied to the caller's file, its bytes reported and taken
back when an attempt is abandoned, and failures of either kind of stream classified the same
way while the caller's own file errors pass through as they are."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import obstore.exceptions
import pytest

from pageserver_operator.remote import errors
from pageserver_operator.remote.s3 import errors as s3_errors
from pageserver_operator.remote.s3 import streams


def map_error(exc: BaseException, op: str, full_key: str) -> errors.RemoteError:
    return s3_errors.map_error(exc, op=op, bucket="bkt", full_key=full_key, endpoint=None)


class Chunks:
    """A body of ``chunks``; ``fail`` raises after them (a connection reset mid-stream)."""

    def __init__(self, chunks: list[bytes], fail: BaseException | None = None) -> None:
        self.length: int | None = sum(map(len, chunks))
        self.total: int | None = self.length
        self._chunks = chunks
        self._fail = fail
        self.done = self.closed = False

    def chunks(self) -> Iterator[bytes]:
        yield from self._chunks
        if self._fail is not None:
            raise self._fail

    def finished(self) -> None:
        self.done = True

    def close(self) -> None:
        self.closed = True


def test_copy_body_writes_at_offsets_reports_the_bytes_and_marks_the_body_finished() -> None:
    body = Chunks([b"abc", b"defg"])
    out = bytearray(10)
    seen: list[int] = []

    def write(chunk: bytes | memoryview, pos: int) -> None:
        out[pos : pos + len(chunk)] = chunk

    assert streams.copy_body(body, write, 3, streams.Reported(seen.append)) == 10
    assert bytes(out) == b"\0\0\0abcdefg" and seen == [3, 4] and body.done


def test_an_abandoned_attempt_takes_its_bytes_back() -> None:
    seen: list[int] = []
    reported = streams.Reported(seen.append)
    reported.add(5)
    reported.add(7)
    reported.restart()
    reported.restart()  # nothing more to take back
    reported.add(3)
    assert seen == [5, 7, -12, 3] and sum(seen) == 3
    silent = streams.Reported(None)
    silent.add(5)
    silent.restart()  # no callback: nothing to report


def test_a_stop_ends_a_part_at_its_next_chunk() -> None:
    stop = threading.Event()
    written: list[int] = []

    def write(chunk: bytes | memoryview, pos: int) -> None:
        written.append(pos)
        stop.set()

    with pytest.raises(streams.PartStopped):
        streams.copy_body(Chunks([b"a", b"b", b"c"]), write, 0, streams.Reported(None), stop)
    assert written == [0]


def test_a_boto_body_failing_mid_stream_is_a_transient_remote_error() -> None:
    class Body(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            data = super().read(n)
            if not data:
                import urllib3.exceptions

                raise urllib3.exceptions.ProtocolError("Connection broken: reset")
            return data

    response = {"ContentLength": 3, "Body": Body(b"xyz")}
    stream = streams.BotoStream(response, "pfx/k", map_error)
    assert (stream.length, stream.total) == (3, 3)
    with pytest.raises(errors.TransientRemoteError, match="pfx/k"):
        list(stream.chunks())


def test_an_obstore_body_failing_is_transient() -> None:
    def map_obstore(exc: BaseException, op: str, full_key: str) -> errors.RemoteError:
        return s3_errors.map_obstore_error(exc, op=op, bucket="bkt", full_key=full_key)

    inner = Chunks(
        [b"xy"], fail=obstore.exceptions.GenericError("Generic S3 error: error decoding response body")
    )
    stream = streams.TransferStream(inner, "pfx/k", map_obstore)  # type: ignore[arg-type]
    with pytest.raises(errors.TransientRemoteError):
        list(stream.chunks())
    stream.close()
    assert inner.closed


def test_errors_of_the_callers_file_are_not_remote_errors() -> None:
    def write(chunk: bytes | memoryview, pos: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        streams.copy_body(Chunks([b"a"]), write, 0, streams.Reported(None))
