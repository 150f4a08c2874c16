"""Direct HTTP/1.1 transfers to an S3-compatible endpoint: the fast path of `remote.s3.storage`.

Why: botocore spends about 1.5 ms of CPU per GetObject (event hooks, parameter validation, header
parsing with dateutil, urllib3, http.client's email parser). On a 2-core machine that CPU, held
under the GIL, is what limits a tenant of thousands of small layers to about a third of what
s5cmd reaches. The same request signed here (SigV4, cached signing key) and sent over a plain
keep-alive socket costs about 0.08 ms (docs/performance.md). Large bodies are read with
``recv_into`` into one reused 1 MiB buffer per thread, and uploads are sent with ``sendfile``.

Scope -- deliberately narrow, so that nothing but the transfer changes:

- Only for an explicit ``endpoint`` with path-style addressing (``<endpoint>/<bucket>/<key>``),
  SigV4 with ``UNSIGNED-PAYLOAD`` for region ``region``, service ``s3``; credentials come from
  botocore's provider chain (refreshed there), so nothing about credentials is decided here.
- Success is ``200`` with a ``Content-Length`` (``206`` with the asked range and the object's
  total size in ``Content-Range`` for `DirectS3.get_range`). Any other answer raises `Fallback`: the caller
  redoes that attempt through botocore, which produces the exact error (NoSuchKey, AccessDenied,
  SlowDown, ...) with its message, as before.
- Failures of the connection or of the response raise `DirectError` (an
  ``http.client.HTTPException``, which `remote.s3.errors` classifies as transient). A kept-alive
  connection the server closed while idle is retried once on a new connection. Sockets are
  blocking with kernel timeouts (``SO_RCVTIMEO``/``SO_SNDTIMEO`` = the read timeout): a stalled
  server ends in ``EAGAIN``, i.e. a `DirectError`.
- Nothing is logged; no URL, header or credential ever reaches an exception message.

Memory: one `CHUNK_SIZE` buffer per thread plus a 64 KiB head buffer per open connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import os
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any, BinaryIO

CHUNK_SIZE = 1 << 20
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_MAX_HEAD = 64 << 10
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: errno-level failures while the server closed a kept-alive connection.
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class DirectError(http.client.HTTPException):
    """The connection or the response failed (transient)."""


class Fallback(Exception):
    """The server answered with ``status``, not success: redo the attempt through botocore."""

    def __init__(self, status: int, total: int | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.total = total  # the object's size when the answer said it (``Content-Range``)


class _Stale(Exception):
    """A reused connection turned out to be closed before any byte of the answer arrived."""


class Signer:
    """AWS Signature Version 4 in the ``Authorization`` header, for service ``s3``."""

    def __init__(self, credentials: Any, region: str) -> None:
        self._credentials = credentials
        self._region = region
        self._key_cache: tuple[str, str, bytes] | None = None  # (date, secret, key)

    def sign(
        self, method: str, host: str, path: str, headers: dict[str, str], now: float | None = None
    ) -> None:
        """Add ``x-amz-date``, ``x-amz-content-sha256``, the session token (if any) and
        ``Authorization`` to ``headers`` for a request with no query string."""
        creds = self._credentials.get_frozen_credentials()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        date = amz_date[:8]
        headers["x-amz-date"] = amz_date
        headers["x-amz-content-sha256"] = UNSIGNED_PAYLOAD
        if creds.token:
            headers["x-amz-security-token"] = creds.token
        signed = {
            "host": host,
            **{k.lower(): v.strip() for k, v in headers.items() if k.lower().startswith("x-amz-")},
        }
        names = sorted(signed)
        canonical = "\n".join(
            [method, path, "", *(f"{n}:{signed[n]}" for n in names), "", ";".join(names), UNSIGNED_PAYLOAD]
        )
        scope = f"{date}/{self._region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._key(date, creds.secret_key), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )

    def _key(self, date: str, secret: str) -> bytes:
        cached = self._key_cache
        if cached is not None and cached[0] == date and cached[1] == secret:
            return cached[2]
        key = ("AWS4" + secret).encode()
        for part in (date, self._region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._key_cache = (date, secret, key)
        return key


class _Connection:
    """One keep-alive connection and the bytes read past the last response head."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = bytearray(_MAX_HEAD)
        self.used = 0  # requests sent on it

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Response:
    def __init__(
        self, status: int, length: int | None, keep_alive: bool, early: memoryview, total: int | None = None
    ) -> None:
        self.status = status
        self.length = length
        self.keep_alive = keep_alive
        self.early = early  # body bytes that arrived with the head
        self.total = total  # the object's size from ``Content-Range: bytes a-b/TOTAL`` (206)


class GetStream:
    """The body of a direct GET (read through `remote.s3.streams.DirectStream`)."""

    def __init__(self, client: DirectS3, conn: _Connection, response: _Response, buffer: bytearray) -> None:
        self.length: int | None = response.length
        self.total: int | None = response.total
        self._client = client
        self._conn = conn
        self._response = response
        self._view = memoryview(buffer)
        self._done = False

    def chunks(self) -> Iterator[memoryview]:
        left = self.length or 0
        view = self._view
        size = len(view)
        early = self._response.early
        if len(early) > left:
            raise DirectError("the server sent more bytes than its Content-Length")
        filled = len(early)
        view[:filled] = early
        left -= filled
        recv_into = self._conn.sock.recv_into
        while True:
            while left and filled < size:
                try:
                    n = recv_into(view[filled : filled + min(size - filled, left)])
                except OSError as exc:
                    raise DirectError(f"body read failed: {type(exc).__name__}: {exc}") from exc
                if not n:
                    raise DirectError(f"connection closed with {left} bytes of the body missing")
                filled += n
                left -= n
            if filled:
                yield view[:filled]
                filled = 0
            if not left:
                return

    def finished(self) -> None:
        self._done = True

    def close(self) -> None:
        self._client._release(self._conn, self._done and self._response.keep_alive)


class DirectS3:
    """Direct GET and PUT of objects in one bucket of one S3-compatible endpoint."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        region: str,
        credentials: Any,
        *,
        verify: bool | str = True,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        pool_size: int = 16,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
        self._scheme = parts.scheme
        self._hostname = parts.hostname
        self._port = parts.port or _DEFAULT_PORTS[parts.scheme]
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.host = host if self._port == _DEFAULT_PORTS[parts.scheme] else f"{host}:{self._port}"
        self._base = parts.path.rstrip("/") + "/" + urllib.parse.quote(bucket, safe="") + "/"
        self._signer = Signer(credentials, region)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool_size = pool_size
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            if verify is False:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE

    def path(self, full_key: str) -> str:
        return self._base + urllib.parse.quote(full_key, safe="/~")

    # ---- operations -----------------------------------------------------------------------

    def get(self, full_key: str) -> GetStream:
        """Send a GET; return its body stream once the head says ``200``."""
        path = self.path(full_key)
        conn, response = self._exchange("GET", path, {})
        if response.status != 200 or response.length is None:
            self._release(conn, False)
            raise Fallback(response.status)
        return GetStream(self, conn, response, self._buffer())

    def get_range(self, full_key: str, start: int, length: int) -> GetStream:
        """Send a GET of bytes ``[start, start + length)``; return its body stream once the head
        says ``206`` for exactly that range (`GetStream.total` is the object's size)."""
        path = self.path(full_key)
        conn, response = self._exchange("GET", path, {"Range": f"bytes={start}-{start + length - 1}"})
        if response.status != 206 or response.length != length or response.total is None:
            self._release(conn, False)
            raise Fallback(response.status, response.total)
        return GetStream(self, conn, response, self._buffer())

    def put_file(self, full_key: str, src: BinaryIO, size: int) -> None:
        """PUT the first ``size`` bytes of the file ``src`` with ``sendfile``."""
        path = self.path(full_key)
        conn, response = self._exchange("PUT", path, {"Content-Length": str(size)}, body=(src, size))
        complete = response.length is not None and len(response.early) == response.length
        self._release(conn, response.keep_alive and response.status == 200 and complete)
        if response.status != 200:
            raise Fallback(response.status)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # ---- one request/response -------------------------------------------------------------

    def _exchange(
        self, method: str, path: str, headers: dict[str, str], body: tuple[BinaryIO, int] | None = None
    ) -> tuple[_Connection, _Response]:
        for attempt in (1, 2):
            conn = self._get_conn()
            reused = conn.used > 0
            try:
                h = dict(headers)
                self._signer.sign(method, self.host, path, h)
                lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", "User-Agent: pageserver-operator"]
                lines += [f"{k}: {v}" for k, v in h.items()]
                conn.used += 1
                try:
                    conn.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
                except _STALE as exc:
                    if reused:
                        raise _Stale() from exc
                    raise
                if body is not None:
                    try:
                        self._send_body(conn.sock, *body)
                    except OSError:
                        # The server may have answered (an error) and closed before taking the
                        # whole body: that answer is what counts.
                        try:
                            return conn, self._read_head(conn, False)
                        except (OSError, DirectError):
                            pass
                        raise
                return conn, self._read_head(conn, reused)
            except _Stale:
                conn.close()
                if attempt == 1:
                    continue
                raise DirectError("the server closed the connection before answering") from None
            except OSError as exc:
                conn.close()
                raise DirectError(f"{method} failed: {type(exc).__name__}: {exc}") from exc
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def _send_body(self, sock: socket.socket, src: BinaryIO, size: int) -> None:
        sent = 0
        if self._ssl is None:
            out_fd, in_fd = sock.fileno(), src.fileno()
            while sent < size:
                n = os.sendfile(out_fd, in_fd, sent, min(size - sent, 1 << 30))  # zero-copy
                if not n:
                    break
                sent += n
        else:
            view = memoryview(self._buffer())
            src.seek(0)
            while sent < size:
                n = src.readinto(view[: min(size - sent, len(view))])  # type: ignore[attr-defined]
                if not n:
                    break
                sock.sendall(view[:n])
                sent += n
        if sent != size:
            raise DirectError(f"sent {sent} of {size} bytes: the file is shorter than expected")

    def _read_head(self, conn: _Connection, reused: bool) -> _Response:
        buf = conn.head
        view = memoryview(buf)
        got = 0
        while True:
            try:
                n = conn.sock.recv_into(view[got:])
            except _STALE as exc:
                if reused and got == 0:
                    raise _Stale() from exc
                raise
            if not n:
                if reused and got == 0:
                    raise _Stale()
                raise DirectError("connection closed in the middle of a response head")
            got += n
            end = buf.find(b"\r\n\r\n", max(0, got - n - 3), got)
            if end >= 0:
                break
            if got == len(buf):
                raise DirectError("response head too large")
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        try:
            version, status_text = lines[0].split(" ", 2)[:2]
            status = int(status_text)
        except ValueError:
            raise DirectError("malformed status line") from None
        length: int | None = None
        total: int | None = None
        keep_alive = version == "HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise DirectError("malformed Content-Length") from None
            elif name == "content-range":  # bytes START-END/TOTAL
                with contextlib.suppress(ValueError):
                    total = int(value.rpartition("/")[2])
            elif name == "transfer-encoding":
                length = None
                keep_alive = False  # not parsed here: never reuse
                break
            elif name == "connection" and "close" in value.lower():
                keep_alive = False
        if length is None:
            keep_alive = False
        return _Response(status, length, keep_alive, view[end + 4 : got], total)

    # ---- connections ----------------------------------------------------------------------

    def _get_conn(self) -> _Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            sock = socket.create_connection((self._hostname, self._port), timeout=self._connect_timeout)
        except OSError as exc:
            raise DirectError(f"cannot connect: {type(exc).__name__}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            # A blocking socket with kernel timeouts: each recv/send is one syscall, without
            # the poll(2) Python puts before every call on a socket that has a timeout.
            sock.settimeout(None)
            timeout = struct.pack("ll", int(self._read_timeout), int(self._read_timeout % 1 * 1e6))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._hostname)
        except OSError as exc:
            sock.close()
            raise DirectError(f"cannot connect: {type(exc).__name__}: {exc}") from exc
        return _Connection(sock)

    def _release(self, conn: _Connection, reusable: bool) -> None:
        if reusable:
            with self._lock:
                if len(self._idle) < self._pool_size:
                    self._idle.append(conn)
                    return
        conn.close()

    def _buffer(self) -> bytearray:
        buf: bytearray | None = getattr(self._local, "buffer", None)
        if buf is None:
            buf = self._local.buffer = bytearray(CHUNK_SIZE)
        return buf
