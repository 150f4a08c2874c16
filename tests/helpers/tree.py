"""Comparing a tenant on the volume with its remote copy, and snapshots of whole directory trees.

- `RemoteTenant.capture` reads every timeline's ``index_part.json`` and hashes every layer object
  it names (once: remote objects are immutable, so a capture can be reused across many checks).
- `assert_matches_remote` checks the local tenant directory is exactly what a clean attach
  produces: per remote timeline a directory with the index's layers, byte-identical, of the
  index's sizes, plus a ``metadata`` file equal to the index's ``metadata_bytes``; no other
  timeline, no ``attaching`` marker, no ``.temp_download``/``___temp``/``___uninit`` leftovers,
  nothing but ``timelines`` (and ``config``) in the tenant directory.
- `snapshot` / `diff_snapshots` capture a directory tree (every file's content hash, every
  directory) to prove that nothing was written outside a given subtree.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from pageserver_operator.engine import paths, remote_index
from pageserver_operator.formats import ids, index_part
from pageserver_operator.remote import base
from pageserver_operator.remote import errors as remote_errors

LEFTOVER_SUFFIXES = (".temp_download", "___temp", "___uninit", ".detaching")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def newest_index_key(storage: base.RemoteStorage, tenant_id: ids.TenantId, timeline_id: ids.TimelineId) -> str:
    """The key of the timeline's newest index (the highest generation; the seed's unsuffixed
    ``index_part.json`` is the lowest); `NotFound` when it has none."""
    gens = remote_index.generations_of(storage.list_objects(paths.remote_index_prefix(tenant_id, timeline_id)))
    if not gens:
        raise remote_errors.NotFound(f"no index of timeline {tenant_id}/{timeline_id}")
    return paths.remote_index_key(tenant_id, timeline_id, gens[-1])


def newest_index(storage: base.RemoteStorage, tenant_id: ids.TenantId, timeline_id: ids.TimelineId) -> index_part.IndexPart:
    """The timeline's newest index (`newest_index_key`), parsed."""
    return index_part.IndexPart.parse(storage.get_bytes(newest_index_key(storage, tenant_id, timeline_id)))


def layer_key(storage: base.RemoteStorage, tenant_id: ids.TenantId, timeline_id: ids.TimelineId, name: object) -> str:
    """The key of layer ``name`` (its file name) as the newest index names it (with its generation)."""
    idx = newest_index(storage, tenant_id, timeline_id)
    layer, meta = next((n, m) for n, m in idx.layers.items() if str(n) == str(name))
    return paths.remote_layer_key(tenant_id, timeline_id, layer, meta.generation)


@dataclass
class RemoteTimeline:
    index: index_part.IndexPart
    index_bytes: bytes
    #: layer file name -> sha256 of the remote object
    layers: dict[str, str] = field(default_factory=dict)
    #: layer file name -> size of the remote object
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass
class RemoteTenant:
    tenant_id: ids.TenantId
    timelines: dict[str, RemoteTimeline]

    @classmethod
    def capture(cls, storage: base.RemoteStorage, tenant_id: ids.TenantId) -> RemoteTenant:
        timelines: dict[str, RemoteTimeline] = {}
        for name in storage.list_dirs(paths.remote_timelines_prefix(tenant_id)):
            tlid = ids.TimelineId.parse(name)
            # the newest index (the highest generation; the seed's unsuffixed one is the lowest)
            try:
                raw = storage.get_bytes(newest_index_key(storage, tenant_id, tlid))
            except remote_errors.NotFound:
                continue
            index = index_part.IndexPart.parse(raw)
            rt = RemoteTimeline(index, raw)
            for layer, meta in index.layers.items():
                data = storage.get_bytes(paths.remote_layer_key(tenant_id, tlid, layer, meta.generation))
                rt.layers[str(layer)] = sha256(data)
                rt.sizes[str(layer)] = len(data)
            timelines[name] = rt
        return cls(tenant_id, timelines)

    @property
    def layer_count(self) -> int:
        return sum(len(t.layers) for t in self.timelines.values())


def leftovers(root: Path) -> list[str]:
    """Temp files, partial downloads, uninit and attaching markers anywhere below ``root``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            if name.endswith(LEFTOVER_SUFFIXES) or name == paths.ATTACHING_MARKER:
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def assert_matches_remote(
    workdir: Path,
    remote: RemoteTenant,
    *,
    allow_set_aside: bool = False,
    allow_config: bool = False,
) -> None:
    """The local tenant is exactly the remote one (see the module docstring)."""
    tp = paths.TenantPaths(workdir, remote.tenant_id)
    assert tp.tenant_dir.is_dir(), f"{tp.tenant_dir} does not exist"
    left = leftovers(tp.tenants_root)
    assert left == [], f"leftovers after the command: {left}"
    allowed_top = {paths.TIMELINES_DIR} | ({paths.CONFIG_FILE} if allow_config else set())
    top = {p.name for p in tp.tenant_dir.iterdir()}
    assert top <= allowed_top, f"unexpected entries in the tenant directory: {sorted(top - allowed_top)}"
    assert paths.TIMELINES_DIR in top
    local_timelines = sorted(p.name for p in tp.timelines_dir.iterdir())
    assert local_timelines == sorted(remote.timelines), "local and remote timelines differ"
    problems: list[str] = []
    for name, rt in remote.timelines.items():
        tdir = tp.timelines_dir / name
        entries = {p.name: p for p in tdir.iterdir()}
        meta = entries.pop(paths.METADATA_FILE, None)
        if meta is None:
            problems.append(f"{name}: no metadata file")
        elif meta.read_bytes() != rt.index.metadata_bytes:
            problems.append(f"{name}: metadata differs from the index's metadata_bytes")
        if allow_set_aside:
            entries = {n: p for n, p in entries.items() if not n.endswith(paths.OLD_SUFFIX)}
        missing = sorted(set(rt.layers) - set(entries))
        extra = sorted(set(entries) - set(rt.layers))
        if missing:
            problems.append(f"{name}: {len(missing)} layers missing locally, e.g. {missing[:3]}")
        if extra:
            problems.append(f"{name}: {len(extra)} unexpected local files, e.g. {extra[:3]}")
        for layer, digest in rt.layers.items():
            path = entries.get(layer)
            if path is None:
                continue
            if not path.is_file():
                problems.append(f"{name}/{layer}: not a regular file")
                continue
            size = path.stat().st_size
            indexed = rt.index.layers[next(n for n in rt.index.layers if str(n) == layer)].file_size
            if indexed is not None and size != indexed:
                problems.append(f"{name}/{layer}: {size} bytes, the index says {indexed}")
            if size != rt.sizes[layer] or file_sha256(path) != digest:
                problems.append(f"{name}/{layer}: content differs from the remote object")
    assert not problems, "local tree differs from remote:\n  " + "\n  ".join(problems[:20])


def snapshot(root: Path, exclude: Path | None = None) -> dict[str, str]:
    """Every directory and file below ``root`` (relative path -> "dir", "link:..." or content hash),
    except ``exclude`` and everything below it."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if exclude is not None and (d == exclude or exclude in d.parents):
            dirnames[:] = []
            continue
        for name in dirnames:
            p = d / name
            if exclude is not None and p == exclude:
                continue
            out[str(p.relative_to(root))] = "dir"
        for name in filenames:
            p = d / name
            if exclude is not None and p == exclude:
                continue
            rel = str(p.relative_to(root))
            out[rel] = f"link:{os.readlink(p)}" if p.is_symlink() else file_sha256(p)
    return out


def diff_snapshots(before: dict[str, str], after: dict[str, str]) -> list[str]:
    changes = [f"+ {k}" for k in sorted(set(after) - set(before))]
    changes += [f"- {k}" for k in sorted(set(before) - set(after))]
    changes += [f"~ {k}" for k in sorted(set(before) & set(after)) if before[k] != after[k]]
    return changes
