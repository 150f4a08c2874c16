"""The detach fence: the last look at a tenant directory the writer can no longer change.

Detach must not complete while something the pageserver flushed is neither uploaded nor indexed
(docs/reliability.md, "The writer protocol"). A final scan after the queues drained still leaves a
window: the writer may flush between that scan and the removal. So detach renames the tenant
directory to ``<tid>.detaching`` first -- the writer addresses it by its path, so from then on it
writes nothing there -- and looks at the renamed tree once more:

- nothing new since the last sync (every timeline's ``metadata`` as last read, every layer as
  last indexed, no new timeline with ``metadata``) -> it is removed (``remove_tree``);
- something new -> it is renamed back and detach syncs again (bounded by its timeout).

A layer beyond the metadata's ``disk_consistent_lsn``, or a timeline directory without
``metadata``, is the writer's unfinished work (not flushed yet by its own protocol): it does not
count as new.

Crash behaviour: a ``<tid>.detaching`` left by a kill is renamed back to ``<tid>`` the next time
the tenant's state is read (`recover`, also from the volume's start-up scan), so the detach, or
whatever comes next, starts over from a complete tenant directory; nothing is deleted before
the look found nothing new. If ``<tid>`` exists again (the writer re-created it meanwhile), both
are left alone and reported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from pageserver_operator.engine import crashsafe, paths, timeline
from pageserver_operator.engine.errors import EngineError
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import ids, metadata

log = logging.getLogger(__name__)

SUFFIX = ".detaching"


def fenced_dir(p: paths.TenantPaths) -> Path:
    return p.tenants_root / f"{p.tenant_id}{SUFFIX}"


def fence(p: paths.TenantPaths) -> Path:
    """Rename the tenant directory aside (durably); returns where it is now."""
    target = fenced_dir(p)
    os.rename(p.tenant_dir, target)
    crashsafe.fsync_dir(p.tenants_root)
    return target


def unfence(p: paths.TenantPaths) -> None:
    """Put a fenced tenant directory back (durably)."""
    if p.tenant_dir.exists():
        raise EngineError(
            "TenantDirRecreated",
            f"tenant {p.tenant_id}: {p.tenant_dir} was re-created while the detach looked at "
            f"{fenced_dir(p)}; both are kept: stop the pageserver's use of the tenant, then detach again",
        )
    os.rename(fenced_dir(p), p.tenant_dir)
    crashsafe.fsync_dir(p.tenants_root)


def recover(p: paths.TenantPaths) -> None:
    """Undo the fence of a detach that was killed (see the module docstring)."""
    if not fenced_dir(p).exists():
        return
    if p.tenant_dir.exists():
        log.error("both %s and %s exist: left alone", p.tenant_dir, fenced_dir(p))
        return
    log.warning("restoring %s: a detach was interrupted after it fenced the tenant", p.tenant_dir)
    unfence(p)


def tenant_of(name: str) -> ids.TenantId | None:
    """The tenant of a ``<tid>.detaching`` directory name, else None."""
    if not name.endswith(SUFFIX):
        return None
    try:
        return ids.TenantId.parse(name[: -len(SUFFIX)])
    except format_errors.FormatError:
        return None


def new_since_sync(directory: Path, synced: Mapping[ids.TimelineId, timeline.Timeline]) -> list[str]:
    """What the fenced tenant ``directory`` holds that the last sync did not see (empty: nothing)."""
    found: list[str] = []
    timelines_dir = directory / paths.TIMELINES_DIR
    try:
        names = sorted(os.listdir(timelines_dir))
    except FileNotFoundError:
        return found
    for name in names:
        try:
            tlid = ids.TimelineId.parse(name)
        except format_errors.FormatError:
            continue  # not a timeline: nobody's flushed data
        d = timelines_dir / name
        try:
            meta = (d / paths.METADATA_FILE).read_bytes()
        except FileNotFoundError:
            continue  # being created by the writer: its metadata comes last
        t = synced.get(tlid)
        if t is None:
            found.append(f"new timeline {tlid}")
            continue
        try:
            rewritten = metadata.TimelineMetadata.from_bytes(meta) != t.metadata
        except format_errors.FormatError:
            rewritten = True  # unreadable now: not what the last sync indexed
        if rewritten:
            found.append(f"timeline {tlid}: metadata rewritten")
            continue
        scan = timeline.scan_timeline_dir(d, t.metadata.disk_consistent_lsn)
        fresh = sorted(str(n) for n, size in scan.layers.items() if t.layers.get(n) != size)
        if fresh:
            found.append(f"timeline {tlid}: {len(fresh)} new layer(s), e.g. {fresh[0]}")
    return found
