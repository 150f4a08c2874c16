"""Bad remote (or local) data makes the tenant Broken with a precise reason and message, against
both backends, and nothing is written outside ``<workdir>/tenants/<tid>``.

For every case the whole test directory (workdir and, for file://, the remote root) is snapshot
before and after (content hashes), and for S3 the whole bucket; everything outside the tenant
directory must be unchanged. The ``attaching`` marker stays, so a rerun retries (and, checked
for some cases, fails the same way). Cases:

- malformed ``index_part.json``: truncated JSON, a required field missing, a corrupt
  ``metadata_bytes`` checksum, a timeline that is its own ancestor;
- a bad layer name in the index: path traversal in ``timeline_layers`` is refused before any
  path is built; a traversing ``layer_metadata`` key that ``timeline_layers`` does not list and a
  name listed in lowercase hex are read as the reference does (ignored / the canonical layer),
  and never become a path;
- a missing ancestor (the root timeline's objects gone, or only its index);
- the index names a layer object that does not exist, or one of another size;
- ``load`` with a corrupt local ``metadata`` file (checksum mismatch).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from helpers import cli, tree
from helpers.backends import Backend
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import ids, index_part, layer_name

pytestmark = pytest.mark.integration

SHAPE = testdata.TenantShape(timelines=3, layers=3, layer_size=20_000, sizes=[4_000, 9_000, 12_345], seed=31)


def make(b: Backend) -> testdata.GeneratedTenant:
    return testdata.make_remote_tenant(b.open(), SHAPE)


def index_key(gen: testdata.GeneratedTenant, tl: ids.TimelineId) -> str:
    return paths.remote_index_key(gen.tenant_id, tl)


def edit_index(b: Backend, gen: testdata.GeneratedTenant, tl: ids.TimelineId, fn: Callable[[dict[str, object]], None]) -> None:
    storage = b.open()
    doc = json.loads(storage.get_bytes(index_key(gen, tl)))
    fn(doc)
    storage.put_bytes(index_key(gen, tl), json.dumps(doc).encode())


def assert_broken(
    b: Backend, gen: testdata.GeneratedTenant, command: str, reason: str, *parts: str, rerun: bool = False
) -> str:
    """Run ``command`` (twice with ``rerun``): it ends Broken with ``reason`` and every part in the
    message, and nothing outside the tenant directory changes. Returns the message line."""
    tid = gen.tenant_id
    tp = paths.TenantPaths(b.workdir, tid)
    tp.tenants_root.mkdir(exist_ok=True)
    before = tree.snapshot(b.tmp, exclude=tp.tenant_dir)
    store_before = b.store_snapshot()
    lines: list[str] = []
    for attempt in (1, 2) if rerun else (1,):
        r = cli.run([command, *b.args(), str(tid)])
        assert r.returncode == cli.EXIT_FAILED, f"attempt {attempt}: {cli.describe(r)}"
        assert "Traceback" not in r.stderr, cli.describe(r)
        last = r.stderr.strip().splitlines()[-1]
        prefix = f"pageserver-operator {command}: {reason}: "
        assert last.startswith(prefix), f"attempt {attempt}: {cli.describe(r)}"
        for part in parts:
            assert part in last, f"{part!r} not in {last!r}"
        if command == "load":  # load reports every tenant it tried; attach only the error
            assert f"tenant {tid}: Broken" in r.stdout, cli.describe(r)
        changes = tree.diff_snapshots(before, tree.snapshot(b.tmp, exclude=tp.tenant_dir))
        assert changes == [], f"attempt {attempt} wrote outside {tp.tenant_dir}: {changes}"
        assert b.store_snapshot() == store_before, f"attempt {attempt} wrote to remote storage"
        if command == "attach":
            assert tp.marker.exists(), "the marker must stay so that a restart retries the attach"
        lines.append(last)
    assert len(set(lines)) == 1, f"the rerun failed differently: {lines}"
    return lines[0]


# ---- malformed index ----------------------------------------------------------------------------


def test_truncated_index_json(backend: Backend) -> None:
    gen = make(backend)
    tl = gen.timelines[1]
    storage = backend.open()
    raw = storage.get_bytes(index_key(gen, tl))
    storage.put_bytes(index_key(gen, tl), raw[: len(raw) // 2])
    assert_broken(
        backend, gen, "attach", "InvalidIndexPart",
        f"timeline {gen.tenant_id}/{tl}: {index_key(gen, tl)}: index_part.json: not valid JSON",
        rerun=True,
    )


def test_index_without_a_required_field(backend: Backend) -> None:
    gen = make(backend)
    tl = gen.timelines[0]
    edit_index(backend, gen, tl, lambda d: d.pop("metadata_bytes"))
    assert_broken(
        backend, gen, "attach", "InvalidIndexPart",
        f"timeline {gen.tenant_id}/{tl}: {index_key(gen, tl)}: index_part.json: required field 'metadata_bytes' is missing",
    )


def test_index_with_corrupt_metadata_bytes(backend: Backend) -> None:
    gen = make(backend)
    tl = gen.timelines[2]

    def flip(d: dict[str, object]) -> None:
        mb = d["metadata_bytes"]
        assert isinstance(mb, list)
        mb[8] ^= 0xFF

    edit_index(backend, gen, tl, flip)
    assert_broken(
        backend, gen, "attach", "InvalidIndexPart",
        f"timeline {gen.tenant_id}/{tl}: {index_key(gen, tl)}", "metadata checksum mismatch",
    )


def test_timeline_that_is_its_own_ancestor(backend: Backend) -> None:
    gen = make(backend)
    tl = gen.timelines[1]
    storage = backend.open()
    idx = index_part.IndexPart.parse(storage.get_bytes(index_key(gen, tl)))
    m = idx.metadata
    selfish = type(m)(**{**{f: getattr(m, f) for f in m.__dataclass_fields__}, "ancestor_timeline": tl})
    storage.put_bytes(
        index_key(gen, tl),
        index_part.IndexPart.build({n: x.file_size for n, x in idx.layers.items()}, selfish).to_json_bytes(),
    )
    assert_broken(
        backend, gen, "attach", "AncestorCycle", f"timeline {gen.tenant_id}/{tl}", "the timeline is its own ancestor"
    )


# ---- bad layer names ----------------------------------------------------------------------------

TRAVERSAL = "../../../../escape"


def test_bad_layer_name_in_the_index_is_refused_before_any_path_is_built(backend: Backend) -> None:
    gen = make(backend)
    tl = gen.timelines[0]

    def poison(d: dict[str, object]) -> None:
        layers = d["timeline_layers"]
        assert isinstance(layers, list)
        layers.append(TRAVERSAL)

    edit_index(backend, gen, tl, poison)
    line = assert_broken(
        backend, gen, "attach", "InvalidIndexPart",
        f"timeline {gen.tenant_id}/{tl}: {index_key(gen, tl)}: index_part.json: timeline_layers[",
        f"invalid layer file name {TRAVERSAL!r}",
        rerun=True,
    )
    assert "escape" not in json.dumps(tree.snapshot(backend.tmp)), "a file was created from the bad name"
    # the tenant directory holds nothing named after it either
    tdir = paths.TenantPaths(backend.workdir, gen.tenant_id).tenant_dir
    for p in tdir.rglob("*"):
        if p.is_file() and p.name not in ("attaching", "metadata"):
            layer_name.parse_layer_name(p.name.removesuffix(".temp_download"))
    assert line


@pytest.mark.parametrize("where", ["layer_metadata", "lowercase"])
def test_index_entries_the_reference_reads_are_read_and_never_become_paths(backend: Backend, where: str) -> None:
    """Issue 14, defects 12 and 14: a `layer_metadata` key that `timeline_layers` does not list
    is ignored (the reference does); a name listed in lowercase hex is the canonical layer (as
    Neon's reader): attach completes, and every file is named canonically."""
    gen = make(backend)
    tl = gen.timelines[0]
    bad = TRAVERSAL

    def poison(d: dict[str, object]) -> None:
        nonlocal bad
        layers = d["timeline_layers"]
        meta = d["layer_metadata"]
        assert isinstance(layers, list) and isinstance(meta, dict)
        if where == "layer_metadata":
            meta[bad] = {"file_size": 1}
        else:
            good = next(n for n in layers if any(c in "ABCDEF" for c in str(n)))
            bad = str(good).lower()
            layers[layers.index(good)] = bad
            meta[bad] = meta.pop(good)

    edit_index(backend, gen, tl, poison)
    tp = paths.TenantPaths(backend.workdir, gen.tenant_id)
    tp.tenants_root.mkdir(exist_ok=True)
    before = tree.snapshot(backend.tmp, exclude=tp.tenant_dir)
    r = cli.run(["attach", *backend.args(), str(gen.tenant_id)])
    assert r.returncode == 0, cli.describe(r)
    assert tree.diff_snapshots(before, tree.snapshot(backend.tmp, exclude=tp.tenant_dir)) == []
    assert "escape" not in json.dumps(tree.snapshot(backend.tmp)), "a file was created from the bad name"
    for p in tp.tenant_dir.rglob("*"):
        if p.is_file() and p.name not in ("metadata", "config"):
            layer_name.parse_layer_name(p.name)  # canonical, strict
    tree.assert_matches_remote(backend.workdir, tree.RemoteTenant.capture(backend.open(), gen.tenant_id))


# ---- ancestry and layer objects -----------------------------------------------------------------


@pytest.mark.parametrize("gone", ["all objects", "index only"])
def test_missing_ancestor(backend: Backend, gone: str) -> None:
    gen = make(backend)
    root, c1, c2 = gen.timelines
    storage = backend.open()
    if gone == "all objects":
        for key in storage.list_objects(paths.remote_timeline_prefix(gen.tenant_id, root)):
            storage.delete(key)
    else:
        storage.delete(index_key(gen, root))
    children = sorted([f"{c1} (ancestor {root})", f"{c2} (ancestor {root})"])
    assert_broken(
        backend, gen, "attach", "MissingAncestor",
        f"tenant {gen.tenant_id}: some timelines are missing their ancestors: {', '.join(children)}",
        rerun=gone == "all objects",
    )


def test_index_names_a_layer_object_that_does_not_exist(backend: Backend) -> None:
    gen = make(backend)
    tl = gen.timelines[2]
    storage = backend.open()
    idx = index_part.IndexPart.parse(storage.get_bytes(index_key(gen, tl)))
    name = sorted(idx.layers, key=str)[1]
    key = paths.remote_layer_key(gen.tenant_id, tl, name)
    storage.delete(key)
    assert_broken(
        backend, gen, "attach", "RemoteLayerMissing",
        f"timeline {gen.tenant_id}/{tl}: index_part.json names layer {name} but {key} does not exist",
    )


def test_layer_object_of_another_size_than_the_index_says(backend: Backend) -> None:
    gen = make(backend)
    tl = gen.timelines[0]
    storage = backend.open()
    idx = index_part.IndexPart.parse(storage.get_bytes(index_key(gen, tl)))
    name = sorted(idx.layers, key=str)[0]
    key = paths.remote_layer_key(gen.tenant_id, tl, name)
    storage.put_bytes(key, storage.get_bytes(key) + b"extra")
    assert_broken(
        backend, gen, "attach", "LayerDownloadFailed", f"timeline {gen.tenant_id}/{tl}: layer {name}", "size mismatch"
    )
    # the short-lived download of the wrong object never became the layer file
    assert not paths.TenantPaths(backend.workdir, gen.tenant_id).layer(tl, name).exists()


# ---- corrupt local data -------------------------------------------------------------------------


def test_load_with_a_corrupt_local_metadata_file(backend: Backend) -> None:
    gen = make(backend)
    r = cli.run(["attach", *backend.args(), str(gen.tenant_id)])
    assert r.returncode == cli.EXIT_OK, cli.describe(r)
    tl = gen.timelines[1]
    path = paths.TenantPaths(backend.workdir, gen.tenant_id).metadata(tl)
    data = bytearray(path.read_bytes())
    data[8] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_broken(
        backend, gen, "load", "LocalMetadataInvalid",
        f"timeline {gen.tenant_id}/{tl}: local file {path}", "metadata checksum mismatch",
    )
    assert path.read_bytes() == bytes(data), "load must not overwrite the corrupt file (evidence)"
    s = cli.run(["status", "--workdir", str(backend.workdir), str(gen.tenant_id), "--json"])
    assert s.returncode == cli.EXIT_FAILED, cli.describe(s)
    st = json.loads(s.stdout)
    assert st["phase"] == "Broken" and st["reason"] == "LocalMetadataInvalid"
    assert "metadata checksum mismatch" in st["message"]
