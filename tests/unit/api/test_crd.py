"""`api.crd` in process: the committed CRD is what the models generate, and the generated
schema is structural (what the API server requires; tests/e2e/test_crd.py has it served)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml

from pageserver_operator.api import crd, v1alpha1

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "crds" / f"{v1alpha1.PLURAL}.{v1alpha1.GROUP}.yaml"
REGENERATE = "python -m pageserver_operator.api.crd > crds/tenants.pageserver.dev.yaml"


def test_committed_crd_is_generated_from_the_models() -> None:
    assert COMMITTED.read_text() == crd.render(), f"the committed CRD is stale: run `{REGENERATE}`"


def test_committed_pageserver_crd_is_generated_from_the_models() -> None:
    committed = ROOT / "crds" / f"{v1alpha1.PAGESERVER_PLURAL}.{v1alpha1.GROUP}.yaml"
    regenerate = "python -m pageserver_operator.api.crd pageservers > crds/pageservers.pageserver.dev.yaml"
    assert committed.read_text() == crd.render("pageservers"), f"the committed CRD is stale: run `{regenerate}`"


def test_the_chart_ships_the_committed_crds() -> None:
    for path in (ROOT / "crds").glob("*.yaml"):
        shipped = ROOT / "charts" / "pageserver-operator" / "crds" / path.name
        assert shipped.read_text() == path.read_text(), f"{shipped} differs from {path}: copy it"


def test_the_pageserver_is_cluster_scoped_with_the_contract_fields() -> None:
    d = crd.pageserver_crd()
    assert d["spec"]["scope"] == "Cluster"
    v = d["spec"]["versions"][0]
    assert v["subresources"] == {"status": {}}
    props = v["schema"]["openAPIV3Schema"]["properties"]
    assert props["spec"]["properties"]["scheduling"]["enum"] == ["Active", "Draining", "Paused"]
    assert {"state", "tenants", "bytes", "lastHeartbeat"} <= set(props["status"]["properties"])
    assert props["status"]["properties"]["state"]["enum"] == ["Active", "Draining", "Offline"]
    assert not _keys(props) & {"$ref", "$defs", "anyOf", "title", "default", "additionalProperties"}


def test_tenants_wide_shows_the_pageserver_and_generation() -> None:
    columns = crd.crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    wide = {c["name"]: c["jsonPath"] for c in columns if c.get("priority") == 1}
    assert wide["Pageserver"] == ".status.placement.attached"
    assert wide["Generation"] == ".status.placement.generation"


def test_placement_spec_and_migration_fields_are_the_contract_names() -> None:
    props = _schema()["properties"]
    assert set(props["spec"]["properties"]["placement"]["properties"]) == {"pageserver", "secondaries"}
    placement = props["status"]["properties"]["placement"]["properties"]
    assert {"attached", "generation", "secondaries", "migration"} <= set(placement)
    assert {"from", "to", "phase", "startedAt", "progress"} <= set(placement["migration"]["properties"])


def test_generated_crd_round_trips_through_yaml() -> None:
    assert yaml.safe_load(crd.render()) == crd.crd()


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_the_schema_is_structural() -> None:
    """No $ref/$defs, no anyOf with null, no titles, defaults or additionalProperties."""
    assert not _keys(_schema()) & {"$ref", "$defs", "anyOf", "title", "default", "additionalProperties"}


def test_optional_fields_are_nullable_and_the_phase_is_an_enum_of_the_phases() -> None:
    status = _schema()["properties"]["status"]["properties"]
    assert status["phase"]["nullable"] is True
    assert status["phase"]["type"] == "string"
    assert status["phase"]["enum"] == list(typing.get_args(v1alpha1.Phase))
    assert status["timelines"]["items"]["properties"]["remoteConsistentLsn"]["nullable"] is True
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_the_tenant_id_is_required_checked_and_immutable() -> None:
    spec = _schema()["properties"]["spec"]
    assert spec["required"] == ["tenantId"]
    tenant_id = spec["properties"]["tenantId"]
    assert tenant_id["pattern"] == v1alpha1.TENANT_ID_PATTERN
    assert tenant_id["x-kubernetes-validations"] == [crd.TENANT_ID_IMMUTABLE]
