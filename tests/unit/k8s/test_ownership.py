"""`k8s.ownership` in process: which Tenant resource's claim owns a tenant id (the Registry's
hand-over between controllers is driven through the handlers in test_handlers.py)."""

from __future__ import annotations

from pageserver_operator.formats import ids
from pageserver_operator.k8s import ownership

from .conftest import NS, TID, body


def test_an_acting_owner_outranks_a_copy_created_in_the_same_second() -> None:
    """creationTimestamp has whole seconds: a copy applied in the owner's second (right after a
    fast attach) with a smaller uid took the tenant over (seen as a flaky
    test_unknown_tenant_and_duplicate_tenant_id: the copy went Active). The Tenant whose status
    shows it acting as the owner ranks first, also after a restart."""
    same = "2026-12-01T00:00:00Z"
    owner = body("owner", TID, created=same, uid="b", status={"phase": "Active", "reason": "Active"})
    copy = body("copy", TID, created=same, uid="a")
    refused = body("copy", TID, created=same, uid="a", status={"phase": "Broken", "reason": "TenantIdInUse"})
    assert min(ownership.claim_of(owner), ownership.claim_of(copy)).key == (NS, "owner")
    assert min(ownership.claim_of(owner), ownership.claim_of(refused)).key == (NS, "owner")
    # without any status (nothing acted yet) the oldest, then the uid, decides as before
    older = body("older", TID, created="2026-11-30T23:59:59Z", uid="z")
    assert min(ownership.claim_of(older), ownership.claim_of(copy)).key == (NS, "older")


def test_a_claim_is_read_from_the_resource_and_its_tenant_id_parsed() -> None:
    b = body("t", TID, created="2026-12-01T00:00:00Z", uid="u-1")
    assert ownership.claim_of(b) == ownership.Claim(True, "2026-12-01T00:00:00Z", "u-1", (NS, "t"))
    assert ownership.tenant_id_of(b) == ids.TenantId.parse(TID)
    assert ownership.claim_of({}) == ownership.Claim(True, "", "", ("", ""))
