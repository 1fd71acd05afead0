"""The loop that keeps every job's search statistics current (store/search/statistics.py), beside the handlers."""

import asyncio
import logging

from headrace.store.db import Pool
from headrace.store.outage import ride_out
from headrace.store.search import statistics as search_statistics

log = logging.getLogger(__name__)


async def build_statistics_forever(pool: Pool, *, interval: float) -> None:
    """Every `interval` seconds, build the search statistics of the jobs due (a finished run, no run in
    progress), one at a time. Level-triggered: a build cut short by a restart or an outage is simply due
    again, and a replica that finds another building a job skips it. Runs beside the handlers, so a long
    build never holds up a job's status."""
    while True:
        try:
            for uid in await ride_out(search_statistics.due, pool):
                await ride_out(search_statistics.refresh, pool, uid)
        except Exception:  # the loop outlives any one failure; the next pass finds the job due again
            log.exception("Failed to build search statistics")
        await asyncio.sleep(interval)
