"""A running local environment (control plane + object store) with one ``stop``.

Shared by ``python -m pageserver_operator.devenv up`` and ``pageserver-operator dev``.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from pageserver_operator.devenv import components, controlplane, objectstore


def default_state_dir() -> Path:
    """Where ``up`` keeps its state when no ``--state-dir`` is given (outside the repo)."""
    return components.cache_root() / "dev"


@dataclasses.dataclass
class Environment:
    """A running control plane and (optionally) object store, with one ``stop``."""

    state_dir: Path
    control_plane: controlplane.ControlPlane
    object_store: objectstore.ObjectStore | None

    def env(self) -> dict[str, str]:
        """Variables that point kubectl, the operator and AWS clients at this environment."""
        values = {"KUBECONFIG": str(self.control_plane.kubeconfig)}
        if self.object_store is not None:
            values.update(self.object_store.env())
        return values

    def env_lines(self) -> list[str]:
        """``NAME=value`` lines, shell-quoted, suitable for ``source`` or ``set -a``."""
        return [f"{name}={shlex.quote(value)}" for name, value in self.env().items()]

    def write_env_file(self) -> Path:
        """Write :meth:`env_lines` to ``state_dir/env``."""
        path = self.state_dir / "env"
        path.write_text("\n".join(self.env_lines()) + "\n")
        return path

    def stop(self) -> None:
        """Stop the object store and the control plane; idempotent."""
        try:
            if self.object_store is not None:
                self.object_store.stop()
        finally:
            self.control_plane.stop()


def start_environment(state_dir: Path, with_object_store: bool = True) -> Environment:
    """Start the control plane (and the object store) under ``state_dir``; write ``env``.

    On failure anything already started is stopped before the error propagates.
    """
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    plane = controlplane.ControlPlane.start(state_dir / "controlplane")
    store: objectstore.ObjectStore | None = None
    try:
        if with_object_store:
            store = objectstore.ObjectStore.start(state_dir / "objectstore")
    except BaseException:
        plane.stop()
        raise
    environment = Environment(state_dir, plane, store)
    environment.write_env_file()
    return environment
