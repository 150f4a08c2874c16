"""The CRDs (Tenant, Pageserver), generated from the pydantic models of `v1alpha1`.

``python -m pageserver_operator.api.crd > crds/tenants.pageserver.dev.yaml`` and
``python -m pageserver_operator.api.crd pageservers > crds/pageservers.pageserver.dev.yaml``
write them; a test regenerates them and fails when a committed file differs, so the models and
the schemas cannot drift. The generated schema is structural: ``$ref``s inlined, ``nullable`` instead of
``anyOf [.., null]``, no ``additionalProperties: false`` (the API server prunes unknown fields),
plus what pydantic cannot say: the CEL immutability rule of ``spec.tenantId``.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from pageserver_operator.api import v1alpha1

_DROP = {"title", "default", "additionalProperties"}
#: `kubectl get pageserver-operator` lists Tenants and Pageservers together.
CATEGORY = "pageserver-operator"

#: The CEL rule of ``spec.tenantId``; the refusal names both values (``message`` is the fallback
#: of an API server that cannot evaluate ``messageExpression``).
TENANT_ID_IMMUTABLE = {
    "rule": "self == oldSelf",
    "message": "tenantId is immutable",
    "messageExpression": "'tenantId is immutable: it is ' + oldSelf + ', not ' + self"
    " + ' (delete this Tenant and create another one to manage another tenant)'",
}


#: The fencing rule of ``status.placement``: every status write of a pageserver manager carries
#: its generation, so the API server itself refuses the writes of a stale one (its generation is
#: below the stored one) atomically, whatever it believes.
GENERATION_NEVER_DECREASES = {
    "rule": "!has(oldSelf.generation) || (has(self.generation) && self.generation >= oldSelf.generation)",
    "message": "status.placement.generation may not decrease: a pageserver manager whose generation "
    "is no longer current (stale) tried to write this status",
}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v != {"type": "null"}]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(variants) == 1:
            nullable: dict[str, Any] = _structural({**variants[0], **rest}, defs)
            nullable["nullable"] = True
            return nullable
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in _DROP or k == "$defs":
            continue
        if k == "const":
            out["enum"] = [v]
            continue
        out[k] = {pk: _structural(pv, defs) for pk, pv in v.items()} if k == "properties" else _structural(v, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def model_schema(model: type[v1alpha1.Model]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    result: dict[str, Any] = _structural(raw, defs)
    return result


def crd() -> dict[str, Any]:
    spec = model_schema(v1alpha1.TenantSpec)
    spec["properties"]["tenantId"]["x-kubernetes-validations"] = [TENANT_ID_IMMUTABLE]
    status = model_schema(v1alpha1.TenantStatus)
    status["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    status["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    status["properties"]["placement"]["x-kubernetes-validations"] = [GENERATION_NEVER_DECREASES]
    columns: list[dict[str, Any]] = [
        {"name": "Tenant ID", "type": "string", "jsonPath": ".spec.tenantId"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Timelines", "type": "integer", "jsonPath": ".status.timelineCount"},
        {"name": "Progress", "type": "integer", "jsonPath": ".status.progress.percent", "priority": 1,
         "description": "percent of the bytes of the current attach/reconcile that are on the volume"},
        {"name": "ETA", "type": "integer", "jsonPath": ".status.progress.etaSeconds", "priority": 1,
         "description": "seconds until the current attach/reconcile is done (from the recent rate)"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
        {"name": "Pageserver", "type": "string", "jsonPath": ".status.placement.attached", "priority": 1,
         "description": "the pageserver the tenant is attached to"},
        {"name": "Generation", "type": "integer", "jsonPath": ".status.placement.generation", "priority": 1,
         "description": "the generation of its attachment"},
        {"name": "Migration", "type": "string", "jsonPath": ".status.placement.migration.phase", "priority": 1,
         "description": "the phase of a relocation in progress (Warming, SourceStale, Cutover, SourceDetach)"},
        {"name": "To", "type": "string", "jsonPath": ".status.placement.migration.to", "priority": 1,
         "description": "where the relocation in progress moves it"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _definition(
        v1alpha1.KIND, v1alpha1.PLURAL, v1alpha1.SINGULAR, v1alpha1.SHORT_NAMES, "Namespaced", columns,
        "A pageserver tenant attached from remote storage onto the operator's volume",
        {"required": ["spec"], "spec": spec, "status": status},
    )


def pageserver_crd() -> dict[str, Any]:
    """The cluster-scoped Pageserver: one per pageserver manager, registered by it (DESIGN §8.3)."""
    columns: list[dict[str, Any]] = [
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        {"name": "Scheduling", "type": "string", "jsonPath": ".spec.scheduling"},
        {"name": "Tenants", "type": "integer", "jsonPath": ".status.tenants"},
        {"name": "Bytes", "type": "integer", "jsonPath": ".status.bytes"},
        {"name": "Heartbeat", "type": "date", "jsonPath": ".status.lastHeartbeat", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _definition(
        v1alpha1.PAGESERVER_KIND, v1alpha1.PAGESERVER_PLURAL, v1alpha1.PAGESERVER_SINGULAR,
        v1alpha1.PAGESERVER_SHORT_NAMES, "Cluster", columns,
        "A pageserver manager (one volume), registered by the manager itself; its heartbeat is a Lease",
        {"spec": model_schema(v1alpha1.PageserverSpec), "status": model_schema(v1alpha1.PageserverStatus)},
    )


def _definition(
    kind: str, plural: str, singular: str, short: list[str], scope: str, columns: list[dict[str, Any]],
    description: str, parts: dict[str, Any],
) -> dict[str, Any]:
    required = parts.pop("required", None)
    root: dict[str, Any] = {"type": "object", "description": description}
    if required:
        root["required"] = required
    root["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **parts,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{v1alpha1.GROUP}"},
        "spec": {
            "group": v1alpha1.GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": singular,
                "shortNames": short,
                # not "pageserver": a category named like the Pageserver's singular makes
                # `kubectl get pageserver NAME` ambiguous ("you must specify only one resource")
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": v1alpha1.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render(which: str = "tenants") -> str:
    """The CRD of ``tenants`` or ``pageservers`` as the committed file holds it."""
    if which == v1alpha1.PAGESERVER_PLURAL:
        header = "# Generated by `python -m pageserver_operator.api.crd pageservers` from api/v1alpha1.py. Do not edit.\n"
        return header + yaml.safe_dump(pageserver_crd(), sort_keys=False, width=120)
    header = "# Generated by `python -m pageserver_operator.api.crd` from api/v1alpha1.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render(sys.argv[1] if len(sys.argv) > 1 else "tenants"))
