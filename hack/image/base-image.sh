#!/usr/bin/env bash
# Make the local Python base image, since no container registry is reachable here:
#   debootstrap --variant=minbase $SUITE + Debian's python3 and python3-venv (bookworm: 3.11)
#   + ca-certificates, trimmed of docs/man pages/apt lists, then `docker import`.
# Cached: does nothing when the image already exists (delete it to rebuild).
# Usage: hack/image/base-image.sh [IMAGE]   (default pageserver-operator-base:bookworm-py311)
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian), SUITE (default bookworm).
set -euo pipefail

image="${1:-${BASE_IMAGE:-pageserver-operator-base:bookworm-py311}}"
suite="${SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image: $image exists (cached)"
  exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then as_root=(sudo); fi
if ! command -v debootstrap >/dev/null; then
  echo "base image: installing debootstrap"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

started="$(date +%s)"
rootfs="$(mktemp -d "${TMPDIR:-/tmp}/pageserver-operator-rootfs.XXXXXX")"
cleanup() { "${as_root[@]}" rm -rf --one-file-system "$rootfs"; }
trap cleanup EXIT

echo "base image: debootstrap --variant=minbase $suite (python3, python3-venv) from $mirror"
"${as_root[@]}" debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  echo "base image: debootstrap failed; last lines of its log:" >&2
  tail -n 30 "$rootfs.log" >&2
  rm -f "$rootfs.log"
  exit 1
}
rm -f "$rootfs.log"

# What an image does not need: package lists and caches, docs, man pages, translations.
"${as_root[@]}" rm -rf --one-file-system \
  "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/locale/* "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
  "$rootfs"/dev/* "$rootfs"/proc/* "$rootfs"/sys/*
"${as_root[@]}" chroot "$rootfs" python3 -c 'import sys, venv, ensurepip; assert sys.version_info[:2] == (3, 11), sys.version'

version="$("${as_root[@]}" chroot "$rootfs" python3 -c 'import platform; print(platform.python_version())')"
"${as_root[@]}" tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase $suite + python3 $version" \
  - "$image" >/dev/null
echo "base image: $image (python $version) made in $(($(date +%s) - started)) s," \
  "$(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
