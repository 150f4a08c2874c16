"""No silent skips in CI: a component the tests need and cannot have fails them under
``CI=true`` (with the reason) and skips them elsewhere."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True under CI, where nothing may be skipped for lack of a component."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(component: str, error: object) -> NoReturn:
    """Fail (CI) or skip (elsewhere) because ``component`` could not be provided."""
    reason = f"{component} unavailable: {error}"
    if in_ci():
        pytest.fail(f"{reason} (CI=true: components are required, not skipped)", pytrace=False)
    pytest.skip(reason)
