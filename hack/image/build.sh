#!/usr/bin/env bash
# Build the operator image here, where no container registry is reachable:
#   1. make sure dockerd runs (hack/image/dockerd.sh: installs docker.io if needed, starts it);
#   2. make the local base image (hack/image/base-image.sh: debootstrap + Debian's python3;
#      cached: skipped when it exists);
#   3. fill build/image/wheels/ with the wheels of the runtime dependencies and the build backend,
#      at the versions pinned in constraints.txt (hack/lock.sh), using the host's pip (which
#      reaches PyPI; containers here cannot verify its TLS), cached by the hash of pyproject.toml's
#      requirements and constraints.txt: a warm build asks no registry;
#   4. docker build --build-arg BASE_IMAGE=<local base> -t $IMAGE . and print the image size.
# Usage: hack/image/build.sh [IMAGE]    (default pageserver-operator:dev)
# Env: BASE_IMAGE (default pageserver-operator-base:bookworm-py311), PYTHON (host python used
#      for pip wheel; default .venv/bin/python, else python3).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"
image="${1:-${IMAGE:-pageserver-operator:dev}}"
base_image="${BASE_IMAGE:-pageserver-operator-base:bookworm-py311}"
wheel_dir="build/image/wheels"

now_ms() { date +%s%3N; }
step_started=0
begin() {
  step_started="$(now_ms)"
  echo "==> image: $*"
}
end() {
  local elapsed_ms=$(($(now_ms) - step_started))
  printf '<== image: %s done in %d.%03d s\n' "$1" $((elapsed_ms / 1000)) $((elapsed_ms % 1000))
}
total_started="$(now_ms)"

if [[ ! -f README.md ]]; then
  echo "image: README.md is missing: pyproject.toml names it as the readme, so the package" \
    "cannot be built without it" >&2
  exit 1
fi

begin "docker engine"
hack/image/dockerd.sh
end "docker engine"

begin "base image $base_image"
hack/image/base-image.sh "$base_image"
end "base image"

begin "wheels of the runtime dependencies"
python_bin="${PYTHON:-}"
if [[ -z "$python_bin" ]]; then
  if [[ -x .venv/bin/python ]]; then python_bin=.venv/bin/python; else python_bin=python3; fi
fi
base_python="$(docker run --rm --network none --entrypoint python3 "$base_image" \
  -c 'import platform; print(platform.python_version())')"
host_python="$("$python_bin" -c 'import platform; print(platform.python_version())')"
if [[ "${base_python%.*}" != "${host_python%.*}" ]]; then
  echo "image: the host python ($host_python) and the base image's ($base_python) differ in" \
    "minor version; wheels would not match (set PYTHON=/path/to/python${base_python%.*})" >&2
  exit 1
fi
# The requirements: the build backend and the runtime dependencies (never the dev extras),
# resolved with -c constraints.txt (hack/lock.sh): the versions hack/install.sh installs and the
# tests ran with, so the image runs exactly those. The Dockerfile installs with the same file.
if [[ ! -f constraints.txt ]]; then
  echo "image: constraints.txt is missing (hack/lock.sh writes it)" >&2
  exit 1
fi
mapfile -t build_requirements < <("$python_bin" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))
PY
)
mapfile -t runtime_requirements < <("$python_bin" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
)
key="$({ printf '%s\n' "python ${base_python%.*}" "${build_requirements[@]}" "${runtime_requirements[@]}"
  cat constraints.txt; } | sha256sum | cut -c1-16)"
if [[ -f "$wheel_dir/.key" && "$(cat "$wheel_dir/.key")" == "$key" ]]; then
  echo "wheels: cached ($(find "$wheel_dir" -name '*.whl' | wc -l) wheels, key $key)"
else
  rm -rf "$wheel_dir"
  mkdir -p "$wheel_dir"
  # PIP_CONSTRAINT: the constraints also reach the isolated build of a dependency without a wheel.
  PIP_CONSTRAINT="$repo_root/constraints.txt" "$python_bin" -m pip wheel --quiet \
    --disable-pip-version-check -c constraints.txt --wheel-dir "$wheel_dir" \
    "${build_requirements[@]}" "${runtime_requirements[@]}"
  echo "$key" >"$wheel_dir/.key"
  echo "wheels: $(find "$wheel_dir" -name '*.whl' | wc -l) wheels in $wheel_dir" \
    "(versions from constraints.txt; key $key)"
fi
end "wheels"

begin "docker build $image"
# The builder stage gets its own tag (IMAGE-builder): the legacy builder keeps a stage only as an
# untagged image, which `docker image prune` would take (and with it the warm cache). Images that
# a rebuild replaces are removed, so repeated builds do not pile up untagged images.
if [[ "${image##*/}" == *:* ]]; then builder_image="$image-builder"; else builder_image="$image:latest-builder"; fi
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
old_ids=("$(image_id "$image")" "$(image_id "$builder_image")")
build() {
  # The legacy builder: Debian's dockerd 20.10 has no buildx here, and BuildKit would try to
  # resolve frontends from a registry.
  DOCKER_BUILDKIT=0 docker build --build-arg "BASE_IMAGE=$base_image" "$@" . \
    > >(grep -v -e '^DEPRECATED: The legacy builder' -e 'BuildKit is currently disabled' \
      -e 'Install the buildx component' -e 'https://docs.docker.com/go/buildx/' || true) 2>&1
}
status=0
build --target builder -t "$builder_image" && build -t "$image" || status=$?
if [[ "$status" -ne 0 ]]; then
  echo "image: docker build failed (exit $status)" >&2
  exit "$status"
fi
new_ids=" $(image_id "$image") $(image_id "$builder_image") "
for id in "${old_ids[@]}"; do
  if [[ -n "$id" && "$new_ids" != *" $id "* ]]; then
    docker image rm "$id" >/dev/null 2>&1 || true
  fi
done
end "docker build"

size_bytes="$(docker image inspect --format '{{.Size}}' "$image")"
elapsed_ms=$(($(now_ms) - total_started))
printf 'image: %s built in %d.%03d s; size %s bytes (%d MB), base %s (%d MB)\n' \
  "$image" $((elapsed_ms / 1000)) $((elapsed_ms % 1000)) "$size_bytes" $((size_bytes / 1000000)) \
  "$base_image" $(($(docker image inspect --format '{{.Size}}' "$base_image") / 1000000))
