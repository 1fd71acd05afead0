"""Opening what the operator holds for its lifetime: the database pool (migrated) and the Kubernetes client."""

import logging

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from headrace.operator.config import OperatorConfig
from headrace.operator.kube import KubeClient
from headrace.operator.reconcile import Operator
from headrace.store import migrate, tenants
from headrace.store.db import Pool, create_pool

log = logging.getLogger(__name__)


@retry(
    retry=retry_if_exception_type((OSError, ConnectionError)),
    wait=wait_exponential(multiplier=0.5, max=10),
    stop=stop_after_delay(120),
    reraise=True,
)
async def _connect(dsn: str) -> Pool:
    return await create_pool(dsn, min_size=1, max_size=5)


async def open_operator(config: OperatorConfig) -> Operator:
    """Connect to Postgres (waiting up to two minutes for it), apply pending migrations, make sure tenant
    roles can be created (in `roles` mode), and wrap it all up."""
    pool = await _connect(config.database_url)
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
            await pool.close()
            raise
    else:
        log.warning(
            "Using shared database credentials",
            extra={"detail": "workers get the installation's database URL: namespaces are not isolated"},
        )
    return Operator(pool=pool, kube=KubeClient(), config=config)
