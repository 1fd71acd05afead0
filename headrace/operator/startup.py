"""Opening what the operator holds for its lifetime: the database pool (migrated) and the Kubernetes client,
and what it starts out knowing (the Secrets an earlier release left in tenants' namespaces)."""

import logging

from headrace.operator.kube import KubeClient
from headrace.operator.legacy_secrets import LegacySecrets
from headrace.operator.reconcile import Operator, Runtime
from headrace.operator.settings import OperatorSettings
from headrace.store import legacy_roles, migrate
from headrace.store.db import close_pool, create_pool
from headrace.store.outage import ride_out

log = logging.getLogger(__name__)


async def open_operator(config: OperatorSettings) -> tuple[Operator, Runtime]:
    """Connect to Postgres (waiting up to two minutes for it), apply pending migrations, drop the database
    roles earlier releases made for workers, and wrap it all up."""
    pool = await ride_out(
        create_pool,
        config.database_url.get_secret_value(),
        min_size=1,
        max_size=config.database_pool_size,
        reset_sessions=False,  # the operator sets nothing per session: one round trip less per borrow
    )
    if config.migrate:
        applied = await migrate.migrate(pool)
        if applied:
            log.info("Applied migrations", extra={"count": len(applied)})
    else:
        await migrate.ensure_current(pool)
    try:
        # Earlier releases gave each namespace's workers a database role: none may log in any more.
        await legacy_roles.drop_roles(pool)
        legacy = await legacy_roles.legacy_secrets(pool)
    except BaseException:
        await close_pool(pool)
        raise
    operator = Operator(pool=pool, kube=KubeClient(), config=config)
    return operator, Runtime(legacy_secrets=LegacySecrets(legacy))
