#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian machine of the project's kind
# (Go >= 1.24 and Python >= 3.11 preinstalled):
#   1. apt packages, only those missing (openssl: ServiceAccount signing keys);
#   2. the virtualenv .venv with `pip install -c constraints.txt -e '.[dev,bench]'`: the versions
#      pinned in constraints.txt (hack/lock.sh refreshes it), the build backend included;
#   3. the Go-built binaries (etcd, kube-apiserver, kubectl if none), cached in
#      ${PAGESERVER_OPERATOR_CACHE:-~/.cache/pageserver-operator} -- a warm run does not rebuild;
#   4. helm (hack/helm.sh, go install, cached): installed here rather than in the middle of the
#      chart tests, where a cold build took 104 s of the suite's time;
#   5. prometheus and promtool (hack/prometheus.sh: Debian's `prometheus` package, its .deb and
#      binaries cached; never started as a service): the alert rule and dashboard tests use them.
# Idempotent: re-running skips what is already there. Prints how long each step took.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

now_ms() { date +%s%3N; }
step_started=0
begin() {
  step_started="$(now_ms)"
  echo "==> install: $*"
}
end() {
  local elapsed_ms=$(($(now_ms) - step_started))
  printf '<== install: %s done in %d.%03d s\n' "$1" $((elapsed_ms / 1000)) $((elapsed_ms % 1000))
}

# --- 1. apt packages ----------------------------------------------------------------
begin "apt packages"
apt_packages=(openssl ca-certificates)
missing=()
for package in "${apt_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if ! command -v apt-get >/dev/null; then
    echo "error: missing packages ${missing[*]} and no apt-get to install them" >&2
    exit 1
  fi
  sudo_cmd=()
  if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
  echo "installing: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
  echo "already installed: ${apt_packages[*]}"
fi
end "apt packages"

# --- 2. toolchains that must already be there ------------------------------------------
begin "toolchain check"
python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "error: $python_bin is missing or older than 3.11 (set PYTHON=/path/to/python3.11+)" >&2
  exit 1
fi
go_bin="$(command -v go || true)"
if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then go_bin=/usr/local/go/bin/go; fi
if [[ -z "$go_bin" ]]; then
  echo "error: Go is not installed; Go >= 1.24 is needed to build etcd and kube-apiserver" \
    "(Debian's golang-go is too old; install from https://go.dev/dl/)" >&2
  exit 1
fi
echo "python: $("$python_bin" --version 2>&1) ($python_bin); go: $("$go_bin" version)"
end "toolchain check"

# --- 3. virtualenv ----------------------------------------------------------------------
begin "virtualenv .venv"
if [[ ! -x .venv/bin/python ]]; then
  "$python_bin" -m venv .venv
fi
# pip is quiet for minutes on a fresh machine: say every 10 s what it is doing and what is left.
# The estimate is the last fresh install's duration and package count (recorded below), else the
# figures of a fresh install on a 2-core machine.
cache_dir="${PAGESERVER_OPERATOR_CACHE:-$HOME/.cache/pageserver-operator}"
record="$cache_dir/install-venv.last"
expected_seconds=130
expected_packages=107
if [[ -r "$record" ]]; then read -r expected_seconds expected_packages <"$record" || true; fi
pip_log="$(mktemp "${TMPDIR:-/tmp}/pageserver-operator-pip.XXXXXX")"
pip_started="$(date +%s)"
# The constraints reach pip's isolated build environment (the build backend) only through
# PIP_CONSTRAINT; -c covers the install itself.
PIP_CONSTRAINT="$repo_root/constraints.txt" .venv/bin/python -m pip install --progress-bar off \
  -c "$repo_root/constraints.txt" -e '.[dev,bench]' >"$pip_log" 2>&1 &
pip_pid=$!
while ! timeout 10 tail --pid="$pip_pid" -f /dev/null; do
  elapsed=$(($(date +%s) - pip_started))
  collected="$(grep -c '^Collecting ' "$pip_log" || true)"
  if grep -q '^Installing collected packages' "$pip_log"; then
    doing="installing $collected packages"
  else
    doing="resolving and downloading packages ($collected of about $expected_packages)"
  fi
  if ((elapsed < expected_seconds)); then
    left="about $((expected_seconds - elapsed)) s left"
  else
    left="longer than the $expected_seconds s expected"
  fi
  echo "    virtualenv: $doing, ${elapsed} s so far, $left"
done
if ! wait "$pip_pid"; then
  tail -n 30 "$pip_log" >&2
  echo "error: pip install failed; full log: $pip_log" >&2
  exit 1
fi
collected="$(grep -c '^Collecting ' "$pip_log" || true)"
if ((collected > 50)); then # a fresh install: the estimate of the next one
  mkdir -p "$cache_dir"
  echo "$(($(date +%s) - pip_started)) $collected" >"$record"
fi
rm -f "$pip_log"
end "virtualenv .venv"

# --- 4. Go-built binaries -----------------------------------------------------------------
begin "Go-built binaries"
PATH="$(dirname "$go_bin"):$PATH" .venv/bin/python -m pageserver_operator.devenv binaries
end "Go-built binaries"

# --- 5. helm (the chart tests use it) -------------------------------------------------------
begin "helm"
PATH="$(dirname "$go_bin"):$PATH" hack/helm.sh
end "helm"

# --- 6. prometheus + promtool (the observability tests use them) ------------------------------
begin "prometheus"
hack/prometheus.sh
end "prometheus"
