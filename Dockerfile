# pageserver-operator: the operator (and the engine CLI) in a slim Python image.
#
#   docker build -t pageserver-operator .                        # from the public python image
#   hack/image/build.sh                                           # here: local base, no registry
#
# BASE_IMAGE must provide python3 (>= 3.11) with the venv module; both stages use it, so the
# venv's interpreter link resolves in the final image. Every pip run of the builder installs the
# versions pinned in constraints.txt (hack/lock.sh; the set hack/install.sh installs and the tests
# ran with). When build/image/wheels/ exists in the context (hack/image/build.sh fills it on the
# host from the same constraints), pip installs from it alone (no index); otherwise pip uses PyPI.
#
# Not copied to the final image: pip and setuptools (an installer has no business at run time),
# kubernetes/aio (the client's asyncio twin, about 68 MB: the operator uses the synchronous
# client, kopf talks to the API with aiohttp) and bundled test suites; the import check after the
# removal proves nothing needed went with them.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
# PIP_CONSTRAINT rather than -c alone: it also reaches pip's isolated build environment (the
# build backend that builds the operator's own wheel).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_CONSTRAINT=/src/constraints.txt
WORKDIR /src
# 1. The dependencies, in their own layer (rebuilt only when pyproject.toml, constraints.txt or
#    the wheels change). build/image/wheel[s] matches nothing without a wheelhouse; its wheels
#    land in /src.
COPY pyproject.toml constraints.txt build/image/wheel[s] /src/
RUN set -eu; \
    if ls /src/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /src; fi; \
    python3 -m venv /opt/venv; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt; \
    /opt/venv/bin/pip install --no-cache-dir "$@" -c /src/constraints.txt -r /tmp/requirements.txt
# 2. The operator itself (no dev extras), then what the final image does not need.
COPY README.md /src/
COPY operator /src/operator
RUN set -eu; \
    if ls /src/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /src; fi; \
    /opt/venv/bin/pip install --no-cache-dir --no-deps "$@" /src; \
    /opt/venv/bin/pip uninstall --yes pip setuptools; \
    site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
    rm -rf "$site/kubernetes/aio" "$site/websocket/tests" "$site/certifi/tests"; \
    /opt/venv/bin/python -c 'import pageserver_operator.cli.commands, pageserver_operator.k8s.runner'; \
    /opt/venv/bin/pageserver-operator --version; \
    mkdir -p /data

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="pageserver-operator" \
      org.opencontainers.image.description="Kubernetes operator that attaches pageserver tenants from S3-compatible storage onto a volume and keeps them in sync" \
      org.opencontainers.image.licenses="Apache-2.0"
# A named user for UID 65532: kopf derives its identity from getpass.getuser(), which fails for
# a UID without a passwd entry (and USER covers a UID chosen at run time, e.g. by the cluster).
RUN groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin nonroot
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=65532:65532 /data /data
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    USER=nonroot \
    PAGESERVER_OPERATOR_WORKDIR=/data
USER 65532:65532
WORKDIR /data
# 9090: Prometheus metrics; 8080: kopf liveness endpoint (/healthz).
EXPOSE 9090 8080
ENTRYPOINT ["pageserver-operator"]
CMD ["run"]
