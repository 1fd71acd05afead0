"""The loop that keeps every job's search statistics current (store/search/statistics.py), beside the handlers."""

import asyncio
import logging

from headrace.store import search as store_search
from headrace.store.db import Pool
from headrace.store.outage import ride_out
from headrace.store.search import statistics as search_statistics

log = logging.getLogger(__name__)


async def build_due_statistics(pool: Pool) -> int:
    """One pass: build the search statistics of the jobs due (a finished run, no run in progress), one at
    a time, and return how many this process built (or kept, for a run that changed no chunk: it may
    still have embedded the stored ones). After a pass that built any, analyze the tables a search is
    planned on (`store.search.analyze`), once: the runs that made those jobs due wrote their rows, and
    until autovacuum gets to them Postgres plans the semantic search as a scan of every vector (see
    there). A pass that built nothing (nothing due, or another replica building) analyzes nothing."""
    built = 0
    for uid in await ride_out(search_statistics.due, pool):
        if await ride_out(search_statistics.refresh, pool, uid) is not None:
            built += 1
    if built:
        await ride_out(store_search.analyze, pool)
    return built


async def build_statistics_forever(pool: Pool, *, interval: float) -> None:
    """Every `interval` seconds, a pass of `build_due_statistics`. Level-triggered: a build cut short by a
    restart or an outage is simply due again, and a replica that finds another building a job skips it.
    Runs beside the handlers, so a long build never holds up a job's status."""
    while True:
        try:
            await build_due_statistics(pool)
        except Exception:  # the loop outlives any one failure; the next pass finds the job due again
            log.exception("Failed to build search statistics")
        await asyncio.sleep(interval)
