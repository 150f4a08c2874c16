"""`k8s.runner`: the unmanaged-tenant-directories gauge follows the volume and the resources
(issue 22, defect 6: it was computed once, 30 s after start)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pageserver_operator.k8s import handlers, runner

from .conftest import TID, FakeKube, body, registry

OTHER = "fedcba9876543210fedcba9876543210"


def gauge() -> float:
    return float(runner.UNMANAGED.collect()[0].samples[0].value)


def test_the_unmanaged_gauge_follows_the_volume_and_the_resources(tmp_path: Path) -> None:
    async def main() -> None:
        kube = FakeKube()
        reg = registry(tmp_path, kube)
        handlers.REGISTRY = reg
        try:
            for tid in (TID, OTHER):
                (tmp_path / "tenants" / tid).mkdir(parents=True)
            (tmp_path / "tenants" / "lost+found").mkdir()
            reporter = asyncio.create_task(runner._report_unmanaged([], delay=3600))
            await asyncio.sleep(0.01)
            assert gauge() == 2
            b = body("a", TID)
            kube.add(b)
            await reg.ensure(("ns", "a"), b, [], start=False)
            assert gauge() == 1
            (tmp_path / "tenants" / OTHER).rmdir()
            assert gauge() == 0
            reporter.cancel()
        finally:
            handlers.REGISTRY = None

    asyncio.run(main())
