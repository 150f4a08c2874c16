"""``python -m bench.startup`` runs and reports every case (its figures are not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_startup_bench_reports_every_case_and_the_largest_imports(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_HEAVY_LOCK": str(tmp_path / "lock")}
    out = subprocess.run([sys.executable, "-m", "bench.startup", "--runs", "1"], capture_output=True, text=True,
                         env=env, timeout=120, check=True).stdout
    print(out)
    for case in ("python -c pass", "--version", "status (no remote)", "attach: exec -> first S3 request"):
        assert case in out, case
    imports = out.split("largest imports of an attach")[1].splitlines()[1:]
    assert imports and all(line.strip().split()[1] == "ms" for line in imports), imports
