"""An IngestionJob as the operator sees it: kopf's body read once, at the edge (`handlers.observation`).

Everything past the handlers works on this typed, frozen value, never on kopf's `body`, and returns what
to change (`reconcile.Reconciled`) instead of writing kopf's `patch`.
"""

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from headrace.model import IngestionJob, IngestionJobStatus
from headrace.store.runs import RequestKind


@dataclass(frozen=True)
class Glance:
    """What an IngestionJob says of itself, read without interpreting its spec: cheap enough for the
    timer's filter, which kopf runs at every change of every job."""

    namespace: str
    name: str
    uid: uuid.UUID
    generation: int | None
    spec: Mapping[str, Any]
    """The spec as written: what is recorded of a refused spec, and its retention whatever else it says."""
    status: IngestionJobStatus
    """The status the object reports (empty when it has none, or none of ours)."""
    reported: Mapping[str, Any]
    """That status as the object has it, on the wire: a status write is the difference from it."""
    run_request: str | None
    """The run-requested-at annotation's value, if any."""
    retry_request: str | None
    """The retry-failed-requested-at annotation's value, if any."""
    deleting: bool
    """Whether the object is being deleted (its finalizer's work)."""

    @property
    def pending_requests(self) -> list[tuple[RequestKind, str]]:
        """Annotation values not acted on yet: run now first, then retry failed."""
        pending: list[tuple[RequestKind, str]] = []
        if self.run_request and self.run_request != self.status.last_handled_run_request:
            pending.append(("run", self.run_request))
        if self.retry_request and self.retry_request != self.status.last_handled_retry_request:
            pending.append(("retry", self.retry_request))
        return pending


@dataclass(frozen=True)
class Observation(Glance):
    """One IngestionJob as kopf handed it over to a handler, with its spec parsed."""

    job: IngestionJob | None
    """The spec as a model; None when the operator refuses it (`spec_error` says why)."""
    spec_error: str | None
