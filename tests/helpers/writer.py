"""A pageserver stand-in: writes one tenant on the volume exactly as DESIGN §8.1 allows.

What it does (each action is a generator that yields after every file-system operation, so a
driver can interleave it with the engine at that granularity, and leave an action half done
for as long as it likes):

- **flush**: write ``<layer>___temp`` (fsynced), rename it into place, fsync the directory; then
  rewrite ``metadata`` *in place* (one ``pwrite`` of the 512 bytes, no truncation, fsync) with a
  higher ``disk_consistent_lsn``. Between the rename and the metadata rewrite the layer is "from
  the future" for anyone reading the directory.
- **create a timeline** (a branch of an existing one at its ``disk_consistent_lsn``): the
  directory, then one or two layers (temp + rename each), then ``metadata`` (created, written in
  one write, fsynced) last.
- **compact**: write an L1 delta (the whole key space, or split in two at a random key) over a run
  of 2-4 contiguous L0 deltas (mostly the newest, as a pageserver compacts the L0s flushed since
  its last compaction; temp + rename each), rewrite ``metadata`` in place (same LSN), then remove
  the L0s one at a time.
- **ephemeral files**: ``ephemeral-<n>`` spill files, created, appended to and removed at random;
  **scratch temp files** ``<name>.<hex>___temp`` kept for a while, then removed.

Layer names are byte-exact (`pageserver_operator.formats.layer_name`): L0 deltas span the whole
key space and chain their LSN ranges (each starts where the previous one ended); a delta ends at
the new ``disk_consistent_lsn`` or one past it (both spellings occur in real pageservers; the
``metadata`` format needs an 8-aligned LSN). So the layers named by any consistent index cover
every key from the timeline's base (its image layers, or its ancestor LSN / initdb LSN) up to its
``disk_consistent_lsn`` (`coverage_gaps`).

Bookkeeping for the checks: every file the writer created and has not removed (layers,
``metadata``, ephemeral and temp files) with its size and SHA-256 (`check_files` reports any
that was deleted, moved aside or changed by someone else), the layers it flushed (a layer is
flushed once a ``metadata`` whose ``disk_consistent_lsn`` covers it was written) and the last
``disk_consistent_lsn`` it wrote per timeline.

The writer never creates the tenant or ``timelines`` directory: when they vanish (the tenant was
detached) its actions end (`gone`) instead of writing elsewhere. Deterministic for a given
``random.Random`` and sequence of calls; thread-unsafe (drive it from one thread).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pageserver_operator.engine import paths
from pageserver_operator.formats import errors as format_errors
from pageserver_operator.formats import ids, layer_name, lsn, metadata

KEY_MIN = layer_name.Key.MIN
KEY_MAX = layer_name.Key.MAX
EPHEMERAL_PREFIX = "ephemeral-"
MAX_TIMELINES = 6
MAX_EPHEMERAL = 3


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_l0(name: layer_name.LayerName) -> bool:
    return isinstance(name, layer_name.DeltaLayerName) and name.key_start == KEY_MIN and name.key_end == KEY_MAX


def coverage_gaps(layers: Iterable[layer_name.LayerName], meta: metadata.TimelineMetadata) -> list[str]:
    """Where ``layers`` fail to hold every key from the timeline's base to its
    ``disk_consistent_lsn`` D, as real pageserver layer sets do.

    The key space is cut at every layer's key boundaries; for each slice, the *base* is the
    highest image layer at an LSN <= D covering the slice, else the ancestor LSN (a branch) or
    the initdb LSN (a root): below the base the slice needs nothing. Above it, the delta layers
    covering the slice must chain without a hole over ``[base + 8, D)`` (WAL records are 8-byte
    aligned, so a first delta may start at the base or at the first record after it; a delta's
    end is exclusive and may be D or D + 1). Layers "from the future" (an image above D, a delta
    ending above D + 1) are reported too: no consistent index names one."""
    dcl = meta.disk_consistent_lsn.value
    default_base = (meta.ancestor_lsn if meta.ancestor_timeline is not None else meta.initdb_lsn).value
    names = list(layers)
    problems = [f"layer {n} is from the future (disk_consistent_lsn {meta.disk_consistent_lsn})"
                for n in names if n.is_future(meta.disk_consistent_lsn)]
    bounds = {KEY_MIN.value, KEY_MAX.value}
    for n in names:
        for k in (n.key_start.value, n.key_end.value):
            if KEY_MIN.value < k < KEY_MAX.value:
                bounds.add(k)
    edges = sorted(bounds)
    for lo, hi in itertools.pairwise(edges):
        covering = [n for n in names if n.key_start.value <= lo and hi <= n.key_end.value]
        images = [n.lsn.value for n in covering if isinstance(n, layer_name.ImageLayerName) and n.lsn.value <= dcl]
        base = max(images, default=default_base)
        reach = base + 8
        if reach >= dcl:
            continue
        deltas = sorted(
            (n.lsn_start.value, n.lsn_end.value) for n in covering if isinstance(n, layer_name.DeltaLayerName)
        )
        for start, end in deltas:
            if start > reach:
                break
            reach = max(reach, end)
        if reach < dcl:
            nxt = min((s for s, _ in deltas if s > reach), default=dcl)
            problems.append(
                f"keys {lo:036X}..{hi:036X}: no layer covers LSN {lsn.Lsn(reach)}..{lsn.Lsn(min(nxt, dcl))} "
                f"(base {lsn.Lsn(base)}, disk_consistent_lsn {meta.disk_consistent_lsn})"
            )
    return problems


class TenantGone(Exception):
    """The tenant (or timeline) directory vanished under the writer: the tenant was detached."""


class FileLost(Exception):
    """A file the writer was about to use vanished (already reported by `Writer.check_files`):
    the action cannot go on."""


@dataclass
class TrackedFile:
    size: int
    sha: str
    what: str  # "layer", "metadata", "ephemeral", "temp"


@dataclass
class WriterTimeline:
    timeline_id: ids.TimelineId
    directory: Path
    #: the metadata last written (None while the timeline is being created)
    meta: metadata.TimelineMetadata | None
    #: where the next delta starts
    chain_end: lsn.Lsn
    #: layers of the writer in place (renamed), flushed or not yet, with their sizes
    layers: dict[layer_name.LayerName, int] = field(default_factory=dict)
    ephemeral: list[str] = field(default_factory=list)


@dataclass
class Finding:
    """Something the writer itself ran into (its file vanished under it, ...)."""

    subject: str
    problem: str


class Writer:
    def __init__(
        self,
        workdir: Path,
        tenant_id: ids.TenantId,
        rng: random.Random,
        layer_sizes: tuple[int, int] = (512, 12 << 10),
    ) -> None:
        self.paths = paths.TenantPaths(workdir, tenant_id)
        self.rng = rng
        self.layer_sizes = layer_sizes
        self.timelines: dict[ids.TimelineId, WriterTimeline] = {}
        self.files: dict[Path, TrackedFile] = {}
        self.tasks: dict[str, Iterator[str]] = {}
        self.findings: list[Finding] = []
        self.counts: dict[str, int] = {}
        self.gone = False
        self._ephemeral_n = 0

    # ---- state -------------------------------------------------------------------------------

    def adopt(self) -> None:
        """Take over the tenant as the volume holds it now (after an attach): every layer and
        ``metadata`` becomes the writer's; in-flight actions are forgotten."""
        self.forget()
        for d in sorted(self.paths.timelines_dir.iterdir()):
            try:
                tlid = ids.TimelineId.parse(d.name)
            except format_errors.FormatError:
                continue
            meta_bytes = (d / paths.METADATA_FILE).read_bytes()
            meta = metadata.TimelineMetadata.from_bytes(meta_bytes)
            t = WriterTimeline(tlid, d, meta, meta.disk_consistent_lsn)
            self._track(d / paths.METADATA_FILE, meta_bytes, "metadata")
            for p in d.iterdir():
                try:
                    name = layer_name.parse_layer_name(p.name)
                except format_errors.FormatError:
                    continue
                data = p.read_bytes()
                t.layers[name] = len(data)
                self._track(p, data, "layer")
                if isinstance(name, layer_name.DeltaLayerName) and name.lsn_end > t.chain_end:
                    t.chain_end = name.lsn_end
            self.timelines[tlid] = t

    def forget(self) -> None:
        """The tenant was detached: nothing of it is the writer's any more."""
        self.timelines.clear()
        self.files.clear()
        self.tasks.clear()
        self.gone = False

    def flushed(self) -> dict[ids.TimelineId, dict[layer_name.LayerName, int]]:
        """Per timeline with metadata: the writer's layers that its metadata covers, with sizes."""
        out: dict[ids.TimelineId, dict[layer_name.LayerName, int]] = {}
        for tlid, t in self.timelines.items():
            if t.meta is None:
                continue
            dcl = t.meta.disk_consistent_lsn
            out[tlid] = {n: size for n, size in t.layers.items() if not n.is_future(dcl)}
        return out

    def written_lsn(self) -> dict[ids.TimelineId, lsn.Lsn]:
        return {tlid: t.meta.disk_consistent_lsn for tlid, t in self.timelines.items() if t.meta is not None}

    def check_files(self) -> list[Finding]:
        """Every file of the writer is where it put it, with its content; each problem is
        reported once (the file is no longer tracked afterwards)."""
        found = []
        for path, f in sorted(self.files.items()):
            problem = None
            try:
                data = path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                aside = sorted(p.name for p in path.parent.glob(f"{path.name}.*{paths.OLD_SUFFIX}")) if path.parent.is_dir() else []
                problem = f"moved aside as {aside[0]}" if aside else "deleted"
            else:
                if len(data) != f.size or digest(data) != f.sha:
                    problem = f"changed ({f.size} -> {len(data)} bytes)"
            if problem is not None:
                found.append(Finding(f"{f.what} {path.parent.name[:8]}/{path.name}", problem))
                del self.files[path]
        return found

    # ---- driving -----------------------------------------------------------------------------

    def step(self, prefer: str | None = None) -> str:
        """Advance one action (an in-flight one, or a new one; ``prefer``: start an action of
        that kind if one can start). Returns what was done."""
        if self.tasks and (self.rng.random() < 0.6 or len(self.tasks) >= 3) and prefer is None:
            key = self.rng.choice(sorted(self.tasks))
            return self._advance(key)
        key, task = self._new_task(prefer)
        if task is None and self.tasks:
            return self._advance(self.rng.choice(sorted(self.tasks)))
        if task is None:
            return "idle"
        self.tasks[key] = task
        return self._advance(key)

    def finish(self) -> None:
        """Complete every in-flight action (the writer stops)."""
        while self.tasks:
            self._advance(sorted(self.tasks)[0])

    def _advance(self, key: str) -> str:
        task = self.tasks[key]
        try:
            return f"{key}: {next(task)}"
        except StopIteration:
            del self.tasks[key]
            return f"{key}: done"
        except TenantGone as e:
            del self.tasks[key]
            self.gone = True
            return f"{key}: tenant gone ({e})"
        except FileLost as e:
            del self.tasks[key]
            return f"{key}: abandoned ({e})"
        except OSError as e:
            del self.tasks[key]
            if not self.paths.timelines_dir.is_dir():
                self.gone = True
                return f"{key}: tenant gone ({e})"
            if isinstance(e, FileNotFoundError):
                # a file of the writer's vanished under it: `check_files` reports the file
                return f"{key}: abandoned ({e.strerror}: {Path(e.filename or '').name[-40:]})"
            self.findings.append(Finding(key, f"writer action failed: {type(e).__name__}: {e}"))
            return f"{key}: FAILED {e}"

    def _new_task(self, prefer: str | None = None) -> tuple[str, Iterator[str] | None]:
        if self.gone or not self.timelines:
            return "", None
        idle = [t for tlid, t in sorted(self.timelines.items()) if t.meta is not None and str(tlid) not in self.tasks]
        choices: list[tuple[float, str]] = []
        if idle:
            choices += [(6.0, "flush"), (1.0, "ephemeral"), (0.7, "scratch")]
            if any(len(self._l0_runs(t)) > 0 for t in idle):
                choices.append((1.5, "compact"))
            if len(self.timelines) < MAX_TIMELINES:
                choices.append((1.2, "branch"))
        if not choices:
            return "", None
        kinds = [c for _, c in choices]
        kind = prefer if prefer in kinds else self.rng.choices(kinds, [w for w, _ in choices])[0]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "branch":
            parent = self.rng.choice(idle)
            tlid = ids.TimelineId(self.rng.randbytes(16))
            return str(tlid), self._branch(parent, tlid)
        if kind == "compact":
            t = self.rng.choice([t for t in idle if self._l0_runs(t)])
            return str(t.timeline_id), self._compact(t)
        t = self.rng.choice(idle)
        if kind == "flush":
            return str(t.timeline_id), self._flush(t)
        if kind == "scratch":
            return str(t.timeline_id), self._scratch(t)
        self._ephemeral_n += 1
        return f"ephemeral-{self._ephemeral_n}", self._ephemeral(t)

    # ---- file operations ---------------------------------------------------------------------

    def _track(self, path: Path, data: bytes, what: str) -> None:
        self.files[path] = TrackedFile(len(data), digest(data), what)

    def _untrack(self, path: Path) -> None:
        self.files.pop(path, None)

    def _remove(self, path: Path) -> None:
        """Remove a file of the writer's (one that vanished was reported by `check_files`)."""
        self._untrack(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def _payload(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(*self.layer_sizes))

    def _create(self, path: Path, data: bytes, what: str) -> None:
        """Create a new file, write it in one write, fsync (a missing directory: TenantGone)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError as e:
            raise TenantGone(str(path.parent)) from e
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._track(path, data, what)

    def _fsync_dir(self, directory: Path) -> None:
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError as e:
            raise TenantGone(str(directory)) from e
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _place_layer(self, t: WriterTimeline, name: layer_name.LayerName) -> Iterator[str]:
        """Temp file, then rename into place (the two steps of every layer write)."""
        target = t.directory / str(name)
        tmp = t.directory / (str(name) + paths.TEMP_SUFFIX)
        self._create(tmp, self._payload(), "temp")
        yield f"temp {tmp.name[-40:]}"
        entry = self.files.get(tmp)
        if entry is None:  # someone removed the temp file (reported by check_files)
            raise FileLost(f"{tmp.name} vanished before its rename")
        os.rename(tmp, target)
        self._untrack(tmp)
        self.files[target] = TrackedFile(entry.size, entry.sha, "layer")
        t.layers[name] = entry.size
        self._fsync_dir(t.directory)
        yield f"renamed {name}"

    def _write_metadata(self, t: WriterTimeline, meta: metadata.TimelineMetadata) -> None:
        """Rewrite ``metadata`` in place: one pwrite of the whole image, no truncation, fsync."""
        path = t.directory / paths.METADATA_FILE
        data = meta.to_bytes()
        if t.meta is None:
            self._create(path, data, "metadata")
            self._fsync_dir(t.directory)
        else:
            try:
                fd = os.open(path, os.O_WRONLY)
            except FileNotFoundError as e:
                if not t.directory.is_dir():
                    raise TenantGone(str(t.directory)) from e
                raise
            try:
                os.pwrite(fd, data, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._track(path, data, "metadata")
        t.meta = meta

    def _next_meta(self, t: WriterTimeline, dcl: lsn.Lsn) -> metadata.TimelineMetadata:
        assert t.meta is not None
        m = t.meta
        return metadata.TimelineMetadata(
            disk_consistent_lsn=dcl,
            prev_record_lsn=lsn.Lsn(dcl.value - 0x38) if dcl.value > 0x38 else None,
            ancestor_timeline=m.ancestor_timeline,
            ancestor_lsn=m.ancestor_lsn,
            latest_gc_cutoff_lsn=m.latest_gc_cutoff_lsn,
            initdb_lsn=m.initdb_lsn,
            pg_version=m.pg_version,
        )

    def _next_delta(self, t: WriterTimeline) -> tuple[layer_name.DeltaLayerName, lsn.Lsn]:
        """The next L0 of the chain and the disk_consistent_lsn that covers it."""
        start = t.chain_end.value
        dcl = ((start + 7) // 8) * 8 + 8 * self.rng.randint(0x20, 0x800)
        end = dcl + (1 if self.rng.random() < 0.5 else 0)
        return layer_name.DeltaLayerName(KEY_MIN, KEY_MAX, lsn.Lsn(start), lsn.Lsn(end)), lsn.Lsn(dcl)

    # ---- actions -----------------------------------------------------------------------------

    def _flush(self, t: WriterTimeline) -> Iterator[str]:
        name, dcl = self._next_delta(t)
        yield from self._place_layer(t, name)
        t.chain_end = name.lsn_end
        self._write_metadata(t, self._next_meta(t, dcl))
        yield f"metadata -> {dcl}"

    def _branch(self, parent: WriterTimeline, tlid: ids.TimelineId) -> Iterator[str]:
        assert parent.meta is not None
        at = parent.meta.disk_consistent_lsn
        directory = self.paths.timeline_dir(tlid)
        try:
            os.mkdir(directory)
        except FileNotFoundError as e:
            raise TenantGone(str(directory.parent)) from e
        first = lsn.Lsn(at.value + (8 if self.rng.random() < 0.5 else 0))
        t = WriterTimeline(tlid, directory, None, first)
        self.timelines[tlid] = t
        yield f"mkdir (branch of {str(parent.timeline_id)[:8]} at {at})"
        dcl = at
        for _ in range(self.rng.randint(1, 2)):
            name, dcl = self._next_delta(t)
            yield from self._place_layer(t, name)
            t.chain_end = name.lsn_end
        pm = parent.meta
        meta = metadata.TimelineMetadata(
            disk_consistent_lsn=dcl,
            prev_record_lsn=lsn.Lsn(dcl.value - 0x38),
            ancestor_timeline=parent.timeline_id,
            ancestor_lsn=at,
            latest_gc_cutoff_lsn=at,
            initdb_lsn=pm.initdb_lsn,
            pg_version=pm.pg_version,
        )
        self._write_metadata(t, meta)
        yield f"metadata (created) -> {dcl}"

    def _l0_runs(self, t: WriterTimeline) -> list[list[layer_name.DeltaLayerName]]:
        """Runs of >= 2 contiguous L0 deltas of the writer, all covered by its metadata."""
        if t.meta is None:
            return []
        dcl = t.meta.disk_consistent_lsn
        l0s = sorted(
            (n for n in t.layers if is_l0(n) and not n.is_future(dcl) and t.directory / str(n) in self.files),
            key=lambda n: n.sort_key(),
        )
        runs: list[list[layer_name.DeltaLayerName]] = []
        cur: list[layer_name.DeltaLayerName] = []
        for n in l0s:
            assert isinstance(n, layer_name.DeltaLayerName)
            if cur and cur[-1].lsn_end == n.lsn_start:
                cur.append(n)
            else:
                if len(cur) >= 2:
                    runs.append(cur)
                cur = [n]
        if len(cur) >= 2:
            runs.append(cur)
        return runs

    def _compact(self, t: WriterTimeline) -> Iterator[str]:
        runs = self._l0_runs(t)
        if self.rng.random() < 0.8:
            # as a pageserver does: the newest L0s (flushed since the last compaction), which
            # are also the ones most likely still on their way to remote storage
            run = runs[-1]
            chosen = run[-self.rng.randint(2, min(4, len(run))) :]
        else:
            run = self.rng.choice(runs)
            start = self.rng.randrange(0, len(run) - 1)
            chosen = run[start : start + self.rng.randint(2, min(4, len(run) - start))]
        lo, hi = chosen[0].lsn_start, chosen[-1].lsn_end
        if self.rng.random() < 0.5:
            split = layer_name.Key(self.rng.randrange(1, KEY_MAX.value))
            l1s = [layer_name.DeltaLayerName(KEY_MIN, split, lo, hi), layer_name.DeltaLayerName(split, KEY_MAX, lo, hi)]
        else:
            l1s = [layer_name.DeltaLayerName(KEY_MIN, KEY_MAX, lo, hi)]
        for name in l1s:
            yield from self._place_layer(t, name)
        assert t.meta is not None
        self._write_metadata(t, t.meta)
        yield f"metadata rewritten (compaction of {len(chosen)} L0s)"
        for name in self.rng.sample(chosen, len(chosen)):  # in any order, the newest may go first
            t.layers.pop(name, None)
            self._remove(t.directory / str(name))
            yield f"removed L0 {name}"

    def _ephemeral(self, t: WriterTimeline) -> Iterator[str]:
        live = [e for e in t.ephemeral if t.directory / e in self.files]
        if live and (len(live) >= MAX_EPHEMERAL or self.rng.random() < 0.5):
            e = self.rng.choice(live)
            path = t.directory / e
            if self.rng.random() < 0.5:
                t.ephemeral.remove(e)
                self._remove(path)
                yield f"removed {e}"
                return
            extra = self._payload()[:2048]
            with open(path, "ab") as f:
                f.write(extra)
            self._track(path, path.read_bytes(), "ephemeral")
            yield f"appended to {e}"
            return
        e = f"{EPHEMERAL_PREFIX}{self.rng.randrange(1 << 32)}"
        self._create(t.directory / e, self._payload()[:4096], "ephemeral")
        t.ephemeral.append(e)
        yield f"created {e}"

    def _scratch(self, t: WriterTimeline) -> Iterator[str]:
        assert t.meta is not None
        image = layer_name.ImageLayerName(KEY_MIN, KEY_MAX, t.meta.disk_consistent_lsn)
        path = t.directory / f"{image}.{self.rng.randbytes(4).hex()}{paths.TEMP_SUFFIX}"
        self._create(path, self._payload()[:4096], "temp")
        for _ in range(self.rng.randint(1, 4)):
            yield f"keeping {path.name[-20:]}"
        self._remove(path)
        yield f"removed {path.name[-20:]}"
