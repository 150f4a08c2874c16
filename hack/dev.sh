#!/usr/bin/env bash
# The README's first command: install what is missing (once), then run the embedded default:
# local control plane + object store + sample tenant + operator (`pageserver-operator dev`).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
# The check never builds: a missing binary is built (or fetched) by hack/install.sh, which shows
# its progress (a build inside a silenced check would be minutes without a word).
if [[ ! -x .venv/bin/pageserver-operator ]] || ! .venv/bin/python -m pageserver_operator.devenv binaries --check >/dev/null 2>&1; then
  hack/install.sh
fi
exec .venv/bin/pageserver-operator dev "$@"
