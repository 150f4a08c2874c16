"""`devenv.components`: the pinned versions, binaries and release archives."""

from __future__ import annotations

from pageserver_operator.devenv import components, fetch


def test_the_pinned_digests_are_well_formed() -> None:
    for archive in components.RELEASES:
        assert archive.digests
        for digest in archive.digests.values():
            fetch.parse_digest(digest)
    assert (components.KUBERNETES_VERSION, "amd64") in components.KUBERNETES_SERVER_ARCHIVE.digests
    assert (components.ETCD_VERSION, "amd64") in components.ETCD_ARCHIVE.digests
    for component in (components.KUBE_APISERVER, components.ETCD, components.KUBECTL, *components.KIND_NODE):
        assert components.release_for(component) is not None, component.name
