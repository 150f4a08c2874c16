"""Generations through the CLI (DESIGN §8.2, §8.5; issue 16), on both backends (the real S3
server and file://): ``--generation N`` writes Neon's keys, a second attachment with a higher
generation takes the tenant over, and the first one (no control plane: remote storage tells it)
is refused as ``Stale`` instead of overwriting anything; ``status --json`` shows the generation.
This replaces the best-effort split-brain guard (its scenario: two volumes, one bucket)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import cli, tree
from helpers.backends import Backend
from pageserver_operator import testdata
from pageserver_operator.engine import paths
from pageserver_operator.formats import index_part
from pageserver_operator.formats.generation import Generation

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("PAGESERVER_OPERATOR_")]:
        monkeypatch.delenv(var)


def test_a_second_attachment_takes_over_and_the_first_is_refused_as_stale(tmp_path: Path, backend: Backend) -> None:
    storage = backend.open()
    gen = testdata.make_remote_tenant(storage, testdata.TenantShape(timelines=1, layers=3, seed=21))
    tid, tlid = gen.tenant_id, gen.timelines[0]
    a, b = tmp_path / "a", tmp_path / "b"

    def cmd(*args: str, workdir: Path, generation: int) -> list[str]:
        return [args[0], "--workdir", str(workdir), "--remote", backend.url, "--generation", str(generation), *args[1:], str(tid)]

    res = cli.run(cmd("attach", workdir=a, generation=1))
    assert res.returncode == cli.EXIT_OK, cli.describe(res)
    res = cli.run(cmd("attach", workdir=b, generation=2))
    assert res.returncode == cli.EXIT_OK, cli.describe(res)

    # both pageservers flush the same LSN range, with other bytes: the dangerous case
    a_layer = testdata.flush_local_layer(a, tid, tlid, 7_000, seed=1)
    b_layer = testdata.flush_local_layer(b, tid, tlid, 9_000, seed=2)
    assert a_layer == b_layer
    before = storage.list_objects(paths.remote_timelines_prefix(tid))
    res = cli.run(cmd("sync", workdir=a, generation=1))
    assert res.returncode == cli.EXIT_FAILED, cli.describe(res)
    assert "Stale:" in res.stderr and "generation 1" in res.stderr and "generation 2" in res.stderr, res.stderr
    assert storage.list_objects(paths.remote_timelines_prefix(tid)) == before, "a stale attachment wrote"

    res = cli.run(cmd("sync", workdir=b, generation=2))
    assert res.returncode == cli.EXIT_OK, cli.describe(res)
    key = tree.newest_index_key(storage, tid, tlid)
    assert key == paths.remote_index_key(tid, tlid, Generation(2))
    idx = index_part.IndexPart.parse(storage.get_bytes(key))
    assert idx.layers[b_layer].generation.value == 2
    assert storage.get_bytes(paths.remote_layer_key(tid, tlid, b_layer, Generation(2))) == paths.TenantPaths(
        b, tid
    ).layer(tlid, b_layer).read_bytes()

    res = cli.run(["status", "--workdir", str(b), "--remote", backend.url, "--json", str(tid)])
    assert res.returncode == cli.EXIT_OK, cli.describe(res)
    status = json.loads(res.stdout)
    assert status["placement"]["generation"] == 2
    assert status["timelines"][0]["remoteConsistentLsn"] == str(idx.metadata.disk_consistent_lsn)


def test_an_invalid_generation_is_a_usage_error(tmp_path: Path) -> None:
    for bad in ("-1", "4294967296", "seven"):
        res = cli.run(["attach", "--workdir", str(tmp_path / "w"), "--remote", f"file://{tmp_path}", "--generation", bad, "0" * 32])
        assert res.returncode == cli.EXIT_USAGE, cli.describe(res)
        assert "generation" in res.stderr
    assert not (tmp_path / "w").exists()

