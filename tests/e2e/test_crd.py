"""The real API server accepts the committed CRD (``crds/tenants.pageserver.dev.yaml``) as a
structural schema, serves it with its names, status subresource, printer columns and CEL rule,
and publishes its OpenAPI (``kubectl explain``). That the committed file is what the models
generate is checked in process by tests/unit/api/test_crd.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e import helpers
from e2e.conftest import CRDS, wait_established
from pageserver_operator.api import crd, v1alpha1

pytestmark = pytest.mark.e2e

COMMITTED = CRDS / f"{v1alpha1.PLURAL}.{v1alpha1.GROUP}.yaml"


def test_api_server_accepts_and_serves_the_crd(kube: helpers.Kubectl, crd_installed: None) -> None:
    kube.run("apply", "-f", str(COMMITTED))
    served: dict[str, Any] = wait_established(kube)

    conditions = {c["type"]: c["status"] for c in served["status"]["conditions"]}
    assert conditions.get("NamesAccepted") == "True"
    assert "NonStructuralSchema" not in conditions, served["status"]["conditions"]
    accepted = served["status"]["acceptedNames"]
    assert accepted["kind"] == v1alpha1.KIND and accepted["shortNames"] == v1alpha1.SHORT_NAMES

    (version,) = served["spec"]["versions"]
    generated = crd.crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert version["schema"] == generated["schema"], "the API server changed the schema it was given"
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        c["name"] for c in generated["additionalPrinterColumns"]
    ]
    tenant_id = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["tenantId"]
    assert tenant_id["pattern"] == v1alpha1.TENANT_ID_PATTERN
    assert tenant_id["x-kubernetes-validations"] == [crd.TENANT_ID_IMMUTABLE]


def test_openapi_is_published_for_kubectl_explain(kube: helpers.Kubectl, crd_installed: None) -> None:
    def explained() -> str | None:
        result = kube.run("explain", "tenants.status.timelines", check=False)
        return result.stdout if result.returncode == 0 else None

    text = helpers.wait_for(explained, 30, "kubectl explain to know the Tenant status")
    for field in ("timelineId", "diskConsistentLsn", "remoteConsistentLsn", "awaitsDownload"):
        assert field in text
    rows = {line.split()[0]: line.split() for line in kube.run("api-resources", f"--api-group={v1alpha1.GROUP}").stdout.splitlines()[1:]}
    assert rows[v1alpha1.PLURAL][:2] == [v1alpha1.PLURAL, ",".join(v1alpha1.SHORT_NAMES)]
    # the Pageserver is cluster-scoped (NAMESPACED false)
    assert rows[v1alpha1.PAGESERVER_PLURAL][:2] == [v1alpha1.PAGESERVER_PLURAL, ",".join(v1alpha1.PAGESERVER_SHORT_NAMES)]
    assert "false" in rows[v1alpha1.PAGESERVER_PLURAL]
