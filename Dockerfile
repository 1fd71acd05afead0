# One image for every Headrace role: `headrace operator`, `api`, `worker`, `migrate`.
# Build: `make image` (buildah, from a Debian base it makes itself; see scripts/build-image.sh), or
# `docker build -t headrace:dev .`, which starts from the python slim image below.
ARG BASE_IMAGE=docker.io/library/python:3.11.14-slim-bookworm

# Dependencies: the locked runtime packages (uv.lock, hashes checked) in a self-contained virtualenv.
# uv, pip, sources and caches stay behind in the build stages.
FROM ${BASE_IMAGE} AS dependencies
ARG UV_VERSION=0.13.8
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/headrace
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
# A machine that intercepts TLS passes its CA bundle as the build secret `ca` (make image does):
# mounted for this step only, never written to a layer.
RUN --mount=type=secret,id=ca,required=false \
    set -eu; \
    if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca PIP_CERT=/run/secrets/ca; fi; \
    python3 -m venv /opt/uv; \
    /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}"; \
    /opt/uv/bin/uv sync --locked --no-dev --no-install-project --no-install-package hf-xet --python python3
# What no role runs (docs/benchmarks.md, "The image", has the sizes):
# - hf-xet (above): huggingface_hub's download accelerator; the built-in model ships in wordllama's wheel.
# - packages' own test suites, C sources and type stubs;
# - botocore's models of the AWS services other than S3 and the credential services (STS, SSO);
# - bytecode: not precompiled, so each process compiles what it imports in memory (the root is read-only).
RUN find /opt/headrace/lib -depth \( -type d \( -name tests -o -name __pycache__ \) \
        -o -type f \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.c' -o -name '*.h' -o -name '*.cpp' \) \) \
        -exec rm -rf {} + \
    && find /opt/headrace/lib/python3.11/site-packages/botocore/data -mindepth 1 -maxdepth 1 -type d \
        ! -name s3 ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} +

# Headrace itself, gathered into /out: its own small layer, so a code change rebuilds only that.
FROM dependencies AS builder
COPY headrace ./headrace
RUN --mount=type=secret,id=ca,required=false \
    set -eu; \
    if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi; \
    /opt/uv/bin/uv sync --locked --no-dev --no-editable --no-install-package hf-xet --python python3; \
    site=/opt/headrace/lib/python3.11/site-packages; \
    mkdir -p "/out$site" /out/opt/headrace/bin; \
    cp -a "$site/headrace" "$site"/headrace-*.dist-info "/out$site/"; \
    cp -a /opt/headrace/bin/headrace /out/opt/headrace/bin/

# Runtime: the same base plus the virtualenv, run as a numeric non-root user so Kubernetes can verify
# runAsNonRoot. The root filesystem can be read-only: nothing writes bytecode (PYTHONDONTWRITEBYTECODE),
# and the only writable place needed is /tmp (an emptyDir in the chart).
FROM ${BASE_IMAGE}
RUN groupadd --gid 10001 headrace \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin headrace
COPY --from=dependencies /opt/headrace /opt/headrace
COPY --from=builder /out/ /
ENV PATH=/opt/headrace/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HEADRACE_LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["headrace"]
CMD ["--help"]
# Last, so a new commit (REVISION) rebuilds only this metadata, never the layers above.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="headrace" \
      org.opencontainers.image.description="Document ingestion on Kubernetes: operator, API, worker and migrations" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/headrace/headrace"
