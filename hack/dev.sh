#!/usr/bin/env bash
# The README's first command: install what is missing (once), then run the embedded default:
# local control plane + object store + sample tenant + operator (`pageserver-operator dev`).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
if [[ ! -x .venv/bin/pageserver-operator ]] || ! .venv/bin/python -m pageserver_operator.devenv binaries >/dev/null 2>&1; then
  hack/install.sh
fi
exec .venv/bin/pageserver-operator dev "$@"
