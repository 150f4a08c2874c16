"""constraints.txt (written by hack/lock.sh) pins every dependency pyproject.toml names.

hack/install.sh and the image build install with ``-c constraints.txt``; a constraint only limits
what is installed, so a dependency added to pyproject.toml without a pin would install unpinned,
whatever version the index has that day. These tests fail fast instead: every requirement of
``[project] dependencies``, of each optional extra and of ``[build-system] requires`` has one
``name==version`` line here (names compared in their normalized form), and the pinned version
satisfies the requirement's specifier. The fix for a failure is ``hack/lock.sh``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")


def pins() -> dict[str, Version]:
    """The pins of constraints.txt by normalized name; any other kind of line is an error."""
    pinned: dict[str, Version] = {}
    for number, line in enumerate((REPO / "constraints.txt").read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt:{number}: {line!r} is not name==version (run hack/lock.sh)"
        name = canonicalize_name(match["name"])
        assert name not in pinned, f"constraints.txt:{number}: {name} is pinned twice"
        pinned[name] = Version(match["version"])
    return pinned


def declared() -> list[tuple[str, Requirement]]:
    """Every requirement pyproject.toml names, with the table it comes from."""
    with (REPO / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    found = [("build-system", Requirement(text)) for text in pyproject["build-system"]["requires"]]
    found += [("dependencies", Requirement(text)) for text in pyproject["project"]["dependencies"]]
    for extra, texts in pyproject["project"].get("optional-dependencies", {}).items():
        found += [(f"optional-dependencies.{extra}", Requirement(text)) for text in texts]
    return found


def problems(requirements: list[tuple[str, Requirement]], pinned: dict[str, Version]) -> list[str]:
    """What is wrong with the pins of these requirements: a missing pin, or one outside the specifier."""
    found = []
    for table, requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name not in pinned:
            found.append(f"pyproject.toml {table} names {requirement}; constraints.txt pins no {name}")
        elif not requirement.specifier.contains(pinned[name], prereleases=True):
            found.append(f"constraints.txt pins {name}=={pinned[name]}, outside {requirement} ({table})")
    return found


def test_the_constraints_hold_the_whole_resolved_set() -> None:
    pinned = pins()
    assert len(pinned) > 50, "constraints.txt holds the resolved set, not only the direct dependencies"
    assert {"botocore", "pydantic-core", "setuptools"} <= pinned.keys()


def test_every_dependency_of_pyproject_is_pinned_within_its_specifier() -> None:
    requirements = declared()
    print(f"\n{len(requirements)} requirements in pyproject.toml, {len(pins())} pins in constraints.txt")
    assert problems(requirements, pins()) == [], "run hack/lock.sh"


def test_a_new_dependency_without_a_pin_or_a_pin_outside_the_specifier_is_reported() -> None:
    pinned = {"kopf": Version("1.37.0")}
    requirements = [
        ("dependencies", Requirement("kopf>=1.38")),
        ("optional-dependencies.dev", Requirement("No_Such.Dep")),
    ]
    assert problems(requirements, pinned) == [
        "constraints.txt pins kopf==1.37.0, outside kopf>=1.38 (dependencies)",
        "pyproject.toml optional-dependencies.dev names No_Such.Dep; constraints.txt pins no no-such-dep",
    ]
