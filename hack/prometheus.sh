#!/usr/bin/env bash
# Print the directory holding `prometheus` and `promtool` (Debian's `prometheus` package),
# installing them first if needed:
#   `apt-get download prometheus` (the .deb kept in ${PAGESERVER_OPERATOR_CACHE:-~/.cache/pageserver-operator}/debs),
#   then its two binaries extracted with `dpkg-deb -x` into <cache>/bin/prometheus/.
# Extracted rather than `apt-get install`ed: the package's postinst would create a system user and
# its init script may start Prometheus as a service; the tests start their own on 127.0.0.1 with
# a temporary config and data directory, and need only the two static binaries (no web assets,
# none of the package's JavaScript dependencies).
# A warm cache (both binaries run) costs nothing and asks no mirror.
# Usage: hack/prometheus.sh     -> prints the directory (progress goes to stderr)
set -euo pipefail

cache_root="${PAGESERVER_OPERATOR_CACHE:-$HOME/.cache/pageserver-operator}"
bin_dir="$cache_root/bin/prometheus"
deb_dir="$cache_root/debs"

usable() {
  [[ -x "$bin_dir/promtool" && -x "$bin_dir/prometheus" ]] &&
    "$bin_dir/promtool" --version >/dev/null 2>&1 && "$bin_dir/prometheus" --version >/dev/null 2>&1
}

if ! usable; then
  for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null; then
      echo "hack/prometheus.sh: $tool is needed to fetch Debian's prometheus package" >&2
      exit 1
    fi
  done
  mkdir -p "$deb_dir"
  work="$(mktemp -d "${TMPDIR:-/tmp}/pageserver-operator-prometheus.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  deb="$(ls -t "$deb_dir"/prometheus_*.deb 2>/dev/null | head -n 1 || true)"
  if [[ -z "$deb" ]]; then
    # apt-get download writes into the current directory; as root it warns that the _apt user
    # cannot write there (harmless).
    if ! (cd "$work" && apt-get download prometheus >&2); then
      echo "hack/prometheus.sh: no prometheus in the package lists; running apt-get update" >&2
      sudo_cmd=()
      if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
      "${sudo_cmd[@]}" apt-get update -qq >&2
      (cd "$work" && apt-get download prometheus >&2)
    fi
    mv "$work"/prometheus_*.deb "$deb_dir"/
    deb="$(ls -t "$deb_dir"/prometheus_*.deb | head -n 1)"
  fi
  dpkg-deb -x "$deb" "$work/root"
  mkdir -p "$bin_dir"
  install -m 0755 "$work/root/usr/bin/prometheus" "$work/root/usr/bin/promtool" "$bin_dir"/
  if ! usable; then
    echo "hack/prometheus.sh: the binaries extracted from $deb do not run" >&2
    exit 1
  fi
  echo "hack/prometheus.sh: $("$bin_dir/promtool" --version 2>&1 | head -n 1) from $(basename "$deb") in $bin_dir" >&2
fi

echo "$bin_dir"
