"""Opening what the operator holds for its lifetime: the database pool (migrated) and the Kubernetes client."""

import logging

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from headrace.operator.config import OperatorSettings
from headrace.operator.kube import KubeClient
from headrace.operator.reconcile import Operator
from headrace.store import migrate
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


async def open_operator(config: OperatorSettings) -> Operator:
    """Connect to Postgres (waiting up to two minutes for it), apply pending migrations, and wrap it all up."""
    pool = await _connect(config.database_url.get_secret_value())
    if config.migrate:
        applied = await migrate.migrate(pool)
        if applied:
            log.info("Applied migrations", extra={"count": len(applied)})
    else:
        await migrate.ensure_current(pool)
    return Operator(pool=pool, kube=KubeClient(), config=config)
