"""The pageserver stand-in of the writer simulation (`helpers.writer`) and its coverage rule,
checked on their own (no engine, no remote storage): a check that cannot fail proves nothing."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from helpers.writer import KEY_MAX, KEY_MIN, Writer, coverage_gaps
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids, layer_name, lsn, metadata

INITDB = testdata.INITDB_LSN.value


def delta(start: int, end: int, k0: layer_name.Key = KEY_MIN, k1: layer_name.Key = KEY_MAX) -> layer_name.LayerName:
    return layer_name.DeltaLayerName(k0, k1, lsn.Lsn(start), lsn.Lsn(end))


def image(at: int, k0: layer_name.Key = KEY_MIN, k1: layer_name.Key = KEY_MAX) -> layer_name.LayerName:
    return layer_name.ImageLayerName(k0, k1, lsn.Lsn(at))


def meta(dcl: int, ancestor: ids.TimelineId | None = None, ancestor_lsn: int = 0) -> metadata.TimelineMetadata:
    return metadata.TimelineMetadata(
        disk_consistent_lsn=lsn.Lsn(dcl),
        prev_record_lsn=None,
        ancestor_timeline=ancestor,
        ancestor_lsn=lsn.Lsn(ancestor_lsn),
        latest_gc_cutoff_lsn=lsn.Lsn(INITDB),
        initdb_lsn=lsn.Lsn(INITDB),
        pg_version=15,
    )


A, B, C, D = INITDB + 0x1000, INITDB + 0x2000, INITDB + 0x3000, INITDB + 0x4000
MID = layer_name.Key(1 << 100)


def test_a_chain_of_deltas_from_the_initdb_image_covers() -> None:
    layers = [image(INITDB), delta(INITDB, A), delta(A, B + 1), delta(B + 1, C)]
    assert coverage_gaps(layers, meta(C)) == []
    assert coverage_gaps(layers[:-1], meta(B)) == []  # the last delta ends at B + 1


def test_a_missing_delta_is_a_gap() -> None:
    gaps = coverage_gaps([image(INITDB), delta(INITDB, A), delta(B, C)], meta(C))
    assert len(gaps) == 1 and "0/1697070..0/1698070" in gaps[0], gaps


def test_layers_short_of_the_disk_consistent_lsn_are_a_gap() -> None:
    assert coverage_gaps([image(INITDB), delta(INITDB, A)], meta(B))


def test_a_delta_ending_one_past_the_lsn_is_not_from_the_future_but_two_past_is() -> None:
    assert coverage_gaps([delta(INITDB, A + 1)], meta(A)) == []
    gaps = coverage_gaps([delta(INITDB, A + 2)], meta(A))
    assert any("from the future" in g for g in gaps), gaps
    assert any("from the future" in g for g in coverage_gaps([image(B)], meta(A)))


def test_a_branch_starts_at_its_ancestor_lsn_or_the_record_after_it() -> None:
    parent = ids.TimelineId(bytes(16))
    assert coverage_gaps([delta(B, C)], meta(C, parent, B)) == []
    assert coverage_gaps([delta(B + 8, C)], meta(C, parent, B)) == []
    assert coverage_gaps([], meta(B, parent, B)) == []  # a branch without layers yet
    assert coverage_gaps([delta(B + 16, C)], meta(C, parent, B))


def test_an_image_is_a_new_base_only_for_the_keys_it_covers() -> None:
    # a full image at B: nothing below it is needed
    assert coverage_gaps([image(B), delta(B, C)], meta(C)) == []
    # an image of half the keys: the other half still needs its deltas from initdb
    gaps = coverage_gaps([image(B, KEY_MIN, MID), delta(B, C)], meta(C))
    assert len(gaps) == 1 and gaps[0].startswith(f"keys {MID}"), gaps


def test_half_of_a_split_l1_missing_is_a_gap_in_those_keys_only() -> None:
    l1_low, l1_high = delta(INITDB, B, KEY_MIN, MID), delta(INITDB, B, MID, KEY_MAX)
    assert coverage_gaps([l1_low, l1_high, delta(B, C)], meta(C)) == []
    gaps = coverage_gaps([l1_low, delta(B, C)], meta(C))
    assert len(gaps) == 1 and gaps[0].startswith(f"keys {MID}"), gaps


# ---- the writer on a volume -------------------------------------------------------------------------


def volume(tmp_path: Path) -> tuple[Path, ids.TenantId]:
    """A tenant on the volume as an attach leaves it: the remote tree of testdata, downloaded."""
    from pageserver_operator.remote import local_fs

    remote = local_fs.LocalFsStorage(tmp_path / "remote", 4)
    gen = testdata.make_remote_tenant(remote, testdata.TenantShape(timelines=2, layers=4, layer_size=2048, seed=3))
    tp = paths.TenantPaths(tmp_path / "volume", gen.tenant_id)
    for key, _ in sorted(gen.objects.items()):
        parts = key.split("/")
        d = tp.timelines_dir / parts[3]
        d.mkdir(parents=True, exist_ok=True)
        data = (tmp_path / "remote" / key).read_bytes()
        if parts[4] == paths.INDEX_PART_FILE:
            from pageserver_operator.formats import index_part

            (d / paths.METADATA_FILE).write_bytes(index_part.IndexPart.parse(data).metadata_bytes)
        else:
            (d / parts[4]).write_bytes(data)
    return tmp_path / "volume", gen.tenant_id


def local_layers(d: Path) -> list[layer_name.LayerName]:
    return [layer_name.parse_layer_name(p.name) for p in d.iterdir() if layer_name.is_layer_file_name(p.name)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_what_the_writer_leaves_covers_every_timeline(tmp_path: Path, seed: int) -> None:
    workdir, tid = volume(tmp_path)
    w = Writer(workdir, tid, random.Random(seed))
    w.adopt()
    for _ in range(150):
        w.step()
        assert w.check_files() == [] and w.findings == []
    w.finish()
    assert set(w.counts) >= {"flush", "compact", "branch"}, w.counts
    tp = paths.TenantPaths(workdir, tid)
    for d in tp.timelines_dir.iterdir():
        m = metadata.TimelineMetadata.from_bytes((d / paths.METADATA_FILE).read_bytes())
        assert coverage_gaps(local_layers(d), m) == [], d.name
        assert w.timelines[ids.TimelineId.parse(d.name)].meta == m
    flushed = w.flushed()
    assert all(flushed[t] for t in flushed)


def test_check_files_reports_deleted_moved_and_changed_files(tmp_path: Path) -> None:
    workdir, tid = volume(tmp_path)
    w = Writer(workdir, tid, random.Random(5))
    w.adopt()
    layers = sorted(p for p in w.files if layer_name.is_layer_file_name(p.name))
    layers[0].unlink()
    layers[1].rename(layers[1].with_name(layers[1].name + ".0.old"))
    with open(layers[2], "r+b") as f:
        f.write(b"\0")
    problems = sorted(f.problem for f in w.check_files())
    assert problems[0] == "changed (2048 -> 2048 bytes)" and problems[1] == "deleted", problems
    assert problems[2].startswith("moved aside as ") and len(problems) == 3, problems
    assert w.check_files() == []  # each reported once


def test_the_writer_stops_when_the_tenant_is_gone_and_recreates_nothing(tmp_path: Path) -> None:
    workdir, tid = volume(tmp_path)
    w = Writer(workdir, tid, random.Random(7))
    w.adopt()
    while not w.tasks:
        w.step()
    shutil.rmtree(paths.TenantPaths(workdir, tid).tenant_dir)
    for _ in range(20):
        w.step()
    assert w.gone and not w.tasks and w.findings == []
    assert not paths.TenantPaths(workdir, tid).tenant_dir.exists()
