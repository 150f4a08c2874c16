"""In-process engine tests: a `Tenant` on a temporary volume, and a pageserver stand-in.

`EngineEnv` runs the real engine (no subprocess, no server) against a remote that is either
``file://`` (`LocalFsStorage`) or `helpers.fake_storage.FakeStorage` (operations held in flight
and failed on demand). `Writer` does to a timeline directory what a pageserver does (DESIGN
§8.1): a layer is written as ``<name>___temp`` and renamed into place, then ``metadata`` is
rewritten with a higher ``disk_consistent_lsn``; it keeps files of its own (``ephemeral-N``,
``<layer>___temp``) and creates timelines layers first, metadata last.

`run` runs one async scenario on a fresh event loop with a time bound; `until` waits for a
condition (an event, never a fixed sleep).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pageserver_operator import testdata
from pageserver_operator.engine import crashsafe, paths, remote_io, tenant, upload_queue
from pageserver_operator.formats import ids, index_part, layer_name, lsn, metadata
from pageserver_operator.remote import base

T = TypeVar("T")

FAST = upload_queue.Backoff(base=0.001, factor=1.0, cap=0.001)


def run(fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(fn(), timeout)

    return asyncio.run(main())


async def until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.002)


@dataclass
class EngineEnv:
    workdir: Path
    storage: base.RemoteStorage
    io: remote_io.RemoteIO
    tenants: list[tenant.Tenant] = field(default_factory=list)

    def tenant(self, tenant_id: ids.TenantId) -> tenant.Tenant:
        t = tenant.Tenant(self.workdir, tenant_id, self.io, backoff=FAST)
        self.tenants.append(t)
        return t

    def paths(self, tenant_id: ids.TenantId) -> paths.TenantPaths:
        return paths.TenantPaths(self.workdir, tenant_id)

    def remote_index(self, tenant_id: ids.TenantId, timeline_id: ids.TimelineId) -> index_part.IndexPart:
        return index_part.IndexPart.parse(self.storage.get_bytes(paths.remote_index_key(tenant_id, timeline_id)))

    def close(self) -> None:
        for t in self.tenants:
            t.stop()
        self.io.close()


def make_tenant(storage: base.RemoteStorage, seed: int = 1, timelines: int = 2, layers: int = 3) -> testdata.GeneratedTenant:
    shape = testdata.TenantShape(timelines=timelines, layers=layers, layer_size=2000, seed=seed)
    return testdata.make_remote_tenant(storage, shape)


def read_metadata(path: Path) -> metadata.TimelineMetadata:
    return metadata.TimelineMetadata.from_bytes(path.read_bytes())


@dataclass
class Writer:
    """A pageserver stand-in writing to one tenant's timelines (DESIGN §8.1)."""

    workdir: Path
    tenant_id: ids.TenantId
    seed: int = 0

    def _paths(self) -> paths.TenantPaths:
        return paths.TenantPaths(self.workdir, self.tenant_id)

    def dcl(self, tlid: ids.TimelineId) -> lsn.Lsn:
        return read_metadata(self._paths().metadata(tlid)).disk_consistent_lsn

    def write_layer(self, tlid: ids.TimelineId, start: lsn.Lsn, end: lsn.Lsn, size: int = 3000) -> layer_name.LayerName:
        """A delta layer over ``[start, end)``: temp file, fsync, rename (no metadata update)."""
        name = layer_name.DeltaLayerName(layer_name.Key.MIN, layer_name.Key.MAX, start, end)
        target = self._paths().layer(tlid, name)
        tmp = target.with_name(target.name + paths.TEMP_SUFFIX)
        self.seed += 1
        tmp.write_bytes(bytes([self.seed % 251]) * size)
        os.replace(tmp, target)
        return name

    def set_dcl(self, tlid: ids.TimelineId, dcl: lsn.Lsn, base_meta: metadata.TimelineMetadata | None = None) -> None:
        """Rewrite ``metadata`` in place with a new ``disk_consistent_lsn``."""
        path = self._paths().metadata(tlid)
        m = base_meta or read_metadata(path)
        new = metadata.TimelineMetadata(
            disk_consistent_lsn=dcl,
            prev_record_lsn=lsn.Lsn(dcl.value - 0x38),
            ancestor_timeline=m.ancestor_timeline,
            ancestor_lsn=m.ancestor_lsn,
            latest_gc_cutoff_lsn=m.latest_gc_cutoff_lsn,
            initdb_lsn=m.initdb_lsn,
            pg_version=m.pg_version,
        )
        crashsafe.durable_write(path, new.to_bytes())

    def flush(self, tlid: ids.TimelineId, size: int = 3000, *, with_metadata: bool = True) -> layer_name.LayerName:
        """Flush a layer right after the current ``disk_consistent_lsn``, then (unless told not
        to) advance the metadata over it."""
        start = self.dcl(tlid)
        end = lsn.Lsn(start.value + testdata.LSN_STEP)
        name = self.write_layer(tlid, start, end, size)
        if with_metadata:
            self.set_dcl(tlid, end)
        return name

    def own_files(self, tlid: ids.TimelineId) -> dict[str, bytes]:
        """Files the writer keeps in the timeline directory (spill file, a layer being written)."""
        d = self._paths().timeline_dir(tlid)
        dcl = self.dcl(tlid)
        pending = layer_name.DeltaLayerName(layer_name.Key.MIN, layer_name.Key.MAX, dcl, lsn.Lsn(dcl.value + 0x20000))
        files = {"ephemeral-1": b"spill", f"{pending}{paths.TEMP_SUFFIX}": b"half a layer", "other-file": b"x"}
        for name, data in files.items():
            (d / name).write_bytes(data)
        return files

    def snapshot(self, tlid: ids.TimelineId, names: dict[str, bytes]) -> dict[str, bytes | None]:
        d = self._paths().timeline_dir(tlid)
        return {n: (d / n).read_bytes() if (d / n).exists() else None for n in names}
