"""Maintained S3 client libraries as benchmark methods: ``obstore`` and ``awscrt`` (issue 19).

Each method runs `bench.s3get` (the downloading program, described there) as the harness's direct
child, like s5cmd and rclone. The harness writes the key list it reads outside the timing: one
``key<TAB>size`` per line, every layer of the tenant's prefix (what our attach learns from the
index, so neither lists the bucket). ``obstore`` and ``awscrt`` fsync each file and rename it
into place, as our attach does; ``obstore-nofsync`` and ``awscrt-nofsync`` do not (comparable to
s5cmd: the report's "durable" column adds the ``sync`` that follows).

obstore is a dependency of the operator; awscrt is not installed by any extra (``pip install
awscrt`` to run its method): installed, it makes botocore import ``awscrt.auth`` at start-up
(``botocore.compat.HAS_CRT``), 40-70 ms more for every CLI run and a different botocore than
the image's, which would skew the start-up and attach figures of everything else in the bench.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import servers, workloads


class LibraryMethod(workloads.Method):
    """``python -m bench.s3get <library> ...`` on the dataset's layers."""

    library = ""
    fsync = True

    def argv(self, server: servers.Server, ds: workloads.Dataset, dest: Path, work: Path) -> list[str]:
        port = server.endpoint.rsplit(":", 1)[1]
        keys = work / f"keys-{server.name}-{port}-{ds.shape.name}.tsv"
        if not keys.exists():
            keys.write_text("".join(f"{k}\t{s}\n" for k, s in sorted(ds.layers.items())))
        argv = [
            sys.executable,
            "-m",
            "bench.s3get",
            self.library,
            "--endpoint",
            server.endpoint,
            "--bucket",
            servers.BUCKET,
            "--keys",
            str(keys),
            "--dest",
            str(dest),
            "--concurrency",
            str(self.concurrency),
        ]
        if not self.fsync:
            argv.append("--no-fsync")
        return argv


class Obstore(LibraryMethod):
    library = "obstore"


class Awscrt(LibraryMethod):
    library = "awscrt"


def method(name: str) -> workloads.Method | None:
    """The library method called ``name``: ``obstore`` or ``awscrt``, optionally ``-nofsync``,
    optionally ``:N`` requests in flight (default 16, the peers' setting); None for another name."""
    base, _, n = name.partition(":")
    library, _, variant = base.partition("-")
    cls = {"obstore": Obstore, "awscrt": Awscrt}.get(library)
    if cls is None or variant not in ("", "nofsync"):
        return None
    m = cls(name, concurrency=int(n) if n else 16, notes=f"{library}, {n or 16} in flight")
    m.fsync = variant != "nofsync"
    return m
