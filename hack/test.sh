#!/usr/bin/env bash
# The project's test command (the one the README shows and .ci/run runs):
#   ruff check -> mypy (strict, config in pyproject.toml) -> lint-imports (if configured) -> pytest
#
#   hack/test.sh          the full suite: every collected test (what CI runs; nothing deselected)
#   hack/test.sh --fast   the fast tier: the same static checks, then only the unit and in-process
#                         tests (pytest --fast: no control plane, S3 server or Docker; see
#                         tests/conftest.py for how a test that needs one cannot slip in)
# Extra arguments go to pytest, e.g. `hack/test.sh tests/unit -k lsn`.
# Every stage runs even if an earlier one failed, so one run reports everything; the exit
# status is non-zero if any stage failed. Each stage, and the tier, prints how long it took.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
venv_bin="$repo_root/.venv/bin"
if [[ ! -x "$venv_bin/python" ]]; then
  echo "error: no virtualenv at $repo_root/.venv; run hack/install.sh first" >&2
  exit 2
fi

tier=full
pytest_args=()
if [[ "${1:-}" == "--fast" ]]; then
  tier=fast
  pytest_args=(--fast)
  shift
fi

now_ms() { date +%s%3N; }
tier_started="$(now_ms)"
failed=()
summary=()

stage() {
  local name="$1"
  shift
  local started status=0
  started="$(now_ms)"
  echo "==> $name: $*"
  "$@" || status=$?
  local elapsed_ms=$(($(now_ms) - started))
  local took
  took="$(printf '%d.%03d s' $((elapsed_ms / 1000)) $((elapsed_ms % 1000)))"
  if [[ $status -eq 0 ]]; then
    summary+=("ok      $name ($took)")
  else
    summary+=("FAILED  $name ($took, exit $status)")
    failed+=("$name")
  fi
  echo "<== $name: exit $status in $took"
}

stage ruff "$venv_bin/ruff" check operator tests bench
stage mypy "$venv_bin/mypy"
if [[ -f .importlinter ]] || grep -q '^\[tool\.importlinter\]' pyproject.toml; then
  stage lint-imports "$venv_bin/lint-imports"
else
  summary+=("n/a     lint-imports (no .importlinter contract configured)")
fi
stage pytest "$venv_bin/pytest" "${pytest_args[@]}" "$@"

tier_ms=$(($(now_ms) - tier_started))
echo
echo "hack/test.sh summary ($tier tier):"
printf '  %s\n' "${summary[@]}"
printf '  %s tier: %d.%03d s in all\n' "$tier" $((tier_ms / 1000)) $((tier_ms % 1000))
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FAILED stages: ${failed[*]}" >&2
  exit 1
fi
