"""The remote storage backend of one engine integration test (see tests/integration/conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from helpers import tree
from pageserver_operator.devenv import objectstore
from pageserver_operator.remote import base, factory, url

S3_PREFIX = "pfx/ps"


@dataclass
class Backend:
    kind: str
    url: str
    tmp: Path
    workdir: Path
    remote_root: Path | None = None
    bucket: str | None = None
    server: objectstore.ObjectStore | None = None
    _opened: list[base.RemoteStorage] = field(default_factory=list)

    def open(self) -> base.RemoteStorage:
        """A storage client for the test itself (closed at teardown)."""
        storage = factory.open_remote(url.parse_remote_url(self.url))
        self._opened.append(storage)
        return storage

    def args(self) -> list[str]:
        return ["--workdir", str(self.workdir), "--remote", self.url]

    def store_snapshot(self) -> dict[str, str]:
        """Everything in the store, including what lies outside our prefix (S3: the whole bucket)."""
        if self.remote_root is not None:
            return tree.snapshot(self.remote_root) if self.remote_root.exists() else {}
        assert self.server is not None and self.bucket is not None
        client = self.server.client()
        out: dict[str, str] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = f"{obj['Size']}:{obj['ETag']}"
        return out

    def close(self) -> None:
        for s in self._opened:
            s.close()
