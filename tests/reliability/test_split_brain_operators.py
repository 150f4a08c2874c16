"""Split brain through the real control plane: two operators (two namespaces, two volumes, one
bucket) attach the same tenant. Whichever writes second after the other's index upload is
refused: Broken with reason SplitBrainDetected, nothing of its own written. All along, a watcher
reads the remote indexes every 0.2 s and fails if one ever goes backwards (a timeline, a layer
or LSN lost). The first operator keeps working (its later flushes are indexed), and every layer
the index names is the first operator's bytes (the second's same-named layer did not replace it).

Generation numbers (docs/reliability.md) would make the second attach's writes harmless by
construction; this guard is the best effort without them.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from pageserver_operator import testdata
from pageserver_operator.devenv import controlplane
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids
from reliability import common
from reliability.figures import record

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


class Watcher:
    """Polls the remote indexes in a thread; remembers the first time one went backwards."""

    def __init__(self, remote: Remote, tid: ids.TenantId) -> None:
        self.storage = remote.open()
        self.tid = tid
        self.watch = common.IndexWatch()
        self.error: str | None = None
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.watch.check(self.storage, self.tid)
                self.polls += 1
            except AssertionError as e:
                self.error = self.error or str(e)

    def __enter__(self) -> Watcher:
        self.watch.check(self.storage, self.tid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_second_operator_is_refused_and_the_index_never_goes_backwards(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kube: helpers.Kubectl,
    k: helpers.Kubectl,
    remote: Remote,
    operator: OperatorFactory,
    control_plane: controlplane.ControlPlane,
) -> None:
    ns_b = f"e2e-{uuid.uuid4().hex[:10]}"
    kube.run("create", "namespace", ns_b)
    k_b = kube.in_namespace(ns_b)
    second = OperatorFactory(tmp_path / "second", control_plane.kubeconfig, ns_b, remote)
    storage = remote.open()
    tid_s = new_tenant_id()
    gen = remote.seed(testdata.TenantShape(timelines=2, layers=3, layer_size=20_000, seed=12), tid_s)
    tid, root, child = gen.tenant_id, gen.timelines[0], gen.timelines[1]
    failed = True
    try:
        a = operator.start(sync_period=0.5)
        b = second.start(sync_period=0.5)
        with Watcher(remote, tid) as watcher:
            k.apply(helpers.tenant_manifest("first", tid_s))
            helpers.wait_phase(k, "first", "Active", timeout=120)
            k_b.apply(helpers.tenant_manifest("second", tid_s))
            helpers.wait_phase(k_b, "second", "Active", timeout=120)

            # the first operator's pageserver flushes; it is uploaded and indexed
            a_layer = str(testdata.flush_local_layer(a.workdir, tid, root, 7_000, seed=1))

            def indexed(name: str, tl: ids.TimelineId) -> bool:
                return name in {str(n) for n in common.remote_indexes(storage, tid)[str(tl)].layers}

            helpers.wait_for(lambda: indexed(a_layer, root), 60, "the first operator's layer to be indexed")
            # the second one's flushes the same LSN range with other bytes: it must be refused
            b_layer = str(testdata.flush_local_layer(b.workdir, tid, root, 9_000, seed=2))
            assert b_layer == a_layer, "same LSN range, same name: the dangerous case"
            obj = helpers.wait_phase(k_b, "second", "Broken", timeout=60)
            assert obj["status"]["reason"] == "SplitBrainDetected", helpers.summary(obj)
            assert "another writer" in obj["status"]["message"]
            helpers.wait_event(k_b, "second", "SplitBrainDetected")
            # and it stays so: an automatic retry only after the backoff (status.nextRetryTime)
            st = helpers.wait_for(lambda: (k_b.tenant("second")["status"].get("attempts") or 0) >= 1 and k_b.tenant("second")["status"],
                                  30, "the retry to be scheduled")  # fmt: skip
            assert (
                st["phase"] == "Broken" and st["reason"] == "SplitBrainDetected" and st.get("nextRetryTime")
            ), st

            # the first keeps working
            assert helpers.phase(k.tenant("first")) == "Active"
            more = str(testdata.flush_local_layer(a.workdir, tid, child, 5_000, seed=3))
            helpers.wait_for(
                lambda: indexed(more, child), 60, "the first operator's next layer to be indexed"
            )
            assert helpers.phase(k.tenant("first")) == "Active"
            assert helpers.phase(k_b.tenant("second")) == "Broken"
            # the watcher has looked often enough, however fast the scenario went
            helpers.wait_for(lambda: watcher.polls > 10 or watcher.error is not None, 30, "10 polls of the index")
        assert watcher.error is None, watcher.error
        assert watcher.polls > 10

        # the remote state is the first operator's, byte for byte
        a_tp = paths.TenantPaths(a.workdir, tid)
        for tl in (root, child):
            idx = common.remote_indexes(storage, tid)[str(tl)]
            assert idx.metadata_bytes == a_tp.metadata(tl).read_bytes(), (
                f"{tl}: index metadata is not the first's"
            )
            for name, meta in idx.layers.items():
                data = storage.get_bytes(paths.remote_layer_key(tid, tl, name))
                assert len(data) == meta.file_size, f"{tl}/{name}: object size disagrees with the index"
                local = a_tp.layer(tl, name)
                assert local.read_bytes() == data, f"{tl}/{name}: object is not the first operator's bytes"
        record(
            f"split brain: second operator Broken SplitBrainDetected; remote index polled {watcher.polls} times, "
            "never backwards; first operator still Active and syncing"
        )
        failed = False
    finally:
        second.close(failed or bool(getattr(request.node, "rep_call", None) and request.node.rep_call.failed))
