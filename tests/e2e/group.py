"""Three pageserver managers of one placement group, as processes (tests/e2e/test_placement.py,
tests/reliability/test_migration_kills.py): each with its own volume, all with the test's lease
namespace, ``--failover-seconds FAILOVER`` and ``--drain-concurrency DRAIN_CONCURRENCY``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from e2e.conftest import OperatorFactory, OperatorProcess, Remote
from pageserver_operator.devenv import controlplane

FAILOVER = 3.0
DRAIN_CONCURRENCY = 2
MANAGERS = ("ps-0", "ps-1", "ps-2")


class Group:
    """Three pageserver managers of one placement group."""

    def __init__(
        self, tmp_path: Path, control_plane: controlplane.ControlPlane, namespace: str, remote: Remote,
        remote_url: str | None = None, extra_args: Sequence[str] = (),
    ) -> None:
        self.factories = {n: OperatorFactory(tmp_path / n, control_plane.kubeconfig, namespace, remote) for n in MANAGERS}
        self.procs: dict[str, OperatorProcess] = {}
        self.remote_url = remote_url
        self.extra_args = list(extra_args)

    def start(self, name: str) -> OperatorProcess:
        p = self.factories[name].start(
            sync_period=0.5, remote_url=self.remote_url,
            extra_args=["--pageserver", name, "--failover-seconds", str(FAILOVER),
                        "--drain-concurrency", str(DRAIN_CONCURRENCY), *self.extra_args],
        )  # fmt: skip
        self.procs[name] = p
        return p

    def workdir(self, name: str) -> Path:
        return self.factories[name].workdir

    def close(self, failed: bool) -> None:
        for f in self.factories.values():
            f.close(failed)


def running_group(request: pytest.FixtureRequest, group: Group) -> Iterator[Group]:
    """Start every manager; at teardown kill them (their logs printed if the test failed)."""
    try:
        for n in MANAGERS:
            group.start(n)
        yield group
    finally:
        rep = getattr(request.node, "rep_call", None)
        group.close(bool(rep is not None and rep.failed))
