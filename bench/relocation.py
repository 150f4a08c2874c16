"""The cutover window of a live relocation, warm versus cold, side by side in one run (issue 18).

``python -m bench.relocation [--size-mib 1024] [--changed-mib 16]`` starts SeaweedFS (the
project's own `devenv.objectstore`), writes a tenant of ``--size-mib`` (one timeline of 64 MiB
layers), and attaches it on a source volume under generation 1 (the source). Then, for each of
the two ways to move it to a new volume (the figures are the same engine calls the operator makes):

- **warm** (DESIGN §8.4): the target warms as a secondary first (`Tenant.warm`: not in the
  window), the source's pageserver flushes ``--changed-mib`` more and the source uploads it (the
  ``SourceStale`` flush), then the target attaches under generation 2, fetching only what
  changed: that attach is the window;
- **cold**: another target attaches the same state from nothing under generation 3: the window
  (from the source stopping to the target Active) is the whole attach.

Both windows include fsync of every byte written (durable). Printed: the window of each, the
bytes each fetched inside its window, and warm/cold. The run holds the machine-wide heavy lock.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from bench import measure
from pageserver_operator import testdata
from pageserver_operator.devenv import objectstore
from pageserver_operator.engine import metrics, remote_io, tenant
from pageserver_operator.formats import ids
from pageserver_operator.formats.generation import Generation
from pageserver_operator.remote import factory, url

LAYER = 64 << 20


async def _trusted() -> bool:
    return True


def _downloaded(tid: ids.TenantId) -> float:
    return float(metrics.LAYER_DOWNLOAD_BYTES.labels(str(tid))._value.get())


def _tenant(workdir: Path, tid: ids.TenantId, io: remote_io.RemoteIO, generation: int | None) -> tenant.Tenant:
    t = tenant.Tenant(workdir, tid, io)
    if generation is not None:
        t.generation = Generation(generation)
        t.attachment.control_plane = _trusted
    return t


async def _run(io: remote_io.RemoteIO, root: Path, tid: ids.TenantId, tlid: ids.TimelineId, changed: int) -> dict[str, float]:
    out: dict[str, float] = {}
    source_dir, cold_dir, warm_dir = root / "source", root / "cold", root / "warm"
    for d in (source_dir, cold_dir, warm_dir):
        d.mkdir()
    source = _tenant(source_dir, tid, io, 1)
    await source.attach()
    # warm: a secondary first, then the source flushes and uploads, then the cutover (generation 2)
    warm = _tenant(warm_dir, tid, io, None)
    t0 = time.monotonic()
    await warm.warm()
    out["warming_s"] = time.monotonic() - t0
    flushed = 0
    while flushed < changed:
        size = min(8 << 20, changed - flushed)
        testdata.flush_local_layer(source_dir, tid, tlid, size, seed=flushed + 1)
        flushed += size
    await source.sync(timeout=600)
    source.stop()
    warm.generation = Generation(2)
    warm.attachment.control_plane = _trusted
    before = _downloaded(tid)
    t0 = time.monotonic()
    await warm.attach()
    out["warm_window_s"] = time.monotonic() - t0
    out["warm_fetched_mib"] = (_downloaded(tid) - before) / 2**20
    warm.stop()
    # cold: another target attaches the same state from nothing (generation 3)
    cold = _tenant(cold_dir, tid, io, 3)
    before = _downloaded(tid)
    t0 = time.monotonic()
    await cold.attach()
    out["cold_window_s"] = time.monotonic() - t0
    out["cold_fetched_mib"] = (_downloaded(tid) - before) / 2**20
    cold.stop()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.relocation", description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--changed-mib", type=int, default=16)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-relocation-"))
    store = objectstore.ObjectStore.start(root / "s3")
    try:
        store.create_bucket("relocation")
        for k, v in store.env().items():
            import os

            os.environ[k] = v
        storage = factory.open_remote(url.parse_remote_url(
            f"s3://relocation?endpoint={store.endpoint}&region={store.region}", concurrency=16))
        n = max(args.size_mib * 2**20 // LAYER, 1)
        shape = testdata.TenantShape(timelines=1, sizes=[LAYER] * n, seed=5)
        t0 = time.monotonic()
        gen = testdata.make_remote_tenant(storage, shape)
        print(f"[relocation] tenant of {gen.layer_bytes / 2**20:.0f} MiB written in {time.monotonic() - t0:.1f} s", flush=True)
        io = remote_io.RemoteIO(storage, workers=16)
        with measure.heavy_lock() as waited:
            if waited > 1:
                print(f"[relocation] waited {waited:.0f} s for the heavy-job lock", flush=True)
            res = asyncio.run(_run(io, root, gen.tenant_id, gen.timelines[0], args.changed_mib << 20))
        io.close()
        storage.close()
        ratio = res["warm_window_s"] / res["cold_window_s"] if res["cold_window_s"] else float("nan")
        print("| tenant | cold window | warm window | warm / cold | fetched in the window (cold, warm) | warming (outside) |")
        print("|---|---|---|---|---|---|")
        print(f"| {gen.layer_bytes / 2**20:.0f} MiB, {args.changed_mib} MiB changed | {res['cold_window_s']:.2f} s | "
              f"{res['warm_window_s']:.2f} s | {ratio:.3f} | {res['cold_fetched_mib']:.0f} MiB, {res['warm_fetched_mib']:.0f} MiB | "
              f"{res['warming_s']:.2f} s |")
    finally:
        store.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
