"""The operator's Prometheus metrics: reconcile time and errors, IngestionJobs by phase, Kubernetes API calls.

Served on the operator's metrics port (`OperatorSettings.metrics_port`). Phases are what this operator
last wrote or read in each IngestionJob's status; a restarted operator learns them again as kopf
resumes every object.
"""

import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from headrace.metrics import INGESTIONJOB_LABEL

RECONCILE_SECONDS = Histogram(
    "headrace_operator_reconcile_duration_seconds",
    "Time one handler call took (apply: create/update/resume; observe: the timer; delete: the finalizer).",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "headrace_operator_reconcile_errors_total", "Handler calls that raised (kopf retries them).", ["handler"]
)
LAST_RECONCILE = Gauge(
    "headrace_operator_last_reconcile_timestamp_seconds", "When a handler call last finished without error."
)
KUBE_REQUESTS = Counter(
    "headrace_operator_kubernetes_requests_total",
    "Calls the operator's own client made to the Kubernetes API (kopf's watches and status patches are "
    "not counted), by verb and HTTP status code (`error`: no answer, e.g. a timeout).",
    ["verb", "code"],
)

LEADER = Gauge(
    "headrace_operator_leader",
    "1 while this operator replica holds the leader Lease and reconciles, 0 while it stands by.",
    ["identity"],
)

VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


@asynccontextmanager
async def reconciling(handler: str) -> AsyncIterator[None]:
    """Time a handler call; count it as an error when it raises."""
    started = time.perf_counter()
    try:
        yield
    except Exception:  # not CancelledError: a handler stopped at shutdown did not fail
        RECONCILE_ERRORS.labels(handler).inc()
        raise
    else:
        LAST_RECONCILE.set_to_current_time()
    finally:
        RECONCILE_SECONDS.labels(handler).observe(time.perf_counter() - started)


class Phases(Collector):
    """`headrace_ingestionjob_phase{namespace, ingestionjob, phase} 1` for every IngestionJob seen."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}

    def observe(self, namespace: str, name: str, phase: str | None) -> None:
        """Remember the phase an IngestionJob has after a handler's patch (None: it has none yet)."""
        if phase:
            self._phases[(namespace, name)] = phase

    def forget(self, namespace: str, name: str) -> None:
        self._phases.pop((namespace, name), None)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for (namespace, name), phase in sorted(dict(self._phases).items()):
            family.add_metric([namespace, name, phase], 1)
        return [family]

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "headrace_ingestionjob_phase",
            "1 for the phase each IngestionJob is in (Pending, Running, Succeeded, Failed, Suspended).",
            labels=["namespace", INGESTIONJOB_LABEL, "phase"],
        )


PHASES = Phases()
REGISTRY.register(PHASES)


def serve(port: int, host: str = "0.0.0.0") -> Callable[[], None]:
    """Serve the registry on `port`; returns the function that stops it."""
    server, thread = start_http_server(port, addr=host)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
