"""Namespaces by UID: the identity a job's stored data goes by, looked up once for every job asking at once,
and the data of a namespace that is gone (or of a former namespace of a re-created name) retired."""

import asyncio
import logging
import uuid

import kopf

from headrace.operator.kube import NAMESPACES, RETRY_DELAY, KubeClient
from headrace.store import jobs
from headrace.store.db import Pool

log = logging.getLogger(__name__)


class NamespaceLookups:
    """Namespace UID lookups in flight: jobs of a namespace handled at once share one request.

    Nothing is cached: a lookup is forgotten as soon as it is answered, so each answer is no older than the
    request of any job that waited for it."""

    def __init__(self) -> None:
        self._in_flight: dict[str, asyncio.Future[uuid.UUID | Exception]] = {}

    async def uid(self, kube: KubeClient, namespace: str) -> uuid.UUID:
        """The UID of the namespace as it is now; kopf.TemporaryError when there is no such namespace."""
        lookup = self._in_flight.get(namespace)
        if lookup is None:
            lookup = asyncio.ensure_future(_look_up(kube, namespace))
            self._in_flight[namespace] = lookup
            lookup.add_done_callback(lambda done: self._forget(namespace, done))
        # Shielded: one waiter's handler being cancelled must not cancel the others' lookup.
        found = await asyncio.shield(lookup)
        if isinstance(found, Exception):
            raise found
        return found

    def _forget(self, namespace: str, done: asyncio.Future[uuid.UUID | Exception]) -> None:
        if self._in_flight.get(namespace) is done:
            del self._in_flight[namespace]


async def _look_up(kube: KubeClient, namespace: str) -> uuid.UUID | Exception:
    """The namespace's UID, or the error as a value: a shared task whose waiters all went away must not
    end in an error nobody awaits (kopf re-raises those at shutdown)."""
    try:
        found = await kube.list(NAMESPACES, "", name=namespace)
    except Exception as exc:
        return exc
    uid = (found[0].get("metadata") or {}).get("uid") if found else None
    if not uid:
        return kopf.TemporaryError(f"namespace {namespace} was not found", delay=RETRY_DELAY)
    return uuid.UUID(uid)


async def namespace_changed(pool: Pool, *, name: str, uid: str, deleted: bool) -> None:
    """A namespace appeared (or was listed at start) or was deleted: data of a former namespace of its name,
    or of the deleted one, stops being served.

    Finalizers normally do this job by job; this covers IngestionJobs whose finalizer was bypassed, before
    anyone in a re-created namespace of the same name can search.
    """
    namespace_uid = uuid.UUID(uid)
    if deleted:
        retired = await jobs.retire_namespace(pool, namespace_uid)
    else:
        retired = await jobs.retire_former_namespaces(pool, namespace=name, namespace_uid=namespace_uid)
    if retired:
        log.info("Retained data of a former namespace", extra={"namespace": name, "jobs": retired})
