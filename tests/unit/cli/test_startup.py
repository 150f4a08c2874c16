"""The command line's start-up contract (`pageserver_operator.cli`, issue 19 item 3): parsing,
``--help`` and ``--version`` import no layer of the operator and none of its heavy libraries;
the commands import what they use. Checked by the modules loaded in a fresh interpreter (the
time itself is measured by ``python -m bench.startup``, never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pageserver_operator import ENV_PREFIX, cli, settings
from pageserver_operator.engine import manager

HEAVY = ("pydantic", "pydantic_settings", "botocore", "boto3", "prometheus_client", "asyncio", "kopf", "kubernetes")


def _modules_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(__import__('json').dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    return list(json.loads(out.stdout.splitlines()[-1]))


def test_parsing_imports_no_operator_layer_and_no_heavy_library() -> None:
    loaded = _modules_after(
        "from pageserver_operator import cli\n"
        "cli.build_parser().parse_args(['attach', '--generation', '3', '0123456789abcdef0123456789abcdef'])"
    )
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    layers = [m for m in loaded if m.startswith("pageserver_operator.") and not m.startswith(
        ("pageserver_operator.cli", "pageserver_operator.formats"))]
    assert heavy == [], heavy
    assert layers == [], layers


def test_version_exits_before_any_command_is_imported() -> None:
    loaded = _modules_after(
        "from pageserver_operator import cli\n"
        "try:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass"
    )
    assert "pageserver_operator.cli.commands" not in loaded
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []


def test_the_help_text_states_the_engine_default_retry_timeout() -> None:
    assert cli.DEFAULT_RETRY_TIMEOUT == manager.DEFAULT_RETRY_TIMEOUT
    assert settings.ENV_PREFIX == ENV_PREFIX == "PAGESERVER_OPERATOR_"


def test_the_engine_commands_import_neither_kubernetes_nor_pydantic_settings() -> None:
    loaded = _modules_after("from pageserver_operator.cli import commands")
    assert [m for m in loaded if m.split(".")[0] in ("kopf", "kubernetes", "pydantic_settings", "boto3", "botocore")] == []
    assert not [m for m in loaded if m.startswith(("pageserver_operator.k8s", "pageserver_operator.dev"))]
    # each command imports its layer when called: ``status`` needs neither the manager nor the settings
    assert "pageserver_operator.engine.manager" not in loaded
    assert "pageserver_operator.settings" not in loaded


def test_an_attach_with_credentials_in_the_environment_never_imports_botocore(tmp_path: Path) -> None:
    """The obstore path needs no botocore when the environment names the credentials: the attach
    reaches its first request (here refused: nothing listens on the port) without it."""
    env = {
        **os.environ,
        "HOME": str(tmp_path),  # no AWS config file
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    for name in ("AWS_CONFIG_FILE", "AWS_CREDENTIAL_EXPIRATION", "AWS_PROFILE", "http_proxy", "HTTP_PROXY"):
        env.pop(name, None)
    code = (
        "import sys, json\n"
        "from pageserver_operator import cli\n"
        "try:\n"
        f"    cli.main(['attach', '--workdir', {str(tmp_path)!r}, '--remote',\n"
        "              's3://bucket?endpoint=http://127.0.0.1:9&region=us-east-1', '--retry-timeout', '0',\n"
        "              '0123456789abcdef0123456789abcdef'])\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = out.stdout.splitlines()
    assert any(line.startswith("exit ") and line != "exit 0" for line in lines), (out.stdout, out.stderr)
    assert "127.0.0.1:9" in out.stderr  # it did send its first request
    loaded = json.loads(lines[-1])
    assert "obstore" in loaded
    assert [m for m in loaded if m.split(".")[0] in ("botocore", "boto3", "urllib3")] == []


def test_the_collector_paused_for_the_start_up_runs_again_once_the_engine_is_built(tmp_path: Path) -> None:
    """`cli.main` pauses the garbage collector for an engine command's imports; the command turns
    it back on as soon as its manager is built, before any work (and main does on its way out)."""
    import argparse
    import gc

    from pageserver_operator.cli import commands

    args = argparse.Namespace(
        workdir=tmp_path, remote=f"file://{tmp_path / 'remote'}", concurrency=None, generation=None
    )
    (tmp_path / "remote").mkdir()
    gc.disable()
    try:
        m = commands._manager(commands._engine_settings(args), args)
        assert gc.isenabled()
        m.io.close()
    finally:
        gc.enable()
    assert set(cli.ENGINE_COMMANDS) <= set(commands.COMMANDS)
