
# --- pageserver-operator (hack/kind): nodes run without --privileged on machines where it cannot
# work (see hack/kind/docker-wrapper/docker). Docker then mounts the cgroup v1 hierarchies (and
# the tmpfs holding them) read-only; make them writable before kind's own fixes. A plain
# `remount,rw` fails with "busy": remount the bind mount instead.
remount_cgroups_rw() {
  local mountpoint
  for mountpoint in /sys/fs/cgroup $(findmnt -lun -o target -t cgroup,cgroup2); do
    if findmnt -lun -o options --mountpoint "$mountpoint" | grep -qE '(^|,)ro(,|$)'; then
      mount -o remount,bind,rw "$mountpoint" || log_warn "could not remount $mountpoint read-write"
    fi
  done
}

# --- pageserver-operator (hack/kind): until kube-proxy translates a Service IP, a packet to it
# would follow the node's default route out of this machine. Reject what is still addressed to
# the service range after NAT (kube-proxy's DNAT happens before the filter table sees it).
reject_untranslated_service_traffic() {
  local chain
  for chain in OUTPUT FORWARD; do
    iptables -I "$chain" -d 10.96.0.0/12 -j REJECT --reject-with icmp-net-unreachable ||
      log_warn "could not add the service-range REJECT rule to $chain"
  done
}

