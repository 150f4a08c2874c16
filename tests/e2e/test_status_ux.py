"""What a person sees of a Tenant (issue 11), end to end against the real control plane, the real
S3 server and ``pageserver-operator run`` as a process:

1. a Broken tenant is retried automatically with capped exponential backoff (``attempts``,
   ``nextRetryTime``) and becomes Active by itself once remote storage is repaired; a retry that
   fails again keeps the layers it already downloaded;
2. ``status.progress`` of a long attach carries ``startedAt``, ``etaSeconds`` and ``percent``,
   is written about once a second (not per file), and ``kubectl get -o wide`` shows it;
3. per-timeline ``uploadLagBytes`` / ``lsnLag`` and the ``Synced`` condition follow a flushed
   layer until it is in the remote index;
4. ``status.history`` keeps the last 10 transitions; the annotation ``pageserver.dev/retry``
   retries at once, long before the scheduled retry;
5. ``kubectl describe`` shows the Events (the Broken reason as a Warning, ``RetryScheduled``,
   ``Detached``; none that repeats the status) and conditions whose messages name the timeline
   and the file.

(The annotation retry after repairing a corrupt index is also in test_operator_broken.py.)

The operator reaches S3 through `ThrottledProxy`, a TCP forwarder of this module whose
bandwidth the test sets, so that an attach or an upload takes the seconds a person would watch.

With ``STATUS_DOC_DIR=<dir>`` the tests also save ``kubectl get tenants -o wide`` and
``kubectl describe tenant`` of the tenant in each phase they pass through (Attaching, Active,
Broken, Loading, Stopping) into ``<dir>``: that is where the output in docs/status.md comes from.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from e2e import helpers
from e2e.conftest import OperatorFactory, Remote, new_tenant_id
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids

pytestmark = pytest.mark.e2e

MiB = 1 << 20
T = TypeVar("T")


# ---- a TCP path to S3 with a bandwidth the test sets ----------------------------------------------


class ThrottledProxy:
    """Forwards ``127.0.0.1:port`` to ``target``; all connections together move at most ``rate``
    bytes per second in each direction (``None``: unlimited). The rate can change at any time."""

    CHUNK = 16 << 10

    def __init__(self, target: tuple[str, int], rate: float | None = None) -> None:
        self.target = target
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._next = {"up": 0.0, "down": 0.0}
        threading.Thread(target=self._accept, name="throttled-proxy", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()

    def _pace(self, direction: str, n: int) -> None:
        rate = self.rate
        if not rate:
            return
        with self._lock:
            start = max(time.monotonic(), self._next[direction])
            self._next[direction] = start + n / rate
            until = self._next[direction]
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for a, b, direction in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pipe, args=(a, b, direction), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while data := src.recv(self.CHUNK):
                self._pace(direction, len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(remote: Remote) -> Iterator[ThrottledProxy]:
    port = urlsplit(remote.server.endpoint).port
    assert port is not None
    p = ThrottledProxy(("127.0.0.1", port))
    try:
        yield p
    finally:
        p.close()


def proxied_url(remote: Remote, proxy: ThrottledProxy) -> str:
    return f"s3://{remote.bucket}?endpoint=http://127.0.0.1:{proxy.port}&region={remote.server.region}"


# ---- every version of a Tenant the API server sends to a watcher ----------------------------------


@dataclass
class Seen:
    at: float  # time.monotonic() when the watcher received it
    wall: datetime
    obj: dict[str, Any]

    @property
    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = self.obj.get("status") or {}
        return st


@dataclass
class Watch:
    """``kubectl get tenants --watch -o json`` in the test's namespace, collected by a thread."""

    k: helpers.Kubectl
    seen: list[Seen] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None

    def start(self) -> Watch:
        argv = [str(self.k.binary), f"--kubeconfig={self.k.kubeconfig}", f"--namespace={self.k.namespace}",
                "get", helpers.RESOURCE, "--watch", "-o", "json"]  # fmt: skip
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        decoder = json.JSONDecoder()
        buf = ""
        for line in self._proc.stdout:
            buf += line
            while buf.strip():
                try:
                    obj, end = decoder.raw_decode(buf.lstrip())
                except json.JSONDecodeError:
                    break
                buf = buf.lstrip()[end:]
                self.seen.append(Seen(time.monotonic(), datetime.now(UTC), obj))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def of(self, name: str) -> list[Seen]:
        return [s for s in list(self.seen) if s.obj["metadata"]["name"] == name]


@pytest.fixture
def watch(k: helpers.Kubectl) -> Iterator[Watch]:
    w = Watch(k).start()
    try:
        yield w
    finally:
        w.stop()


# ---- small helpers --------------------------------------------------------------------------------


def status_of(k: helpers.Kubectl, name: str) -> dict[str, Any]:
    st: dict[str, Any] = k.tenant(name).get("status") or {}
    return st


def wide(k: helpers.Kubectl) -> str:
    return k.run("get", "tenants", "-o", "wide").stdout


def describe(k: helpers.Kubectl, name: str) -> str:
    return k.run("describe", "tenant", name).stdout


def capture(k: helpers.Kubectl, name: str, label: str) -> None:
    """Save ``get -o wide`` and ``describe`` of ``name`` for docs/status.md (if STATUS_DOC_DIR is set)."""
    out = os.environ.get("STATUS_DOC_DIR")
    if not out:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    text = f"$ kubectl get tenants -o wide\n{wide(k)}\n$ kubectl describe tenant {name}\n{describe(k, name)}"
    Path(out, f"{label}.txt").write_text(text)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def layer_files(workdir: Path, tid: str) -> dict[str, tuple[int, int]]:
    """Complete layer files of the tenant on the volume: name -> (inode, size)."""
    tp = paths.TenantPaths(workdir, ids.TenantId.parse(tid))
    out: dict[str, tuple[int, int]] = {}
    if tp.timelines_dir.is_dir():
        for tdir in tp.timelines_dir.iterdir():
            for f in tdir.iterdir():
                if f.name != paths.METADATA_FILE and not f.name.endswith(paths.TEMP_DOWNLOAD_SUFFIX):
                    st = f.stat()
                    out[f.name] = (st.st_ino, st.st_size)
    return out


def columns(table: str, name: str) -> dict[str, str]:
    """The row of ``name`` in a ``kubectl get`` table, by column header."""
    lines = table.splitlines()
    header = lines[0]
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    # a header like "TENANT ID" is one column: merge starts separated by a single space
    starts = [s for j, s in enumerate(starts) if j == 0 or header[s - 2] == " "]
    row = next(line for line in lines[1:] if line.split()[0] == name)
    cells = {}
    for j, s in enumerate(starts):
        end = starts[j + 1] if j + 1 < len(starts) else None
        cells[header[s:end].strip()] = row[s:end].strip()
    return cells


def retry_events(k: helpers.Kubectl, name: str) -> list[str]:
    """Messages of the ``RetryScheduled`` Events of ``name``, in attempt order."""
    msgs = [str(e.get("message")) for e in k.events(name) if e.get("reason") == "RetryScheduled"]
    return sorted(msgs, key=lambda m: int(m.split()[1]))


def wait_status(k: helpers.Kubectl, name: str, pred: Any, what: str, timeout: float = 30.0) -> dict[str, Any]:
    """Until ``pred(status)`` holds; returns that status."""

    def check() -> dict[str, Any] | None:
        st = status_of(k, name)
        return st if pred(st) else None

    return helpers.wait_for(
        check, timeout, what, interval=0.2, describe=lambda: helpers.summary(k.tenant(name))
    )


def poll(fn: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str) -> T:
    """Until ``ok(fn())``; returns that value of ``fn()``."""
    return helpers.wait_for(lambda: v if ok(v := fn()) else None, timeout, what)


def annotate_retry(k: helpers.Kubectl, name: str, value: str) -> None:
    k.run("annotate", f"tenant/{name}", "--overwrite", f"pageserver.dev/retry={value}")


# ---- 1. automatic retry of a Broken tenant --------------------------------------------------------


def test_broken_tenant_retried_with_backoff_keeps_its_data_and_recovers_by_itself(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory, watch: Watch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    """A layer named by the index is missing from the bucket: the attach downloads every other
    layer, then fails (Broken, RemoteLayerMissing). The automatic retries (after 2 s, then 4 s,
    then 4 s: RETRY_MAX caps the doubling) fail again without downloading anything twice; once
    the object is back the next automatic retry -- no annotation -- brings the tenant to Active
    and downloads only that one layer."""
    tid = new_tenant_id()
    tenant_id = ids.TenantId.parse(tid)
    env = {"PAGESERVER_OPERATOR_RETRY_INITIAL": "2", "PAGESERVER_OPERATOR_RETRY_MAX": "4"}
    op = operator.start(extra_args=["--concurrency", "1"], env=env, wait_live=False)
    generated = remote.seed(testdata.TenantShape(timelines=2, layers=3, layer_size=256 << 10, seed=11), tid)
    expected = remote.capture(tid)
    child = generated.timelines[1]
    prefix = paths.remote_timeline_prefix(tenant_id, child)
    # With one download at a time, the child's last layer is the last one fetched.
    missing_key = max(key for key in generated.objects if key.startswith(prefix) and not key.endswith("json"))
    missing = missing_key.rsplit("/", 1)[1]
    missing_data = remote.get(missing_key)
    remote.server.client().delete_object(Bucket=remote.bucket, Key=missing_key)
    all_layers = {key.rsplit("/", 1)[1] for key in generated.objects if not key.endswith("json")}
    op.wait_live()
    k.apply(helpers.tenant_manifest("flaky", tid))

    st = wait_status(
        k, "flaky", lambda s: s.get("phase") == "Broken" and s.get("attempts") == 1, "Broken, attempt 1"
    )
    assert st["reason"] == "RemoteLayerMissing"
    for word in (str(child), missing, missing_key):
        assert word in st["message"], f"{word!r} not in {st['message']!r}"
    ready = helpers.condition(k.tenant("flaky"), "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "RemoteLayerMissing"
    assert ready["message"] == st["message"]
    assert "etaSeconds" not in st["progress"], "a Broken tenant has no ETA"
    assert st["progress"]["layersDone"] == st["progress"]["layersTotal"] - 1
    capture(k, "flaky", "broken")
    kept = layer_files(op.workdir, tid)
    assert set(kept) == all_layers - {missing}, "the layers downloaded before the failure stay on the volume"

    # Two more automatic retries fail the same way; the backoff doubles and is capped at 4 s.
    wait_status(k, "flaky", lambda s: s.get("attempts") == 3, "the third failed attempt", timeout=20)
    capture(k, "flaky", "broken-attempt-3")
    msgs = poll(lambda: retry_events(k, "flaky"), lambda m: len(m) >= 3, 10, "three RetryScheduled Events")
    assert [m.rsplit("retrying in ", 1)[1] for m in msgs[:3]] == ["2 s", "4 s", "4 s"], msgs
    assert all("(RemoteLayerMissing)" in m for m in msgs)
    # Each attempt said when the next one comes (nextRetryTime is whole seconds, rounded down).
    for n, delay in ((1, 2), (2, 4), (3, 4)):
        first = next(s for s in watch.of("flaky") if s.status.get("attempts") == n)
        ahead = (parse_time(first.status["nextRetryTime"]) - first.wall).total_seconds()
        assert delay - 3 <= ahead <= delay + 0.5, (n, first.status["nextRetryTime"], first.wall)
    # ... and a retry that fails again keeps what it had: not one file downloaded twice.
    assert layer_files(op.workdir, tid) == kept
    assert op.metric("pageserver_operator_layer_downloads_total", tenant_id=tid) == len(kept)
    assert not (k.tenant("flaky")["metadata"].get("annotations") or {}).get("pageserver.dev/retry")

    # Repair remote storage; the next automatic retry (at most 4 s away) attaches the tenant.
    remote.put(missing_key, missing_data)
    st = wait_status(k, "flaky", lambda s: s.get("phase") == "Active", "Active after the automatic retry", 20)
    assert "nextRetryTime" not in st, st
    st = wait_status(k, "flaky", lambda s: s.get("attempts") == 0, "attempts reset by the first sync", 20)
    capture(k, "flaky", "active-after-retry")
    ready = helpers.condition(k.tenant("flaky"), "Ready")
    assert ready is not None and ready["status"] == "True"
    after = layer_files(op.workdir, tid)
    assert {n: after[n] for n in kept} == kept, (
        "the layers from the failed attempts were reused, not fetched again"
    )
    assert op.metric("pageserver_operator_layer_downloads_total", tenant_id=tid) == len(kept) + 1
    helpers.assert_tenant_matches(op.workdir, expected, tmp_path_factory.mktemp("scratch"))
    assert not (k.tenant("flaky")["metadata"].get("annotations") or {}).get("pageserver.dev/retry")


# ---- 2. progress and ETA --------------------------------------------------------------------------

ETA_LAYERS = 40
ETA_LAYER_SIZE = 1 * MiB
ETA_RATE = 12 * MiB  # bytes/s through the proxy: the attach takes a few seconds


def progress_seen(seen: list[Seen], phase: str) -> list[Seen]:
    return [s for s in seen if s.status.get("phase") == phase]


def status_changes(seen: list[Seen]) -> int:
    """How many of the versions seen differ from the one before in ``status`` (metadata-only
    updates, such as kopf's finalizer, do not count)."""
    return sum(1 for a, b in itertools.pairwise(seen) if a.status != b.status)


def assert_progress_moves(seen: list[Seen], phase: str, total_bytes: int, moves: int) -> None:
    """While ``phase``: startedAt, a growing percent (``moves`` distinct values in between 0
    and 100, about one a second), an ETA that comes down."""
    during = progress_seen(seen, phase)
    assert during, f"no {phase} status was seen"
    progress = [s.status.get("progress") or {} for s in during]
    assert all(p.get("startedAt") for p in progress), progress
    assert all(s.status.get("hasInProgressDownloads") is True for s in during)
    planned = [p for p in progress if p.get("bytesTotal")]
    assert planned and all(p["bytesTotal"] == total_bytes for p in planned), progress
    percents = [p["percent"] for p in planned]
    assert percents == sorted(percents), f"percent went backwards: {percents}"
    assert len({p for p in percents if 0 < p < 100}) >= moves, f"percent did not move: {percents}"
    assert any((p.get("etaSeconds") or 0) > 0 for p in planned), f"no ETA: {progress}"
    etas = [p["etaSeconds"] for p in planned if p.get("etaSeconds") is not None]
    assert etas[-1] <= etas[0], f"the ETA did not come down: {etas}"


def test_progress_has_eta_is_throttled_and_shows_in_wide_output(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory, proxy: ThrottledProxy, watch: Watch
) -> None:
    """A 40 MiB attach (40 layers, one download at a time, S3 at 12 MiB/s): while Attaching the
    status carries startedAt, a shrinking etaSeconds and a growing percent, is written about
    once a second (far fewer writes than files), and ``kubectl get -o wide`` shows PROGRESS and
    ETA. A restart that finds 3/4 of the layers missing (Loading) shows the same."""
    tid = new_tenant_id()
    url = proxied_url(remote, proxy)
    op = operator.start(remote_url=url, extra_args=["--concurrency", "1"], wait_live=False)
    remote.seed(testdata.TenantShape(timelines=1, sizes=[ETA_LAYER_SIZE] * ETA_LAYERS, seed=21), tid)
    total = ETA_LAYERS * ETA_LAYER_SIZE
    op.wait_live()
    proxy.rate = ETA_RATE
    k.apply(helpers.tenant_manifest("big", tid))

    def follow(phase: str) -> list[dict[str, str]]:
        """Rows of ``kubectl get -o wide`` until Active; the first with an ETA is captured."""
        rows: list[dict[str, str]] = []
        deadline = time.monotonic() + 60
        while helpers.phase(k.tenant_or_none("big")) != "Active":
            assert time.monotonic() < deadline, helpers.summary(k.tenant_or_none("big"))
            table = wide(k)
            row = columns(table, "big")
            if row["PHASE"] == phase and row["ETA"].isdigit() and not any(r["ETA"].isdigit() for r in rows):
                capture(k, "big", phase.lower())
            rows.append(row)
            time.sleep(0.25)
        return rows

    rows = follow("Attaching")
    capture(k, "big", "active")
    seen = watch.of("big")
    first = next(i for i, s in enumerate(seen) if s.status.get("phase") == "Attaching")
    active = next(i for i, s in enumerate(seen) if s.status.get("phase") == "Active")
    assert_progress_moves(seen, "Attaching", total, moves=3)
    duration = seen[active].at - seen[first].at
    writes = status_changes(seen[first : active + 1])
    assert duration > 2, f"the attach took {duration:.1f} s: too fast to show progress"
    assert writes <= duration / 1.0 + 4, f"{writes} status writes in {duration:.1f} s: more than ~1/s"
    assert writes < ETA_LAYERS / 2, f"{writes} status writes for {ETA_LAYERS} files"

    attaching = [
        r for r in rows if r["PHASE"] == "Attaching" and r["PROGRESS"].isdigit() and r["ETA"].isdigit()
    ]
    assert attaching, f"no -o wide row with PROGRESS and ETA while Attaching: {rows}"
    assert any(0 < int(r["PROGRESS"]) < 100 for r in attaching), attaching
    assert attaching[0]["REASON"] == "AttachStarted"
    done = columns(wide(k), "big")
    assert (done["PHASE"], done["PROGRESS"], done["ETA"], done["TIMELINES"]) == ("Active", "100", "0", "1"), (
        done
    )
    st = status_of(k, "big")
    p = st["progress"]
    assert (p["layersDone"], p["layersTotal"], p["bytesDone"], p["bytesTotal"]) == (40, 40, total, total)
    assert st["hasInProgressDownloads"] is False

    # Restart with 3/4 of the layers damaged on the volume (truncated: a layer *gone* at load is
    # the pageserver's removal, unlinked and not downloaded): Loading sets them aside and
    # downloads them again, with progress.
    op.kill()
    tp = paths.TenantPaths(op.workdir, ids.TenantId.parse(tid))
    (tdir,) = list(tp.timelines_dir.iterdir())
    layers = sorted(f for f in tdir.iterdir() if f.name != paths.METADATA_FILE)
    for f in layers[ETA_LAYERS // 4 :]:
        os.truncate(f, 1)
    watch.seen.clear()
    restarted = operator.start(remote_url=url, extra_args=["--concurrency", "1"])
    # (a Loading is shown once it lasted the status interval: until then the status says Active)
    wait_status(k, "big", lambda s: s.get("phase") == "Loading", "Loading shown", 20)
    follow("Loading")
    capture(k, "big", "active-after-load")
    seen = watch.of("big")
    assert_progress_moves(seen, "Loading", total, moves=2)
    # the layers still on the volume count as done from the start; only the others are fetched
    planned = [
        s.status["progress"] for s in progress_seen(seen, "Loading") if s.status["progress"].get("bytesTotal")
    ]
    assert planned[0]["layersDone"] >= ETA_LAYERS // 4 and planned[0]["layersTotal"] == ETA_LAYERS, planned[0]
    missing = ETA_LAYERS - ETA_LAYERS // 4
    assert restarted.metric("pageserver_operator_layer_downloads_total", tenant_id=tid) == missing


# ---- 3. upload lag --------------------------------------------------------------------------------


def test_upload_lag_and_synced_follow_a_flushed_layer(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory, proxy: ThrottledProxy, watch: Watch
) -> None:
    """A layer flushed onto the volume of an Active tenant, found by a sync (woken at once by
    the retry annotation; the sync period is an hour): while its upload runs (S3 at 1 MiB/s) the
    timeline shows ``uploadLagBytes`` = its size, ``lsnLag`` > 0 and Synced=False naming the
    timeline and the file; once the index is up, both are 0 and Synced=True."""
    tid = new_tenant_id()
    tenant_id = ids.TenantId.parse(tid)
    op = operator.start(remote_url=proxied_url(remote, proxy), sync_period=3600, wait_live=False)
    generated = remote.seed(testdata.TenantShape(timelines=2, layers=2, layer_size=64 << 10, seed=31), tid)
    op.wait_live()
    k.apply(helpers.tenant_manifest("writer", tid))
    wait_status(k, "writer", lambda s: s.get("phase") == "Active", "Active")
    # (the first index of the attachment's generation may still be uploading: Synced follows it)
    helpers.wait_for(lambda: (helpers.condition(k.tenant("writer"), "Synced") or {}).get("status") == "True", 30, "Synced")
    synced = helpers.condition(k.tenant("writer"), "Synced")
    assert synced is not None and synced["status"] == "True" and synced["reason"] == "UpToDate"
    before = {t["timelineId"]: t for t in status_of(k, "writer")["timelines"]}
    assert all(t["uploadLagBytes"] == 0 and t["lsnLag"] == "0" for t in before.values()), before

    root = generated.timelines[0]
    size = 3 * MiB
    proxy.rate = 1 * MiB
    name = str(testdata.flush_local_layer(op.workdir, tenant_id, root, size, seed=5))
    watch.seen.clear()
    annotate_retry(k, "writer", "sync-now")

    def lagging(s: Seen) -> bool:
        t = next(t for t in s.status.get("timelines", []) if t["timelineId"] == str(root))
        return t["uploadLagBytes"] == size and int(t["lsnLag"]) > 0

    seen = helpers.wait_for(lambda: next((s for s in watch.of("writer") if lagging(s)), None), 30,
                            "uploadLagBytes and lsnLag of the flushed layer")  # fmt: skip
    capture(k, "writer", "active-uploading")
    t = next(t for t in seen.status["timelines"] if t["timelineId"] == str(root))
    assert int(t["lsnLag"]) == testdata.LSN_STEP
    assert t["remoteConsistentLsn"] == before[str(root)]["diskConsistentLsn"] != t["diskConsistentLsn"]
    other = next(t for t in seen.status["timelines"] if t["timelineId"] != str(root))
    assert other["uploadLagBytes"] == 0 and other["lsnLag"] == "0"
    assert seen.status["phase"] == "Active"
    cond = helpers.condition(seen.obj, "Synced")
    assert cond is not None and cond["status"] == "False" and cond["reason"] == "UploadsPending", cond
    assert f"timeline {root}" in cond["message"] and name in cond["message"], cond["message"]
    assert str(other["timelineId"]) not in cond["message"]

    def caught_up(st: dict[str, Any]) -> bool:
        t = next(t for t in st["timelines"] if t["timelineId"] == str(root))
        c: dict[str, Any] = next((c for c in st.get("conditions", []) if c["type"] == "Synced"), {})
        return bool(t["uploadLagBytes"] == 0 and t["lsnLag"] == "0" and c.get("status") == "True")

    st = wait_status(k, "writer", caught_up, "the upload to finish (lag 0, Synced=True)", timeout=30)
    t = next(t for t in st["timelines"] if t["timelineId"] == str(root))
    assert t["remoteConsistentLsn"] == t["diskConsistentLsn"] == seen_dcl(seen, root)
    assert t["layers"] == 3
    index = remote.newest_index(tenant_id, root)
    assert name in {str(n) for n in index.layers}
    proxy.rate = None


def seen_dcl(seen: Seen, timeline_id: ids.TimelineId) -> str:
    return str(
        next(t for t in seen.status["timelines"] if t["timelineId"] == str(timeline_id))["diskConsistentLsn"]
    )


# ---- 4. history, and the retry annotation ---------------------------------------------------------


def test_history_keeps_the_last_10_and_the_annotation_retries_at_once(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory
) -> None:
    """A tenant with a garbled index, default backoff (30 s, doubling): each new value of the
    retry annotation makes an attempt within a few seconds -- long before ``nextRetryTime`` --
    and the backoff keeps doubling (60 s, 120 s, ...). After 12 transitions ``status.history``
    holds the last 10 (time, phase, reason, message each); it stays at 10 once Active and across
    an operator restart."""
    tid = new_tenant_id()
    op = operator.start(wait_live=False)
    generated = remote.seed(testdata.TenantShape(timelines=2, layers=2, layer_size=16 << 10, seed=41), tid)
    key = paths.remote_index_key(ids.TenantId.parse(tid), generated.timelines[1])
    original = remote.get(key)
    remote.put(key, original[:40])
    op.wait_live()
    k.apply(helpers.tenant_manifest("flipper", tid))
    st = wait_status(k, "flipper", lambda s: s.get("attempts") == 1, "Broken, attempt 1")
    assert st["phase"] == "Broken" and st["reason"] == "InvalidIndexPart"

    for n in range(2, 7):
        started = time.monotonic()
        scheduled = parse_time(st["nextRetryTime"])
        annotate_retry(k, "flipper", f"try-{n}")
        st = wait_status(k, "flipper", lambda s, n=n: s.get("attempts") == n, f"attempt {n}", timeout=10)
        took = time.monotonic() - started
        assert took < 10, f"the annotation took {took:.1f} s to retry"
        assert datetime.now(UTC) < scheduled, "the retry came from the backoff, not the annotation"
        delay = 30 * 2 ** (n - 1)
        ahead = (parse_time(st["nextRetryTime"]) - datetime.now(UTC)).total_seconds()
        assert delay - 4 <= ahead <= delay, (n, st["nextRetryTime"], ahead)
    msgs = poll(lambda: retry_events(k, "flipper"), lambda m: len(m) >= 6, 10, "six RetryScheduled Events")
    assert [m.rsplit("retrying in ", 1)[1] for m in msgs] == [f"{30 * 2**i} s" for i in range(6)], msgs

    # A retry that fails as the last one did within the status interval adds no entry (it is
    # in attempts and RetryScheduled); one whose Attaching was shown adds Attaching, Broken.
    history = st["history"]
    assert 2 <= len(history) <= 10, history
    for h in history:
        assert set(h) == {"time", "phase", "reason", "message"}, h
        assert h["time"].endswith("Z") and h["message"], h
    assert [h["time"] for h in history] == sorted(h["time"] for h in history)
    phases = [h["phase"] for h in history]
    assert phases[:2] == ["Attaching", "Broken"] and phases == ["Attaching", "Broken"] * (len(phases) // 2), phases
    assert {h["reason"] for h in history} == {"AttachStarted", "InvalidIndexPart"}
    assert all(key in h["message"] for h in history if h["phase"] == "Broken")
    size = len(json.dumps(k.tenant("flipper")))

    remote.put(key, original)
    annotate_retry(k, "flipper", "repaired")
    # (attempts are reset once a sync succeeded: a failure only a sync finds keeps its backoff)
    st = wait_status(k, "flipper", lambda s: s.get("phase") == "Active" and s.get("attempts") == 0,
                     "Active and synced")  # fmt: skip
    assert "nextRetryTime" not in st
    assert len(st["history"]) <= 10
    assert [(h["phase"], h["reason"]) for h in st["history"][-2:]] == [
        ("Attaching", "AttachStarted"),
        ("Active", "Active"),
    ]
    before = st["history"]

    # A new operator process keeps the history (a reload shorter than the status interval adds
    # nothing: no Ready flap, no write; a longer one adds Loading, Active), still capped.
    op.kill()
    second = operator.start()
    helpers.wait_for(lambda: second.metric("pageserver_operator_tenants", phase="Active") == 1, 30,
                     "the restarted operator to load the tenant")  # fmt: skip
    after = k.tenant("flipper")["status"]["history"]
    if after != before:
        assert [h["phase"] for h in after[-2:]] == ["Loading", "Active"], after
        assert after == (before + after[-2:])[-10:], (before, after)
    assert len(json.dumps(k.tenant("flipper"))) < size + 2048, "the object grows with every transition"


# ---- 5. kubectl describe --------------------------------------------------------------------------


def event_reasons(text: str) -> list[str]:
    """The Reason column of the Events table of ``kubectl describe``."""
    lines = text.split("Events:", 1)[1].splitlines()
    return [line.split()[1] for line in lines[3:] if line.strip()]


def test_describe_shows_events_and_conditions_that_name_timeline_and_file(
    k: helpers.Kubectl, remote: Remote, operator: OperatorFactory, proxy: ThrottledProxy
) -> None:
    """``kubectl describe tenant`` of a tenant that went Broken (garbled index), was retried by
    the annotation, became Active and is being deleted: Events InvalidIndexPart (Warning),
    RetryScheduled, then Detached (none that repeats the status: no AttachStarted, Active,
    DetachStarted); the Ready condition of the Broken tenant names the timeline and the index
    file; Stopping shows in the status while the detach uploads."""
    tid = new_tenant_id()
    tenant_id = ids.TenantId.parse(tid)
    # (an hour between syncs: the layer flushed before the delete is uploaded by the detach)
    op = operator.start(remote_url=proxied_url(remote, proxy), sync_period=3600, wait_live=False)
    generated = remote.seed(testdata.TenantShape(timelines=2, layers=2, layer_size=32 << 10, seed=51), tid)
    timeline = generated.timelines[1]
    key = paths.remote_index_key(tenant_id, timeline)
    original = remote.get(key)
    remote.put(key, b"{" + original[1:-3])
    op.wait_live()
    k.apply(helpers.tenant_manifest("readable", tid))
    wait_status(k, "readable", lambda s: s.get("attempts") == 1, "Broken, attempt 1")
    text = poll(
        lambda: describe(k, "readable"), lambda d: "RetryScheduled" in d, 10, "RetryScheduled in describe"
    )
    assert "Phase:" in text and "Broken" in text and "Next Retry Time:" in text and "Attempts:" in text
    assert event_reasons(text) == ["InvalidIndexPart", "RetryScheduled"], text
    ready = helpers.condition(k.tenant("readable"), "Ready")
    assert ready is not None and ready["reason"] == "InvalidIndexPart"
    assert f"timeline {tid}/{timeline}" in ready["message"] and key in ready["message"], ready["message"]
    synced = helpers.condition(k.tenant("readable"), "Synced")
    assert synced is not None and synced["status"] == "False" and synced["reason"] == "NotActive"
    for part in ("Type:    Ready", "Reason:                InvalidIndexPart", str(timeline)):
        assert " ".join(part.split()) in " ".join(text.split()), f"{part!r} not in describe:\n{text}"

    remote.put(key, original)
    annotate_retry(k, "readable", "1")
    k.run("wait", "--for=condition=Ready", "tenant/readable", "--timeout=30s")
    text = describe(k, "readable")
    # in the order they happened (Events are named <tenant>.<hex nanoseconds>, posted in order)
    expected = ["InvalidIndexPart", "RetryScheduled"]
    assert event_reasons(text) == expected, text
    warnings = [
        line for line in text.split("Events:", 1)[1].splitlines() if line.strip().startswith("Warning")
    ]
    assert len(warnings) == 1 and "InvalidIndexPart" in warnings[0], warnings

    # Delete while a flushed layer uploads slowly: Stopping (status); then Detached (Event).
    testdata.flush_local_layer(op.workdir, tenant_id, generated.timelines[0], 3 * MiB, seed=6)
    proxy.rate = 1 * MiB
    k.run("delete", "tenant/readable", "--wait=false")

    def uploading(s: dict[str, Any]) -> bool:
        return s.get("phase") == "Stopping" and any(
            t["uploadLagBytes"] == 3 * MiB for t in s.get("timelines", [])
        )

    st = wait_status(k, "readable", uploading, "Stopping, uploading the flushed layer", timeout=15)
    assert st["reason"] == "DetachStarted" and st["message"] == "uploading local-only layers"
    text = describe(k, "readable")
    capture(k, "readable", "stopping")
    assert "Stopping" in text
    helpers.wait_gone(k, "readable", timeout=30)
    detached = helpers.wait_event(k, "readable", "Detached")
    assert detached["type"] == "Normal" and tid in detached["message"]
    reasons = [
        e["reason"] for e in sorted(k.events("readable"), key=lambda e: e["metadata"]["creationTimestamp"])
    ]
    assert reasons == ["InvalidIndexPart", "RetryScheduled", "Detached"], reasons
