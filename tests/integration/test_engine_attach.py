"""Attach through the CLI against both backends (file:// and the real S3 server).

- a clean attach produces exactly the remote tree (layers byte-identical, metadata = the index's
  metadata_bytes, no leftovers), writes nothing to remote storage, and a second attach is a no-op;
- a resumed attach whose metadata files already exist completes (the seed's "file exists" bug);
- ``status --json`` carries the resource's field names (camelCase, checked against the CRD's
  status schema) and the LSNs of the volume and of the remote index;
- a v0 index (no sizes) attaches, and is then rewritten as v1 with every layer's size; the
  upgrade also happens when the first run was killed before the rewritten index was uploaded;
- SIGKILL of ``attach`` at random points (10 kills per backend; mostly once a random number of
  layers is on the volume plus a random few ms, so kills land during the work on any machine,
  sometimes during start-up; seeded RNG, printed and named in every assertion, replayable with
  ENGINE_KILL_SEED), sometimes several kills in a row before the rerun: after every kill the
  volume is either mid-attach (marker present) or complete, and the rerun exits 0 with the tree a
  clean attach produces, no temp files, and nothing written to remote storage.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import cli, tree
from helpers.backends import Backend
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids, index_part, layer_name

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "tenants.pageserver.dev.yaml"

SMALL = testdata.TenantShape(timelines=3, layers=4, layer_size=40_000, sizes=[12_345, 65_536, 1, 300_001, 7], seed=11)

KILLS_PER_BACKEND = 10
#: Tenants big enough that a clean attach takes about a second on each backend.
KILL_SHAPES = {
    "file": testdata.TenantShape(timelines=4, layers=100, layer_size=16 << 10, sizes=[16 << 10] * 400, seed=5),
    "s3": testdata.TenantShape(timelines=4, layers=35, layer_size=16 << 10, sizes=[16 << 10] * 100, seed=5),
}


def attach(b: Backend, tid: ids.TenantId) -> subprocess.CompletedProcess[str]:
    return cli.run(["attach", *b.args(), str(tid)])


def test_attach_produces_the_remote_tree_and_writes_nothing_remote(backend: Backend) -> None:
    storage = backend.open()
    gen = testdata.make_remote_tenant(storage, SMALL)
    remote = tree.RemoteTenant.capture(storage, gen.tenant_id)
    assert len(remote.timelines) == 3
    store_before = backend.store_snapshot()

    r = attach(backend, gen.tenant_id)
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    assert f"tenant {gen.tenant_id}: Active" in r.stdout
    tree.assert_matches_remote(backend.workdir, remote)
    assert backend.store_snapshot() == store_before, "attach of a v1 tenant wrote to remote storage"

    local_before = tree.snapshot(backend.workdir)
    again = attach(backend, gen.tenant_id)
    assert again.returncode == cli.EXIT_OK, cli.describe(again)
    assert tree.snapshot(backend.workdir) == local_before, "a second attach changed the volume"
    assert backend.store_snapshot() == store_before


def test_resume_when_every_metadata_file_was_already_written(backend: Backend) -> None:
    """The seed's resume bug (reference §6.3): killed after the metadata files were written but
    before the marker was removed, the resumed attach must not fail on "metadata exists"."""
    storage = backend.open()
    gen = testdata.make_remote_tenant(storage, SMALL)
    remote = tree.RemoteTenant.capture(storage, gen.tenant_id)
    r = attach(backend, gen.tenant_id)
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    tp = paths.TenantPaths(backend.workdir, gen.tenant_id)
    tp.marker.write_bytes(b"")
    (tp.timeline_dir(gen.timelines[0]) / "metadata___temp").write_bytes(b"half-written replacement")
    again = attach(backend, gen.tenant_id)
    assert again.returncode == cli.EXIT_OK, cli.describe(again)
    assert not tp.marker.exists()
    tree.assert_matches_remote(backend.workdir, remote)


def _schema_keys_ok(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """Names in ``value`` that the CRD's schema does not declare."""
    bad: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k, v in value.items():
            if k not in props:
                bad.append(f"{where}.{k}")
            else:
                bad += _schema_keys_ok(v, props[k], f"{where}.{k}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            bad += _schema_keys_ok(item, schema.get("items", {}), f"{where}[{i}]")
    return bad


def test_status_json_uses_the_resource_field_names(backend: Backend) -> None:
    storage = backend.open()
    gen = testdata.make_remote_tenant(storage, SMALL)
    r = attach(backend, gen.tenant_id)
    assert r.returncode == cli.EXIT_OK, cli.describe(r)

    s = cli.run(["status", "--workdir", str(backend.workdir), "--remote", backend.url, str(gen.tenant_id), "--json"])
    assert s.returncode == cli.EXIT_OK, cli.describe(s)
    status = json.loads(s.stdout)

    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert _schema_keys_ok(status, schema, "status") == []
    assert status["phase"] == "Active"
    assert status["hasInProgressDownloads"] is False
    by_id = {t["timelineId"]: t for t in status["timelines"]}
    assert sorted(by_id) == sorted(str(t) for t in gen.timelines)
    for tlid in gen.timelines:
        idx = index_part.IndexPart.parse(storage.get_bytes(paths.remote_index_key(gen.tenant_id, tlid)))
        t = by_id[str(tlid)]
        assert t["diskConsistentLsn"] == str(idx.metadata.disk_consistent_lsn)
        assert t["remoteConsistentLsn"] == str(idx.disk_consistent_lsn)
        assert t["layers"] == len(idx.layers)
        assert t["residentBytes"] == sum(m.file_size or 0 for m in idx.layers.values())
        assert t["uploadLagBytes"] == 0
        anc = idx.metadata.ancestor_timeline
        assert t.get("ancestorTimelineId") == (str(anc) if anc else None)
    # no snake_case anywhere
    text = s.stdout
    for snake in ("disk_consistent_lsn", "remote_consistent_lsn", "timeline_id", "has_in_progress"):
        assert snake not in text


def _v0_tenant(b: Backend) -> tuple[testdata.GeneratedTenant, dict[str, bytes]]:
    storage = b.open()
    shape = testdata.TenantShape(timelines=2, layers=3, sizes=[1000, 2000, 3001], layer_size=4444, index_version=0, seed=21)
    gen = testdata.make_remote_tenant(storage, shape)
    originals = {str(t): storage.get_bytes(paths.remote_index_key(gen.tenant_id, t)) for t in gen.timelines}
    for raw in originals.values():
        doc = json.loads(raw)
        assert "version" not in doc and "layer_metadata" not in doc
    return gen, originals


def _assert_upgraded(b: Backend, gen: testdata.GeneratedTenant, originals: dict[str, bytes]) -> None:
    storage = b.open()
    for tlid in gen.timelines:
        raw = storage.get_bytes(paths.remote_index_key(gen.tenant_id, tlid))
        doc = json.loads(raw)
        old = index_part.IndexPart.parse(originals[str(tlid)])
        assert doc.get("version") == 1, f"index of {tlid} was not rewritten as v1: {raw[:120]!r}"
        assert sorted(doc["timeline_layers"]) == sorted(str(n) for n in old.layers)
        assert bytes(doc["metadata_bytes"]) == old.metadata_bytes
        assert doc["disk_consistent_lsn"] == str(old.disk_consistent_lsn)
        for name in old.layers:
            key = paths.remote_layer_key(gen.tenant_id, tlid, name)
            assert doc["layer_metadata"][str(name)] == {"file_size": gen.objects[key]}


def test_v0_index_attaches_and_is_rewritten_as_v1_with_sizes(backend: Backend) -> None:
    gen, originals = _v0_tenant(backend)
    r = attach(backend, gen.tenant_id)
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    _assert_upgraded(backend, gen, originals)
    tree.assert_matches_remote(backend.workdir, tree.RemoteTenant.capture(backend.open(), gen.tenant_id))


def test_v0_upgrade_happens_even_if_the_first_run_died_before_uploading_the_index(backend: Backend) -> None:
    """Kill after the marker was removed but before the v1 index reached remote storage: the
    volume is complete, the remote index still v0. The rerun (a load) must still upgrade it."""
    gen, originals = _v0_tenant(backend)
    r = attach(backend, gen.tenant_id)
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    storage = backend.open()
    for tlid in gen.timelines:  # as if the upload never happened
        storage.put_bytes(paths.remote_index_key(gen.tenant_id, tlid), originals[str(tlid)])

    again = attach(backend, gen.tenant_id)
    assert again.returncode == cli.EXIT_OK, cli.describe(again)
    _assert_upgraded(backend, gen, originals)


def test_v0_upgrade_after_a_kill_before_the_marker_was_removed(backend: Backend) -> None:
    """Same, killed while still attaching (marker present, every layer already downloaded)."""
    gen, originals = _v0_tenant(backend)
    r = attach(backend, gen.tenant_id)
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    storage = backend.open()
    for tlid in gen.timelines:
        storage.put_bytes(paths.remote_index_key(gen.tenant_id, tlid), originals[str(tlid)])
    tp = paths.TenantPaths(backend.workdir, gen.tenant_id)
    tp.marker.write_bytes(b"")
    for tlid in gen.timelines:
        tp.metadata(tlid).unlink()

    again = attach(backend, gen.tenant_id)
    assert again.returncode == cli.EXIT_OK, cli.describe(again)
    _assert_upgraded(backend, gen, originals)


# ---- SIGKILL -------------------------------------------------------------------------------------


def _startup_seconds() -> float:
    t0 = time.monotonic()
    subprocess.run([*cli.CLI, "--version"], capture_output=True, check=True)
    return time.monotonic() - t0


def _complete_layers(tp: paths.TenantPaths) -> int:
    """Layer files fully downloaded so far (partial ``.temp_download`` files not counted)."""
    n = 0
    try:
        timelines = list(os.scandir(tp.timelines_dir))
    except FileNotFoundError:
        return 0
    for t in timelines:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            n += sum(1 for e in os.scandir(t.path) if layer_name.is_layer_file_name(e.name))
    return n


def _kill_at_a_random_point(
    args: list[str], tp: paths.TenantPaths, total: int, rng: random.Random, startup: float
) -> tuple[str, subprocess.Popen[bytes], bytes]:
    """Start the CLI and SIGKILL it at a random point of its work: mostly when a random number of
    layers is on the volume (so kills land during the attach whatever the machine's speed), plus
    a small random delay; sometimes at a random time during start-up."""
    present = _complete_layers(tp)
    proc = cli.start(args)
    if rng.random() < 0.15:
        point = f"t+{rng.uniform(0, startup):.3f}s"
        time.sleep(float(point[2:-1]))
    else:
        target = rng.randint(present, total)
        extra = rng.uniform(0, 0.03)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _complete_layers(tp) < target and time.monotonic() < deadline:
            time.sleep(0.003)
        time.sleep(extra)
        point = f"{target}/{total}+{extra * 1000:.0f}ms"
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    return point, proc, err


def test_sigkill_during_attach_at_random_points_converges(backend: Backend) -> None:
    seed = int(os.environ.get("ENGINE_KILL_SEED", random.SystemRandom().randrange(1 << 32)))
    rng = random.Random(seed)
    ctx = f"[ENGINE_KILL_SEED={seed} backend={backend.kind}]"
    print(ctx)
    storage = backend.open()
    gen = testdata.make_remote_tenant(storage, KILL_SHAPES[backend.kind])
    tid = gen.tenant_id
    remote = tree.RemoteTenant.capture(storage, tid)
    store_before = backend.store_snapshot()
    tp = paths.TenantPaths(backend.workdir, tid)
    total = remote.layer_count

    t0 = time.monotonic()
    r = attach(backend, tid)
    clean = time.monotonic() - t0
    assert r.returncode == cli.EXIT_OK, f"{ctx} clean attach: {cli.describe(r)}"
    tree.assert_matches_remote(backend.workdir, remote)
    startup = _startup_seconds()
    print(f"{ctx} {total} layers, clean attach {clean:.2f}s, interpreter start {startup:.2f}s")

    kills = 0
    rounds = 0
    log: list[str] = []
    status_checked = False
    while kills < KILLS_PER_BACKEND:
        rounds += 1
        assert rounds <= 2 * KILLS_PER_BACKEND, f"{ctx} too few kills landed: {log}"
        if rng.random() < 0.6:
            shutil.rmtree(tp.tenant_dir, ignore_errors=True)  # a fresh attach, else resume what is there
            log.append("|fresh")
        else:
            log.append("|resume")
        for _ in range(rng.randint(1, 3)):
            point, proc, err = _kill_at_a_random_point(["attach", *backend.args(), str(tid)], tp, total, rng, startup)
            if proc.returncode == -signal.SIGKILL:
                kills += 1
                log.append(f"kill@{point}")
            else:
                log.append(f"done@{point}")
                assert proc.returncode == cli.EXIT_OK, f"{ctx} {log}: attach exited {proc.returncode}: {err!r}"
            # crash consistency: marker present (attach incomplete), or nothing yet, or complete
            if tp.tenant_dir.is_dir() and any(tp.tenant_dir.iterdir()) and not tp.marker.exists():
                try:
                    tree.assert_matches_remote(backend.workdir, remote)
                except AssertionError as e:
                    raise AssertionError(f"{ctx} no marker after {log}, yet incomplete: {e}") from None
            elif tp.marker.exists() and not status_checked:
                st = cli.run(["status", "--workdir", str(backend.workdir), str(tid), "--json"])
                assert st.returncode == cli.EXIT_OK, f"{ctx} {cli.describe(st)}"
                assert json.loads(st.stdout)["phase"] == "Attaching"
                status_checked = True
        r = attach(backend, tid)
        assert r.returncode == cli.EXIT_OK, f"{ctx} {log}: rerun: {cli.describe(r)}"
        try:
            tree.assert_matches_remote(backend.workdir, remote)
        except AssertionError as e:
            raise AssertionError(f"{ctx} after {log}: {e}") from None
        assert backend.store_snapshot() == store_before, f"{ctx} {log}: attach wrote to remote storage"
    print(f"{ctx} {kills} kills in {rounds} rounds: {' '.join(log)}")
