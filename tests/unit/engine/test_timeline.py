"""A timeline directory at load (reference §6.5, §6.6): scan-then-clean and the metadata choice.

- `scan_timeline_dir` classifies every entry once, without touching anything: layers (with
  sizes), layers from the future relative to the chosen ``disk_consistent_lsn`` (image: lsn > D,
  delta: end > D + 1), our partial downloads (``.temp_download``), the writer's files (``___temp``,
  ``ephemeral-N``),
  set-aside ``.old`` files (ignored), unknown names (reported, never removed);
- `clean_timeline_dir` removes only our own partial downloads and leaves everything else alone
  (DESIGN §8.1: the writer's ``ephemeral-*``/``___temp`` files, unknown files, future layers);
  while Attaching (no writer) it also sets future layers aside as ``.N.old`` (never deletes
  them) and removes our own ``metadata___temp``;
- `choose_metadata`: local wins for (=,=), (>,>), (>,=), (=,>) in (dcl, gc cutoff); remote ahead in
  either field is RemoteAheadOfLocal; neither is NoMetadata;
- `read_local_metadata`: missing and corrupt files (a flipped byte is a checksum mismatch) are
  errors that name the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pageserver_operator.engine import timeline
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import ids, layer_name, lsn, metadata

D = lsn.Lsn(0x2000000)
TENANT = ids.TenantId.parse("11111111111111111111111111111111")
TIMELINE = ids.TimelineId.parse("22222222222222222222222222222222")


def image(at: int) -> layer_name.LayerName:
    return layer_name.ImageLayerName(layer_name.Key.MIN, layer_name.Key(3), lsn.Lsn(at))


def delta(start: int, end: int) -> layer_name.LayerName:
    return layer_name.DeltaLayerName(layer_name.Key.MIN, layer_name.Key.MAX, lsn.Lsn(start), lsn.Lsn(end))


def meta(dcl: int, gc: int) -> metadata.TimelineMetadata:
    return metadata.TimelineMetadata(
        disk_consistent_lsn=lsn.Lsn(dcl),
        prev_record_lsn=None,
        ancestor_timeline=None,
        ancestor_lsn=lsn.Lsn.ZERO,
        latest_gc_cutoff_lsn=lsn.Lsn(gc),
        initdb_lsn=lsn.Lsn(0x1000000),
        pg_version=15,
    )


IMAGE_AT_D = image(D.value)
IMAGE_FUTURE = image(D.value + 8)
DELTA_END_D1 = delta(0x1000000, D.value + 1)  # end == D + 1: complete
DELTA_FUTURE = delta(0x1000000, D.value + 2)  # end > D + 1: from the future
DELTA_OLD = delta(0x1000000, 0x1800000)


@pytest.fixture
def tdir(tmp_path: Path) -> Path:
    d = tmp_path / "timeline"
    d.mkdir()
    files = {
        "metadata": 512,
        str(IMAGE_AT_D): 10,
        str(IMAGE_FUTURE): 11,
        str(DELTA_END_D1): 12,
        str(DELTA_FUTURE): 13,
        str(DELTA_OLD): 14,
        f"{DELTA_OLD}.temp_download": 5,
        "metadata___temp": 3,
        "something___temp": 3,
        "ephemeral-7": 4,
        f"{DELTA_OLD}.0.old": 6,
        "README": 1,
        str(DELTA_OLD).lower(): 2,  # not canonical: unknown, not a layer
    }
    for name, size in files.items():
        (d / name).write_bytes(b"x" * size)
    (d / str(image(0x1000000))).mkdir()  # a directory with a layer's name
    return d


def listing(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in d.iterdir() if p.is_file()}


def test_scan_classifies_without_touching(tdir: Path) -> None:
    before = listing(tdir)
    scan = timeline.scan_timeline_dir(tdir, D)
    assert listing(tdir) == before
    assert scan.has_metadata
    assert scan.layers == {IMAGE_AT_D: 10, DELTA_END_D1: 12, DELTA_OLD: 14}
    assert sorted(map(str, scan.future)) == sorted([str(IMAGE_FUTURE), str(DELTA_FUTURE)])
    assert scan.removable == [f"{DELTA_OLD}.temp_download"]
    assert sorted(scan.writer) == sorted(["metadata___temp", "something___temp", "ephemeral-7"])
    assert sorted(scan.unknown) == sorted(["README", str(DELTA_OLD).lower(), str(image(0x1000000))])


WRITERS = {"metadata___temp": 3, "something___temp": 3, "ephemeral-7": 4, "README": 1, str(DELTA_OLD).lower(): 2}
LAYERS = {
    "metadata": 512, str(IMAGE_AT_D): 10, str(DELTA_END_D1): 12, str(DELTA_OLD): 14, f"{DELTA_OLD}.0.old": 6,
}


def test_clean_at_load_removes_only_our_partial_downloads(tdir: Path) -> None:
    """DESIGN §8.1: a writer may be running; its files and its future layers stay."""
    scan = timeline.scan_timeline_dir(tdir, D)
    timeline.clean_timeline_dir(tdir, scan)
    after = listing(tdir)
    assert after == {**LAYERS, **WRITERS, str(IMAGE_FUTURE): 11, str(DELTA_FUTURE): 13}
    assert (tdir / str(image(0x1000000))).is_dir()
    again = timeline.scan_timeline_dir(tdir, D)
    assert again.removable == []
    timeline.clean_timeline_dir(tdir, again)
    assert listing(tdir) == after


def test_clean_while_attaching_also_sets_future_layers_aside_and_removes_our_metadata_temp(tdir: Path) -> None:
    scan = timeline.scan_timeline_dir(tdir, D)
    timeline.clean_timeline_dir(tdir, scan, attaching=True)
    after = listing(tdir)
    writers = {k: v for k, v in WRITERS.items() if k != "metadata___temp"}
    assert after == {**LAYERS, **writers, f"{IMAGE_FUTURE}.0.old": 11, f"{DELTA_FUTURE}.0.old": 13}
    again = timeline.scan_timeline_dir(tdir, D)
    assert again.removable == [] and again.future == []
    timeline.clean_timeline_dir(tdir, again, attaching=True)
    assert listing(tdir) == after


def test_clean_tolerates_files_that_disappeared_since_the_scan(tdir: Path) -> None:
    scan = timeline.scan_timeline_dir(tdir, D)
    (tdir / f"{DELTA_OLD}.temp_download").unlink()
    (tdir / "metadata___temp").unlink()
    timeline.clean_timeline_dir(tdir, scan, attaching=True)
    assert (tdir / f"{IMAGE_FUTURE}.0.old").exists()


def test_second_future_copy_gets_the_next_number(tdir: Path) -> None:
    (tdir / f"{IMAGE_FUTURE}.0.old").write_bytes(b"earlier")
    timeline.clean_timeline_dir(tdir, timeline.scan_timeline_dir(tdir, D), attaching=True)
    assert (tdir / f"{IMAGE_FUTURE}.0.old").read_bytes() == b"earlier"
    assert (tdir / f"{IMAGE_FUTURE}.1.old").stat().st_size == 11


def test_scan_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    scan = timeline.scan_timeline_dir(tmp_path / "nope", D)
    assert not scan.has_metadata and scan.layers == {} and scan.future == []


# ---- choose_metadata ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "remote"),
    [
        ((0x2000000, 0x1000000), (0x2000000, 0x1000000)),  # (=,=)
        ((0x2000000, 0x1800000), (0x1000000, 0x1000000)),  # (>,>)
        ((0x2000000, 0x1000000), (0x1000000, 0x1000000)),  # (>,=)
        ((0x2000000, 0x1800000), (0x2000000, 0x1000000)),  # (=,>)
    ],
)
def test_local_wins_unless_remote_is_ahead(local: tuple[int, int], remote: tuple[int, int]) -> None:
    assert timeline.choose_metadata(meta(*local), meta(*remote), "w") == meta(*local)


@pytest.mark.parametrize(
    ("local", "remote"),
    [
        ((0x1000000, 0x1000000), (0x2000000, 0x1000000)),  # dcl behind
        ((0x2000000, 0x1000000), (0x2000000, 0x1800000)),  # gc cutoff behind
        ((0x3000000, 0x1000000), (0x2000000, 0x1800000)),  # dcl ahead but gc behind
        ((0x1000000, 0x1800000), (0x2000000, 0x1000000)),  # gc ahead but dcl behind
    ],
)
def test_remote_ahead_is_refused(local: tuple[int, int], remote: tuple[int, int]) -> None:
    with pytest.raises(EngineError) as e:
        timeline.choose_metadata(meta(*local), meta(*remote), "timeline t/x")
    assert e.value.reason == "RemoteAheadOfLocal"
    assert not e.value.transient
    assert e.value.message.startswith("timeline t/x: remote metadata appears to be ahead of local metadata")
    assert str(lsn.Lsn(remote[0])) in e.value.message and str(lsn.Lsn(local[0])) in e.value.message


def test_one_side_only_and_neither() -> None:
    assert timeline.choose_metadata(meta(1 << 24, 0), None, "w") == meta(1 << 24, 0)
    assert timeline.choose_metadata(None, meta(1 << 24, 0), "w") == meta(1 << 24, 0)
    with pytest.raises(EngineError) as e:
        timeline.choose_metadata(None, None, "timeline t/x")
    assert e.value.reason == "NoMetadata"
    assert "timeline t/x" in e.value.message


# ---- read_local_metadata -----------------------------------------------------------------------


def test_read_local_metadata(tmp_path: Path) -> None:
    path = tmp_path / "metadata"
    with pytest.raises(EngineError) as e:
        timeline.read_local_metadata(path, TENANT, TIMELINE)
    assert e.value.reason == "LocalMetadataMissing"
    assert str(path) in e.value.message

    m = meta(0x2000000, 0x1000000)
    path.write_bytes(m.to_bytes())
    assert timeline.read_local_metadata(path, TENANT, TIMELINE) == m

    data = bytearray(m.to_bytes())
    data[8] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EngineError) as e:
        timeline.read_local_metadata(path, TENANT, TIMELINE)
    assert e.value.reason == "LocalMetadataInvalid"
    assert "metadata checksum mismatch" in e.value.message
    assert f"timeline {TENANT}/{TIMELINE}" in e.value.message and str(path) in e.value.message


def test_removals_are_accounted_for_by_compaction_output_and_gc_not_by_nothing() -> None:
    from pageserver_operator.engine import timeline as tl_mod
    from pageserver_operator.formats import layer_name as ln
    from pageserver_operator.formats.lsn import Lsn

    lo, mid, hi = ln.Key.MIN, ln.Key.parse("030000000000000000000000000000000002"), ln.Key.MAX
    l0a = ln.DeltaLayerName(lo, hi, Lsn(0x100), Lsn(0x200))
    l0b = ln.DeltaLayerName(lo, hi, Lsn(0x200), Lsn(0x300))
    # compaction output partitioned by key: together they cover both L0s' keys and LSNs
    l1s = [ln.DeltaLayerName(lo, mid, Lsn(0x100), Lsn(0x300)), ln.DeltaLayerName(mid, hi, Lsn(0x100), Lsn(0x300))]
    assert tl_mod.accounted_for(l0a, l1s, Lsn(0)) and tl_mod.accounted_for(l0b, l1s, Lsn(0))
    assert not tl_mod.accounted_for(l0a, l1s[:1], Lsn(0)), "half the keys are not covered"
    image = ln.ImageLayerName(lo, hi, Lsn(0x2FF))
    assert tl_mod.accounted_for(l0b, [image], Lsn(0)), "an image at its end supersedes it"
    assert not tl_mod.accounted_for(l0b, [ln.ImageLayerName(lo, hi, Lsn(0x100))], Lsn(0))
    assert tl_mod.accounted_for(l0a, [], Lsn(0x200)), "below the GC cutoff"
    assert not tl_mod.accounted_for(l0a, [], Lsn(0x1FF))
