#!/usr/bin/env bash
# Build (once) and cache the Go/C tools of the kind e2e suite, each in
#   ${PAGESERVER_OPERATOR_CACHE:-~/.cache/pageserver-operator}/bin/<name>-<version>/<name>
# and print NAME=PATH lines. A cached tool is never rebuilt; every build runs under the
# machine-wide heavy lock.
#
#   hack/kind/tools.sh kind    kind
#   hack/kind/tools.sh host    kind, helm (hack/helm.sh)        (both modes)
#   hack/kind/tools.sh node    + the node components: Kubernetes commands and etcd (through
#                              pageserver_operator.devenv.binaries), crictl, coredns,
#                              local-path-provisioner, cnid (hack/kind/cnid), pause (hack/kind/pause)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# go_install NAME VERSION MODULE_PATH -> path; `go install MODULE_PATH@VERSION` (static) into its slot.
go_install() {
  local name="$1" version="$2" package="$3"
  local dir="$bin_cache/$name-$version"
  if [[ -x "$dir/$name" ]]; then
    echo "$dir/$name"
    return 0
  fi
  local go_bin started
  go_bin="$(find_go)"
  started="$(now_ms)"
  log "go install $package@$version (cold build)"
  rm -rf "$dir/.partial"
  mkdir -p "$dir/.partial"
  heavy env GOBIN="$dir/.partial" CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOWORK=off \
    "$go_bin" install -trimpath -ldflags=-s\ -w "$package@$version" >&2
  mv "$dir/.partial/$name" "$dir/$name"
  rmdir "$dir/.partial"
  log "built $name $version in $(fmt_ms $(($(now_ms) - started)))"
  echo "$dir/$name"
}

# kind: its version is stamped by the module version itself.
ensure_kind() { go_install kind "$KIND_VERSION" sigs.k8s.io/kind; }

# helm: hack/helm.sh (go install with helm's own version ldflags, same cache slot).
ensure_helm() {
  local dir="$bin_cache/helm-$HELM_VERSION"
  if [[ -x "$dir/helm" ]] && "$dir/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
    echo "$dir/helm"
    return 0
  fi
  [[ -x "$repo_root/hack/helm.sh" ]] || die "hack/helm.sh is missing: it installs helm"
  heavy env HELM_VERSION="$HELM_VERSION" PAGESERVER_OPERATOR_CACHE="$cache_root" "$repo_root/hack/helm.sh"
}

# local_go_build NAME SOURCE_DIR -> path; a module of this repository (stdlib only), keyed by
# the hash of its sources.
local_go_build() {
  local name="$1" src="$2" key dir go_bin
  key="$(inputs_hash "$src")"
  dir="$bin_cache/$name-$key"
  if [[ -x "$dir/$name" ]]; then
    echo "$dir/$name"
    return 0
  fi
  go_bin="$(find_go)"
  mkdir -p "$dir"
  (cd "$src" && heavy env CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOWORK=off \
    "$go_bin" build -trimpath -ldflags='-s -w' -o "$dir/.$name.partial" .) >&2
  mv "$dir/.$name.partial" "$dir/$name"
  echo "$dir/$name"
}

# pause: a static C program (as upstream's), built with the host's gcc.
ensure_pause() {
  local key dir
  key="$(inputs_hash "$kind_root/pause")"
  dir="$bin_cache/pause-$key"
  if [[ -x "$dir/pause" ]]; then
    echo "$dir/pause"
    return 0
  fi
  command -v gcc >/dev/null || apt_ensure gcc libc6-dev
  mkdir -p "$dir"
  gcc -Os -Wall -Werror -static -o "$dir/.pause.partial" "$kind_root/pause/pause.c" >&2
  strip "$dir/.pause.partial"
  mv "$dir/.pause.partial" "$dir/pause"
  echo "$dir/pause"
}

# The Kubernetes commands and etcd: the project's own wrapper-module builder (shared cache).
ensure_kubernetes() {
  local python
  python="$(venv_python)"
  heavy "$python" -m pageserver_operator.devenv.binaries --kind-node
}

what="${1:-host}"
case "$what" in
kind) echo "kind=$(ensure_kind)" ;;
host)
  echo "kind=$(ensure_kind)"
  echo "helm=$(ensure_helm)"
  ;;
node)
  echo "kind=$(ensure_kind)"
  echo "helm=$(ensure_helm)"
  ensure_kubernetes
  echo "crictl=$(go_install crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl)"
  echo "coredns=$(go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns)"
  echo "local-path-provisioner=$(go_install local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" \
    github.com/rancher/local-path-provisioner)"
  echo "cnid=$(local_go_build cnid "$kind_root/cnid")"
  echo "pause=$(ensure_pause)"
  ;;
*) die "usage: $0 kind|host|node" ;;
esac
