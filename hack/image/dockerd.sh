#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`, starting one if needed:
#   1. install Debian's docker.io (dockerd 20.10) and iptables if dockerd is missing;
#   2. start dockerd in the background (its own session, so it outlives this script), logging to
#      ${PAGESERVER_OPERATOR_CACHE:-~/.cache/pageserver-operator}/dockerd.log; there is no
#      systemd on these machines, so nothing else would start it;
#   3. wait (up to $DOCKERD_WAIT seconds, default 60) for `docker info`.
# Prints "dockerd: already running" or "dockerd: started (pid N)". Exit 1 with a reason otherwise.
# `hack/image/dockerd.sh stop` stops a dockerd that this script started (pid file below).
set -euo pipefail

cache_root="${PAGESERVER_OPERATOR_CACHE:-$HOME/.cache/pageserver-operator}"
log_file="$cache_root/dockerd.log"
pid_file="$cache_root/dockerd.pid"
wait_seconds="${DOCKERD_WAIT:-60}"

as_root=()
if [[ $(id -u) -ne 0 ]]; then as_root=(sudo); fi

docker_ok() { docker info >/dev/null 2>&1; }

if [[ "${1:-}" == "stop" ]]; then
  if [[ -f "$pid_file" ]] && pid="$(cat "$pid_file")" && kill -0 "$pid" 2>/dev/null; then
    "${as_root[@]}" kill -TERM "$pid"
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    rm -f "$pid_file"
    echo "dockerd: stopped (pid $pid)"
  else
    echo "dockerd: not started by this script; left alone"
  fi
  exit 0
fi

if command -v docker >/dev/null && docker_ok; then
  echo "dockerd: already running"
  exit 0
fi

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker >/dev/null || missing+=(docker.io)
command -v iptables >/dev/null || missing+=(iptables)
if [[ ${#missing[@]} -gt 0 ]]; then
  if ! command -v apt-get >/dev/null; then
    echo "dockerd: ${missing[*]} missing and no apt-get to install them" >&2
    exit 1
  fi
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "dockerd: installing ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if pgrep -x dockerd >/dev/null; then
  echo "dockerd: a dockerd is running but does not answer yet; waiting"
else
  mkdir -p "$cache_root"
  echo "dockerd: starting (log: $log_file)"
  # setsid: its own session and process group, so stopping the caller does not stop it.
  "${as_root[@]}" setsid dockerd >>"$log_file" 2>&1 </dev/null &
  echo $! >"$pid_file"
fi

for _ in $(seq 1 $((wait_seconds * 2))); do
  if docker_ok; then
    if [[ -f "$pid_file" ]]; then
      echo "dockerd: started (pid $(cat "$pid_file"))"
    else
      echo "dockerd: running"
    fi
    exit 0
  fi
  sleep 0.5
done
echo "dockerd: no answer from 'docker info' after ${wait_seconds} s; last lines of $log_file:" >&2
tail -n 20 "$log_file" >&2 || true
exit 1
