# shellcheck shell=bash
# Shared by the hack/kind/ scripts (sourced, never run): versions, cache paths, logging, timing,
# the machine-wide lock for heavy steps, and the choice between the offline and the stock mode.
#
# Everything built here is cached outside the repository, under
# ${PAGESERVER_OPERATOR_CACHE:-~/.cache/pageserver-operator}, keyed by version (binaries) or by a
# hash of the inputs (images), so that a second run skips it.

KIND_VERSION="${KIND_VERSION:-v0.30.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
KUBERNETES_VERSION="v1.34.2" # = devenv.components.KUBERNETES_VERSION (checked by lib_check_versions)
# What kubeadm v1.34.2 asks for (`kubeadm config images list`), and what kind v0.30.0's default
# manifests name; the node image must hold an image under each of these references.
ETCD_IMAGE_TAG="3.6.5-0"
COREDNS_VERSION="v1.12.1"
PAUSE_TAGS=("3.10.1" "3.10")
CRICTL_VERSION="v1.34.0"
LOCAL_PATH_PROVISIONER_VERSION="v0.0.30"
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-pageserver-operator-e2e}"

kind_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$kind_root/../.." && pwd)"
cache_root="${PAGESERVER_OPERATOR_CACHE:-$HOME/.cache/pageserver-operator}"
kind_cache="$cache_root/kind"
bin_cache="$cache_root/bin"
# Machine-wide, whatever the cache root: every heavy step of every process on this machine.
heavy_lock="${PAGESERVER_OPERATOR_HEAVY_LOCK:-$HOME/.cache/pageserver-operator/heavy.lock}"
mkdir -p "$kind_cache" "$bin_cache"

now_ms() { date +%s%3N; }

# log MESSAGE... -> "[kind] MESSAGE" on stderr (stdout is kept for values that callers capture).
log() { echo "[kind] $*" >&2; }
die() {
  echo "[kind] error: $*" >&2
  exit 1
}

# fmt_ms MILLISECONDS -> "12.345 s"
fmt_ms() { printf '%d.%03d s' $(($1 / 1000)) $(($1 % 1000)); }

# heavy CMD... : run a CPU-heavy step (Go build, docker build, debootstrap) under the machine-wide
# lock, so that it never runs at the same time as another heavy step of another process.
# CMD may be a shell function.
heavy() {
  mkdir -p "$(dirname "$heavy_lock")"
  (
    flock 9
    "$@"
  ) 9>"$heavy_lock"
}

# find_go -> path of the go binary (PATH, then /usr/local/go/bin).
find_go() {
  local go_bin
  go_bin="$(command -v go || true)"
  if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then go_bin=/usr/local/go/bin/go; fi
  [[ -n "$go_bin" ]] || die "Go (>= 1.24) is needed to build kind, helm and the node components"
  echo "$go_bin"
}

# venv_python -> the project's virtualenv python (hack/install.sh makes it).
venv_python() {
  [[ -x "$repo_root/.venv/bin/python" ]] || die "no virtualenv at $repo_root/.venv; run hack/install.sh first"
  echo "$repo_root/.venv/bin/python"
}

# as_root CMD... : run as root (sudo when not root).
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# apt_ensure PACKAGE... : install the Debian packages that are missing (one apt-get update).
apt_ensure() {
  local missing=() package
  for package in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$package")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# inputs_hash FILE_OR_DIR... -> a short hash of the named files' paths and contents plus the
# versions above: the cache key of an image built from them.
inputs_hash() {
  {
    echo "$KUBERNETES_VERSION $KIND_VERSION $ETCD_IMAGE_TAG $COREDNS_VERSION ${PAUSE_TAGS[*]}"
    echo "$CRICTL_VERSION $LOCAL_PATH_PROVISIONER_VERSION $DEBIAN_SUITE"
    local path
    for path in "$@"; do
      if [[ -d "$path" ]]; then
        find "$path" -type f -not -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
      else
        sha256sum "$path"
      fi
    done | sed "s#$repo_root/##"
  } | sha256sum | cut -c1-12
}

# image_exists REF -> 0 if the local Docker engine has the image (never pulls).
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# ---- mode: offline (node image assembled here, docker wrapper) or stock (kind's node image) ----

# capabilities_complete -> 0 if this process's capability bounding set has every capability the
# kernel knows: then `docker run --privileged` (which asks for all of them) can work.
capabilities_complete() {
  local last bound full
  last="$(cat /proc/sys/kernel/cap_last_cap 2>/dev/null)" || return 1
  bound="$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
  full="$(printf '%x' $(((1 << (last + 1)) - 1)))"
  [[ "$((16#$bound))" -eq "$((16#$full))" ]]
}

# kind_mode -> "offline" or "stock". KIND_E2E_MODE=offline|stock forces it; "auto" (default)
# chooses offline unless `--privileged` can work here and kind's node image can be pulled.
# On a machine where privileged containers cannot work, nothing ever contacts a registry.
kind_mode() {
  local mode="${KIND_E2E_MODE:-auto}"
  case "$mode" in
  offline | stock)
    echo "$mode"
    return 0
    ;;
  auto) ;;
  *) die "KIND_E2E_MODE must be auto, offline or stock (got '$mode')" ;;
  esac
  if ! capabilities_complete; then
    echo offline # --privileged cannot work here: no registry is ever asked
    return 0
  fi
  if [[ -f "$kind_cache/mode" ]]; then
    cat "$kind_cache/mode"
    return 0
  fi
  local chosen=offline
  if docker info >/dev/null 2>&1 && timeout 300 docker pull -q "$(stock_node_image)" >/dev/null 2>&1; then
    chosen=stock
  fi
  echo "$chosen" >"$kind_cache/mode"
  echo "$chosen"
}

# stock_node_image -> the node image kind $KIND_VERSION uses by default (from its own source).
stock_node_image() {
  local kind_src
  kind_src="$(kind_module_dir)"
  sed -n 's/^const Image = "\(.*\)"$/\1/p' "$kind_src/pkg/apis/config/defaults/image.go"
}

# kind_module_dir -> the kind module's source (go mod download: the Go module proxy).
kind_module_dir() {
  local go_bin probe
  go_bin="$(find_go)"
  probe="$kind_cache/modprobe"
  mkdir -p "$probe"
  [[ -f "$probe/go.mod" ]] || printf 'module probe\n\ngo 1.24\n' >"$probe/go.mod"
  (cd "$probe" && GOFLAGS=-mod=mod "$go_bin" mod download -json "sigs.k8s.io/kind@$KIND_VERSION") |
    sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

# ensure_dockerd: a Docker engine that answers `docker info`. hack/image/dockerd.sh does it where
# present (it installs Debian's docker.io and starts dockerd by hand: no systemd here); this
# fallback does the same.
ensure_dockerd() {
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    log "docker engine: running ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    return 0
  fi
  if [[ -x "$repo_root/hack/image/dockerd.sh" ]]; then
    "$repo_root/hack/image/dockerd.sh" >&2
    return 0
  fi
  if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then apt_ensure docker.io; fi
  command -v iptables >/dev/null || apt_ensure iptables
  if ! pgrep -x dockerd >/dev/null; then
    log "starting dockerd (log: $cache_root/dockerd.log)"
    as_root setsid dockerd >>"$cache_root/dockerd.log" 2>&1 </dev/null &
    echo $! >"$cache_root/dockerd.pid"
  fi
  local _
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  tail -n 20 "$cache_root/dockerd.log" >&2 || true
  die "dockerd did not answer 'docker info' within 60 s"
}
