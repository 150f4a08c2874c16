"""Which remote index a tenant of generation ``g`` reads (DESIGN §8.2; Neon's ``download_index_part``).

Every generation writes its own index object (``index_part.json-{g:08x}``; the seed's format,
generation none, has no suffix). A manager of generation ``g`` loads the index of the highest
generation not above ``g``: a GET of ``g`` (its own, after a restart that kept it), then of
``g.previous()`` (the usual case: the generation before ours was the last to write), then a LIST
of the timeline's index objects. An index of a generation above ``g`` is never read: a newer
attachment exists and we are stale (`list_generations` is how a caller without a control
plane finds out: engine/attachment.py).

Invariants: read-only (nothing here writes or deletes); a listed index that vanished before
its GET (an old generation's index deleted by its successor) is retried from a fresh LIST,
never mistaken for "no index".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pageserver_operator.engine import paths, remote_io
from pageserver_operator.formats import generation, ids
from pageserver_operator.formats.generation import Generation
from pageserver_operator.remote import errors as remote_errors

#: LIST-then-GET rounds before a listed index that keeps vanishing is reported.
_LIST_ROUNDS = 3


@dataclass(frozen=True)
class FetchedIndex:
    """The raw index object chosen for a timeline, with the generation that wrote it."""

    generation: Generation
    key: str
    data: bytes


async def list_generations(io: remote_io.RemoteIO, tenant_id: ids.TenantId, timeline_id: ids.TimelineId) -> list[Generation]:
    """The generations of every index object of the timeline, sorted (none first)."""
    listed = await io.run(io.storage.list_objects, paths.remote_index_prefix(tenant_id, timeline_id))
    return generations_of(listed)


def generations_of(keys: Iterable[str]) -> list[Generation]:
    """The generations of the index objects among ``keys`` (a listing), sorted (none first)."""
    found = {generation.parse_index_file_name(key.rpartition("/")[2]) for key in keys}
    return sorted(g for g in found if g is not None)


async def fetch_latest(
    io: remote_io.RemoteIO, tenant_id: ids.TenantId, timeline_id: ids.TimelineId, own: Generation
) -> FetchedIndex | None:
    """The index of the highest generation not above ``own``, or None if the timeline has none."""
    tried: set[Generation] = set()
    for g in (own, own.previous()):
        if g in tried:
            continue
        tried.add(g)
        found = await _get(io, tenant_id, timeline_id, g)
        if found is not None:
            return found
    if own.is_none():
        return None  # generation none reads only the unsuffixed index
    for _ in range(_LIST_ROUNDS):
        candidates = [g for g in await list_generations(io, tenant_id, timeline_id) if g <= own and g not in tried]
        if not candidates:
            return None
        found = await _get(io, tenant_id, timeline_id, candidates[-1])
        if found is not None:
            return found
    raise remote_errors.TransientRemoteError(
        f"timeline {tenant_id}/{timeline_id}: the index objects listed under "
        f"{paths.remote_index_prefix(tenant_id, timeline_id)} kept vanishing before they could be read"
    )


async def _get(
    io: remote_io.RemoteIO, tenant_id: ids.TenantId, timeline_id: ids.TimelineId, g: Generation
) -> FetchedIndex | None:
    key = paths.remote_index_key(tenant_id, timeline_id, g)
    try:
        return FetchedIndex(g, key, await io.get_bytes(key))
    except remote_errors.NotFound:
        return None
