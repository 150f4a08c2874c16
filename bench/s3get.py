"""Download a tenant's layers with a maintained S3 library: the child program of `bench.s3clients`.

``python -m bench.s3get obstore|awscrt --endpoint URL --bucket B --keys FILE --dest DIR``.
The harness writes ``FILE`` outside the timing (one ``key<TAB>size`` per line, every layer of the
tenant's prefix: what our attach learns from the index, so neither lists the bucket). The program
downloads every key into ``DIR`` the way our attach does, so the two are durably comparable:

- each object into ``<name>.temp_download``, ``fsync``, renamed to ``<name>``; one ``fsync`` of
  ``DIR`` at the end (our attach: the same, plus the index and the metadata file);
- the size of each file checked against the list;
- credentials from the environment (the harness's ``AWS_ACCESS_KEY_ID``/``SECRET``/``REGION``).

``--no-fsync`` drops the two fsyncs (then it is comparable to s5cmd; the harness's "durable"
column adds the ``sync`` that follows). The method names say which: ``obstore`` fsyncs,
``obstore-nofsync`` does not.

How each library is used (at its best, as its documentation recommends):

- **obstore** (Rust ``object_store`` through pyo3): one ``S3Store`` (path-style, ``allow_http``
  for the loopback endpoint), the synchronous ``obstore.get`` from a pool of ``--concurrency``
  threads (the call releases the GIL while the Rust runtime does the I/O), the body streamed in
  1 MiB chunks (``GetResult.stream``) and written with ``os.write``; objects of at least 128 MiB
  as parallel 32 MiB ranged GETs written with ``os.pwrite`` (what our attach does; obstore does
  not split on its own).
- **awscrt** (``awscrt.s3.S3Client``: the CRT client that boto3's CRT transfer manager wraps, used
  directly because ``boto3.crt`` refuses a custom endpoint): one client with a throughput target
  of 10 Gbit/s (its default when it cannot detect one), 8 MiB parts (splits large objects into
  ranged GETs itself) and ``recv_filepath`` (the C library writes the file); at most
  ``--inflight`` requests submitted at once; the fsync and rename of a finished file on a pool
  of 4 threads.

It imports nothing of the harness or of the operator (its start-up is part of its time), and the
library only once it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

TEMP = ".temp_download"
CHUNK = 1 << 20
RANGED_MIN = 128 << 20
RANGE_SIZE = 32 << 20


# ---- the child side ------------------------------------------------------------------------


def read_keys(path: Path) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for line in path.read_text().splitlines():
        key, size = line.split("\t")
        out.append((key, int(size)))
    return out


class Finisher:
    """fsync + rename of finished temp files (or just the rename), and the final directory fsync."""

    def __init__(self, dest: Path, fsync: bool) -> None:
        self.dest = dest
        self.fsync = fsync

    def finish(self, fd: int, name: str, size: int) -> None:
        try:
            if self.fsync:
                os.fsync(fd)
            got = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if got != size:
            raise RuntimeError(f"{name}: {got} bytes, expected {size}")
        os.rename(self.dest / (name + TEMP), self.dest / name)

    def finish_path(self, name: str, size: int) -> None:
        fd = os.open(self.dest / (name + TEMP), os.O_RDONLY)
        self.finish(fd, name, size)

    def done(self) -> None:
        if self.fsync:
            fd = os.open(self.dest, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def run_obstore(args: argparse.Namespace, items: list[tuple[str, int]], fin: Finisher) -> None:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        args.bucket,
        endpoint=args.endpoint,
        region=os.environ.get("AWS_REGION", "us-east-1"),
        virtual_hosted_style_request=False,
        client_options={"allow_http": args.endpoint.startswith("http:")},
    )

    def whole(key: str, size: int) -> None:
        name = key.rsplit("/", 1)[1]
        fd = os.open(fin.dest / (name + TEMP), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for chunk in obstore.get(store, key).stream(min_chunk_size=CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            raise
        fin.finish(fd, name, size)

    def part(fd: int, key: str, start: int, end: int) -> None:
        pos = start
        for chunk in obstore.get(store, key, options={"range": (start, end)}).stream(min_chunk_size=CHUNK):
            view = memoryview(chunk)
            while view:
                n = os.pwrite(fd, view, pos)
                pos += n
                view = view[n:]
        if pos != end:
            raise RuntimeError(f"{key}: range {start}-{end} ended at {pos}")

    with ThreadPoolExecutor(args.concurrency) as pool:
        futures: list[Future[None]] = []
        large: list[tuple[str, int, int, list[Future[None]]]] = []
        for key, size in items:
            if size >= RANGED_MIN:
                name = key.rsplit("/", 1)[1]
                fd = os.open(fin.dest / (name + TEMP), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                parts = [
                    pool.submit(part, fd, key, s, min(s + RANGE_SIZE, size))
                    for s in range(0, size, RANGE_SIZE)
                ]
                large.append((name, size, fd, parts))
            else:
                futures.append(pool.submit(whole, key, size))
        for f in futures:
            f.result()
        for name, size, fd, parts in large:
            for p in parts:
                p.result()
            fin.finish(fd, name, size)


def run_awscrt(args: argparse.Namespace, items: list[tuple[str, int]], fin: Finisher) -> None:
    from awscrt import auth, http, io, s3

    region = os.environ.get("AWS_REGION", "us-east-1")
    parts = urllib.parse.urlsplit(args.endpoint)
    host = parts.netloc
    bootstrap = io.ClientBootstrap.get_or_create_static_default()
    credentials = auth.AwsCredentialsProvider.new_default_chain(bootstrap)
    client = s3.S3Client(
        bootstrap=bootstrap,
        region=region,
        tls_mode=s3.S3RequestTlsMode.DISABLED if parts.scheme == "http" else s3.S3RequestTlsMode.ENABLED,
        signing_config=s3.create_default_s3_signing_config(region=region, credential_provider=credentials),
        part_size=8 << 20,
        throughput_target_gbps=10.0,
    )
    slots = threading.BoundedSemaphore(args.inflight)
    errors: list[BaseException] = []
    finishers = ThreadPoolExecutor(4)
    pending: list[Future[None]] = []
    lock = threading.Lock()

    def on_done_for(name: str, size: int) -> Callable[..., None]:
        def on_done(error: BaseException | None = None, status_code: int | None = None, **_: object) -> None:
            try:
                if error is not None:
                    errors.append(RuntimeError(f"{name}: {error!r} (HTTP {status_code})"))
                else:
                    with lock:
                        pending.append(finishers.submit(fin.finish_path, name, size))
            finally:
                slots.release()

        return on_done

    base = parts.path.rstrip("/") + "/" + urllib.parse.quote(args.bucket) + "/"
    requests = []
    for key, size in items:
        name = key.rsplit("/", 1)[1]
        slots.acquire()
        if errors:
            break
        req = http.HttpRequest(
            "GET", base + urllib.parse.quote(key, safe="/~"), http.HttpHeaders([("Host", host)])
        )
        requests.append(
            client.make_request(
                type=s3.S3RequestType.GET_OBJECT,
                request=req,
                recv_filepath=str(fin.dest / (name + TEMP)),
                on_done=on_done_for(name, size),
            )
        )
    for r in requests:
        r.finished_future.exception()
    if errors:
        raise errors[0]
    for f in list(pending):
        f.result()
    finishers.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.s3get")
    p.add_argument("library", choices=["obstore", "awscrt"])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--keys", type=Path, required=True)
    p.add_argument("--dest", type=Path, required=True)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--inflight", type=int, default=64, help="awscrt: requests submitted at once")
    p.add_argument("--no-fsync", dest="fsync", action="store_false")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    items = read_keys(args.keys)
    fin = Finisher(args.dest, args.fsync)
    (run_obstore if args.library == "obstore" else run_awscrt)(args, items, fin)
    fin.done()
    print(f"{args.library}: {len(items)} objects in {time.perf_counter() - t0:.2f}s", file=sys.stderr)
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's teardown, as our CLI does


if __name__ == "__main__":
    raise SystemExit(main())
