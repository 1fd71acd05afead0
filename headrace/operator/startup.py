"""Opening what the operator holds for its lifetime: the database pool (migrated) and the Kubernetes client."""

import logging

from headrace.operator.config import OperatorSettings
from headrace.operator.kube import KubeClient
from headrace.operator.reconcile import Operator
from headrace.store import migrate, tenants
from headrace.store.db import close_pool, create_pool
from headrace.store.outage import ride_out

log = logging.getLogger(__name__)


async def open_operator(config: OperatorSettings) -> Operator:
    """Connect to Postgres (waiting up to two minutes for it), apply pending migrations, make sure tenant
    roles can be created (in `roles` mode), and wrap it all up."""
    pool = await ride_out(
        create_pool, config.database_url.get_secret_value(), min_size=1, max_size=config.database_pool_size
    )
    if config.migrate:
        applied = await migrate.migrate(pool)
        if applied:
            log.info("Applied migrations", extra={"count": len(applied)})
    else:
        await migrate.ensure_current(pool)
    if config.tenant_credentials == "roles":
        try:
            await tenants.check_privilege(pool)  # MissingPrivilege names the way out
            await tenants.prepare(pool, prefix=config.tenant_role_prefix)
        except BaseException:
            await close_pool(pool)
            raise
    else:
        log.warning(
            "Using shared database credentials",
            extra={"detail": "workers get the installation's database URL: namespaces are not isolated"},
        )
    return Operator(pool=pool, kube=KubeClient(), config=config)
