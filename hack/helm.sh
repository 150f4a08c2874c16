#!/usr/bin/env bash
# Print the path of a helm binary, installing it first if needed:
#   `go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION` into
#   ${PAGESERVER_OPERATOR_CACHE:-~/.cache/pageserver-operator}/bin/helm-$HELM_VERSION/helm.
# A warm cache (the binary exists and reports the version) costs nothing; no registry is asked.
# Usage: hack/helm.sh            -> prints the path (build logs go to stderr)
#        hack/helm.sh ARGS...     -> runs helm ARGS...
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.19.0}"
# The Kubernetes version helm $HELM_VERSION is built against (its client-go v0.34).
HELM_KUBE_MAJOR=1
HELM_KUBE_MINOR=34
cache_root="${PAGESERVER_OPERATOR_CACHE:-$HOME/.cache/pageserver-operator}"
bin_dir="$cache_root/bin/helm-$HELM_VERSION"
helm_bin="$bin_dir/helm"

usable() {
  [[ -x "$helm_bin" ]] && "$helm_bin" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"
}

if ! usable; then
  go_bin="$(command -v go || true)"
  if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then go_bin=/usr/local/go/bin/go; fi
  if [[ -z "$go_bin" ]]; then
    echo "hack/helm.sh: Go is needed to install helm $HELM_VERSION (go install helm.sh/helm/v3/cmd/helm)" >&2
    exit 1
  fi
  mkdir -p "$bin_dir"
  started="$(date +%s)"
  echo "hack/helm.sh: installing helm $HELM_VERSION with go install (about a minute cold)" >&2
  # The ldflags of helm's own Makefile: without them `helm version` says "v3.19" and the default
  # .Capabilities.KubeVersion (helm template, helm lint) is v1.20. CGO off: a static binary.
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=$HELM_KUBE_MAJOR"
    ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
  done
  # A line every 10 s while Go works (minutes cold, silent otherwise), with an estimate: the last
  # cold install's duration (recorded below), else 100 s (measured on a loaded 2-core machine).
  record="$cache_root/helm-install.last"
  expected=100
  if [[ -r "$record" ]]; then read -r expected <"$record" || expected=100; fi
  GOBIN="$bin_dir" CGO_ENABLED=0 "$go_bin" install -trimpath -ldflags "$ldflags" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2 &
  go_pid=$!
  while ! timeout 10 tail --pid="$go_pid" -f /dev/null; do
    elapsed=$(($(date +%s) - started))
    if ((elapsed < expected)); then
      echo "hack/helm.sh: go install of helm running for ${elapsed} s, about $((expected - elapsed)) s left" >&2
    else
      echo "hack/helm.sh: go install of helm running for ${elapsed} s, longer than the ${expected} s expected" >&2
    fi
  done
  if ! wait "$go_pid"; then
    echo "hack/helm.sh: go install of helm $HELM_VERSION failed" >&2
    exit 1
  fi
  took=$(($(date +%s) - started))
  if ((took >= 20)); then echo "$took" >"$record"; fi # a warm Go cache says nothing about a cold build
  if ! usable; then
    echo "hack/helm.sh: $helm_bin does not report $HELM_VERSION after go install" >&2
    exit 1
  fi
  echo "hack/helm.sh: helm $HELM_VERSION installed in $(($(date +%s) - started)) s: $helm_bin" >&2
fi

if [[ $# -eq 0 ]]; then
  echo "$helm_bin"
else
  exec "$helm_bin" "$@"
fi
