"""Helpers shared by the reliability suites (the e2e helpers are reused as they are)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from helpers import cli, tree
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids, index_part, lsn, metadata
from pageserver_operator.remote import base


def run_cli(
    args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 180.0
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(
        [*cli.CLI, *args], capture_output=True, text=True, timeout=timeout, env=full, check=False
    )


def remote_indexes(storage: base.RemoteStorage, tid: ids.TenantId) -> dict[str, index_part.IndexPart]:
    """The newest index of every timeline (the highest generation), by timeline id."""
    out: dict[str, index_part.IndexPart] = {}
    for name in storage.list_dirs(paths.remote_timelines_prefix(tid)):
        tlid = ids.TimelineId.parse(name)
        try:
            out[name] = tree.newest_index(storage, tid, tlid)
        except Exception:  # a timeline "directory" without an index (SeaweedFS keeps empty ones)
            continue
    return out


def local_metadata(workdir: Path, tid: ids.TenantId) -> dict[str, metadata.TimelineMetadata]:
    tp = paths.TenantPaths(workdir, tid)
    out: dict[str, metadata.TimelineMetadata] = {}
    if not tp.timelines_dir.is_dir():
        return out
    for d in tp.timelines_dir.iterdir():
        m = d / paths.METADATA_FILE
        if m.is_file():
            out[d.name] = metadata.TimelineMetadata.from_bytes(m.read_bytes())
    return out


class IndexWatch:
    """Remembers every remote index seen and fails if one goes backwards (LSN or layers lost)."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[lsn.Lsn, frozenset[str]]] = {}
        #: layers the pageserver removed (per timeline): they may leave the index at any later check
        self.removed: dict[str, set[str]] = {}

    def check(
        self, storage: base.RemoteStorage, tid: ids.TenantId, where: str = ""
    ) -> dict[str, index_part.IndexPart]:
        current = remote_indexes(storage, tid)
        problems = []
        for name, idx in current.items():
            dcl = idx.metadata.disk_consistent_lsn
            layers = frozenset(str(n) for n in idx.layers)
            if name in self.seen:
                old_dcl, old_layers = self.seen[name]
                if dcl < old_dcl:
                    problems.append(f"{name}: disk_consistent_lsn went back {old_dcl} -> {dcl}")
                lost = old_layers - layers - self.removed.get(name, set())
                if lost:
                    problems.append(f"{name}: layers lost from the index: {sorted(lost)[:3]}")
            self.seen[name] = (dcl, layers)
        lost_timelines = set(self.seen) - set(current)
        if lost_timelines:
            problems.append(f"timelines lost from remote storage: {sorted(lost_timelines)}")
        assert not problems, f"{where} remote index went backwards: " + "; ".join(problems)
        return current

    def forget(self, timeline: str, names: set[str]) -> None:
        """``names`` were removed by the pageserver (compaction, GC): they may leave the index
        at any later check (not only the next one: a killed run may not have unlinked them yet)."""
        self.removed.setdefault(timeline, set()).update(names)


def assert_converged(
    workdir: Path,
    storage: base.RemoteStorage,
    tid: ids.TenantId,
    scratch: Path,
    must_contain: dict[str, set[str]] | None = None,
    where: str = "",
) -> tree.RemoteTenant:
    """The volume is exactly the remote tree, the remote index carries the local metadata, and
    every layer named in ``must_contain`` (timeline -> layer names) is in the remote index."""
    remote = tree.RemoteTenant.capture(storage, tid)
    try:
        from e2e import helpers

        helpers.assert_tenant_matches(workdir, remote, scratch)
    except AssertionError as e:
        raise AssertionError(f"{where} volume differs from the remote tree: {e}") from None
    for tl, names in (must_contain or {}).items():
        have = set(remote.timelines[tl].layers) if tl in remote.timelines else set()
        missing = names - have
        assert not missing, f"{where} layers lost: {tl} lacks {sorted(missing)[:3]} in the remote index"
    return remote
