"""`engine.crashsafe`: the durable filesystem primitives every crash-consistency argument rests on.

- `durable_write` replaces a file atomically, leaves no temp file, and recovers from a stale
  ``___temp`` left by a crash;
- `create_marker` / `remove_marker` are idempotent;
- `durable_mkdir` creates missing parents;
- `set_aside` picks the first free ``<name>.<N>.old`` and never overwrites;
- `remove_tree` removes a tree by renaming it aside first, finishes an interrupted removal (only
  the aside directory left), and removes a leftover given as both path and aside (how the
  volume scan and the timeline scan call it for ``___temp`` / ``___uninit`` leftovers).
"""

from __future__ import annotations

from pathlib import Path

from pageserver_operator.engine import crashsafe


def test_durable_write_creates_then_replaces_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "metadata"
    crashsafe.durable_write(target, b"one")
    assert target.read_bytes() == b"one"
    crashsafe.durable_write(target, b"two, longer")
    assert target.read_bytes() == b"two, longer"
    crashsafe.durable_write(target, b"3")
    assert target.read_bytes() == b"3"  # truncated, not overwritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata"]


def test_durable_write_over_a_stale_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "metadata"
    (tmp_path / "metadata___temp").write_bytes(b"garbage from a crash, longer than the new data")
    crashsafe.durable_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata"]


def test_durable_write_of_a_large_buffer(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40_000
    crashsafe.durable_write(tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == data


def test_markers_are_idempotent(tmp_path: Path) -> None:
    marker = tmp_path / "attaching"
    crashsafe.create_marker(marker)
    crashsafe.create_marker(marker)
    assert marker.read_bytes() == b""
    crashsafe.remove_marker(marker)
    assert not marker.exists()
    crashsafe.remove_marker(marker)  # missing is fine


def test_create_marker_keeps_it_empty_and_existing_content(tmp_path: Path) -> None:
    marker = tmp_path / "attaching"
    marker.write_bytes(b"")
    crashsafe.create_marker(marker)
    assert marker.exists() and marker.stat().st_size == 0


def test_durable_mkdir_creates_parents_and_is_idempotent(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    crashsafe.durable_mkdir(deep)
    assert deep.is_dir()
    crashsafe.durable_mkdir(deep)
    assert deep.is_dir()


def test_set_aside_numbers_from_zero_and_never_overwrites(tmp_path: Path) -> None:
    layer = tmp_path / "LAYER"
    layer.write_bytes(b"v0")
    assert crashsafe.set_aside(layer) == tmp_path / "LAYER.0.old"
    layer.write_bytes(b"v1")
    assert crashsafe.set_aside(layer) == tmp_path / "LAYER.1.old"
    # a gap is filled first
    (tmp_path / "LAYER.0.old").unlink()
    layer.write_bytes(b"v2")
    assert crashsafe.set_aside(layer) == tmp_path / "LAYER.0.old"
    assert (tmp_path / "LAYER.0.old").read_bytes() == b"v2"
    assert (tmp_path / "LAYER.1.old").read_bytes() == b"v1"
    assert not layer.exists()


def _tree(root: Path) -> None:
    (root / "timelines" / "x").mkdir(parents=True)
    (root / "timelines" / "x" / "layer").write_bytes(b"data")
    (root / "attaching").write_bytes(b"")


def test_remove_tree_renames_aside_then_deletes(tmp_path: Path) -> None:
    tenant = tmp_path / "tenants" / "t"
    aside = tmp_path / "tenants" / "t.___temp"
    _tree(tenant)
    crashsafe.remove_tree(tenant, aside)
    assert not tenant.exists() and not aside.exists()
    assert list((tmp_path / "tenants").iterdir()) == []


def test_remove_tree_finishes_an_interrupted_removal(tmp_path: Path) -> None:
    tenant = tmp_path / "tenants" / "t"
    aside = tmp_path / "tenants" / "t.___temp"
    _tree(aside)  # crash after the rename, before the delete finished
    crashsafe.remove_tree(tenant, aside)
    assert not aside.exists()
    crashsafe.remove_tree(tenant, aside)  # nothing left: a no-op


def test_remove_tree_replaces_a_stale_aside_directory(tmp_path: Path) -> None:
    tenant = tmp_path / "tenants" / "t"
    aside = tmp_path / "tenants" / "t.___temp"
    _tree(tenant)
    _tree(aside)
    crashsafe.remove_tree(tenant, aside)
    assert list((tmp_path / "tenants").iterdir()) == []


def test_remove_tree_of_a_leftover_given_as_its_own_aside(tmp_path: Path) -> None:
    """`TenantManager.scan_volume` and the timelines scan call ``remove_tree(p, p)`` for
    ``___temp`` / ``___uninit`` leftovers: that must remove ``p`` without an error."""
    leftover = tmp_path / "tenants" / "t.___temp"
    _tree(leftover)
    crashsafe.remove_tree(leftover, leftover)
    assert not leftover.exists()
