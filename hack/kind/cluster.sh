#!/usr/bin/env bash
# Create or delete the e2e kind cluster (1 control plane + KIND_E2E_WORKERS workers, default 3:
# tests/kind/test_failover.py runs one pageserver on each of three workers and pauses one),
# leaving the machine as it was.
#
#   hack/kind/cluster.sh create [NODE_IMAGE]   NODE_IMAGE: offline mode (the image of
#                                               hack/kind/node-image.sh, the docker wrapper on PATH);
#                                               none: kind's stock node image
#   hack/kind/cluster.sh delete                 delete it, its docker network if created by us,
#                                               and restore the VM's sysctls
#   hack/kind/cluster.sh kubeconfig             print the kubeconfig path
#
# kubelet (in the node containers, which share the VM's kernel) writes global sysctls:
# kernel.panic, kernel.panic_on_oops, vm.overcommit_memory, kernel.keys.root_max{keys,bytes}...;
# systemd in the nodes raises fs.file-max and sets fs.protected_*. `create` records them (a fixed
# list plus a snapshot of every kernel/vm/fs sysctl) first, unless a record of an unfinished run
# exists (that one holds the values from before it); `delete` puts back every value that changed.
# A failed `create` deletes what it made. `delete` first unpauses the nodes a test left paused
# (`docker pause`).
set -Eeuo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

state_dir="$kind_cache/cluster-$KIND_CLUSTER_NAME"
workers="${KIND_E2E_WORKERS:-3}"
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || die "KIND_E2E_WORKERS must be a positive number (got '$workers')"
kubeconfig="$state_dir/kubeconfig"
restored_sysctls=(
  kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes kernel.keys.maxkeys kernel.keys.maxbytes
  net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait net.netfilter.nf_conntrack_tcp_be_liberal
  fs.inotify.max_user_watches fs.inotify.max_user_instances
)
# Sysctls that change by themselves (counters, random state): never reported.
volatile_sysctls='^(kernel\.random\.|kernel\.ns_last_pid|fs\.dentry-state|fs\.file-nr|fs\.inode-|kernel\.pty\.nr|fs\.quota\.|kernel\.sched_domain|fs\.aio-nr|kernel\.tainted|vm\.stat_refresh)'

tool() { "$kind_root/tools.sh" kind | sed -n "s/^$1=//p"; }

sysctl_snapshot() {
  sysctl -a 2>/dev/null | grep -E '^(kernel|vm|fs)\.' | grep -Ev "$volatile_sysctls" || true
}

record_sysctls() {
  mkdir -p "$state_dir"
  if [[ -f "$state_dir/sysctl-before" ]]; then
    log "sysctls: keeping the record of an unfinished run ($state_dir/sysctl-before)"
    return 0
  fi
  local name value
  for name in "${restored_sysctls[@]}"; do
    value="$(sysctl -n "$name" 2>/dev/null)" || continue
    printf '%s=%s\n' "$name" "$value"
  done >"$state_dir/sysctl-before.partial"
  sysctl_snapshot >"$state_dir/sysctl-all-before"
  mv "$state_dir/sysctl-before.partial" "$state_dir/sysctl-before"
  log "sysctls recorded: $(tr '\n' ' ' <"$state_dir/sysctl-before")"
}

restore_sysctls() {
  [[ -f "$state_dir/sysctl-before" ]] || return 0
  local line name value now restored=()
  while IFS= read -r line; do
    name="${line%%=*}"
    value="${line#*=}"
    now="$(sysctl -n "$name" 2>/dev/null)" || continue
    if [[ "$now" != "$value" ]]; then
      if as_root sysctl -q -w "$name=$value" >/dev/null; then
        restored+=("$name: $now -> $value")
      else
        log "warning: could not restore $name=$value (now $now)"
      fi
    fi
  done <"$state_dir/sysctl-before"
  # Then every other writable kernel/vm/fs sysctl that changed (systemd in the nodes sets
  # fs.file-max and fs.protected_*, for instance).
  if [[ -f "$state_dir/sysctl-all-before" ]]; then
    local key
    while IFS= read -r line; do
      key="${line%% = *}"
      value="${line#* = }"
      now="$(sysctl -n "$key" 2>/dev/null)" || continue
      [[ "$now" == "$value" ]] && continue
      if as_root sysctl -q -w "$key=$value" >/dev/null 2>&1; then
        restored+=("$key: $now -> $value")
      else
        log "warning: could not restore $key=$value (now $now)"
      fi
    done < <(diff <(cat "$state_dir/sysctl-all-before") <(sysctl_snapshot) | sed -n 's/^< //p')
  fi
  if [[ ${#restored[@]} -gt 0 ]]; then
    log "sysctls restored: $(printf '%s; ' "${restored[@]}")"
  else
    log "sysctls: nothing to restore"
  fi
  rm -f "$state_dir/sysctl-before" "$state_dir/sysctl-all-before"
}

cluster_exists() {
  local kind_bin="$1"
  "$kind_bin" get clusters 2>/dev/null | grep -qxF "$KIND_CLUSTER_NAME"
}

delete_cluster() {
  local kind_bin
  kind_bin="$(tool kind)"
  # A node left paused by a failed test (tests/kind/test_failover.py unpauses in its cleanup too).
  local paused
  paused="$(docker ps -q --filter "label=io.x-k8s.kind.cluster=$KIND_CLUSTER_NAME" --filter status=paused 2>/dev/null || true)"
  if [[ -n "$paused" ]]; then
    # shellcheck disable=SC2086 # one id per word
    docker unpause $paused >/dev/null
    log "unpaused node containers: $(echo "$paused" | tr '\n' ' ')"
  fi
  if cluster_exists "$kind_bin"; then
    local started
    started="$(now_ms)"
    "$kind_bin" delete cluster --name "$KIND_CLUSTER_NAME" >&2
    log "cluster $KIND_CLUSTER_NAME deleted in $(fmt_ms $(($(now_ms) - started)))"
  fi
  # Node containers kind could not remove (a failed create): by kind's cluster label.
  local leftovers
  leftovers="$(docker ps -aq --filter "label=io.x-k8s.kind.cluster=$KIND_CLUSTER_NAME" 2>/dev/null || true)"
  if [[ -n "$leftovers" ]]; then
    # shellcheck disable=SC2086 # one id per word
    docker rm -f $leftovers >/dev/null
    log "removed leftover node containers: $(echo "$leftovers" | tr '\n' ' ')"
  fi
  if [[ -f "$state_dir/network-created" ]]; then
    local network
    network="$(cat "$state_dir/network-created")"
    if docker network inspect "$network" >/dev/null 2>&1; then
      if [[ -z "$(docker network inspect --format '{{range .Containers}}{{.Name}} {{end}}' "$network")" ]]; then
        docker network rm "$network" >/dev/null
        log "docker network $network removed"
      else
        log "docker network $network still has containers: left in place"
      fi
    fi
    rm -f "$state_dir/network-created"
  fi
  restore_sysctls
  rm -f "$kubeconfig"
}

create_cluster() {
  local node_image="${1:-}"
  local kind_bin kubectl_bin
  kind_bin="$(tool kind)"
  kubectl_bin="$("$(venv_python)" -c 'from pageserver_operator.devenv import binaries; print(binaries.ensure(binaries.KUBECTL))')"
  if cluster_exists "$kind_bin"; then
    log "a cluster $KIND_CLUSTER_NAME exists (left by an earlier run): deleting it first"
    delete_cluster
  fi
  mkdir -p "$state_dir"
  # kind's docker network: note it if we create it, so that delete removes it.
  local network="${KIND_EXPERIMENTAL_DOCKER_NETWORK:-kind}"
  if ! docker network inspect "$network" >/dev/null 2>&1; then
    echo "$network" >"$state_dir/network-created"
  fi
  record_sysctls
  trap 'log "create failed: cleaning up"; delete_cluster' ERR

  cat >"$state_dir/config.yaml" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
$(for _ in $(seq "$workers"); do echo "  - role: worker"; done)
EOF
  local args=(create cluster --name "$KIND_CLUSTER_NAME" --config "$state_dir/config.yaml"
    --kubeconfig "$kubeconfig" --wait 0s --retain=false)
  if [[ -n "$node_image" ]]; then
    # Offline: our node image, and the docker wrapper (no --privileged) first on PATH for kind.
    args+=(--image "$node_image")
    export KIND_NODE_IMAGE="$node_image"
    export PATH="$kind_root/docker-wrapper:$PATH"
  fi
  local started
  started="$(now_ms)"
  "$kind_bin" "${args[@]}" >&2
  log "kind create cluster: $(fmt_ms $(($(now_ms) - started)))"
  # Ready means: every node Ready (CNI config written), DNS and the default StorageClass served.
  "$kubectl_bin" --kubeconfig "$kubeconfig" wait --for=condition=Ready nodes --all --timeout=240s >&2
  "$kubectl_bin" --kubeconfig "$kubeconfig" -n kube-system rollout status deployment/coredns --timeout=180s >&2
  "$kubectl_bin" --kubeconfig "$kubeconfig" -n local-path-storage rollout status \
    deployment/local-path-provisioner --timeout=180s >&2
  trap - ERR
  log "cluster $KIND_CLUSTER_NAME ready in $(fmt_ms $(($(now_ms) - started))); KUBECONFIG=$kubeconfig"
  echo "$kubeconfig"
}

case "${1:-}" in
create) create_cluster "${2:-}" ;;
delete) delete_cluster ;;
kubeconfig) echo "$kubeconfig" ;;
*) die "usage: $0 create [NODE_IMAGE] | delete | kubeconfig" ;;
esac
