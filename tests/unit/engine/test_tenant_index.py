"""An index whose ``disk_consistent_lsn`` field differs from its ``metadata_bytes`` (issue 14,
defect 14, the LSN half): the field is a copy for humans that the reference never reads
(reference §2.3); the metadata is authoritative. Such an index is attached like the reference
attaches it (Active; the metadata's LSN is the timeline's and its ``remoteConsistentLsn``), and
the next index we upload carries the metadata's value. Decided and documented in
docs/reliability.md ("The writer protocol"); `formats.index_part` keeps the field as read."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.engine_env import EngineEnv, Writer, make_tenant, run
from pageserver_operator.engine import paths, remote_io
from pageserver_operator.remote.local_fs import LocalFsStorage


def test_an_index_whose_lsn_field_disagrees_with_its_metadata_is_read_by_the_metadata(tmp_path: Path) -> None:
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    storage = LocalFsStorage(tmp_path / "remote")
    env = EngineEnv(workdir, storage, remote_io.RemoteIO(storage, workers=2))
    try:
        gen = make_tenant(storage, seed=9)
        tid, root = gen.tenant_id, gen.timelines[0]
        key = paths.remote_index_key(tid, root)
        doc = json.loads(storage.get_bytes(key))
        doc["disk_consistent_lsn"] = "0/FFFFFFF"  # ahead of the metadata's: must not be believed
        storage.put_bytes(key, json.dumps(doc).encode())
        meta_dcl = env.remote_index(tid, root).metadata.disk_consistent_lsn

        t = env.tenant(tid)
        run(t.attach)
        assert t.state is not None and t.state.value == "Active", (t.reason, t.message)
        tl = t.timelines[root]
        assert tl.metadata.disk_consistent_lsn == meta_dcl
        assert tl.queue.remote_consistent_lsn == meta_dcl

        w = Writer(workdir, tid)
        w.flush(root)
        run(lambda: t.sync(timeout=20))
        after = json.loads(storage.get_bytes(key))
        assert after["disk_consistent_lsn"] == str(w.dcl(root)) == str(env.remote_index(tid, root).metadata.disk_consistent_lsn)
    finally:
        env.close()
