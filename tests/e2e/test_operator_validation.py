"""Invalid Tenant specs are rejected by the API server at ``kubectl apply`` time (the CRD's
schema and CEL rule), not discovered later by the operator: a ``tenantId`` that is not 32
lowercase hex characters, a missing one, unknown config keys of the wrong type, and a change of
the ``tenantId`` of an existing Tenant ("tenantId is immutable").

No operator runs here: the API server alone must refuse these objects (kubectl's own client-side
validation is switched off with ``--validate=false`` so that every rejection comes from the server).
"""

from __future__ import annotations

import pytest

from e2e import helpers
from e2e.conftest import new_tenant_id
from pageserver_operator.api import v1alpha1

pytestmark = pytest.mark.e2e

VALID = "5ca1ab1e000000000000000000000001"
SERVER_ONLY = ["--validate=false"]


@pytest.mark.parametrize(
    "tenant_id",
    [
        pytest.param("5CA1AB1E000000000000000000000001", id="uppercase"),
        pytest.param("5ca1ab1e00000000000000000000001", id="31-chars"),
        pytest.param("5ca1ab1e0000000000000000000000011", id="33-chars"),
        pytest.param("5ca1ab1e-0000-0000-0000-000000000001", id="uuid-dashes"),
        pytest.param("zzzzzzzz000000000000000000000001", id="not-hex"),
        pytest.param("../../../../../../../etc/passwd00", id="traversal"),
        pytest.param("", id="empty"),
    ],
)
def test_invalid_tenant_id_is_rejected_at_apply(k: helpers.Kubectl, tenant_id: str) -> None:
    result = k.apply(helpers.tenant_manifest("bad", tenant_id), check=False, args=SERVER_ONLY)

    assert result.returncode != 0, f"the API server accepted tenantId {tenant_id!r}"
    assert "spec.tenantId" in result.stderr
    assert v1alpha1.TENANT_ID_PATTERN in result.stderr, result.stderr
    assert k.tenant_or_none("bad") is None


def test_missing_tenant_id_is_rejected(k: helpers.Kubectl) -> None:
    manifest = helpers.tenant_manifest("empty-spec", VALID)
    manifest["spec"] = {}

    result = k.apply(manifest, check=False, args=SERVER_ONLY)

    assert result.returncode != 0
    assert "spec.tenantId: Required value" in result.stderr, result.stderr


def test_config_of_the_wrong_type_is_rejected(k: helpers.Kubectl) -> None:
    result = k.apply(helpers.tenant_manifest("bad-config", VALID, {"checkpointDistance": "a lot"}), check=False,
                     args=SERVER_ONLY)  # fmt: skip

    assert result.returncode != 0
    assert "spec.config.checkpointDistance" in result.stderr, result.stderr


def test_changing_the_tenant_id_is_rejected(k: helpers.Kubectl) -> None:
    original = new_tenant_id()
    k.apply(helpers.tenant_manifest("fixed", original))

    changed = k.apply(helpers.tenant_manifest("fixed", new_tenant_id()), check=False, args=SERVER_ONLY)
    patched = k.run("patch", "tenant/fixed", "--type=merge", "-p", f'{{"spec":{{"tenantId":"{VALID}"}}}}',
                    check=False)  # fmt: skip

    for result, new in ((changed, None), (patched, VALID)):
        assert result.returncode != 0
        # the refusal carries the values (messageExpression), not `Invalid value: "string"`
        assert f"tenantId is immutable: it is {original}, not " in result.stderr, result.stderr
        if new is not None:
            assert new in result.stderr, result.stderr
    assert k.tenant("fixed")["spec"]["tenantId"] == original
    # Other spec fields stay editable.
    k.apply(helpers.tenant_manifest("fixed", original, {"gcPeriod": "1 h"}))
    assert k.tenant("fixed")["spec"]["config"] == {"gcPeriod": "1 h"}
