"""Realistic tenants in the exact formats, for tests, the dev environment and benchmarks.

`make_remote_tenant` writes a tenant to remote storage as a pageserver would have uploaded it:
a root timeline with an image layer and a chain of delta layers, child timelines branched from
it at an LSN inside its range, one ``index_part.json`` per timeline (v1 with sizes, or v0
without). Layer contents are seeded pseudo-random bytes, so a run is reproducible.

`flush_local_layer` plays the pageserver's part on an attached tenant: write a new delta layer
(fsynced), then the timeline's ``metadata`` with a higher ``disk_consistent_lsn``, in that
order (as a pageserver flushes: docs/reliability.md, "The writer protocol"), leaving the upload
to the engine.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pageserver_operator.engine import crashsafe, paths
from pageserver_operator.formats import ids, index_part, layer_name, lsn, metadata
from pageserver_operator.remote import base

INITDB_LSN = lsn.Lsn(0x1696070)
LSN_STEP = 0x10000
KEY_MIN = layer_name.Key.MIN
KEY_MAX = layer_name.Key.MAX
KEY_IMAGE_END = layer_name.Key.parse("030000000000000000000000000000000002")

_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "K": 1 << 10, "MIB": 1 << 20, "M": 1 << 20, "GIB": 1 << 30, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``16KiB``, ``1MiB``, ``65536`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 16KiB, 1MiB, 65536)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def parse_sizes(text: str) -> list[int]:
    """``200x1MiB,8x64MiB`` -> [1 MiB] * 200 + [64 MiB] * 8."""
    sizes: list[int] = []
    for part in text.split(","):
        count, _, size = part.strip().partition("x")
        if not size:
            count, size = "1", count
        sizes.extend([parse_size(size)] * int(count))
    return sizes


@dataclass
class TenantShape:
    timelines: int = 2
    layers: int = 4
    layer_size: int = 64 << 10
    #: Explicit layer sizes of the root timeline (overrides ``layers``/``layer_size`` there).
    sizes: list[int] | None = None
    index_version: int = 1
    seed: int = 0
    pg_version: int = 15


@dataclass
class GeneratedTenant:
    tenant_id: ids.TenantId
    timelines: list[ids.TimelineId] = field(default_factory=list)
    #: remote key -> size of every object written (layers and indexes)
    objects: dict[str, int] = field(default_factory=dict)

    @property
    def layer_bytes(self) -> int:
        return sum(s for k, s in self.objects.items() if not k.endswith(paths.INDEX_PART_FILE))


def _delta(start: lsn.Lsn, end: lsn.Lsn) -> layer_name.DeltaLayerName:
    return layer_name.DeltaLayerName(KEY_MIN, KEY_MAX, start, end)


def _layer_names(count: int, start: lsn.Lsn, image: bool) -> tuple[list[layer_name.LayerName], lsn.Lsn]:
    """``count`` names: optionally an image at ``start``, then consecutive deltas. Returns the
    names and the disk_consistent_lsn that makes none of them "from the future"."""
    names: list[layer_name.LayerName] = []
    cur = start
    if image and count:
        names.append(layer_name.ImageLayerName(KEY_MIN, KEY_IMAGE_END, cur))
    while len(names) < count:
        nxt = lsn.Lsn(cur.value + LSN_STEP)
        names.append(_delta(cur, nxt))
        cur = nxt
    return names, cur


def make_remote_tenant(
    storage: base.RemoteStorage, shape: TenantShape, tenant_id: ids.TenantId | None = None
) -> GeneratedTenant:
    rng = random.Random(shape.seed)
    tid = tenant_id or ids.TenantId(rng.randbytes(16))
    out = GeneratedTenant(tid)
    root_sizes = shape.sizes if shape.sizes is not None else [shape.layer_size] * shape.layers
    root_id = ids.TimelineId(rng.randbytes(16))
    plans: list[tuple[ids.TimelineId, list[layer_name.LayerName], list[int], metadata.TimelineMetadata]] = []
    names, dcl = _layer_names(len(root_sizes), INITDB_LSN, image=True)
    plans.append((root_id, names, root_sizes, _metadata(dcl, None, lsn.Lsn.ZERO, shape.pg_version)))
    branch_lsn = lsn.Lsn(INITDB_LSN.value + LSN_STEP * max(len(root_sizes) // 2, 1))
    branch_lsn = min(branch_lsn, dcl)
    for _ in range(shape.timelines - 1):
        child = ids.TimelineId(rng.randbytes(16))
        names, cdcl = _layer_names(shape.layers, lsn.Lsn(branch_lsn.value + 8), image=False)
        plans.append((child, names, [shape.layer_size] * len(names), _metadata(cdcl, root_id, branch_lsn, shape.pg_version)))

    with ThreadPoolExecutor(max_workers=storage.concurrency) as pool, tempfile.TemporaryDirectory() as tmp:
        futures = []
        n = 0
        for tlid, names, sizes, _ in plans:
            for name, size in zip(names, sizes, strict=True):
                key = paths.remote_layer_key(tid, tlid, name)
                src = Path(tmp) / f"{n}"
                n += 1
                _write_random(src, size, rng.getrandbits(64))
                futures.append(pool.submit(_upload_and_remove, storage, key, src, size))
                out.objects[key] = size
        for f in futures:
            f.result()
    for tlid, names, sizes, meta in plans:
        layer_sizes: dict[layer_name.LayerName, int | None] = dict(zip(names, sizes, strict=True))
        index = index_part.IndexPart.build(layer_sizes, meta)
        data = _v0_json(index) if shape.index_version == 0 else index.to_json_bytes()
        key = paths.remote_index_key(tid, tlid)
        storage.put_bytes(key, data)
        out.objects[key] = len(data)
        out.timelines.append(tlid)
    return out


def _metadata(
    dcl: lsn.Lsn, ancestor: ids.TimelineId | None, ancestor_lsn: lsn.Lsn, pg_version: int
) -> metadata.TimelineMetadata:
    return metadata.TimelineMetadata(
        disk_consistent_lsn=dcl,
        prev_record_lsn=lsn.Lsn(dcl.value - 0x38) if dcl.value > 0x38 else None,
        ancestor_timeline=ancestor,
        ancestor_lsn=ancestor_lsn,
        latest_gc_cutoff_lsn=INITDB_LSN if ancestor is None else ancestor_lsn,
        initdb_lsn=INITDB_LSN,
        pg_version=pg_version,
    )


def _v0_json(index: index_part.IndexPart) -> bytes:
    """The v0 form of an index: no ``version``, no ``layer_metadata`` (sizes unknown)."""
    import json

    doc = {
        "timeline_layers": sorted(str(n) for n in index.layers),
        "missing_layers": [],
        "disk_consistent_lsn": str(index.disk_consistent_lsn),
        "metadata_bytes": list(index.metadata_bytes),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _write_random(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n


def _upload_and_remove(storage: base.RemoteStorage, key: str, src: Path, size: int) -> None:
    try:
        storage.upload_file(key, src, size)
    finally:
        src.unlink(missing_ok=True)


def flush_local_layer(
    workdir: Path, tenant_id: ids.TenantId, timeline_id: ids.TimelineId, size: int, seed: int = 1
) -> layer_name.LayerName:
    """Write a new local delta layer after the timeline's dcl, then bump its metadata."""
    tp = paths.TenantPaths(workdir, tenant_id)
    meta_path = tp.metadata(timeline_id)
    meta = metadata.TimelineMetadata.from_bytes(meta_path.read_bytes())
    start = meta.disk_consistent_lsn
    end = lsn.Lsn(start.value + LSN_STEP)
    name = _delta(start, end)
    target = tp.layer(timeline_id, name)
    tmp = target.with_name(target.name + paths.TEMP_SUFFIX)
    _write_random(tmp, size, seed)
    crashsafe.fsync_file(tmp)
    os.replace(tmp, target)
    crashsafe.fsync_dir(target.parent)
    new_meta = metadata.TimelineMetadata(
        disk_consistent_lsn=end,
        prev_record_lsn=lsn.Lsn(end.value - 0x38),
        ancestor_timeline=meta.ancestor_timeline,
        ancestor_lsn=meta.ancestor_lsn,
        latest_gc_cutoff_lsn=meta.latest_gc_cutoff_lsn,
        initdb_lsn=meta.initdb_lsn,
        pg_version=meta.pg_version,
    )
    crashsafe.durable_write(meta_path, new_meta.to_bytes())
    return name
