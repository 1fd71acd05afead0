# One image for every Headrace role: `headrace operator`, `api`, `worker`, `migrate`.
# Build: docker build -t headrace:dev .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# Builder: build the wheel and install it with its dependencies into a self-contained virtualenv.
# Sources, pip caches and build tooling stay behind in this stage.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/headrace
COPY pyproject.toml README.md ./
COPY headrace ./headrace
RUN /opt/headrace/bin/pip install --no-cache-dir . \
    && /opt/headrace/bin/python -m compileall -q /opt/headrace/lib

# Runtime: the slim Python image (no compilers) plus the virtualenv, run as a numeric non-root user
# so Kubernetes can verify runAsNonRoot. The root filesystem can be read-only: bytecode is
# precompiled above, and the only writable place needed is /tmp (an emptyDir in the chart).
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="headrace" \
      org.opencontainers.image.description="Document ingestion on Kubernetes: operator, API, worker and migrations" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 headrace \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin headrace
COPY --from=builder /opt/headrace /opt/headrace
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
