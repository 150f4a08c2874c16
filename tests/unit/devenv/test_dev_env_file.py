"""The dev environment's papercuts, without starting it:

- the env file's PATH line puts this virtualenv's scripts first, so that the banner's
  ``pageserver-operator status ...`` works in a shell that only sourced the file;
- a restart reuses the previous run's ports when all are free (the env file sourced earlier
  stays valid), and takes new ones when one is taken or the record is unusable.
"""

from __future__ import annotations

import socket
import subprocess
import sysconfig
from pathlib import Path

from pageserver_operator import dev
from pageserver_operator.devenv import processes


def test_the_env_file_path_line_finds_the_cli_in_a_bare_shell(tmp_path: Path) -> None:
    scripts = sysconfig.get_path("scripts")
    assert (Path(scripts) / "pageserver-operator").is_file(), "the test runs from the project's virtualenv"
    env_file = tmp_path / "env"
    env_file.write_text(f"PAGESERVER_OPERATOR_WORKDIR=/x\n{dev.path_line([scripts, '/usr/bin', scripts])}\n")
    found = subprocess.run(
        ["bash", "-c", f"set -a; . {env_file}; set +a; command -v pageserver-operator; echo \"$PATH\""],
        env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert found[0] == f"{scripts}/pageserver-operator"
    assert found[1] == f"{scripts}:/usr/bin:/usr/bin:/bin"  # ahead of, not instead of, the shell's PATH


def test_ports_are_reused_when_free_and_replaced_when_taken(tmp_path: Path) -> None:
    record = tmp_path / "ports.json"
    fresh_calls: list[int] = []

    def fresh() -> list[int]:
        fresh_calls.append(1)
        return processes.free_ports(3)

    first, reused = processes.reuse_ports(record, 3, fresh)
    assert not reused and len(fresh_calls) == 1
    processes.record_ports(record, first)
    again, reused = processes.reuse_ports(record, 3, fresh)
    assert reused and again == first and len(fresh_calls) == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first[1]))
        taken.listen()
        _, reused = processes.reuse_ports(record, 3, fresh)
    assert not reused and len(fresh_calls) == 2
    record.write_text("not json")
    assert processes.reuse_ports(record, 3, fresh)[1] is False
    processes.record_ports(record, first[:2])  # a record of another shape
    assert processes.reuse_ports(record, 3, fresh)[1] is False
