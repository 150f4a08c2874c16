"""Writes the bad-input corpus: one raw input file per case (where the input is a file) and one
``<case>.yaml`` sidecar per case with where the input goes and what must come out.

Run from ``tests/``: ``python -m reliability.corpus.generate`` (the files are committed; the
test only reads them, and checks that they are what this script writes).

Every case starts from the same base tenant (`base_tenant`): a root timeline ``ROOT`` (an
image layer and two deltas) and a child ``CHILD`` branched from it (one delta). Layer contents
are seeded bytes of fixed sizes, uploaded by the test. Sidecar fields:

- ``description``: what is wrong;
- ``stage``: ``attach`` (the input is put in remote storage, then the tenant is attached) or
  ``load`` (the tenant is attached cleanly, the input is put on the volume, then loaded) or
  ``apply`` (a Tenant manifest that the API server must reject);
- ``place``: ``remote-index`` (``input`` replaces the index of ``timeline``), ``remote-object``
  (``input`` is written at ``key``, relative to the tenant's remote prefix), ``remote-delete``
  (``key`` is deleted), ``local-file`` (``input`` is written at ``path``, relative to the tenant
  directory; ``symlink`` makes it a symlink to a file outside), ``generated`` (built by the test:
  ``generator`` names it), ``manifest``;
- ``expect``: ``phase`` (Broken or Active; ``Rejected`` for manifests), ``reason`` and a
  ``message`` fragment (for manifests: a fragment of the API server's answer);
- ``operator``: true for the representative subset that also runs through the operator.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import yaml

from pageserver_operator.formats import ids, index_part, layer_name, lsn, metadata

HERE = Path(__file__).resolve().parent
ROOT = ids.TimelineId.parse("a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0")
CHILD = ids.TimelineId.parse("b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1")
STRANGER = ids.TimelineId.parse("c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2")
INITDB = lsn.Lsn(0x1696070)
KMIN = layer_name.Key.MIN
KMAX = layer_name.Key.MAX
KIMG = layer_name.Key.parse("030000000000000000000000000000000002")


def _delta(a: int, b: int) -> layer_name.LayerName:
    return layer_name.DeltaLayerName(KMIN, KMAX, lsn.Lsn(a), lsn.Lsn(b))


ROOT_LAYERS: dict[layer_name.LayerName, int] = {
    layer_name.ImageLayerName(KMIN, KIMG, INITDB): 20_000,
    _delta(0x1696070, 0x16A6070): 7_001,
    _delta(0x16A6070, 0x16B6070): 12_345,
}
CHILD_LAYERS: dict[layer_name.LayerName, int] = {_delta(0x16A6078, 0x16B6078): 3_333}
ROOT_DCL = lsn.Lsn(0x16B6070)
CHILD_DCL = lsn.Lsn(0x16B6078)
BRANCH = lsn.Lsn(0x16A6070)


def meta(
    dcl: lsn.Lsn, ancestor: ids.TimelineId | None = None, ancestor_lsn: lsn.Lsn = lsn.Lsn.ZERO
) -> metadata.TimelineMetadata:
    return metadata.TimelineMetadata(
        disk_consistent_lsn=dcl,
        prev_record_lsn=lsn.Lsn(dcl.value - 0x38),
        ancestor_timeline=ancestor,
        ancestor_lsn=ancestor_lsn,
        latest_gc_cutoff_lsn=INITDB if ancestor is None else ancestor_lsn,
        initdb_lsn=INITDB,
        pg_version=15,
    )


ROOT_META = meta(ROOT_DCL)
CHILD_META = meta(CHILD_DCL, ROOT, BRANCH)


def base_tenant() -> dict[str, tuple[dict[layer_name.LayerName, int], metadata.TimelineMetadata]]:
    return {str(ROOT): (ROOT_LAYERS, ROOT_META), str(CHILD): (CHILD_LAYERS, CHILD_META)}


def layer_bytes(timeline: str, name: layer_name.LayerName, size: int) -> bytes:
    return random.Random(f"{timeline}/{name}").randbytes(size)


def base_index_doc(timeline: ids.TimelineId = ROOT) -> dict[str, Any]:
    layers, m = base_tenant()[str(timeline)]
    doc: dict[str, Any] = json.loads(index_part.IndexPart.build(dict(layers), m).to_json_bytes())
    return doc


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def with_metadata(doc: dict[str, Any], raw: bytes) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    d["metadata_bytes"] = list(raw)
    return d


def resealed(raw: bytearray) -> bytes:
    """Recompute the CRC-32C over ``[8..size)`` (a well-formed header with altered content)."""
    size = int.from_bytes(raw[4:6], "big")
    raw[0:4] = metadata.crc32c(bytes(raw[8:size])).to_bytes(4, "big")
    return bytes(raw)


def cases() -> dict[str, tuple[dict[str, Any], bytes | None, str]]:
    """name -> (sidecar, raw input or None, input file extension)."""
    out: dict[str, tuple[dict[str, Any], bytes | None, str]] = {}
    base = base_index_doc()
    img, d1, d2 = (str(n) for n in ROOT_LAYERS)

    def broken(reason: str, message: str) -> dict[str, Any]:
        return {"phase": "Broken", "reason": reason, "message": message}

    def index_case(
        name: str,
        description: str,
        raw: bytes,
        expect: dict[str, Any],
        timeline: str = "root",
        operator: bool = False,
    ) -> None:
        side = {"description": description, "stage": "attach", "place": "remote-index", "timeline": timeline,
                "input": f"{name}.json", "expect": expect}  # fmt: skip
        if operator:
            side["operator"] = True
        out[name] = (side, raw, "json")

    # ---- JSON itself ----------------------------------------------------------------------------
    good = dumps(base)
    index_case("index-truncated-json", "the index is cut in the middle of a string",
               good[: len(good) // 2], broken("InvalidIndexPart", "not valid JSON"), operator=True)  # fmt: skip
    index_case("index-empty", "an empty object body", b"", broken("InvalidIndexPart", "not valid JSON"))
    index_case("index-top-level-array", "valid JSON, but an array", b"[1,2,3]",
               broken("InvalidIndexPart", "expected a JSON object at the top level"))  # fmt: skip
    index_case("index-not-utf8", "bytes that are not UTF-8", b'{"version":1,"x":"\xff\xfe"}',
               broken("InvalidIndexPart", "not valid UTF-8"))  # fmt: skip
    index_case("index-deep-nesting", "100000 nested arrays (a recursion bomb)",
               b'{"timeline_layers":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
               broken("InvalidIndexPart", "not valid JSON"))  # fmt: skip
    index_case("index-nan", "NaN is not JSON", good.replace(b'"version":1', b'"version":NaN'),
               broken("InvalidIndexPart", "NaN is not valid JSON"))  # fmt: skip
    index_case("index-huge-integer", "an integer of 5000 digits",
               good.replace(b'"version":1', b'"version":' + b"9" * 5000),
               broken("InvalidIndexPart", "not valid JSON"))  # fmt: skip
    index_case("index-duplicate-key", "the same key twice (which one counts?)",
               good.replace(b'"version":1', b'"version":1,"version":1'),
               broken("InvalidIndexPart", "duplicate key 'version'"))  # fmt: skip
    d = copy.deepcopy(base)
    del d["timeline_layers"]
    index_case("index-missing-timeline-layers", "required field timeline_layers is absent", dumps(d),
               broken("InvalidIndexPart", "required field 'timeline_layers' is missing"))  # fmt: skip
    d = copy.deepcopy(base)
    d["timeline_layers"] = img
    index_case("index-layers-not-array", "timeline_layers is a string", dumps(d),
               broken("InvalidIndexPart", "timeline_layers must be an array"))  # fmt: skip

    # ---- versions -------------------------------------------------------------------------------
    d = copy.deepcopy(base)
    d["version"] = 99
    d["generation"] = 7
    d["lineage"] = {"reparenting_history": []}
    index_case("index-future-version", "index version 99 with unknown fields: tolerated (reference §2.3)",
               dumps(d), {"phase": "Active"})  # fmt: skip
    d = copy.deepcopy(base)
    d["version"] = -1
    index_case("index-negative-version", "version -1", dumps(d),
               broken("InvalidIndexPart", "version must be a non-negative integer"))  # fmt: skip
    raw = bytearray(ROOT_META.to_bytes())
    raw[6:8] = (5).to_bytes(2, "big")
    index_case("metadata-future-format-version", "metadata format version 5 (only 3 and 4 exist), CRC valid",
               dumps(with_metadata(base, resealed(raw))), broken("InvalidIndexPart", "version 5"),
               operator=True)  # fmt: skip

    # ---- metadata_bytes -------------------------------------------------------------------------
    index_case("metadata-bytes-511", "metadata_bytes one byte short",
               dumps(with_metadata(base, ROOT_META.to_bytes()[:511])),
               broken("InvalidIndexPart", "metadata_bytes has 511 entries, expected 512"), operator=True)  # fmt: skip
    index_case("metadata-bytes-513", "metadata_bytes one byte long",
               dumps(with_metadata(base, ROOT_META.to_bytes() + b"\0")),
               broken("InvalidIndexPart", "metadata_bytes has 513 entries, expected 512"))  # fmt: skip
    raw = bytearray(ROOT_META.to_bytes())
    raw[9] ^= 0x01
    index_case("metadata-checksum", "one bit of the metadata body flipped, CRC not updated",
               dumps(with_metadata(base, bytes(raw))), broken("InvalidIndexPart", "checksum"),
               operator=True)  # fmt: skip
    d = copy.deepcopy(base)
    d["metadata_bytes"][100] = 256
    index_case("metadata-byte-256", "a metadata byte that is not a byte", dumps(d),
               broken("InvalidIndexPart", "metadata_bytes[100] must be an integer 0..255"))  # fmt: skip
    raw = bytearray(ROOT_META.to_bytes())
    raw[4:6] = (600).to_bytes(2, "big")
    index_case("metadata-size-over-512", "header size field 600 (> 512)",
               dumps(with_metadata(base, bytes(raw))), broken("InvalidIndexPart", "metadata_bytes are not valid metadata"))  # fmt: skip
    d = copy.deepcopy(base)
    d["disk_consistent_lsn"] = "0/16C6070"
    index_case("index-lsn-disagrees",
               "disk_consistent_lsn differs from the one in metadata_bytes: tolerated, the metadata is "
               "authoritative (reference §2.3)", dumps(d), {"phase": "Active"})  # fmt: skip
    d = copy.deepcopy(base)
    d["disk_consistent_lsn"] = "zz/1"
    index_case("index-lsn-garbage", "disk_consistent_lsn is not an LSN", dumps(d),
               broken("InvalidIndexPart", "disk_consistent_lsn"))  # fmt: skip

    # ---- layer names ----------------------------------------------------------------------------
    def bad_name(name: str, description: str, bad: str, fragment: str, operator: bool = False) -> None:
        d = copy.deepcopy(base)
        d["timeline_layers"].append(bad)
        d["layer_metadata"][bad] = {"file_size": 10}
        index_case(name, description, dumps(d), broken("InvalidIndexPart", fragment), operator=operator)

    bad_name("layer-traversal", "a layer name that climbs out of the timeline directory",
             "../../../../../../etc/passwd", "timeline_layers[3]", operator=True)  # fmt: skip
    bad_name(
        "layer-traversal-suffix",
        "a valid name followed by /../../x",
        img + "/../../../x",
        "timeline_layers[3]",
    )
    bad_name("layer-absolute-path", "an absolute path", "/etc/passwd", "timeline_layers[3]")
    bad_name("layer-nul-byte", "a valid name with a NUL byte inside", img[:10] + "\x00" + img[10:], "\\x00")
    bad_name("layer-bad-hex", "a key with a non-hex digit", "G" + img[1:], "timeline_layers[3]")
    d = copy.deepcopy(base)
    assert d1.lower() != d1  # the spelling must differ: the name has hex letters (F, A)
    d["timeline_layers"].append(d1.lower())
    d["layer_metadata"][d1.lower()] = {"file_size": 10}
    index_case("layer-lowercase-hex", "an existing layer listed again in lowercase hex with another size (10): "
               "hex is case-insensitive (as Neon's reader), the later spelling's size wins, the download of "
               "the one object (canonical key) refuses it",
               dumps(d), broken("LayerDownloadFailed", "expected 10 bytes"))  # fmt: skip
    bad_name(
        "layer-temp-suffix", "a name ending in .temp_download", img + ".temp_download", "timeline_layers[3]"
    )
    bad_name("layer-delta-inverted", "a delta whose LSN range ends before it starts",
             str(KMIN) + "-" + str(KMAX) + "__00000000016B6070-0000000001696070", "timeline_layers[3]")  # fmt: skip
    bad_name("layer-huge-name", "a 100000-character layer name", "A" * 100_000, "100000 characters")
    d = copy.deepcopy(base)
    d["layer_metadata"]["../escape"] = {"file_size": 1}
    index_case("layer-metadata-traversal-key", "a traversing name only in layer_metadata: never a layer "
               "(timeline_layers does not list it), so ignored as the reference does; nothing written outside",
               dumps(d), {"phase": "Active"})  # fmt: skip
    d = copy.deepcopy(base)
    d["missing_layers"] = ["not_a_real_layer_but_adding_coverage"]
    d["layer_metadata"]["not_a_real_layer_but_adding_coverage"] = {"file_size": 9007199254741001}
    d["layer_metadata"][str(_delta(0x16B6070, 0x16C6070))] = {"file_size": 5}
    index_case("layer-metadata-unlisted-entries", "layer_metadata entries timeline_layers does not list (the "
               "reference's own test index has not_a_real_layer_but_adding_coverage): ignored",
               dumps(d), {"phase": "Active"})  # fmt: skip

    # ---- sizes ----------------------------------------------------------------------------------
    def sized(name: str, description: str, size: Any, expect: dict[str, Any], operator: bool = False) -> None:
        d = copy.deepcopy(base)
        d["layer_metadata"][d1]["file_size"] = size
        index_case(name, description, dumps(d), expect, operator=operator)

    sized(
        "size-negative",
        "file_size -5",
        -5,
        broken("InvalidIndexPart", "file_size must be a non-negative integer"),
    )
    sized("size-smaller-than-object", "file_size one byte below the object's", ROOT_LAYERS[_delta(0x1696070, 0x16A6070)] - 1,
          broken("LayerDownloadFailed", "size mismatch"), operator=True)  # fmt: skip
    sized("size-larger-than-object", "file_size 1000 bytes above the object's", ROOT_LAYERS[_delta(0x1696070, 0x16A6070)] + 1000,
          broken("LayerDownloadFailed", "size mismatch"))  # fmt: skip
    sized(
        "size-absurd",
        "file_size 2**63 (nothing may be preallocated)",
        1 << 63,
        broken("LayerDownloadFailed", "size mismatch"),
    )
    sized(
        "size-string",
        "file_size is a string",
        "7001",
        broken("InvalidIndexPart", "file_size must be a non-negative integer"),
    )

    # ---- objects and timelines ------------------------------------------------------------------
    d = copy.deepcopy(base)
    ghost = str(_delta(0x16B6070, 0x16B6078))
    d["timeline_layers"].append(ghost)
    d["layer_metadata"][ghost] = {"file_size": 100}
    d["metadata_bytes"] = list(meta(lsn.Lsn(0x16B6078)).to_bytes())
    d["disk_consistent_lsn"] = "0/16B6078"
    index_case("layer-object-missing", "the index names a layer whose object does not exist", dumps(d),
               broken("RemoteLayerMissing", "does not exist"), operator=True)  # fmt: skip
    d = copy.deepcopy(base)
    d["metadata_bytes"] = list(meta(lsn.Lsn(0x1600000)).to_bytes())
    d["disk_consistent_lsn"] = "0/1600000"
    index_case("layers-all-from-the-future", "every layer lies above disk_consistent_lsn (none usable)", dumps(d),
               broken("NoLayers", "no ancestor and no layer files"))  # fmt: skip
    d = base_index_doc(CHILD)
    d["metadata_bytes"] = list(meta(CHILD_DCL, STRANGER, BRANCH).to_bytes())
    index_case("missing-ancestor", "the child's ancestor is a timeline that does not exist", dumps(d),
               broken("MissingAncestor", str(STRANGER)), timeline="child", operator=True)  # fmt: skip
    d = copy.deepcopy(base)
    d["metadata_bytes"] = list(meta(ROOT_DCL, CHILD, BRANCH).to_bytes())
    index_case("ancestor-cycle", "root's ancestor is its own child", dumps(d),
               broken("AncestorCycle", "ancestor cycle"))  # fmt: skip
    d = copy.deepcopy(base)
    d["metadata_bytes"] = list(meta(ROOT_DCL, ROOT, BRANCH).to_bytes())
    index_case("ancestor-is-itself", "a timeline whose metadata names itself as ancestor", dumps(d),
               broken("AncestorCycle", "its own ancestor"), operator=True)  # fmt: skip
    out["timeline-dir-not-an-id"] = (
        {"description": "remote timelines/ holds a directory whose name is not a timeline id",
         "stage": "attach", "place": "remote-object", "key": "timelines/not-a-timeline/index_part.json",
         "input": "timeline-dir-not-an-id.json", "expect": broken("InvalidRemoteTimeline", "'not-a-timeline'")},
        good, "json")  # fmt: skip
    out["timeline-dir-uppercase-id"] = (
        {"description": "a timeline directory named with uppercase hex (ids are lowercase)",
         "stage": "attach", "place": "remote-object", "key": f"timelines/{str(STRANGER).upper()}/index_part.json",
         "input": "timeline-dir-uppercase-id.json", "expect": broken("InvalidRemoteTimeline", str(STRANGER).upper())},
        good, "json")  # fmt: skip
    out["no-index-anywhere"] = (
        {"description": "the tenant's layers exist remotely, but no index_part.json at all",
         "stage": "attach", "place": "remote-delete", "keys": [f"timelines/{ROOT}/index_part.json", f"timelines/{CHILD}/index_part.json"],
         "expect": broken("NoRemoteTimelines", "has an index_part.json")},
        None, "")  # fmt: skip
    out["huge-index-200k-layers"] = (
        {"description": "an index naming 200000 layers whose objects do not exist (generated at test time): "
                        "must fail within bounded time and memory",
         "stage": "attach", "place": "generated", "generator": "huge-index", "layers": 200_000,
         "limits": {"seconds": 90, "rss_mib": 1024},
         "expect": broken("RemoteLayerMissing", "does not exist")},
        None, "")  # fmt: skip

    # ---- the volume (load) ----------------------------------------------------------------------
    def local(
        name: str,
        description: str,
        path: str,
        raw: bytes | None,
        ext: str,
        expect: dict[str, Any],
        **extra: Any,
    ) -> None:
        side: dict[str, Any] = {
            "description": description,
            "stage": "load",
            "place": "local-file",
            "path": path,
        }
        if raw is not None:
            side["input"] = f"{name}.{ext}"
        side.update(extra)
        side["expect"] = expect
        out[name] = (side, raw, ext)

    raw = bytearray(ROOT_META.to_bytes())
    raw[12] ^= 0x80
    local("local-metadata-checksum", "the local metadata file with one bit flipped", f"timelines/{ROOT}/metadata",
          bytes(raw), "bin", broken("LocalMetadataInvalid", "checksum"), operator=True)  # fmt: skip
    local("local-metadata-truncated", "the local metadata file cut to 100 bytes", f"timelines/{ROOT}/metadata",
          ROOT_META.to_bytes()[:100], "bin", broken("LocalMetadataInvalid", "512"))  # fmt: skip
    local("local-metadata-is-itself", "local metadata (valid CRC) whose ancestor is its own timeline",
          f"timelines/{ROOT}/metadata", meta(ROOT_DCL, ROOT, BRANCH).to_bytes(), "bin",
          broken("AncestorCycle", "ancestor"))  # fmt: skip
    local("local-metadata-behind-remote", "local metadata older than the remote index (another writer?)",
          f"timelines/{ROOT}/metadata", meta(lsn.Lsn(0x16A6070)).to_bytes(), "bin",
          broken("RemoteAheadOfLocal", "ahead of local"))  # fmt: skip
    local("local-timeline-dir-not-an-id", "a directory in timelines/ whose name is not an id: ignored, left alone",
          "timelines/not-a-timeline/metadata", ROOT_META.to_bytes(), "bin", {"phase": "Active"})  # fmt: skip
    local("local-timelines-is-a-file", "timelines is a file, not a directory", "timelines",
          b"not a directory\n", "txt", broken("LocalIOError", "Not a directory"), replace=True)  # fmt: skip
    local("local-config-garbage", "the tenant config file is not TOML", "config",
          b"[tenant_config\ncheckpoint_distance = = 1\n", "toml", broken("TenantConfigInvalid", "config"),
          operator=False)  # fmt: skip
    local("local-layer-symlink-outside", "an indexed layer on the volume is a symlink to a file outside the tenant: "
          "replaced by the real layer, the outside file untouched", f"timelines/{ROOT}/{d2}", None, "",
          {"phase": "Active"}, symlink=True)  # fmt: skip

    local("local-partial-download-symlink", "a partial download of a missing layer is a symlink to a file outside "
          "the tenant: the download must replace it, never write through it", f"timelines/{ROOT}/{d2}.temp_download",
          None, "", {"phase": "Active"}, symlink=True, also_delete=f"timelines/{ROOT}/{d2}")  # fmt: skip
    local("local-timeline-dir-symlink-outside", "the root timeline directory is a symlink to a copy outside the "
          "tenant, with a layer missing: load must not download (write) through it", f"timelines/{ROOT}", None, "",
          broken("UnsafeLocalPath", "symbolic link"), symlink_dir=True)  # fmt: skip
    local("local-tenant-dir-symlink-outside", "the tenant directory itself is a symlink to a copy outside, with a "
          "layer missing", ".", None, "", broken("UnsafeLocalPath", "symbolic link"), symlink_dir=True)  # fmt: skip

    # ---- Tenant specs (the API server rejects them) ---------------------------------------------
    def spec(name: str, description: str, spec_: dict[str, Any], fragment: str) -> None:
        manifest = {
            "apiVersion": "pageserver.dev/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": spec_,
        }
        out[name] = ({"description": description, "stage": "apply", "place": "manifest", "input": f"{name}.tenant.yaml",
                      "expect": {"phase": "Rejected", "message": fragment}},
                     yaml.safe_dump(manifest, sort_keys=False).encode(), "tenant.yaml")  # fmt: skip

    spec("spec-tenant-id-uppercase", "tenantId in uppercase hex", {"tenantId": "A" * 32}, "spec.tenantId")
    spec("spec-tenant-id-short", "tenantId of 31 characters", {"tenantId": "a" * 31}, "spec.tenantId")
    spec(
        "spec-tenant-id-traversal",
        "tenantId that is a path",
        {"tenantId": "../../../../../../../../etc/passwd"},
        "spec.tenantId",
    )
    spec("spec-tenant-id-missing", "no tenantId", {"config": {}}, "spec.tenantId: Required value")
    spec("spec-config-wrong-type", "checkpointDistance is a word", {"tenantId": "d" * 32, "config": {"checkpointDistance": "lots"}},
         "spec.config.checkpointDistance")  # fmt: skip
    return out


def write(directory: Path = HERE) -> list[str]:
    written = []
    for name, (side, raw, ext) in sorted(cases().items()):
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(side, sort_keys=False, width=120))
        written.append(f"{name}.yaml")
        if raw is not None:
            (directory / f"{name}.{ext}").write_bytes(raw)
            written.append(f"{name}.{ext}")
    return written


if __name__ == "__main__":
    files = write()
    print(f"{len(cases())} cases, {len(files)} files in {HERE}")
