"""The layering (cli -> dev -> k8s -> settings | logs -> api -> testdata -> engine -> remote ->
formats -> backoff, no Kubernetes below the operator layer, devenv for tools only, the layers inside remote/)
is written in .importlinter; these tests enforce it, and that no module is left outside it."""

import configparser
import pkgutil
import subprocess
import sys
from pathlib import Path

import pageserver_operator
from pageserver_operator import remote
from pageserver_operator.remote import s3

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _named_in_contracts() -> set[str]:
    """Every module whose own imports a contract constrains (a layer or a forbidden contract's
    source; being someone else's forbidden module does not count), containers spelled out."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    named: set[str] = set()
    for section in config.sections():
        if not section.startswith("importlinter:contract:"):
            continue
        contract = config[section]
        containers = contract.get("containers", "").split() or [""]
        for key in ("layers", "source_modules"):
            for entry in contract.get(key, "").replace("|", " ").replace(":", " ").split():
                for container in containers:
                    named.add(f"{container}.{entry}" if container else entry)
    return named


def _children(package: object) -> list[str]:
    prefix = package.__name__ + "."  # type: ignore[attr-defined]
    return [prefix + m.name for m in pkgutil.iter_modules(package.__path__) if m.name != "__main__"]  # type: ignore[attr-defined]


def test_every_module_is_covered_by_a_contract() -> None:
    """A new top-level module (or a new module of remote/ or remote/s3/) must be placed in a
    contract; before issue 15, settings, logs and devenv were in none."""
    named = _named_in_contracts()
    missing = [m for p in (pageserver_operator, remote, s3) for m in _children(p) if m not in named]
    assert not missing, f"modules outside every import contract in .importlinter: {missing}"
