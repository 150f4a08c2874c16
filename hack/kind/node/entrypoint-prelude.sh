
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

