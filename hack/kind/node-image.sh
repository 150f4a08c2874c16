#!/usr/bin/env bash
# Assemble kind's node image here, with no registry (offline mode), and print its reference.
#
# `kind build node-image` cannot work offline: it always pulls its base image, checks containerd
# with a `ctr` subcommand that containerd 1.6 lacks, and fetches the component images. So this
# does what it does, by hand, from pieces built on this machine:
#   1. node OS: debootstrap --variant=minbase + systemd, Debian's containerd/runc/CNI plugins,
#      iptables & co., and kind's base files (entrypoint, containerd config, kubelet units) from
#      the kind module of $KIND_VERSION, adapted to run without --privileged: the entrypoint
#      remounts the cgroup hierarchies read-write, containerd does not lower OOM scores;
#   2. component images, under the references kubeadm $KUBERNETES_VERSION and kind's default
#      manifests name: kube-apiserver, -controller-manager, -scheduler, -proxy, etcd, coredns,
#      pause, kindnetd (hack/kind/cnid), local-path-provisioner and its helper;
#   3. the node: the node OS with kubeadm/kubelet/kubectl/crictl, /kind/version, kind's default
#      CNI and storage manifests, and every component image imported (pinned) into its containerd.
# Each image is tagged with a hash of its inputs: a second run finds it and does nothing.
# Heavy steps (Go builds, debootstrap, docker builds) run under the machine-wide heavy lock.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

wrapper="$kind_root/docker-wrapper/docker"
node_inputs=("$kind_root/node" "$kind_root/node-image.sh" "$kind_root/kind_consts.py" "$kind_root/cnid"
  "$kind_root/pause")
node_key="$(inputs_hash "${node_inputs[@]}")"
node_image="pageserver-operator/kind-node:$KUBERNETES_VERSION-$node_key"

if image_exists "$node_image"; then
  log "node image $node_image exists (cached)"
  echo "$node_image"
  exit 0
fi

work="$(mktemp -d "$kind_cache/node-build.XXXXXX")"
builder="pso-kind-node-build-$$"
cleanup() {
  docker rm -f "$builder" >/dev/null 2>&1 || true
  as_root rm -rf --one-file-system "$work"
}
trap cleanup EXIT

step_started=0
step() {
  step_started="$(now_ms)"
  log "node image: $*"
}
step_done() { log "node image: $1 done in $(fmt_ms $(($(now_ms) - step_started)))"; }

# --- 0. binaries -------------------------------------------------------------------------------
step "binaries (Go builds when cold)"
declare -A bin
while IFS='=' read -r name path; do
  [[ -n "$name" ]] && bin[$name]="$path"
done < <("$kind_root/tools.sh" node)
for name in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm kubectl etcd \
  crictl coredns local-path-provisioner cnid pause; do
  [[ -x "${bin[$name]:-}" ]] || die "no $name binary from hack/kind/tools.sh node"
done
kind_src="$(kind_module_dir)"
[[ -f "$kind_src/images/base/files/usr/local/bin/entrypoint" ]] || die "kind module source not found ($kind_src)"
step_done binaries

# --- 1. node OS --------------------------------------------------------------------------------
os_packages=(systemd dbus containerd runc containernetworking-plugins iptables nftables conntrack
  iproute2 ethtool kmod libseccomp2 pigz socat jq procps ca-certificates util-linux mount bash findutils)
build_node_os() {
  local rootfs="$work/rootfs" files="$kind_src/images/base/files"
  apt_ensure debootstrap
  as_root mkdir -p "$rootfs"
  log "debootstrap --variant=minbase $DEBIAN_SUITE + ${#os_packages[@]} packages from $DEBIAN_MIRROR"
  local include
  include="$(
    IFS=,
    echo "${os_packages[*]}"
  )"
  if ! heavy as_root debootstrap --variant=minbase --include="$include" "$DEBIAN_SUITE" "$rootfs" \
    "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed (log above)"
  fi
  # kind's base files, as its base image Dockerfile copies them.
  as_root install -m 0755 "$files/usr/local/bin/entrypoint" "$files/usr/local/bin/clean-install" "$rootfs/usr/local/bin/"
  as_root mkdir -p "$rootfs/kind/bin" "$rootfs/etc/containerd" "$rootfs/etc/systemd/system/kubelet.service.d"
  as_root install -m 0755 "$files"/kind/bin/* "$rootfs/kind/bin/"
  as_root install -m 0644 "$files/etc/crictl.yaml" "$rootfs/etc/"
  as_root install -m 0644 "$files/etc/containerd/config.toml" "$rootfs/etc/containerd/"
  as_root install -m 0644 "$files"/etc/default/* "$rootfs/etc/default/"
  as_root install -m 0644 "$files"/etc/sysctl.d/* "$rootfs/etc/sysctl.d/"
  as_root install -m 0644 "$files"/etc/systemd/system/*.service "$files"/etc/systemd/system/*.slice \
    "$rootfs/etc/systemd/system/"
  as_root install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$rootfs/etc/systemd/system/kubelet.service.d/"
  # Adaptations: no --privileged (cgroups mounted read-only; OOM scores cannot be lowered);
  # Debian's containerd lives in /usr/bin; Debian's CNI plugins in /usr/lib/cni.
  local entrypoint="$rootfs/usr/local/bin/entrypoint"
  as_root awk -v prelude="$(cat "$kind_root/node/entrypoint-prelude.sh")" \
    '/^# validate state$/ { print prelude } /^fix_mount$/ { print "remount_cgroups_rw" } { print }
     /^select_iptables$/ { print "reject_untranslated_service_traffic" }' \
    "$entrypoint" | as_root tee "$entrypoint.new" >/dev/null
  as_root mv "$entrypoint.new" "$entrypoint"
  as_root chmod 0755 "$entrypoint"
  if ! grep -q '^remount_cgroups_rw$' "$entrypoint" || ! grep -q '^remount_cgroups_rw() {$' "$entrypoint" ||
    ! grep -q '^reject_untranslated_service_traffic$' "$entrypoint"; then
    die "could not patch kind's entrypoint (its layout changed?)"
  fi
  as_root sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$rootfs/etc/containerd/config.toml"
  grep -q 'restrict_oom_score_adj = true' "$rootfs/etc/containerd/config.toml" || die "could not patch config.toml"
  as_root sed -i 's#^ExecStart=/usr/local/bin/containerd$#ExecStart=/usr/bin/containerd#' \
    "$rootfs/etc/systemd/system/containerd.service"
  as_root mkdir -p "$rootfs/opt/cni"
  as_root ln -sfn /usr/lib/cni "$rootfs/opt/cni/bin"
  as_root chroot "$rootfs" sh -euc '
    ctr oci spec \
      | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" \
      | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    echo ReadKMsg=no >> /etc/systemd/journald.conf
    ln -sf /lib/systemd/systemd /sbin/init
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
    systemctl mask systemd-binfmt.service >/dev/null 2>&1
    mkdir -p /etc/kubernetes/manifests
    rm -f /etc/machine-id /var/lib/dbus/machine-id
    touch /etc/machine-id
  '
  as_root rm -rf --one-file-system "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/dev/* "$rootfs"/proc/* "$rootfs"/sys/*
  as_root tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV container=docker' \
    --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
    --message "kind node OS: debootstrap $DEBIAN_SUITE + kind $KIND_VERSION base files" - "$os_image" >/dev/null
  as_root rm -rf --one-file-system "$rootfs"
}

# Keyed by the recipe itself (this function's text), the packages and kind's version.
os_key="$(printf '%s\n' "${os_packages[@]}" "$DEBIAN_SUITE" "$KIND_VERSION" "$(declare -f build_node_os)" \
  "$(inputs_hash "$kind_root/node")" | sha256sum | cut -c1-12)"
os_image="pageserver-operator/kind-node-os:$DEBIAN_SUITE-$os_key"
step "node OS image $os_image"
if image_exists "$os_image"; then
  log "node OS image exists (cached)"
else
  build_node_os
fi
step_done "node OS"

# --- 2. component images -----------------------------------------------------------------------
# scratch_image REF ENTRYPOINT_JSON BINARY:DEST... : a static binary on an empty root file system
# (plus /tmp, /etc/passwd, /etc/group).
scratch_image() {
  local ref="$1" entrypoint="$2"
  shift 2
  local root="$work/scratch"
  rm -rf "$root"
  mkdir -p "$root/etc" "$root/tmp" "$root/usr/local/bin"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  local pair
  for pair in "$@"; do
    install -D -m 0755 "${pair%%:*}" "$root/${pair#*:}"
  done
  tar --numeric-owner --owner=0 --group=0 -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change "ENTRYPOINT $entrypoint" \
    --message "hack/kind: $ref" - "$ref" >/dev/null
}

# derived_image REF BASE ENTRYPOINT_JSON BINARY:DEST... [-- RUN_COMMAND]: files on top of BASE.
derived_image() {
  local ref="$1" base="$2" entrypoint="$3"
  shift 3
  local context="$work/context"
  rm -rf "$context"
  mkdir -p "$context/files"
  local run=""
  while [[ $# -gt 0 ]]; do
    if [[ "$1" == "--" ]]; then
      run="$2"
      break
    fi
    install -D -m 0755 "${1%%:*}" "$context/files/${1#*:}"
    shift
  done
  {
    echo "FROM $base"
    echo "COPY files/ /"
    [[ -n "$run" ]] && echo "RUN $run"
    [[ -n "$entrypoint" ]] && echo "ENTRYPOINT $entrypoint"
    echo "CMD []"
  } >"$context/Dockerfile"
  # The classic builder: it uses the local base image as it is and never asks a registry.
  DOCKER_BUILDKIT=0 heavy docker build -q -t "$ref" "$context" >/dev/null 2>"$work/build.log" || {
    cat "$work/build.log" >&2
    die "docker build of $ref failed"
  }
}

kindnetd_ref="$(python3 "$kind_root/kind_consts.py" "$kind_src" kindnetdImage)"
provisioner_ref="$(python3 "$kind_root/kind_consts.py" "$kind_src" storageProvisionerImage)"
helper_ref="$(python3 "$kind_root/kind_consts.py" "$kind_src" storageHelperImage)"
k8s="registry.k8s.io"
component_refs=()

step "component images"
for name in kube-apiserver kube-controller-manager kube-scheduler; do
  scratch_image "$k8s/$name:$KUBERNETES_VERSION" "[\"/usr/local/bin/$name\"]" "${bin[$name]}:usr/local/bin/$name"
  component_refs+=("$k8s/$name:$KUBERNETES_VERSION")
done
scratch_image "$k8s/etcd:$ETCD_IMAGE_TAG" '["/usr/local/bin/etcd"]' "${bin[etcd]}:usr/local/bin/etcd"
scratch_image "$k8s/coredns/coredns:$COREDNS_VERSION" '["/coredns"]' "${bin[coredns]}:coredns"
scratch_image "$provisioner_ref" '["/usr/local/bin/local-path-provisioner"]' \
  "${bin[local-path-provisioner]}:usr/local/bin/local-path-provisioner"
component_refs+=("$k8s/etcd:$ETCD_IMAGE_TAG" "$k8s/coredns/coredns:$COREDNS_VERSION" "$provisioner_ref")
for tag in "${PAUSE_TAGS[@]}"; do
  scratch_image "$k8s/pause:$tag" '["/pause"]' "${bin[pause]}:pause"
  component_refs+=("$k8s/pause:$tag")
done
# shellcheck disable=SC2016 # $n is expanded by the image's shell
derived_image "$k8s/kube-proxy:$KUBERNETES_VERSION" "$os_image" '["/usr/local/bin/kube-proxy"]' \
  "${bin[kube-proxy]}:usr/local/bin/kube-proxy" "$kind_root/node/iptables-wrapper:usr/sbin/iptables-wrapper" -- \
  'for n in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do ln -sf /usr/sbin/iptables-wrapper /usr/sbin/$n; done'
derived_image "$kindnetd_ref" "$os_image" '["/usr/local/bin/cnid"]' "${bin[cnid]}:usr/local/bin/cnid"
derived_image "$helper_ref" "$os_image" "" # sh, mkdir, rm
component_refs+=("$k8s/kube-proxy:$KUBERNETES_VERSION" "$kindnetd_ref" "$helper_ref")
step_done "component images (${#component_refs[@]})"

# --- 3. the node image -------------------------------------------------------------------------
step "assemble $node_image"
# Run the node OS idle (the docker wrapper turns --privileged into what works here).
"$wrapper" run -d --name "$builder" --privileged --entrypoint sleep "$os_image" infinity >/dev/null
for name in kubeadm kubelet kubectl; do
  docker cp "${bin[$name]}" "$builder:/usr/bin/$name"
done
docker cp "${bin[crictl]}" "$builder:/usr/local/bin/crictl"
mkdir -p "$work/kind/manifests"
echo "$KUBERNETES_VERSION" >"$work/kind/version"
python3 "$kind_root/kind_consts.py" "$kind_src" defaultCNIManifest >"$work/kind/manifests/default-cni.yaml"
python3 "$kind_root/kind_consts.py" "$kind_src" defaultStorageManifest >"$work/kind/manifests/default-storage.yaml"
docker cp "$work/kind/." "$builder:/kind/"
docker exec -d "$builder" sh -c 'exec containerd >/tmp/containerd.log 2>&1'
for _ in $(seq 1 240); do
  docker exec "$builder" ctr version >/dev/null 2>&1 && break
  sleep 0.5
done
if ! docker exec "$builder" ctr version >/dev/null; then
  docker exec "$builder" tail -n 30 /tmp/containerd.log >&2 || true
  die "containerd did not start in the build container"
fi
docker save "${component_refs[@]}" |
  heavy docker exec -i "$builder" ctr -n k8s.io images import --all-platforms --no-unpack --digests - >/dev/null
missing=()
imported="$(docker exec "$builder" ctr -n k8s.io images ls -q)"
for ref in "${component_refs[@]}"; do
  [[ "$ref" == */*/* || "$ref" == registry.k8s.io/* ]] || ref="docker.io/$ref"
  grep -qxF "$ref" <<<"$imported" || missing+=("$ref")
done
[[ ${#missing[@]} -eq 0 ]] || die "not imported into the node's containerd: ${missing[*]}"
# Pinned: the kubelet's image garbage collection must never remove what cannot be pulled again.
docker exec "$builder" sh -euc '
  ctr -n k8s.io images ls -q | while read -r ref; do
    ctr -n k8s.io images label "$ref" io.cri-containerd.pinned=pinned >/dev/null
  done
  kill "$(pidof containerd)"
  while pidof containerd >/dev/null; do sleep 0.2; done
  rm -rf /var/lib/containerd/tmpmounts /run/containerd /tmp/containerd.log'
docker commit \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
  --change 'ENV container=docker' \
  --message "kind node $KUBERNETES_VERSION assembled offline by hack/kind/node-image.sh" \
  "$builder" "$node_image" >/dev/null
step_done "node image"

# Older node images of this script (other input hashes) are dead weight.
docker image ls --format '{{.Repository}}:{{.Tag}}' pageserver-operator/kind-node | grep -vxF "$node_image" |
  xargs -r docker rmi >/dev/null 2>&1 || true
log "node image $node_image: $(docker image inspect --format '{{.Size}}' "$node_image" | awk '{printf "%.0f MB", $1 / 1e6}')"
echo "$node_image"
