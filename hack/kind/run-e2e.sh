#!/usr/bin/env bash
# shellcheck disable=SC2317 # diagnostics and finish run from the EXIT trap
# The kind end-to-end suite, from nothing: one command that
#   1. makes sure a Docker engine runs (installs Debian's docker.io and starts dockerd if needed);
#   2. chooses the mode: "offline" (this kind of machine: no registry, and `docker run --privileged`
#      cannot work) assembles kind's node image here and runs kind through the docker wrapper;
#      "stock" (internet and a normal Docker) uses kind's own node image and nothing else of the
#      offline machinery. KIND_E2E_MODE=offline|stock forces one (default: auto);
#   3. installs kind and helm (go install), builds the node image (offline) and the suite's images
#      (operator, in-cluster S3 server) -- all cached: a second run skips them;
#   4. creates the cluster (1 control plane + 3 workers, KIND_E2E_WORKERS) and loads the images
#      (the S3 server's only on the control plane, where tests/kind runs it);
#   5. runs `pytest tests/kind` (extra arguments go to pytest);
#   6. on failure prints the operator's logs and `kubectl describe` of the Tenants;
#   7. always deletes the cluster, its docker network and restores the VM's sysctls (also on
#      Ctrl-C or a failed step), unless KIND_E2E_KEEP=1; stops the Docker engine if this run
#      started it (says so when it leaves one running);
# and prints the time of each stage. Exit status: pytest's, or 1 if a stage before it failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo_root"

summary=()
run_started="$(now_ms)"
stage_name=""
stage_started=0
begin() {
  stage_name="$1"
  stage_started="$(now_ms)"
  echo "===== kind e2e: $stage_name ====="
}
end() {
  local took
  took="$(fmt_ms $(($(now_ms) - stage_started)))"
  summary+=("$(printf '%-22s %s' "$stage_name" "$took")")
  echo "===== kind e2e: $stage_name done in $took ====="
  stage_name=""
}

cluster_created=false
docker_started_here=unknown
kubeconfig=""
kubectl_bin=""
diagnostics() {
  [[ -n "$kubeconfig" && -f "$kubeconfig" && -n "$kubectl_bin" ]] || return 0
  local k=("$kubectl_bin" --kubeconfig "$kubeconfig")
  echo "===== kind e2e: diagnostics (failure) ====="
  echo "--- nodes"
  "${k[@]}" get nodes -o wide || true
  echo "--- pods"
  "${k[@]}" get pods -A -o wide || true
  echo "--- tenants"
  "${k[@]}" get tenants.pageserver.dev -A -o wide || true
  echo "--- pageservers and leases"
  "${k[@]}" get pageservers.pageserver.dev -o wide --show-labels || true
  "${k[@]}" get leases.coordination.k8s.io -A || true
  echo "--- kubectl describe tenants"
  "${k[@]}" describe tenants.pageserver.dev -A || true
  local ns pod
  while read -r ns pod; do
    [[ -n "$pod" ]] || continue
    echo "--- operator logs: $ns/$pod (previous container, if any)"
    "${k[@]}" -n "$ns" logs "$pod" --all-containers --previous --tail=200 2>/dev/null || true
    echo "--- operator logs: $ns/$pod"
    "${k[@]}" -n "$ns" logs "$pod" --all-containers --tail=400 || true
  done < <("${k[@]}" get pods -A -l app.kubernetes.io/name=pageserver-operator \
    -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name}{"\n"}{end}' 2>/dev/null || true)
  echo "--- events (warnings)"
  "${k[@]}" get events -A --field-selector type=Warning --sort-by=.lastTimestamp 2>/dev/null | tail -n 40 || true
}

finish() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$stage_name" ]]; then
    summary+=("$(printf '%-22s %s (FAILED)' "$stage_name" "$(fmt_ms $(($(now_ms) - stage_started)))")")
  fi
  if [[ $status -ne 0 ]]; then diagnostics; fi
  if $cluster_created || [[ -f "$kind_cache/cluster-$KIND_CLUSTER_NAME/sysctl-before" ]]; then
    if [[ "${KIND_E2E_KEEP:-0}" == "1" ]]; then
      echo "KIND_E2E_KEEP=1: cluster $KIND_CLUSTER_NAME kept; KUBECONFIG=$kubeconfig;" \
        "delete it with: hack/kind/cluster.sh delete"
    else
      begin "delete cluster"
      "$kind_root/cluster.sh" delete || status=1
      end
    fi
  fi
  if [[ "$docker_started_here" == true ]]; then
    if [[ "${KIND_E2E_KEEP:-0}" == "1" ]]; then
      echo "KIND_E2E_KEEP=1: the Docker engine this run started is left running;" \
        "stop it with: hack/image/dockerd.sh stop"
    else
      begin "stop docker engine"
      "$repo_root/hack/image/dockerd.sh" stop || status=1
      end
    fi
  elif [[ "$docker_started_here" == false ]]; then
    echo "docker engine: it was running before this run, left running" \
      "(hack/image/dockerd.sh stop stops one that the hack/ scripts started)"
  fi
  echo
  echo "kind e2e summary (mode ${mode:-?}):"
  printf '  %s\n' "${summary[@]}"
  printf '  %-22s %s (exit %d)\n' "total" "$(fmt_ms $(($(now_ms) - run_started)))" "$status"
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. Docker engine ------------------------------------------------------------------------
begin "docker engine"
docker_started_here=false
if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then docker_started_here=true; fi
ensure_dockerd
end

# --- 2. mode ---------------------------------------------------------------------------------
mode="$(kind_mode)"
echo "mode: $mode"

# --- 3. tools and images -------------------------------------------------------------------
begin "kind, helm, kubectl"
declare -A tools
while IFS='=' read -r name path; do tools[$name]="$path"; done < <("$kind_root/tools.sh" host)
kubectl_bin="$("$(venv_python)" -c 'from pageserver_operator.devenv import binaries; print(binaries.ensure(binaries.KUBECTL))')"
PATH="$(dirname "${tools[helm]}"):$(dirname "${tools[kind]}"):$(dirname "$kubectl_bin"):$PATH"
export PATH
end

node_image=""
if [[ "$mode" == offline ]]; then
  begin "node image"
  node_image="$("$kind_root/node-image.sh")"
  end
fi

begin "suite images"
declare -A images
while IFS='=' read -r name ref; do images[$name]="$ref"; done < <("$kind_root/images.sh")
end

# --- 4. cluster ------------------------------------------------------------------------------
begin "create cluster"
cluster_created=true
kubeconfig="$("$kind_root/cluster.sh" create "$node_image")"
end

begin "load images"
(
  if [[ "$mode" == offline ]]; then export PATH="$kind_root/docker-wrapper:$PATH"; fi
  # The operator image on every node (the toolbox on the control plane runs it too), the S3
  # server's on the control plane only (tests/kind/conftest.py schedules it there).
  "${tools[kind]}" load docker-image --name "$KIND_CLUSTER_NAME" "${images[operator]}"
  "${tools[kind]}" load docker-image --name "$KIND_CLUSTER_NAME" --nodes "$KIND_CLUSTER_NAME-control-plane" \
    "${images[s3]}"
)
end

# --- 5. the suite ----------------------------------------------------------------------------
begin "pytest tests/kind"
pytest_status=0
report="$kind_cache/report.json"
rm -f "$report"
env PAGESERVER_OPERATOR_KIND_E2E=1 KUBECONFIG="$kubeconfig" KIND_E2E_REPORT="$report" \
  KIND_E2E_KUBECTL="$kubectl_bin" KIND_E2E_HELM="${tools[helm]}" \
  KIND_E2E_OPERATOR_IMAGE="${images[operator]}" KIND_E2E_S3_IMAGE="${images[s3]}" \
  KIND_E2E_CLUSTER="$KIND_CLUSTER_NAME" \
  "$repo_root/.venv/bin/pytest" tests/kind -p no:cacheprovider -v "$@" || pytest_status=$?
end
if [[ -f "$report" ]]; then
  echo "kind e2e measurements:"
  # `$a\` ends the last line (json.dump writes none after the closing brace), so the next log
  # line starts on its own line.
  sed -e 's/^/  /' -e '$a\' "$report"
fi
exit "$pytest_status"
