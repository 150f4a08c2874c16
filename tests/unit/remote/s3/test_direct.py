"""Tests of `remote.s3.direct` (the direct HTTP transfer path of the S3 backend) without a real
S3 server: the SigV4 signature equals botocore's for the same request, and the HTTP handling
against a scripted local server -- keep-alive reuse, a connection closed while idle, answers
other than 200 (fallback to botocore), chunked bodies, short bodies, timeouts, uploads."""

from __future__ import annotations

import datetime
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

from pageserver_operator.remote.s3 import direct as s3_direct

NOW = datetime.datetime(2026, 11, 24, 12, 30, 45)


class _Unsigned(botocore.auth.S3SigV4Auth):
    def payload(self, request: botocore.awsrequest.AWSRequest) -> str:
        return s3_direct.UNSIGNED_PAYLOAD


@pytest.mark.parametrize("token", [None, "session-token/+="])
@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "https://s3.example.com", "http://[::1]:8333"])
def test_signature_equals_botocores(
    monkeypatch: pytest.MonkeyPatch, token: str | None, method: str, endpoint: str
) -> None:
    creds = botocore.credentials.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    client = s3_direct.DirectS3(endpoint, "my-bucket", "eu-central-1", creds)
    key = (
        "pfx/tenants/3aa8fcc61f6d357410b7de754b1d9001/timelines/a/000-FFF__0000000001696070-00000000016960E9"
    )
    path = client.path(key)
    headers: dict[str, str] = {}
    client._signer.sign(method, client.host, path, headers, now=NOW.replace(tzinfo=datetime.UTC).timestamp())

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: NOW)
    request = botocore.awsrequest.AWSRequest(method=method, url=endpoint + path)
    _Unsigned(creds, "s3", "eu-central-1").add_auth(request)
    assert headers["Authorization"] == request.headers["Authorization"]
    assert headers["x-amz-date"] == request.headers["X-Amz-Date"]
    if token:
        assert headers["x-amz-security-token"] == token


def test_path_is_path_style_and_quoted() -> None:
    creds = botocore.credentials.Credentials("a", "b")
    client = s3_direct.DirectS3("http://h:1/base/", "b", "r", creds)
    assert client.path("a b/c~d") == "/base/b/a%20b/c~d"
    assert client.host == "h:1"
    assert s3_direct.DirectS3("https://h:443", "b", "r", creds).host == "h"


# ---- a scripted HTTP server ----------------------------------------------------------------

Handler = Callable[[socket.socket, bytes], bool]  # (conn, request head) -> keep the connection open


class Server:
    """Accepts connections; for each request head calls the next handler of ``script``."""

    def __init__(self, script: list[Handler]) -> None:
        self.script = list(script)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.script:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while self.script:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                self.requests.append(head)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                self.last_body, buf = buf[:length], buf[length:]
                if not self.script.pop(0)(conn, head):
                    return

    def close(self) -> None:
        self.sock.close()


def ok(body: bytes, extra: str = "") -> Handler:
    def handle(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)
        return "close" not in extra.lower()

    return handle


def status(code: int) -> Handler:
    def handle(conn: socket.socket, head: bytes) -> bool:
        body = b"<Error><Code>X</Code></Error>"
        conn.sendall(f"HTTP/1.1 {code} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        return True

    return handle


def hang_up(conn: socket.socket, head: bytes) -> bool:
    return False


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[Server, s3_direct.DirectS3]]]:
    made: list[tuple[Server, s3_direct.DirectS3]] = []

    def make(*script: Handler, read_timeout: float = 5.0) -> tuple[Server, s3_direct.DirectS3]:
        server = Server(list(script))
        creds = botocore.credentials.Credentials("a", "b")
        client = s3_direct.DirectS3(
            f"http://127.0.0.1:{server.port}", "bkt", "us-east-1", creds, read_timeout=read_timeout
        )
        made.append((server, client))
        return server, client

    yield make
    for server, client in made:
        client.close()
        server.close()


def read_all(stream: s3_direct.GetStream) -> bytes:
    data = b"".join(bytes(c) for c in stream.chunks())
    stream.finished()
    stream.close()
    return data


def test_get_reuses_the_connection(serve: Callable[..., tuple[Server, s3_direct.DirectS3]]) -> None:
    big = bytes(range(256)) * 9000  # > one 1 MiB chunk? no: 2.2 MiB, several chunks
    server, client = serve(ok(b"hello"), ok(big), ok(b""))
    assert read_all(client.get("k1")) == b"hello"
    stream = client.get("dir/k2")
    chunks = [bytes(c) for c in stream.chunks()]
    stream.finished()
    stream.close()
    assert (
        b"".join(chunks) == big
        and len(chunks) == 3
        and all(len(c) == s3_direct.CHUNK_SIZE for c in chunks[:2])
    )
    assert read_all(client.get("k3")) == b""
    assert server.connections == 1
    assert server.requests[1].startswith(b"GET /bkt/dir/k2 HTTP/1.1\r\n")
    assert b"Authorization: AWS4-HMAC-SHA256 Credential=a/" in server.requests[1]


def test_a_connection_closed_while_idle_is_retried_once(
    serve: Callable[..., tuple[Server, s3_direct.DirectS3]],
) -> None:
    server, client = serve(ok(b"one", "Connection: keep-alive\r\n"), hang_up, ok(b"two"))
    assert read_all(client.get("k")) == b"one"
    assert read_all(client.get("k")) == b"two"  # first try on the kept connection was dropped
    assert server.connections == 2


def test_a_new_connection_dropped_is_an_error(
    serve: Callable[..., tuple[Server, s3_direct.DirectS3]],
) -> None:
    _, client = serve(hang_up, hang_up)
    with pytest.raises(s3_direct.DirectError):
        client.get("k")


@pytest.mark.parametrize("code", [404, 403, 500, 301])
def test_other_answers_fall_back(serve: Callable[..., tuple[Server, s3_direct.DirectS3]], code: int) -> None:
    server, client = serve(status(code), ok(b"after"))
    with pytest.raises(s3_direct.Fallback) as raised:
        client.get("k")
    assert raised.value.status == code
    assert read_all(client.get("k")) == b"after"  # the failed connection was not reused
    assert server.connections == 2


def test_chunked_answers_fall_back(serve: Callable[..., tuple[Server, s3_direct.DirectS3]]) -> None:
    def chunked(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        return True

    _, client = serve(chunked)
    with pytest.raises(s3_direct.Fallback):
        client.get("k")


def test_a_short_body_is_an_error_and_the_connection_is_dropped(
    serve: Callable[..., tuple[Server, s3_direct.DirectS3]],
) -> None:
    def short(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        return False

    server, client = serve(short, ok(b"fine"))
    stream = client.get("k")
    with pytest.raises(s3_direct.DirectError, match="7 bytes of the body missing"):
        list(stream.chunks())
    stream.close()
    assert read_all(client.get("k")) == b"fine"
    assert server.connections == 2


def test_a_stalled_server_times_out(serve: Callable[..., tuple[Server, s3_direct.DirectS3]]) -> None:
    gate = threading.Event()

    def stall(conn: socket.socket, head: bytes) -> bool:
        gate.wait(5)
        return False

    _, client = serve(stall, read_timeout=0.2)
    with pytest.raises(s3_direct.DirectError):
        client.get("k")
    gate.set()


def test_put_sends_the_file(serve: Callable[..., tuple[Server, s3_direct.DirectS3]], tmp_path: Path) -> None:
    src = tmp_path / "layer"
    src.write_bytes(b"z" * 300_000)
    server, client = serve(ok(b""), status(403))
    with open(src, "rb") as f:
        client.put_file("a/layer", f, 300_000)
    assert server.last_body == b"z" * 300_000
    assert server.requests[0].startswith(b"PUT /bkt/a/layer HTTP/1.1\r\n")
    assert b"Content-Length: 300000" in server.requests[0]
    with open(src, "rb") as f, pytest.raises(s3_direct.Fallback):
        client.put_file("a/layer", f, 300_000)


def test_put_of_a_short_file_is_an_error(
    serve: Callable[..., tuple[Server, s3_direct.DirectS3]], tmp_path: Path
) -> None:
    src = tmp_path / "layer"
    src.write_bytes(b"z" * 10)
    _, client = serve(ok(b""))
    with open(src, "rb") as f, pytest.raises(s3_direct.DirectError, match="shorter"):
        client.put_file("a/layer", f, 20)
