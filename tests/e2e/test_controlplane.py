"""The local control plane is a real Kubernetes API server.

Covers what the operator relies on: a CRD with a status subresource, schema ``pattern``
and CEL ``self == oldSelf`` validation, RBAC for a ServiceAccount token (denied, then
allowed after a RoleBinding), the built version stamp, and kubectl against it.
Uses a tiny test CRD (``gadgets``), not the product's Tenant CRD.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from pageserver_operator.devenv import components, controlplane

pytestmark = pytest.mark.e2e

GROUP = "devenv-test.pageserver.dev"
VERSION = "v1"
PLURAL = "gadgets"
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "names": {"plural": PLURAL, "singular": "gadget", "kind": "Gadget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["serial"],
                                "properties": {
                                    "serial": {
                                        "type": "string",
                                        "pattern": "^[0-9a-f]{8}$",
                                        "x-kubernetes-validations": [
                                            {"rule": "self == oldSelf", "message": "serial is immutable"}
                                        ],
                                    },
                                    "size": {"type": "integer"},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "phase": {"type": "string"},
                                    "observedGeneration": {"type": "integer"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


M = TypeVar("M")


def model(parse: Callable[[dict[str, Any]], M | None], data: dict[str, Any]) -> M:
    """Build a typed client model from its JSON form (``from_dict`` is typed Optional)."""
    parsed = parse(data)
    assert parsed is not None, data
    return parsed


def as_dict(body: object) -> dict[str, Any]:
    """Custom-object calls return untyped JSON; check it is an object."""
    assert isinstance(body, dict), body
    return body


def connect(kubeconfig: Path) -> client.ApiClient:
    """An API client for ``kubeconfig`` (the loader is untyped)."""
    api_client: client.ApiClient = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return api_client


def eventually(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``check`` until true (caches such as RBAC and discovery settle asynchronously)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def api(control_plane: controlplane.ControlPlane) -> Iterator[client.ApiClient]:
    """An admin API client built from the control plane's written kubeconfig."""
    api_client = connect(control_plane.kubeconfig)
    try:
        yield api_client
    finally:
        api_client.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def gadget_crd(api: client.ApiClient) -> None:
    """The test CRD, applied and Established."""
    extensions = client.ApiextensionsV1Api(api)
    try:
        extensions.create_custom_resource_definition(model(client.V1CustomResourceDefinition.from_dict, CRD))
    except ApiException as error:
        if error.status != 409:
            raise

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(CRD["metadata"]["name"])
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    eventually(established, what="the CRD to be Established")


@pytest.fixture
def namespace(api: client.ApiClient) -> str:
    """A fresh namespace (never deleted: without a controller-manager it would stay Terminating)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(api).create_namespace(model(client.V1Namespace.from_dict, {"metadata": {"name": name}}))
    return name


def gadget(name: str, serial: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Gadget",
        "metadata": {"name": name},
        "spec": {"serial": serial, "size": 1},
    }


def test_server_reports_the_version_it_was_built_as(api: client.ApiClient) -> None:
    info = client.VersionApi(api).get_code()

    assert info.git_version == components.KUBERNETES_VERSION
    assert info.major == "1"


def test_status_subresource_patch_is_stored_and_read_back(
    api: client.ApiClient, gadget_crd: None, namespace: str
) -> None:
    objects = client.CustomObjectsApi(api)
    created = as_dict(
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, gadget("g1", "0123abcd"))
    )
    assert "status" not in created

    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "g1", {"status": {"phase": "Active", "observedGeneration": 1}}
    )
    # Through the main resource, status is ignored: that is what the subresource means.
    objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "g1", {"spec": {"size": 2}, "status": {"phase": "Hijacked"}}
    )

    read = as_dict(objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "g1"))
    assert read["status"] == {"phase": "Active", "observedGeneration": 1}
    assert read["spec"] == {"serial": "0123abcd", "size": 2}
    assert read["metadata"]["generation"] == 2, "a status write must not bump the generation"


def test_schema_pattern_rejects_a_bad_serial(api: client.ApiClient, gadget_crd: None, namespace: str) -> None:
    objects = client.CustomObjectsApi(api)

    with pytest.raises(ApiException) as error:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, gadget("bad", "NOT-HEX!"))

    assert error.value.status == 422
    assert "spec.serial" in str(error.value.body)
    assert "should match" in str(error.value.body)


def test_cel_rule_keeps_the_serial_immutable(api: client.ApiClient, gadget_crd: None, namespace: str) -> None:
    objects = client.CustomObjectsApi(api)
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, gadget("g2", "00000001"))

    with pytest.raises(ApiException) as error:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "g2", {"spec": {"serial": "00000002"}}
        )

    assert error.value.status == 422
    assert "serial is immutable" in str(error.value.body)
    read = as_dict(objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "g2"))
    assert read["spec"]["serial"] == "00000001"


def service_account_token(api: client.ApiClient, namespace: str, name: str) -> str:
    """Create ServiceAccount ``name`` and mint a token for it (TokenRequest API)."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(
        namespace, model(client.V1ServiceAccount.from_dict, {"metadata": {"name": name}})
    )
    request = model(client.AuthenticationV1TokenRequest.from_dict, {"spec": {"expirationSeconds": 3600}})
    response = core.create_namespaced_service_account_token(name, namespace, request)
    assert response.status is not None
    return str(response.status.token)


def test_rbac_denies_a_service_account_until_a_role_binding_allows_it(
    control_plane: controlplane.ControlPlane,
    api: client.ApiClient,
    gadget_crd: None,
    namespace: str,
    tmp_path: Path,
) -> None:
    token = service_account_token(api, namespace, "reader")
    kubeconfig = control_plane.kubeconfig_for_token(token, tmp_path / "reader.kubeconfig")
    with contextlib.closing(connect(kubeconfig)) as reader_client:
        reader = client.CustomObjectsApi(reader_client)

        with pytest.raises(ApiException) as denied:
            reader.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in str(denied.value.body)

        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            namespace,
            model(
                client.V1Role.from_dict,
                {
                    "metadata": {"name": "gadget-reader"},
                    "rules": [
                        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch"]}
                    ],
                },
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            model(
                client.V1RoleBinding.from_dict,
                {
                    "metadata": {"name": "gadget-reader"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": "gadget-reader",
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
                },
            ),
        )

        def can_list() -> bool:
            try:
                reader.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            except ApiException as error:
                if error.status == 403:
                    return False
                raise
            return True

        eventually(can_list, what="the RoleBinding to take effect")
        # The binding grants reads only, and only in this namespace.
        with pytest.raises(ApiException) as still_denied:
            reader.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, gadget("nope", "0000000f")
            )
        assert still_denied.value.status == 403
        with pytest.raises(ApiException) as other_namespace:
            reader.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
        assert other_namespace.value.status == 403


def test_kubectl_works_with_the_written_kubeconfig(
    kubectl: Path, control_plane: controlplane.ControlPlane, gadget_crd: None, namespace: str, tmp_path: Path
) -> None:
    def run(*args: str, kubeconfig: Path = control_plane.kubeconfig, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    run("apply", "-n", namespace, "-f", "-", stdin=json.dumps(gadget("g3", "cafebabe")))
    run("patch", "-n", namespace, f"{PLURAL}.{GROUP}", "g3", "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Active"}}')  # fmt: skip
    assert (
        json.loads(run("get", "-n", namespace, f"{PLURAL}.{GROUP}", "g3", "-o", "json"))["status"]["phase"]
        == "Active"
    )

    run("create", "serviceaccount", "-n", namespace, "operator")
    token = run("create", "token", "-n", namespace, "operator").strip()
    as_operator = control_plane.kubeconfig_for_token(token, tmp_path / "operator.kubeconfig")
    allowed = subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={as_operator}",
            "auth",
            "can-i",
            "list",
            f"{PLURAL}.{GROUP}",
            "-n",
            namespace,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert allowed.stdout.strip() == "no", allowed.stdout + allowed.stderr
    assert run("auth", "can-i", "list", f"{PLURAL}.{GROUP}", "-n", namespace).strip() == "yes"
