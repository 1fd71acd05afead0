"""Starting the operator: kopf settings under our API group, explicit watch timeouts, and the run loop."""

import asyncio
import logging
from collections.abc import Collection

import kopf

from headrace.model import GROUP
from headrace.operator.config import OperatorConfig
from headrace.operator.handlers import register

FINALIZER = f"{GROUP}/finalizer"

# Without these, a watch stream the API server (or a load balancer) silently stops feeding is never
# noticed, and the operator waits forever (kopf issues #585, #614, #955). The server closes each watch
# after ~10 minutes; the client gives it a minute more before it reconnects on its own.
WATCH_SERVER_TIMEOUT = 600
WATCH_CLIENT_TIMEOUT = 660


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for Headrace: everything kopf writes on our objects lives under headrace.io."""
    # Progress and the last-handled spec go into annotations: a status.kopf field would be pruned by the
    # CRD's structural schema, and annotations keep status for what users read.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    # Our own Events are posted explicitly (reconcile returns them). kopf would also turn every INFO line
    # of its per-object log ("Timer 'observe' succeeded", every few seconds) into an Event: only its
    # warnings and errors are worth that.
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    """A fresh registry holding Headrace's handlers, bound to this configuration."""
    registry = kopf.OperatorRegistry()
    register(registry, config)
    return registry


def run(
    config: OperatorConfig,
    *,
    namespaces: Collection[str] = (),
    liveness_endpoint: str | None = None,
) -> None:
    """Run the operator until it is stopped: cluster-wide when no namespaces are given."""
    # One operator replica (the chart uses strategy: Recreate), so kopf's peering is off.
    asyncio.run(
        kopf.operator(
            registry=build_registry(config),
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=True,
            liveness_endpoint=liveness_endpoint,
        )
    )
