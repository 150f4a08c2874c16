"""A fault-injecting HTTP proxy for S3 traffic, in front of the real S3 server.

The engine or the operator is given ``s3://BUCKET?endpoint=http://127.0.0.1:PROXYPORT`` and
every request goes through this proxy, which forwards it to the real server (SeaweedFS) -- or
does not. Per request, with probability ``rate`` (seeded RNG), one fault is injected:

- ``error``: not forwarded; answered ``500 InternalError``, ``503 ServiceUnavailable`` or
  ``503 SlowDown`` with an S3 XML error body (what S3 sends when it is overloaded).
- ``reset_request``: the request is read, not forwarded, and the connection is reset (RST).
- ``reset_response``: the request IS forwarded (the server applies it), then only the first N
  bytes of the response are relayed (N uniform below the response's length) and the connection
  is reset: a truncated body for a GET, an *ambiguous* failure for a PUT or DELETE.
- ``latency``: the request is delayed by a uniform pick in ``latency`` seconds, then forwarded.
- ``stall``: the response head and half of the body are sent, then nothing for ``stall``
  seconds, then the rest (``stall_reset=True``: the connection is reset instead);
  ``stall_reset``: the same, always reset after the stall (a peer that died mid-response).

Besides the random faults, `Rule`s inject a given fault into the next N requests that match a
method and a path pattern (deterministic tests), and `down` / `up` make the server unreachable
(connections refused, live ones reset) and reachable again on the same port.

Counters (`stats`): requests, requests by method, faults by kind, connections.

How it relays: one upstream connection per request, sent with ``Connection: close`` and read to
the end, then relayed to the client with its framing intact (``Content-Length`` or chunked), so
client connections stay keep-alive as boto3 expects. ``Expect: 100-continue`` is answered by the
proxy itself. Bodies are held in memory (test objects are small).

The proxy runs its own asyncio loop in a daemon thread, so synchronous tests and subprocesses
(the CLI, the operator) can all use it. ``python -m reliability.faultproxy --help`` (from
``tests/``) runs it standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("error", "reset_request", "reset_response", "latency", "stall", "stall_reset")
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "error": 3.0,
    "reset_request": 1.0,
    "reset_response": 2.0,
    "latency": 2.0,
    "stall": 1.0,
    "stall_reset": 0.5,
}
ERRORS = (
    (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    (503, "Service Unavailable", "ServiceUnavailable", "Please reduce your request rate."),
    (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
)
MAX_HEAD = 64 << 10


@dataclass
class Rule:
    """Inject ``fault`` into the next ``times`` requests whose method and path match."""

    fault: str
    method: str | None = None
    path: str = ".*"
    times: int = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.hits < self.times
            and (self.method is None or self.method == method)
            and re.search(self.path, path) is not None
        )


@dataclass
class Stats:
    requests: int = 0
    connections: int = 0
    by_method: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    #: (method, path, fault or "") of every request, in arrival order (bounded)
    log: collections.deque[tuple[str, str, str]] = field(
        default_factory=lambda: collections.deque(maxlen=5000)
    )

    @property
    def injected(self) -> int:
        return sum(self.faults.values())

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        return f"{self.requests} requests, {self.injected} faults injected ({kinds})"


class _Reset(Exception):
    """Close the client connection with a RST."""


class FaultProxy:
    """See the module docstring. ``start()`` it, use `endpoint`, ``stop()`` it."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        rate: float = 0.0,
        seed: int = 0,
        weights: Mapping[str, float] = DEFAULT_WEIGHTS,
        latency: tuple[float, float] = (0.05, 0.3),
        stall: float = 1.5,
        stall_reset: bool = False,
        port: int = 0,
    ) -> None:
        unknown = set(weights) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
        self.upstream = upstream
        self.rate = rate
        self.seed = seed
        self.weights = dict(weights)
        self.latency = latency
        self.stall = stall
        self.stall_reset = stall_reset
        self.port = port
        self.rules: list[Rule] = []
        self.stats = Stats()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()

    # ---- control (any thread) -------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        self.up()
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def up(self) -> None:
        """Listen (again) on `port`: the server is reachable."""
        self._call(self._up())

    def down(self) -> None:
        """Stop listening and reset every open connection: the server is unreachable."""
        self._call(self._down())

    def add_rule(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self.rate = rate

    def snapshot(self) -> Stats:
        with self._lock:
            return Stats(
                self.stats.requests,
                self.stats.connections,
                collections.Counter(self.stats.by_method),
                collections.Counter(self.stats.faults),
                collections.deque(self.stats.log, maxlen=5000),
            )

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None, "proxy not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _up(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._writers):
            _abort(w)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    # ---- one client connection ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with self._lock:
            self.stats.connections += 1
        try:
            while True:
                request = await _read_request(reader, writer)
                if request is None:
                    break
                keep_alive = await self._handle(request, writer)
                if not keep_alive:
                    break
            with contextlib.suppress(Exception):
                writer.close()
        except _Reset:
            _abort(writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError, ValueError):
            _abort(writer)
        finally:
            self._writers.discard(writer)

    def _decide(self, method: str, path: str) -> str:
        with self._lock:
            self.stats.requests += 1
            self.stats.by_method[method] += 1
            fault = ""
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    fault = rule.fault
                    break
            if not fault and self.rate > 0 and self._rng.random() < self.rate:
                kinds = list(self.weights)
                fault = self._rng.choices(kinds, weights=[self.weights[k] for k in kinds])[0]
            if fault:
                self.stats.faults[fault] += 1
            self.stats.log.append((method, path, fault))
            return fault

    def _uniform(self, a: float, b: float) -> float:
        with self._lock:
            return self._rng.uniform(a, b)

    async def _handle(self, request: _Message, writer: asyncio.StreamWriter) -> bool:
        method, path = request.method, request.target.split("?", 1)[0]
        fault = self._decide(method, path)
        if fault == "denied":  # a permanent refusal (only by a rule): what no retry fixes
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                "<Error><Code>AccessDenied</Code><Message>Access Denied</Message>"
                f"<Resource>{_xml_escape(path)}</Resource><RequestId>faultproxy</RequestId></Error>"
            ).encode()
            head = (
                f"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nx-amz-request-id: faultproxy\r\n\r\n"
            ).encode()
            writer.write(head + body)
            await writer.drain()
            return request.keep_alive
        if fault == "error":
            status, text, code, message = ERRORS[int(self._uniform(0, len(ERRORS) - 1e-9))]
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message>"
                f"<Resource>{_xml_escape(path)}</Resource><RequestId>faultproxy</RequestId></Error>"
            ).encode()
            head = (
                f"HTTP/1.1 {status} {text}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nx-amz-request-id: faultproxy\r\n"
                + ("Retry-After: 1\r\n" if status == 503 else "")
                + "\r\n"
            ).encode()
            writer.write(head + body)
            await writer.drain()
            return request.keep_alive
        if fault == "reset_request":
            raise _Reset()
        if fault == "latency":
            await asyncio.sleep(self._uniform(*self.latency))
        response = await self._forward(request)
        if fault == "reset_response":
            raw = response.raw
            n = int(self._uniform(0, max(len(raw) - 1, 0)))
            writer.write(raw[:n])
            await writer.drain()
            raise _Reset()
        raw = response.relay(method == "HEAD")
        if fault in ("stall", "stall_reset"):
            head_len = len(raw) - len(response.body_raw)
            cut = head_len + len(response.body_raw) // 2
            writer.write(raw[:cut])
            await writer.drain()
            await asyncio.sleep(self.stall)
            if self.stall_reset or fault == "stall_reset":
                raise _Reset()
            raw = raw[cut:]
        writer.write(raw)
        await writer.drain()
        return request.keep_alive and response.framed

    async def _forward(self, request: _Message) -> _Message:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            headers = [
                (k, v) for k, v in request.headers if k.lower() not in ("connection", "expect", "keep-alive")
            ]
            headers.append(("Connection", "close"))
            head = f"{request.method} {request.target} {request.version}\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers
            )
            up_writer.write(head.encode("latin-1") + b"\r\n" + request.body_raw)
            await up_writer.drain()
            raw = await up_reader.read()
            while True:
                response = _parse_response(raw, request.method == "HEAD")
                if response.status != 100:
                    return response
                raw = raw[len(response.raw) :]
        finally:
            with contextlib.suppress(Exception):
                up_writer.close()


# ---- HTTP/1.1 framing -------------------------------------------------------------------------------


@dataclass
class _Message:
    start: str
    headers: list[tuple[str, str]]
    body_raw: bytes  # as on the wire (chunked framing kept)
    raw: bytes = b""  # head + body as received
    framed: bool = True  # the body's end is known without closing the connection

    @property
    def method(self) -> str:
        return self.start.split(" ", 2)[0]

    @property
    def target(self) -> str:
        return self.start.split(" ", 2)[1]

    @property
    def version(self) -> str:
        return self.start.split(" ", 2)[2]

    @property
    def status(self) -> int:
        return int(self.start.split(" ", 2)[1])

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    @property
    def keep_alive(self) -> bool:
        return (self.header("Connection") or "").lower() != "close"

    def relay(self, head_only: bool) -> bytes:
        """The response for the client: keep-alive when its body is framed, else close."""
        headers = [(k, v) for k, v in self.headers if k.lower() not in ("connection", "keep-alive")]
        headers.append(("Connection", "keep-alive" if self.framed else "close"))
        head = self.start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        return head.encode("latin-1") + (b"" if head_only else self.body_raw)


def _split_head(raw: bytes) -> tuple[str, list[tuple[str, str]], int]:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        raise ValueError("incomplete HTTP head")
    lines = raw[:end].decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return lines[0], headers, end + 4


def _chunked_length(data: bytes, start: int) -> int | None:
    """Length of a complete chunked body at ``data[start:]`` (None if incomplete)."""
    pos = start
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(data[pos:eol].split(b";", 1)[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            # trailers, then an empty line
            while True:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return eol + 2 - start
                pos = eol + 2
        pos += size + 2
        if pos > len(data):
            return None


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Message | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise
    except asyncio.LimitOverrunError as e:
        raise ValueError("request head too long") from e
    start, headers, _ = _split_head(head)
    msg = _Message(start, headers, b"")
    if (msg.header("Expect") or "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    if (msg.header("Transfer-Encoding") or "").lower() == "chunked":
        body = b""
        while True:
            n = _chunked_length(body, 0)
            if n is not None:
                break
            more = await reader.read(1 << 16)
            if not more:
                raise asyncio.IncompleteReadError(body, None)
            body += more
    else:
        length = int(msg.header("Content-Length") or 0)
        body = await reader.readexactly(length) if length else b""
    msg.body_raw = body
    msg.raw = head + body
    return msg


def _parse_response(raw: bytes, head_only: bool) -> _Message:
    start, headers, body_at = _split_head(raw)
    msg = _Message(start, headers, b"")
    status = msg.status
    if head_only or status in (100, 204, 304):
        msg.body_raw = b""
    elif (msg.header("Transfer-Encoding") or "").lower() == "chunked":
        n = _chunked_length(raw, body_at)
        if n is None:
            raise ValueError("upstream closed in the middle of a chunked body")
        msg.body_raw = raw[body_at : body_at + n]
    elif msg.header("Content-Length") is not None:
        msg.body_raw = raw[body_at : body_at + int(msg.header("Content-Length") or 0)]
    else:
        msg.body_raw = raw[body_at:]
        msg.framed = False
    msg.raw = raw[: body_at + len(msg.body_raw)]
    return msg


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a RST (SO_LINGER 0), as a crashed server or a broken network does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main() -> None:
    p = argparse.ArgumentParser(description="fault-injecting HTTP proxy for S3 traffic")
    p.add_argument("--upstream", required=True, help="HOST:PORT of the real S3 server")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    args = p.parse_args()
    host, _, port = args.upstream.rpartition(":")
    proxy = FaultProxy((host, int(port)), rate=args.rate, seed=args.seed, port=args.port).start()
    print(f"proxy {proxy.endpoint} -> {args.upstream}, fault rate {args.rate}, seed {args.seed}", flush=True)
    try:
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        print(proxy.snapshot().summary())


if __name__ == "__main__":
    main()
