"""`remote.s3.transfer` (layer GETs and PUTs through obstore) against a scripted local HTTP server,
and through `S3Storage`: every answer is mapped at once into our errors with exactly one request
per attempt (the retry budget is the policy's), payloads are signed over plain http, AWS itself is
addressed virtual-host style, and credentials come from botocore's default chain (web identity
included). The real server: tests/integration/test_s3_transfer.py."""

from __future__ import annotations

import datetime
import hashlib
import io
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore.credentials
import obstore
import pytest
from moto import mock_aws

from pageserver_operator.remote import errors, retry, url
from pageserver_operator.remote.s3 import storage as s3_storage
from pageserver_operator.remote.s3 import transfer as s3_transfer

from ..conftest import REGION


class Server:
    """Answers every request with ``status`` and an S3 error body (or ``body`` for a 200), and
    records each request's head and body."""

    def __init__(self, status: int = 200, code: str = "", body: bytes = b"") -> None:
        self.status, self.code, self.body = status, code, body
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
                }
                length = int(headers.get("content-length", "0"))
                while len(data) < length:
                    data += conn.recv(65536)
                body, data = data[:length], data[length:]
                self.requests.append((lines[0], headers, body))
                if self.status == 200:
                    answer = self.body
                    extra = 'ETag: "e"\r\nLast-Modified: Thu, 03 Dec 2026 10:00:00 GMT\r\n'
                else:
                    answer = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{self.code}</Code>"
                        f"<Message>said {self.code}</Message></Error>"
                    ).encode()
                    extra = "Content-Type: application/xml\r\n"
                conn.sendall(
                    f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(answer)}\r\n{extra}\r\n".encode()
                    + answer
                )

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[type[Server]]:
    started: list[Server] = []

    class Started(Server):
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, **k)  # type: ignore[arg-type]
            started.append(self)

    yield Started
    for s in started:
        s.close()


def storage_for(endpoint: str, attempts: int = 3) -> s3_storage.S3Storage:
    st = s3_storage.S3Storage(
        url.RemoteConfig(
            kind="s3", bucket="bkt", prefix="pfx", endpoint=endpoint, region=REGION, concurrency=2
        ),
        retrier=retry.Retrier(retry.RetryPolicy(max_attempts=attempts), sleep=lambda _: None),
    )
    assert st._direct is not None, "the obstore path applies to an endpoint with credentials"
    return st


@pytest.mark.parametrize(
    ("status", "code", "error", "words"),
    [
        (404, "NoSuchKey", errors.NotFound, "no object s3://bkt/pfx/k"),
        (404, "NoSuchBucket", errors.PermanentRemoteError, "bucket 'bkt' does not exist"),
        (403, "AccessDenied", errors.PermanentRemoteError, "AccessDenied (HTTP 403): said AccessDenied"),
        (403, "SignatureDoesNotMatch", errors.PermanentRemoteError, "SignatureDoesNotMatch (HTTP 403)"),
        (400, "InvalidArgument", errors.PermanentRemoteError, "InvalidArgument (HTTP 400)"),
        (503, "SlowDown", errors.TransientRemoteError, "still failing after 3 attempts"),
        (500, "InternalError", errors.TransientRemoteError, "InternalError (HTTP 500)"),
        (429, "TooManyRequests", errors.TransientRemoteError, "HTTP 429"),
    ],
)
def test_answers_are_mapped_at_once_one_request_per_attempt(
    aws_env: None,
    serve: type[Server],
    tmp_path: Path,
    status: int,
    code: str,
    error: type[errors.RemoteError],
    words: str,
) -> None:
    server = serve(status, code)
    st = storage_for(server.endpoint, attempts=3)
    src = tmp_path / "layer"
    src.write_bytes(b"z" * 1000)
    attempts = 3 if error is errors.TransientRemoteError else 1
    try:
        with pytest.raises(error, match=re.escape(words)):
            st.download_to("k", io.BytesIO(), 10)
        gets = [r for r in server.requests if r[0].startswith("GET ")]
        assert len(gets) == attempts, "one request per attempt: nothing redone through botocore"
        server.requests.clear()
        with pytest.raises(error if error is not errors.NotFound else errors.RemoteError):
            st.upload_file("k", src, 1000)
        puts = [r for r in server.requests if r[0].startswith("PUT ")]
        assert len(puts) == attempts and all(r[2] == b"z" * 1000 for r in puts)
        assert len(server.requests) == attempts
    finally:
        st.close()


def test_payloads_are_signed_over_plain_http(aws_env: None, serve: type[Server], tmp_path: Path) -> None:
    server = serve(200, body=b"hello")
    st = storage_for(server.endpoint)
    src = tmp_path / "layer"
    src.write_bytes(b"payload" * 999)
    try:
        st.upload_file("k", src, 7 * 999)
        out = io.BytesIO()
        assert st.download_to("k", out, 5) == 5 and out.getvalue() == b"hello"
    finally:
        st.close()
    (put_line, put, put_body), (get_line, get, _) = server.requests
    assert put_line == "PUT /bkt/pfx/k HTTP/1.1" and get_line == "GET /bkt/pfx/k HTTP/1.1"
    assert put["x-amz-content-sha256"] == hashlib.sha256(b"payload" * 999).hexdigest()
    assert put_body == b"payload" * 999 and put["content-length"] == str(7 * 999)
    assert get["x-amz-content-sha256"] == hashlib.sha256(b"").hexdigest()
    for headers in (put, get):
        assert "x-amz-content-sha256" in headers["authorization"]
        assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAUNITTESTKEY00000/")


def test_aws_itself_is_addressed_virtual_host_style_over_https(aws_env: None) -> None:
    t = s3_transfer.Transfer("my-bucket", "eu-central-1", boto3.Session().get_credentials(), endpoint=None)
    signed = obstore.sign(t.store, "GET", "pfx/a b", datetime.timedelta(minutes=1))
    assert signed.startswith("https://my-bucket.s3.eu-central-1.amazonaws.com/pfx/a%20b?")
    # over https the payload is not hashed (TLS protects it); over plain http it is (above)
    assert t.store.config.get("unsigned_payload") == "true"
    st = s3_storage.S3Storage(url.RemoteConfig(kind="s3", bucket="my-bucket", region="eu-central-1"))
    try:
        assert st._direct is not None and st._direct.endpoint is None
    finally:
        st.close()


def test_web_identity_credentials_of_the_default_chain_sign_the_requests(
    aws_env: None, serve: type[Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IRSA: no keys, a web identity token file and a role; botocore's chain exchanges them at STS
    (moto here) and the obstore path signs with the temporary credentials and their token."""
    token = tmp_path / "token"
    token.write_text("a-web-identity-token")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/pageserver")
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "unit")
    monkeypatch.setenv("AWS_REGION", REGION)
    server = serve(200, body=b"abc")
    with mock_aws():
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # mock_aws sets fake keys
            monkeypatch.delenv(name, raising=False)
        st = storage_for(server.endpoint)
        try:
            assert st.download_to("k", io.BytesIO(), 3) == 3
        finally:
            st.close()
    ((_, headers, _),) = server.requests
    assert headers.get("x-amz-security-token"), "the session token of the assumed role"
    key_id = headers["authorization"].split("Credential=", 1)[1].split("/", 1)[0]
    assert key_id.startswith("ASIA"), f"temporary credentials from STS, not {key_id}"


def test_no_obstore_path_without_credentials_or_with_a_proxy(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = url.RemoteConfig(kind="s3", bucket="bkt", endpoint="http://10.9.8.7:8333", region=REGION)
    assert s3_storage.S3Storage(config, direct=False)._direct is None
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert s3_storage.S3Storage(config)._direct is None
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert s3_storage.S3Storage(config)._direct is None


def test_the_credentials_are_botocores_not_what_obstore_reads_itself(
    aws_env: None, serve: type[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """obstore reads AWS_* variables on its own; the provider (botocore's chain) wins over them."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "an-env-token")
    server = serve(200, body=b"abc")
    creds = botocore.credentials.Credentials("AKIAFROMBOTOCORE0000", "secret", None)
    t = s3_transfer.Transfer("bkt", REGION, creds, endpoint=server.endpoint)
    stream = t.get("k")
    assert b"".join(bytes(c) for c in stream.chunks()) == b"abc"
    ((_, headers, _),) = server.requests
    assert "Credential=AKIAFROMBOTOCORE0000/" in headers["authorization"]
    assert "x-amz-security-token" not in headers


def test_a_body_is_handed_over_in_chunks_of_at_most_one_mib(aws_env: None, serve: type[Server]) -> None:
    body = bytes(range(256)) * (10 * 1024 + 17)  # 2.5 MiB and a bit
    server = serve(200, body=body)
    t = s3_transfer.Transfer("bkt", REGION, boto3.Session().get_credentials(), endpoint=server.endpoint)
    stream = t.get("k")
    assert (stream.length, stream.total) == (len(body), len(body))
    chunks = [bytes(c) for c in stream.chunks()]
    assert b"".join(chunks) == body
    assert all(0 < len(c) <= s3_transfer.CHUNK_SIZE for c in chunks), [len(c) for c in chunks]
