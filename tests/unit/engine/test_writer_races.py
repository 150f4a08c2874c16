"""Two races with the pageserver that the writer simulation (tests/reliability/test_writer_protocol.py)
found on main at ea3e814, reproduced deterministically: the writer acts at the exact instant the
simulation caught it at (DESIGN §8.1: the writer may write at any time, also while we load)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from helpers.engine_env import EngineEnv, Writer, make_tenant, read_metadata, run
from pageserver_operator.engine import setup, snapshot
from pageserver_operator.formats import layer_name


@pytest.fixture
def env(local: EngineEnv) -> EngineEnv:
    return local


def test_load_never_writes_an_older_metadata_over_the_writers(env: EngineEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """Load reads the local metadata, then (setup.TimelineSetup._finish_timeline) rewrites the file when it
    differs from what it read: a metadata the writer rewrote meanwhile must not be replaced by
    the older one (the local disk_consistent_lsn would go backwards, and the layer flushed with
    it would become "from the future" and be lost by a detach)."""
    gen = make_tenant(env.storage, seed=4)
    run(env.tenant(gen.tenant_id).attach)
    tid, tl = gen.tenant_id, gen.timelines[0]
    w = Writer(env.workdir, tid)
    original = setup.TimelineSetup._finish_timeline
    flushed: list[layer_name.LayerName] = []

    def finish(self: setup.TimelineSetup, t: Any, *args: Any) -> None:
        if t.timeline_id == tl and not flushed:
            flushed.append(w.flush(tl))  # the pageserver flushes while we load
        original(self, t, *args)

    monkeypatch.setattr(setup.TimelineSetup, "_finish_timeline", finish)
    t = env.tenant(tid)
    run(t.load)
    assert flushed and isinstance(flushed[0], layer_name.DeltaLayerName)
    on_disk = read_metadata(env.paths(tid).metadata(tl)).disk_consistent_lsn
    assert on_disk == flushed[0].lsn_end, f"load wrote back an older metadata: {on_disk}, the writer's is {flushed[0].lsn_end}"


def test_a_layer_removed_by_compaction_during_the_scan_does_not_break_the_tenant(
    env: EngineEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compaction removes L0s once an L1 and the metadata cover them, at any time: one that
    vanishes between the directory listing and its stat is gone, not a local I/O failure."""
    gen = make_tenant(env.storage, seed=5, layers=4)
    run(env.tenant(gen.tenant_id).attach)
    tid, tl = gen.tenant_id, gen.timelines[0]
    d = env.paths(tid).timeline_dir(tl)
    l0s = sorted(
        (n for p in d.iterdir() if layer_name.is_layer_file_name(p.name)
         for n in [layer_name.parse_layer_name(p.name)] if isinstance(n, layer_name.DeltaLayerName)),
        key=lambda n: n.sort_key(),
    )  # fmt: skip
    a, b = l0s[-2], l0s[-1]
    assert isinstance(a, layer_name.DeltaLayerName) and isinstance(b, layer_name.DeltaLayerName)
    l1 = layer_name.DeltaLayerName(layer_name.Key.MIN, layer_name.Key.MAX, a.lsn_start, b.lsn_end)
    (d / str(l1)).write_bytes(b"\x01" * 4000)  # the L1 over a and b; the metadata needs no change
    real_scandir = os.scandir

    class Listing:
        """What os.scandir returns: an iterator, and a context manager (os.walk uses it so)."""

        def __init__(self, entries: list[os.DirEntry[str]]) -> None:
            self._it = iter(entries)

        def __iter__(self) -> Listing:
            return self

        def __next__(self) -> os.DirEntry[str]:
            return next(self._it)

        def __enter__(self) -> Listing:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def scandir(path: Any = ".") -> Listing:
        with real_scandir(path) as listing:
            entries = Listing(list(listing))
        if Path(path) == d and (d / str(a)).exists():
            (d / str(a)).unlink()  # compaction removes the L0 right after our listing
        return entries

    monkeypatch.setattr(os, "scandir", scandir)
    t = env.tenant(tid)
    run(t.load)
    assert t.state is snapshot.TenantState.ACTIVE, (t.reason, t.message)
    assert l1 in t.timelines[tl].layers
    # (the remote index still names ``a``, so load downloads it again, as reconcile_with_remote
    # does for any layer missing locally: telling a compaction from a loss at load is the
    # deletion rule of the generations work, not this scan's)
