"""Where the operator and the worker meet: the paths and variables a worker pod is given.

The operator builds pods to this contract; the worker reads it; local mode fakes it with folders.
"""

# The PersistentVolumeClaim of spec.source.volume is mounted read-only here; the worker's
# --volume-root (env HEADRACE_VOLUME_ROOT) points at it.
WORKER_VOLUME_ROOT = "/var/run/headrace/source"
VOLUME_ROOT_ENV = "HEADRACE_VOLUME_ROOT"

# Every Secret a spec references is mounted read-only at WORKER_SECRETS_DIR/<secret name>/<key>.
# The worker reads keys as files from there (env HEADRACE_SECRETS_DIR overrides the folder, which
# is how `headrace run` hands local secrets to its workers).
WORKER_SECRETS_DIR = "/var/run/secrets/headrace"
SECRETS_DIR_ENV = "HEADRACE_SECRETS_DIR"

# Every worker serves its Prometheus metrics on this port, named WORKER_METRICS_PORT_NAME in the pod
# spec (the chart's PodMonitor scrapes it); the operator sets it through the worker's
# --metrics-port (env METRICS_PORT_ENV).
WORKER_METRICS_PORT = 9090
WORKER_METRICS_PORT_NAME = "metrics"
METRICS_PORT_ENV = "HEADRACE_METRICS_PORT"

# The database URL reaches the release's own pods (operator, API, ingest service, migrations) as this
# variable, from the Secret the chart names. Worker pods never get it: they call the ingest service.
DATABASE_URL_ENV = "DATABASE_URL"
DATABASE_URL_KEY = "DATABASE_URL"

# Worker pods reach Headrace's ingest service at INGEST_URL_ENV and prove who they are with a projected
# ServiceAccount token of audience INGEST_AUDIENCE, bound to the pod and valid INGEST_TOKEN_SECONDS
# (the kubelet replaces it before it expires), mounted at INGEST_TOKEN_PATH (env INGEST_TOKEN_FILE_ENV
# overrides where the worker reads it).
INGEST_URL_ENV = "HEADRACE_INGEST_URL"
INGEST_AUDIENCE = "headrace-ingest"
INGEST_TOKEN_DIR = "/var/run/secrets/headrace.io/ingest"
INGEST_TOKEN_PATH = f"{INGEST_TOKEN_DIR}/token"
INGEST_TOKEN_FILE_ENV = "HEADRACE_INGEST_TOKEN_FILE"
INGEST_TOKEN_SECONDS = 600

# A worker stopped by SIGTERM with work left exits with this code, so a Job neither counts the
# pod as a completion nor (with a podFailurePolicy rule ignoring it) against backoffLimit. Kubernetes
# stops pods with SIGTERM only; Ctrl-C at a terminal gives 130 (128 + SIGINT), which no Job sees.
WORKER_EXIT_STOPPED = 143

# Annotations a user sets to ask for a run (`kubectl annotate ij NAME KEY="$(date -Is)" --overwrite`),
# after Flux's reconcile.fluxcd.io/requestedAt: each new value is acted on once, and status records it.
RUN_REQUEST_ANNOTATION = "headrace.io/run-requested-at"
RETRY_FAILED_ANNOTATION = "headrace.io/retry-failed-requested-at"
