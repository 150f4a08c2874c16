"""Where everything of a tenant lives, locally and remotely.

Every path the engine writes is built here from *validated* values (`TenantId`, `TimelineId`,
`LayerName`), never from raw strings, so nothing can be written outside
``<workdir>/tenants/``: a name from a remote index that does not parse as a layer name never
reaches this module. `ensure_inside` is the last line of defence for anything computed.

Local layout (docs/architecture.md, "engine/", Layouts)::

    <workdir>/tenants/<tid>/{config, attaching, timelines/<tlid>/{metadata, <layers>}}

plus, only while remote deletions wait for the validation of the generation,
``<workdir>/tenants/<tid>/deletion_queue.json`` (engine/deletion_queue.py).

Remote layout (without a leading slash)::

    tenants/<tid>/timelines/<tlid>/{index_part.json[-<gen>], <layer>[-<gen>]}

Every object name carries the generation it was written in (``-{gen:08x}``, Neon's format;
formats/generation.py); objects written without a generation (the seed's format, generation
none) have no suffix. A layer keeps the key of the generation that uploaded it: a later index
refers to it under that key (nothing is copied).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pageserver_operator.formats import generation, ids, layer_name
from pageserver_operator.formats.generation import Generation

TENANTS_DIR = "tenants"
TIMELINES_DIR = "timelines"
METADATA_FILE = "metadata"
CONFIG_FILE = "config"
ATTACHING_MARKER = "attaching"
INDEX_PART_FILE = "index_part.json"
TEMP_DOWNLOAD_SUFFIX = ".temp_download"
TEMP_SUFFIX = "___temp"
UNINIT_SUFFIX = "___uninit"
OLD_SUFFIX = ".old"


class PathEscapeError(RuntimeError):
    """A computed path would leave the tenants directory: a bug, never user error."""


def ensure_inside(path: Path, root: Path) -> Path:
    """Return ``path`` if it is ``root`` or below it (lexically, without following links)."""
    rel = path.relative_to(root) if path.is_relative_to(root) else None
    if rel is None or ".." in rel.parts:
        raise PathEscapeError(f"refusing to touch {path}: outside {root}")
    return path


@dataclass(frozen=True)
class TenantPaths:
    """Local paths of one tenant on the volume."""

    workdir: Path
    tenant_id: ids.TenantId

    @property
    def tenants_root(self) -> Path:
        return self.workdir / TENANTS_DIR

    @property
    def tenant_dir(self) -> Path:
        return self.tenants_root / str(self.tenant_id)

    @property
    def deleting_dir(self) -> Path:
        """Where a detached tenant is renamed before removal (a crash leaves it to be cleaned)."""
        return self.tenants_root / f"{self.tenant_id}.{TEMP_SUFFIX}"

    @property
    def marker(self) -> Path:
        return self.tenant_dir / ATTACHING_MARKER

    @property
    def config(self) -> Path:
        return self.tenant_dir / CONFIG_FILE

    @property
    def timelines_dir(self) -> Path:
        return self.tenant_dir / TIMELINES_DIR

    def timeline_dir(self, timeline_id: ids.TimelineId) -> Path:
        return self.timelines_dir / str(timeline_id)

    def metadata(self, timeline_id: ids.TimelineId) -> Path:
        return self.timeline_dir(timeline_id) / METADATA_FILE

    def layer(self, timeline_id: ids.TimelineId, name: layer_name.LayerName) -> Path:
        return self.timeline_dir(timeline_id) / str(name)


def remote_timelines_prefix(tenant_id: ids.TenantId) -> str:
    return f"{TENANTS_DIR}/{tenant_id}/{TIMELINES_DIR}/"


def remote_timeline_prefix(tenant_id: ids.TenantId, timeline_id: ids.TimelineId) -> str:
    return f"{remote_timelines_prefix(tenant_id)}{timeline_id}/"


_NONE = Generation.none()


def remote_index_key(
    tenant_id: ids.TenantId, timeline_id: ids.TimelineId, gen: Generation = _NONE
) -> str:
    """The index object of generation ``gen`` (none: the seed's unsuffixed ``index_part.json``)."""
    return remote_timeline_prefix(tenant_id, timeline_id) + generation.index_file_name(gen)


def remote_index_prefix(tenant_id: ids.TenantId, timeline_id: ids.TimelineId) -> str:
    """The listing prefix of every generation's index object of a timeline."""
    return remote_timeline_prefix(tenant_id, timeline_id) + INDEX_PART_FILE


def remote_layer_key(
    tenant_id: ids.TenantId, timeline_id: ids.TimelineId, name: layer_name.LayerName, gen: Generation = _NONE
) -> str:
    """The object of layer ``name`` as uploaded in generation ``gen`` (the layer's own)."""
    return remote_timeline_prefix(tenant_id, timeline_id) + generation.layer_object_name(name, gen)
