"""`Tenant.warm`: a secondary location (DESIGN §8.4, Warming). It downloads the newest index's
layers whoever wrote it, writes nothing remotely, leaves no ``metadata`` and keeps the
``attaching`` marker; the attach of the cutover (generation+1) resumes it and downloads only
what the source uploaded since."""

from __future__ import annotations

from pathlib import Path

from helpers.engine_env import EngineEnv, Writer, make_tenant, run
from pageserver_operator.engine import metrics
from pageserver_operator.formats.generation import Generation


def _trusted(t: object) -> None:
    async def current() -> bool:
        return True

    t.attachment.control_plane = current  # type: ignore[attr-defined]


def _downloads(tid: object) -> float:
    return metrics.LAYER_DOWNLOADS.labels(str(tid))._value.get()  # type: ignore[attr-defined]


def test_a_warm_secondary_writes_nothing_remotely_and_the_cutover_fetches_only_what_changed(
    local: EngineEnv, tmp_path: Path
) -> None:
    gen = make_tenant(local.storage, seed=21, timelines=2, layers=3)
    tid = gen.tenant_id
    # the source: attached under generation 4, its pageserver flushes and it uploads
    source = local.tenant(tid)
    source.generation = Generation(4)
    _trusted(source)
    run(source.attach)
    w = Writer(local.workdir, tid)
    w.flush(gen.timelines[0])
    run(lambda: source.sync(timeout=20))

    target_dir = tmp_path / "target"
    target_dir.mkdir()
    env2 = EngineEnv(target_dir, local.storage, local.io)
    target = env2.tenant(tid)
    before = dict(local.storage.list_objects(""))
    base = _downloads(tid)  # the source's own attach counted under the same tenant id
    planned = run(target.warm)
    assert planned > 0
    assert local.storage.list_objects("") == before, "a secondary wrote to remote storage"
    p = env2.paths(tid)
    assert p.marker.exists(), "the attaching marker stays: the tenant is not attached here"
    for tlid in gen.timelines:
        assert not p.metadata(tlid).exists()
    assert target.state is None and not target.timelines
    warmed = _downloads(tid)
    assert warmed - base == 3 * 2 + 1  # every layer of the newest indexes, the source's new one included
    assert run(target.warm) == 0, "warm again: nothing left to download"

    # the source flushes once more and uploads; then the cutover attaches under generation 5
    newer = w.flush(gen.timelines[1])
    run(lambda: source.sync(timeout=20))
    source.stop()
    target.generation = Generation(5)
    _trusted(target)
    run(target.attach)
    assert target.state is not None and target.state.value == "Active", (target.reason, target.message)
    assert _downloads(tid) - warmed == 1, "the cutover downloaded more than what changed since warming"
    assert (p.layer(gen.timelines[1], newer)).exists() and not p.marker.exists()
