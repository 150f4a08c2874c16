"""load / sync / detach (reconcile_with_remote, reference §6.4-6.8, §6.11) against both backends.

- ``load`` re-downloads a truncated local layer (the short copy is set aside as ``.0.old``) and
  leaves the remote object untouched (nothing at all is written remotely);
- ``load`` removes only our own partial downloads and leaves every file of the writer (temp
  and ephemeral files, a timeline being created, a layer flushed before its metadata) alone
  (DESIGN §8.1);
- a local-only layer (written as a pageserver flush does: layer, then metadata) is uploaded by
  ``sync`` (and by ``load``) and then indexed with its size and the new metadata; ``status
  --remote`` shows the upload lag before and none after;
- ``load`` resumes an interrupted attach (marker present) instead of failing on it;
- a v0 index is never rewritten with the size of a damaged local copy (later attaches would
  fail on an intact object);
- a branch created locally (empty: its index alone, #3865; or with a layer) is uploaded by
  ``sync``, also by a sync while the tenant stays Active after a load (in-process, as the
  operator does), together with a layer flushed on an existing timeline;
- ``detach`` of a tenant with local-only layers uploads them and the index *before* the
  directory is removed (observed in-process with a recording storage wrapper, and through the
  CLI); a fresh attach elsewhere then yields the same tree; detach of an interrupted attach just
  removes it;
- remote metadata ahead of local (disk_consistent_lsn or gc cutoff) makes ``load`` end Broken
  with reason RemoteAheadOfLocal (exit 1, the reason as the last line of stderr), nothing uploaded,
  and ``detach`` refuses to remove the local data;
- a ``<tid>.___temp`` leftover of an interrupted detach is removed by ``load`` of the volume;
- SIGKILL of ``sync`` and ``detach`` at random points (2 + 3 per backend) converges: the rerun
  exits 0, every local-only layer ends up indexed remotely, and a directory is never gone before
  its layers are safe.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from helpers import cli, tree
from helpers.backends import Backend
from pageserver_operator import testdata
from pageserver_operator.engine import manager, paths
from pageserver_operator.formats import ids, index_part, layer_name, lsn, metadata
from pageserver_operator.remote import base, factory, url

pytestmark = pytest.mark.integration

SHAPE = testdata.TenantShape(timelines=3, layers=3, layer_size=30_000, sizes=[5_000, 300_001, 17, 64_000], seed=7)


def attached(b: Backend, shape: testdata.TenantShape = SHAPE) -> testdata.GeneratedTenant:
    gen = testdata.make_remote_tenant(b.open(), shape)
    r = cli.run(["attach", *b.args(), str(gen.tenant_id)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    return gen


def root_timeline(gen: testdata.GeneratedTenant) -> ids.TimelineId:
    return gen.timelines[0]  # make_remote_tenant writes the root first


def remote_index(b: Backend, tid: ids.TenantId, tlid: ids.TimelineId) -> tuple[index_part.IndexPart, dict[str, object]]:
    raw = b.open().get_bytes(paths.remote_index_key(tid, tlid))
    return index_part.IndexPart.parse(raw), json.loads(raw)


def status(b: Backend, tid: ids.TenantId) -> dict[str, dict[str, object]]:
    r = cli.run(["status", "--workdir", str(b.workdir), "--remote", b.url, str(tid), "--json"])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    return {t["timelineId"]: t for t in json.loads(r.stdout)["timelines"]}


def file_object(b: Backend, key: str) -> Path | None:
    """The file behind a remote key on the file:// backend (None on S3)."""
    return b.remote_root.joinpath(*key.split("/")) if b.remote_root is not None else None


# ---- load: truncated layer, leftovers, future layers --------------------------------------------


def test_load_redownloads_a_truncated_layer_and_leaves_the_remote_object_alone(backend: Backend) -> None:
    gen = attached(backend)
    tid, root = gen.tenant_id, root_timeline(gen)
    idx, _ = remote_index(backend, tid, root)
    name = next(n for n, m in idx.layers.items() if m.file_size == 300_001)
    local = paths.TenantPaths(backend.workdir, tid).layer(root, name)
    good = local.read_bytes()
    key = paths.remote_layer_key(tid, root, name)
    obj = file_object(backend, key)
    obj_stat = obj.stat() if obj is not None else None
    store_before = backend.store_snapshot()
    remote = tree.RemoteTenant.capture(backend.open(), tid)

    with open(local, "r+b") as f:
        f.truncate(100)
    r = cli.run(["load", *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)

    assert local.read_bytes() == good
    aside = local.with_name(f"{name}.0.old")
    assert aside.read_bytes() == good[:100], "the short copy is set aside, not deleted"
    tree.assert_matches_remote(backend.workdir, remote, allow_set_aside=True)
    assert backend.store_snapshot() == store_before, "load wrote to remote storage"
    if obj is not None and obj_stat is not None:
        now = obj.stat()
        assert (now.st_ino, now.st_mtime_ns, now.st_size) == (obj_stat.st_ino, obj_stat.st_mtime_ns, obj_stat.st_size)

    # truncated to zero bytes, the reference's scenario, in a child timeline this time
    child = gen.timelines[1]
    cidx, _ = remote_index(backend, tid, child)
    cname = next(iter(cidx.layers))
    clocal = paths.TenantPaths(backend.workdir, tid).layer(child, cname)
    cgood = clocal.read_bytes()
    clocal.write_bytes(b"")
    r = cli.run(["load", *backend.args()])  # every tenant of the volume
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    assert clocal.read_bytes() == cgood
    assert backend.store_snapshot() == store_before


def test_load_removes_only_our_partial_downloads_and_leaves_the_writers_files(backend: Backend) -> None:
    """DESIGN §8.1 (issue 14, defects 1 and 3): a pageserver may be writing while we load. Its
    files (``ephemeral-*``, ``*___temp``, a timeline being created with its ``___uninit``
    marker, a ``___temp`` timeline directory) and a layer it flushed before its metadata update
    stay exactly as they are; only our ``.temp_download`` is removed; nothing of the writer's is
    indexed."""
    gen = attached(backend)
    tid = gen.tenant_id
    tp = paths.TenantPaths(backend.workdir, tid)
    remote = tree.RemoteTenant.capture(backend.open(), tid)
    child = gen.timelines[1]
    cdir = tp.timeline_dir(child)
    some_layer = next(p.name for p in cdir.iterdir() if p.name != "metadata")
    (cdir / f"{some_layer}.temp_download").write_bytes(b"partial")
    (cdir / "metadata___temp").write_bytes(b"x" * 512)
    (cdir / "ephemeral-3").write_bytes(b"spill")
    dcl = timeline_dcl(cdir)
    future = layer_name.DeltaLayerName(
        layer_name.Key.MIN, layer_name.Key.MAX, dcl, lsn.Lsn(dcl.value + 0x10000)
    )
    (cdir / str(future)).write_bytes(b"flushed, metadata update to come")
    creating = ids.TimelineId(bytes(range(16)))
    (tp.timelines_dir / str(creating)).mkdir()
    (tp.timelines_dir / str(creating) / "metadata").write_bytes(b"half-created")
    (tp.timelines_dir / f"{creating}.___uninit").write_bytes(b"")
    (tp.timelines_dir / "0123___temp").mkdir()
    (tp.timelines_dir / "0123___temp" / "junk").write_bytes(b"j")
    writer_files = tree.snapshot(tp.timelines_dir)
    del writer_files[f"{child}/{some_layer}.temp_download"]

    r = cli.run(["load", *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    assert tree.snapshot(tp.timelines_dir) == writer_files, "load touched a file the writer owns"
    _, doc = remote_index(backend, tid, child)
    assert str(future) not in doc["timeline_layers"]  # type: ignore[operator]
    assert sorted(backend.open().list_dirs(paths.remote_timelines_prefix(tid))) == sorted(remote.timelines)


def timeline_dcl(tdir: Path) -> lsn.Lsn:
    return metadata.TimelineMetadata.from_bytes((tdir / "metadata").read_bytes()).disk_consistent_lsn


def test_load_resumes_an_interrupted_attach(backend: Backend) -> None:
    """Like the pageserver's start-up (reference §6.1 step 4), ``load`` of a volume where an attach
    was interrupted (marker present, a timeline's layers and metadata not all there yet) resumes
    the attach instead of failing on the missing metadata."""
    gen = attached(backend)
    tid = gen.tenant_id
    tp = paths.TenantPaths(backend.workdir, tid)
    remote = tree.RemoteTenant.capture(backend.open(), tid)
    # as if killed while downloading the last timeline: marker present, its metadata not written
    # yet, one layer missing and one partial
    tl = gen.timelines[2]
    tp.marker.write_bytes(b"")
    tp.metadata(tl).unlink()
    layers = sorted(p for p in tp.timeline_dir(tl).iterdir())
    layers[0].unlink()
    layers[1].rename(layers[1].with_name(layers[1].name + ".temp_download"))

    r = cli.run(["load", *backend.args()])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    assert not tp.marker.exists()
    tree.assert_matches_remote(backend.workdir, remote)


def test_v0_index_is_never_rewritten_with_the_size_of_a_damaged_local_copy(backend: Backend) -> None:
    """A v0 index has no sizes, so a local copy of a layer cannot be checked against it. If the
    engine takes the size of a truncated local copy as the layer's size and writes it into the
    upgraded index, every later attach of the tenant fails with a size mismatch on an intact
    remote object. Sizes written into the index must be the remote objects' sizes."""
    storage = backend.open()
    shape = testdata.TenantShape(timelines=2, layers=2, sizes=[10_000, 20_000], layer_size=3_000, index_version=0, seed=41)
    gen = testdata.make_remote_tenant(storage, shape)
    tid, root = gen.tenant_id, gen.timelines[0]
    v0 = {t: storage.get_bytes(paths.remote_index_key(tid, t)) for t in gen.timelines}
    r = cli.run(["attach", *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    for t, raw in v0.items():  # killed before the upgraded index reached remote storage
        storage.put_bytes(paths.remote_index_key(tid, t), raw)
    tp = paths.TenantPaths(backend.workdir, tid)
    name = next(n for n in index_part.IndexPart.parse(v0[root]).layers
                if gen.objects[paths.remote_layer_key(tid, root, n)] == 20_000)
    with open(tp.layer(root, name), "r+b") as f:  # the local copy gets damaged
        f.truncate(1_000)

    r = cli.run(["load", *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    _, doc = remote_index(backend, tid, root)
    size = doc.get("layer_metadata", {}).get(str(name), {}).get("file_size")  # type: ignore[attr-defined]
    assert size in (None, 20_000), f"after load, the index claims {size} bytes for a 20000-byte object"
    # the next flush + sync uploads an index with every size the engine believes in
    testdata.flush_local_layer(backend.workdir, tid, root, 4_096, seed=8)
    r = cli.run(["sync", *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    _, doc = remote_index(backend, tid, root)
    size = doc.get("layer_metadata", {}).get(str(name), {}).get("file_size")  # type: ignore[attr-defined]
    assert size in (None, 20_000), f"after sync, the index claims {size} bytes for a 20000-byte object"
    other = backend.tmp / "other-workdir"
    r = cli.run(["attach", "--workdir", str(other), "--remote", backend.url, str(tid)])
    assert r.returncode == cli.EXIT_OK, f"a fresh attach fails after the load: {cli.describe(r)}"


# ---- local-only layers: sync, load, detach ------------------------------------------------------


@pytest.mark.parametrize("command", ["sync", "load"])
def test_local_only_layer_is_uploaded_then_indexed_with_its_size(backend: Backend, command: str) -> None:
    gen = attached(backend)
    tid = gen.tenant_id
    child = gen.timelines[2]
    others = {t: remote_index(backend, tid, t)[1] for t in gen.timelines if t != child}
    name = testdata.flush_local_layer(backend.workdir, tid, child, 123_457, seed=3)
    tp = paths.TenantPaths(backend.workdir, tid)
    local_meta = tp.metadata(child).read_bytes()
    before = status(backend, tid)[str(child)]
    assert before["uploadLagBytes"] == 123_457

    r = cli.run([command, *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)

    storage = backend.open()
    assert storage.get_bytes(paths.remote_layer_key(tid, child, name)) == tp.layer(child, name).read_bytes()
    idx, doc = remote_index(backend, tid, child)
    assert doc["version"] == 1
    assert str(name) in doc["timeline_layers"]  # type: ignore[operator]
    assert doc["layer_metadata"][str(name)] == {"file_size": 123_457}  # type: ignore[index]
    assert idx.metadata_bytes == local_meta
    assert str(idx.disk_consistent_lsn) == str(metadata.TimelineMetadata.from_bytes(local_meta).disk_consistent_lsn)
    assert len(idx.layers) == SHAPE.layers + 1
    for t, d in others.items():
        assert remote_index(backend, tid, t)[1] == d, f"index of untouched timeline {t} changed"
    after = status(backend, tid)[str(child)]
    assert after["uploadLagBytes"] == 0
    assert after["remoteConsistentLsn"] == after["diskConsistentLsn"]

    # a fresh attach elsewhere reproduces the volume, new layer included
    other = backend.tmp / "other-workdir"
    r = cli.run(["attach", "--workdir", str(other), "--remote", backend.url, str(tid)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    tree.assert_matches_remote(other, tree.RemoteTenant.capture(storage, tid))
    tree.assert_matches_remote(backend.workdir, tree.RemoteTenant.capture(storage, tid))


def test_detach_with_local_only_layers_uploads_them_before_removing_the_directory(backend: Backend) -> None:
    gen = attached(backend)
    tid = gen.tenant_id
    tp = paths.TenantPaths(backend.workdir, tid)
    new = {
        gen.timelines[0]: testdata.flush_local_layer(backend.workdir, tid, gen.timelines[0], 77_777, seed=4),
        gen.timelines[1]: testdata.flush_local_layer(backend.workdir, tid, gen.timelines[1], 1_001, seed=5),
    }
    local_copy = {t: tp.layer(t, n).read_bytes() for t, n in new.items()}
    metas = {t: tp.metadata(t).read_bytes() for t in new}

    r = cli.run(["detach", *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    assert not tp.tenant_dir.exists()
    assert not tp.deleting_dir.exists()
    storage = backend.open()
    for t, n in new.items():
        assert storage.get_bytes(paths.remote_layer_key(tid, t, n)) == local_copy[t]
        idx, doc = remote_index(backend, tid, t)
        assert doc["layer_metadata"][str(n)] == {"file_size": len(local_copy[t])}  # type: ignore[index]
        assert idx.metadata_bytes == metas[t]

    r = cli.run(["attach", *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    tree.assert_matches_remote(backend.workdir, tree.RemoteTenant.capture(storage, tid))
    for t, n in new.items():
        assert tp.layer(t, n).read_bytes() == local_copy[t]


def test_detach_of_an_interrupted_attach_removes_it_and_touches_nothing_remote(backend: Backend) -> None:
    gen = attached(backend)
    tid = gen.tenant_id
    tp = paths.TenantPaths(backend.workdir, tid)
    tp.marker.write_bytes(b"")  # as if killed mid-attach
    tp.metadata(gen.timelines[1]).unlink()
    store_before = backend.store_snapshot()
    r = cli.run(["detach", *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    assert list(tp.tenants_root.iterdir()) == []
    assert backend.store_snapshot() == store_before


class RecordingStorage:
    """Delegates to a real backend; records every write with whether the tenant dir existed then."""

    def __init__(self, inner: base.RemoteStorage, tenant_dir: Path) -> None:
        self.inner = inner
        self.tenant_dir = tenant_dir
        self.writes: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()

    def _record(self, op: str, key: str) -> None:
        with self._lock:
            self.writes.append((op, key, self.tenant_dir.exists()))

    @property
    def concurrency(self) -> int:
        return self.inner.concurrency

    def describe(self) -> str:
        return self.inner.describe()

    def list_dirs(self, prefix: str) -> list[str]:
        return self.inner.list_dirs(prefix)

    def list_objects(self, prefix: str) -> dict[str, int]:
        return self.inner.list_objects(prefix)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def download_to(
        self, key: str, out: BinaryIO, expected_size: int | None, progress: base.ProgressCallback | None = None
    ) -> int:
        return self.inner.download_to(key, out, expected_size, progress)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.inner.put_bytes(key, data)
        self._record("put", key)

    def upload_file(self, key: str, path: Path, size: int, progress: base.ProgressCallback | None = None) -> None:
        self.inner.upload_file(key, path, size, progress)
        self._record("upload", key)

    def delete(self, key: str) -> None:
        self._record("delete", key)
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()


def test_detach_order_layer_then_index_then_directory_removal(backend: Backend) -> None:
    gen = attached(backend)
    tid = gen.tenant_id
    tp = paths.TenantPaths(backend.workdir, tid)
    tl = gen.timelines[1]
    name = testdata.flush_local_layer(backend.workdir, tid, tl, 50_000, seed=9)
    rec = RecordingStorage(factory.open_remote(url.parse_remote_url(backend.url)), tp.tenant_dir)
    m = manager.TenantManager(backend.workdir, rec)

    async def go() -> None:
        await asyncio.wait_for(m.get(tid).detach(timeout=60), 120)

    try:
        asyncio.run(go())
    finally:
        m.close()
    assert not tp.tenant_dir.exists()
    layer_key = paths.remote_layer_key(tid, tl, name)
    index_key = paths.remote_index_key(tid, tl)
    ops = [(op, k) for op, k, _ in rec.writes]
    assert ("upload", layer_key) in ops, rec.writes
    assert ("put", index_key) in ops, rec.writes
    assert ops.index(("upload", layer_key)) < ops.index(("put", index_key))
    assert all(existed for _, _, existed in rec.writes), f"a write happened after the directory was removed: {rec.writes}"
    assert not any(op == "delete" for op, _ in ops), "detach deleted remote objects"
    _, doc = remote_index(backend, tid, tl)
    assert doc["layer_metadata"][str(name)] == {"file_size": 50_000}  # type: ignore[index]


def _create_local_branch(b: Backend, gen: testdata.GeneratedTenant, with_layer: bool) -> ids.TimelineId:
    """What the pageserver does when it branches ``root``: a new timeline directory with only a
    ``metadata`` file (ancestor = root at its disk_consistent_lsn), optionally one flushed layer."""
    tid, root = gen.tenant_id, root_timeline(gen)
    tp = paths.TenantPaths(b.workdir, tid)
    parent = metadata.TimelineMetadata.from_bytes(tp.metadata(root).read_bytes())
    branch = ids.TimelineId(bytes([0xB7]) * 16)
    tp.timeline_dir(branch).mkdir()
    tp.metadata(branch).write_bytes(
        metadata.TimelineMetadata(
            disk_consistent_lsn=parent.disk_consistent_lsn,
            prev_record_lsn=None,
            ancestor_timeline=root,
            ancestor_lsn=parent.disk_consistent_lsn,
            latest_gc_cutoff_lsn=parent.latest_gc_cutoff_lsn,
            initdb_lsn=parent.initdb_lsn,
            pg_version=parent.pg_version,
        ).to_bytes()
    )
    if with_layer:
        testdata.flush_local_layer(b.workdir, tid, branch, 10_000, seed=12)
    return branch


def _assert_branch_is_remote(b: Backend, gen: testdata.GeneratedTenant, branch: ids.TimelineId) -> None:
    tid = gen.tenant_id
    tp = paths.TenantPaths(b.workdir, tid)
    idx, _ = remote_index(b, tid, branch)
    assert idx.metadata_bytes == tp.metadata(branch).read_bytes()
    local_layers = sorted(p.name for p in tp.timeline_dir(branch).iterdir() if p.name != "metadata")
    assert sorted(str(n) for n in idx.layers) == local_layers
    other = b.tmp / "other-workdir"
    r = cli.run(["attach", "--workdir", str(other), "--remote", b.url, str(tid)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    tree.assert_matches_remote(other, tree.RemoteTenant.capture(b.open(), tid))
    assert (paths.TenantPaths(other, tid).timeline_dir(branch)).is_dir()


@pytest.mark.parametrize("with_layer", [False, True], ids=["empty-branch", "branch-with-layer"])
def test_sync_uploads_a_new_local_branch(backend: Backend, with_layer: bool) -> None:
    """A branch created locally is uploaded (its index, even without layers: fix of #3865)."""
    gen = attached(backend)
    branch = _create_local_branch(backend, gen, with_layer)
    r = cli.run(["sync", *backend.args(), str(gen.tenant_id)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    _assert_branch_is_remote(backend, gen, branch)


def test_sync_while_active_picks_up_a_branch_of_a_loaded_timeline(backend: Backend) -> None:
    """The operator keeps the tenant Active and calls sync periodically; the pageserver branches
    a timeline and flushes a layer in between. That sync must upload both, not fail because the
    branch's ancestor was loaded earlier (which would make the tenant Broken)."""
    gen = attached(backend)
    m = manager.TenantManager(backend.workdir, factory.open_remote(url.parse_remote_url(backend.url)))
    t = m.get(gen.tenant_id)
    branch = None

    async def go() -> None:
        nonlocal branch
        await asyncio.wait_for(t.load(), 60)
        assert t.state is not None and t.state.value == "Active"
        branch = _create_local_branch(backend, gen, with_layer=True)
        flushed.append(testdata.flush_local_layer(backend.workdir, gen.tenant_id, gen.timelines[1], 3_333, seed=2))
        await asyncio.wait_for(t.sync(timeout=60), 90)
        assert t.state.value == "Active"
        snap = {s.timeline_id: s for s in t.snapshot().timelines}
        for s in snap.values():
            assert s.upload_lag_bytes == 0 and s.remote_consistent_lsn == s.disk_consistent_lsn

    flushed: list[layer_name.LayerName] = []
    try:
        asyncio.run(go())
    finally:
        m.close()
    assert branch is not None
    _assert_branch_is_remote(backend, gen, branch)
    _, doc = remote_index(backend, gen.tenant_id, gen.timelines[1])
    assert doc["layer_metadata"][str(flushed[0])] == {"file_size": 3_333}  # type: ignore[index]


# ---- remote ahead of local ----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["disk_consistent_lsn", "latest_gc_cutoff_lsn"])
def test_remote_metadata_ahead_of_local_makes_load_broken(backend: Backend, field: str) -> None:
    gen = attached(backend)
    tid, tl = gen.tenant_id, gen.timelines[1]
    storage = backend.open()
    idx, _ = remote_index(backend, tid, tl)
    m = idx.metadata
    ahead = lsn.Lsn(getattr(m, field).value + 0x10000)
    fields = {f: getattr(m, f) for f in m.__dataclass_fields__}
    fields[field] = ahead
    if field == "disk_consistent_lsn":
        fields["prev_record_lsn"] = None
    newer = metadata.TimelineMetadata(**fields)  # type: ignore[arg-type]
    storage.put_bytes(
        paths.remote_index_key(tid, tl),
        index_part.IndexPart.build({n: x.file_size for n, x in idx.layers.items()}, newer).to_json_bytes(),
    )
    store_before = backend.store_snapshot()
    tp = paths.TenantPaths(backend.workdir, tid)
    layers_before = sorted(p.name for p in tp.timeline_dir(tl).iterdir())

    for command in ("load", "sync"):
        r = cli.run([command, *backend.args(), str(tid)])
        assert r.returncode == cli.EXIT_FAILED, cli.describe(r)
        # the one-line reason is the last line (log records of the failure may precede it)
        lines = r.stderr.strip().splitlines()
        assert "Traceback" not in r.stderr, cli.describe(r)
        assert lines[-1].startswith(
            f"pageserver-operator {command}: RemoteAheadOfLocal: timeline {tid}/{tl}: "
            "remote metadata appears to be ahead of local metadata"
        ), cli.describe(r)
        assert str(ahead) in lines[-1]
    assert backend.store_snapshot() == store_before, "a Broken load uploaded something"
    assert sorted(p.name for p in tp.timeline_dir(tl).iterdir()) == layers_before
    # detach must not remove data it could not check against remote storage
    r = cli.run(["detach", *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_FAILED, cli.describe(r)
    assert "RemoteAheadOfLocal" in r.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tp.timeline_dir(tl).iterdir()) == layers_before
    assert backend.store_snapshot() == store_before


# ---- leftovers of an interrupted detach ---------------------------------------------------------


def test_load_of_the_volume_removes_a_leftover_of_an_interrupted_detach(backend: Backend) -> None:
    gen = attached(backend)
    leftover = backend.workdir / "tenants" / f"{'ab' * 16}.___temp"
    (leftover / "timelines" / ("cd" * 16)).mkdir(parents=True)
    (leftover / "timelines" / ("cd" * 16) / "metadata").write_bytes(b"m")
    r = cli.run(["load", *backend.args()])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    assert not leftover.exists()
    tree.assert_matches_remote(backend.workdir, tree.RemoteTenant.capture(backend.open(), gen.tenant_id))


# ---- SIGKILL of sync and detach -----------------------------------------------------------------


def _kill(args: list[str], when: Callable[[subprocess.Popen[bytes]], None]) -> tuple[bool, int, bytes, float]:
    """Start the CLI, wait ``when``, SIGKILL it if it still runs. Returns (killed, exit code,
    stderr, seconds it ran)."""
    t0 = time.monotonic()
    proc = cli.start(args)
    when(proc)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    return proc.returncode == -signal.SIGKILL, proc.returncode, err, time.monotonic() - t0


def _after(delay: float) -> Callable[[subprocess.Popen[bytes]], None]:
    return lambda _proc: time.sleep(delay)


def _when_removal_starts(tp: paths.TenantPaths, extra: float) -> Callable[[subprocess.Popen[bytes]], None]:
    def wait(proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 60
        while proc.poll() is None and tp.tenant_dir.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(extra)

    return wait


def test_sigkill_during_sync_and_detach_converges(backend: Backend) -> None:
    seed = int(os.environ.get("ENGINE_KILL_SEED", random.SystemRandom().randrange(1 << 32)))
    rng = random.Random(seed)
    ctx = f"[ENGINE_KILL_SEED={seed} backend={backend.kind}]"
    print(ctx)
    gen = attached(backend)
    tid = gen.tenant_id
    tp = paths.TenantPaths(backend.workdir, tid)
    storage = backend.open()
    t0 = time.monotonic()
    r = cli.run(["load", *backend.args(), str(tid)])  # how long a run takes with nothing to upload
    t_load = time.monotonic() - t0
    t0 = time.monotonic()
    subprocess.run([*cli.CLI, "--version"], capture_output=True, check=True)
    startup = min(time.monotonic() - t0, t_load)  # before this, the interpreter is still starting
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    new: dict[ids.TimelineId, list[layer_name.LayerName]] = {}

    def flush(count: int) -> None:
        for i, tl in enumerate(gen.timelines):
            for _ in range(count):
                j = len(new.get(tl, []))
                new.setdefault(tl, []).append(
                    testdata.flush_local_layer(backend.workdir, tid, tl, 96_000 + 7 * j, seed=100 * i + j)
                )

    def remote_has_everything() -> bool:
        for t in new:
            try:
                idx = index_part.IndexPart.parse(storage.get_bytes(paths.remote_index_key(tid, t)))
            except Exception:
                return False
            if not all(n in idx.layers for n in new[t]):
                return False
        return True

    flush(12)
    kills: list[str] = []
    for command in ("sync", "detach"):
        if command == "detach":
            flush(4)  # local-only layers for the detach to drain
        expected = {(t, str(n)): tp.layer(t, n).read_bytes() for t, ns in new.items() for n in ns}
        landed = attempts = 0
        # a run that finished before its kill bounds the next delays: the machine's own pace for
        # this command (a sync with nothing left to upload is much shorter than the first load)
        fastest = 1.3 * t_load
        while landed < (2 if command == "sync" else 3) and attempts < 12:
            attempts += 1
            if not tp.tenant_dir.exists():  # a detach finished: attach again for the next kill
                r = cli.run(["attach", *backend.args(), str(tid)])
                assert r.returncode == cli.EXIT_OK, f"{ctx} {kills}: {cli.describe(r)}"
            if command == "detach" and rng.random() < 0.5:
                extra = rng.uniform(0, 0.01)
                point, when = f"removal+{extra * 1000:.0f}ms", _when_removal_starts(tp, extra)
            else:
                delay = rng.uniform(min(0.9 * startup, 0.5 * fastest), fastest)
                point, when = f"{delay:.3f}s", _after(delay)
            killed, code, err, ran = _kill([command, *backend.args(), str(tid)], when)
            if killed:
                landed += 1
                kills.append(f"{command}@{point}")
            else:
                kills.append(f"{command}-done@{point}(ran {ran:.3f}s)")
                fastest = min(fastest, 0.95 * ran)
                assert code == cli.EXIT_OK, f"{ctx} {command} exited {code}: {err!r}"
            if not tp.tenant_dir.exists():
                # the directory may only disappear once every local-only layer is indexed remotely
                assert remote_has_everything(), f"{ctx} {kills}: directory gone before its layers were safe"
        assert landed >= 1, f"{ctx} no {command} kill landed: {kills}"
        if command == "sync":
            r = cli.run(["sync", *backend.args(), str(tid)])
            assert r.returncode == cli.EXIT_OK, f"{ctx} {kills}: {cli.describe(r)}"
            assert remote_has_everything(), f"{ctx} {kills}"
            tree.assert_matches_remote(backend.workdir, tree.RemoteTenant.capture(storage, tid))
    r = cli.run(["detach", *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_OK, f"{ctx} {kills}: {cli.describe(r)}"
    assert not tp.tenant_dir.exists() and not tp.deleting_dir.exists(), f"{ctx} {kills}"
    assert list((backend.workdir / "tenants").iterdir()) == [], f"{ctx} {kills}"
    assert remote_has_everything(), f"{ctx} {kills}"
    r = cli.run(["attach", *backend.args(), str(tid)])
    assert r.returncode == cli.EXIT_OK, f"{ctx} {kills}: {cli.describe(r)}"
    tree.assert_matches_remote(backend.workdir, tree.RemoteTenant.capture(storage, tid))
    for (t, n), data in expected.items():
        assert (tp.timeline_dir(t) / n).read_bytes() == data, f"{ctx} {kills}: {n} differs"
    print(f"{ctx} kills: {' '.join(kills)}")
