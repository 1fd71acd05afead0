"""The worker database Secrets that releases before the ingest service wrote into tenants' namespaces,
deleted by the first job of each namespace the operator serves after the upgrade.

Their roles are dropped at start (`store.legacy_roles`), but a Secret holding a database URL has no
business in a tenant's namespace. The chart's RBAC lets the operator get and delete this name only.
"""

import logging
import uuid
from collections.abc import Mapping
from types import MappingProxyType

from headrace.kubeapi import KubeError
from headrace.operator.kube import SECRETS, KubeClient
from headrace.store import legacy_roles
from headrace.store.db import Pool
from headrace.store.legacy_roles import LegacySecret

log = logging.getLogger(__name__)

LEGACY_WORKER_SECRET = "headrace-worker-database"
"""The Secret those releases wrote into each IngestionJob's namespace."""
LEGACY_ROLE_ANNOTATION = "headrace.io/database-role"
"""Set by those releases on that Secret, naming the database role whose URL it held."""


class LegacySecrets:
    """Namespaces (by UID) that may still hold such a Secret: each is looked at once, then forgotten, here
    and in Postgres (so an operator restarted in between still knows where to look)."""

    def __init__(self, pending: Mapping[uuid.UUID, LegacySecret] | None = None) -> None:
        self._pending = dict(pending or {})

    @property
    def pending(self) -> Mapping[uuid.UUID, LegacySecret]:
        """The namespaces not looked at yet."""
        return MappingProxyType(self._pending)

    async def remove(self, kube: KubeClient, pool: Pool, namespace: str, namespace_uid: uuid.UUID) -> None:
        """Delete the namespace's Secret, if it is still pending.

        Only a Secret of the legacy name that carries the role annotation that release wrote (naming the
        role it held) is deleted, and only that object (a uid precondition): a Secret of the same name that
        someone else made is left alone."""
        legacy = self._pending.get(namespace_uid)
        if legacy is None:
            return
        name = LEGACY_WORKER_SECRET
        found = await kube.get(SECRETS, namespace, name)
        annotations = (found or {}).get("metadata", {}).get("annotations") or {}
        if found is not None and annotations.get(LEGACY_ROLE_ANNOTATION) == legacy.role:
            try:
                if await kube.delete(SECRETS, namespace, name, uid=found["metadata"].get("uid")):
                    log.info("Deleted Secret", extra={"namespace": namespace, "secret": name, "why": "a database URL"})
            except KubeError as exc:
                if exc.status != 409:  # 409: replaced meanwhile by someone else's; not ours
                    raise
        await legacy_roles.forget(pool, namespace_uid)
        self._pending.pop(namespace_uid, None)
