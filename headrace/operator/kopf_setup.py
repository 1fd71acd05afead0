"""kopf's settings for Headrace: its bookkeeping under headrace.io, explicit watch timeouts, quiet Events,
retries at the observe cadence."""

import logging

import kopf

from headrace.model import GROUP

FINALIZER = f"{GROUP}/finalizer"

# Without these, a watch stream that the API server (or a load balancer between) silently stops feeding
# is never noticed, and the operator waits forever (kopf issues #585, #614, #955). We ask the server to
# end every watch after 10 minutes, and drop any stream still open a minute after that; either way kopf
# lists again and re-watches, so nothing is missed.
WATCH_SERVER_TIMEOUT = 600
WATCH_CLIENT_TIMEOUT = 660

KOPF_DEFAULT_DELAY = 60.0
"""kopf's default seconds before it retries a failed handler, or looks again at a timer still running on a
deleted object (`execution.default_backoff`, `background.cancellation_polling`)."""


def retry_delay(observe_interval: float) -> float:
    """Seconds before a failed handler runs again: the next observe tick, never later than kopf's default."""
    return min(observe_interval, KOPF_DEFAULT_DELAY)


def configure(settings: kopf.OperatorSettings, *, observe_interval: float) -> None:
    """kopf's settings for Headrace: everything kopf writes on our objects lives under headrace.io, and
    what failed or is still finishing is looked at again at the observe cadence."""
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
    # A failed handler (a 403 from a namespace being deleted, a pool closing at shutdown: what `ride_out`
    # does not retry) is run again at the next observe tick, not after kopf's default minute of frozen
    # status. And a job deleted while its observe timer is mid-run keeps its finalizer until kopf looks
    # at the timer again (kopf's `cancellation_polling`, also a minute by default): the same cadence.
    settings.execution.default_backoff = settings.background.cancellation_polling = retry_delay(observe_interval)
